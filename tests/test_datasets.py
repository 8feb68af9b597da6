"""Bundled data sets: the fast path equals scikit-learn's loaders; splits are honest."""

import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn import datasets as sk

import jaxdl as jdl
from jaxdl.data import datasets

LOADERS = {"breast_cancer": sk.load_breast_cancer, "iris": sk.load_iris, "wine": sk.load_wine,
           "digits": sk.load_digits, "diabetes": lambda: sk.load_diabetes(scaled=False)}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_fast_path_equals_sklearn(name):
    x, y = datasets.raw_arrays(name)
    bunch = LOADERS[name]()
    np.testing.assert_array_equal(x, bunch.data.astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target.astype(y.dtype))
    if hasattr(bunch, "feature_names") and name != "digits":
        assert tuple(bunch.feature_names) == datasets.FEATURE_NAMES[name]


def test_load_does_not_import_sklearn():
    code = ("import sys; from jaxdl.data import load; load('breast_cancer'); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "diabetes"])
def test_splits_are_disjoint_stratified_and_seeded(name):
    x, y = datasets.raw_arrays(name)
    stratify = name != "diabetes"
    train, val, test = datasets.split_indices(y, 0.15, 0.2, seed=3, stratify=stratify)
    everything = np.concatenate([train, val, test])
    assert len(everything) == len(y) == len(np.unique(everything))
    if stratify:
        for part in (train, val, test):
            for c in np.unique(y):
                share = np.mean(y[part] == c)
                assert abs(share - np.mean(y == c)) <= 1.5 / len(part) + 1e-9
    again = datasets.split_indices(y, 0.15, 0.2, seed=3, stratify=stratify)
    other = datasets.split_indices(y, 0.15, 0.2, seed=4, stratify=stratify)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(train, other[0])


def test_standardizer_is_fit_on_train_only():
    data = jdl.data.load("breast_cancer", seed=0)
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(0), 1, rtol=1e-4)
    assert np.abs(data.x_test.mean(0)).max() > 1e-3  # test statistics were not used
    x, _ = datasets.raw_arrays("breast_cancer")
    train, _, _ = datasets.split_indices(datasets.raw_arrays("breast_cancer")[1], 0.15, 0.2, 0,
                                         True)
    np.testing.assert_allclose(data.scaler.mean, x[train].mean(0), rtol=1e-5)
    assert data.task == "binary" and data.num_classes == 2 and data.num_features == 30


def test_digits_images_and_regression_targets():
    digits = jdl.data.load("digits", images=True)
    assert digits.x_train.shape[1:] == (8, 8, 1) and digits.x_train.max() <= 1.0
    assert digits.scaler is None and digits.num_classes == 10
    diabetes = jdl.data.load("diabetes")
    assert diabetes.task == "regression" and diabetes.y_train.dtype == np.float32
    assert diabetes.y_train.min() >= 25  # raw targets, never scaled


@pytest.mark.parametrize("kwargs,argument", [
    (dict(name="mnist"), "name"),
    (dict(name="iris", val_fraction=1.2), "val_fraction"),
    (dict(name="iris", val_fraction=0.5, test_fraction=0.5), "val_fraction + test_fraction"),
    (dict(name="iris", images=True), "images"),
])
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=re.escape(f"argument '{argument}'")):
        jdl.data.load(**kwargs)
