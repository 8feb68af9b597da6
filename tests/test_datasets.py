"""Bundled data sets: the fast path equals scikit-learn's loaders; splits are honest."""

import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn import datasets as sk

from jaxdl.data import datasets

LOADERS = {"breast_cancer": sk.load_breast_cancer, "iris": sk.load_iris, "wine": sk.load_wine,
           "digits": sk.load_digits, "diabetes": lambda: sk.load_diabetes(scaled=False)}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_fast_path_equals_sklearn(name):
    x, y = datasets.raw_arrays(name)
    bunch = LOADERS[name]()
    assert x.dtype == np.float32 and y.dtype == (np.float32 if name == "diabetes" else np.int32)
    np.testing.assert_array_equal(x, bunch.data.astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target.astype(y.dtype))
    assert tuple(bunch.feature_names) == datasets.FEATURE_NAMES[name]


def test_fallback_to_sklearn_loaders_gives_the_same_arrays(monkeypatch, tmp_path):
    fast = {name: datasets.raw_arrays(name) for name in ("iris", "diabetes")}
    monkeypatch.setattr(datasets, "_sklearn_data_dir", lambda: tmp_path)  # no files there
    for name, (x, y) in fast.items():
        slow_x, slow_y = datasets.raw_arrays(name)
        np.testing.assert_array_equal(slow_x, x)
        np.testing.assert_array_equal(slow_y, y)


def test_load_does_not_import_sklearn():
    code = ("import sys; from jaxdl.data import datasets; [datasets.load(n) for n in "
            f"{sorted(LOADERS)}]; "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["breast_cancer", "wine", "digits", "diabetes"])
def test_splits_are_disjoint_stratified_and_seeded(name):
    _, y = datasets.raw_arrays(name)
    stratify = name != "diabetes"
    train, val, test = datasets.split_indices(y, 0.15, 0.2, seed=3, stratify=stratify)
    everything = np.concatenate([train, val, test])
    assert len(everything) == len(y) == len(np.unique(everything))
    for part, fraction in ((val, 0.15), (test, 0.2)):
        assert abs(len(part) - fraction * len(y)) <= (len(np.unique(y)) if stratify else 1)
        if stratify:  # each class within about one row of its share
            for c in np.unique(y):
                assert abs(np.sum(y[part] == c) - fraction * np.sum(y == c)) <= 1
    again = datasets.split_indices(y, 0.15, 0.2, seed=3, stratify=stratify)
    other = datasets.split_indices(y, 0.15, 0.2, seed=4, stratify=stratify)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(np.sort(train), np.sort(other[0]))


def test_load_standardizes_with_train_statistics_only():
    data = datasets.load("breast_cancer", seed=0)
    x, y = datasets.raw_arrays("breast_cancer")
    train, val, test = datasets.split_indices(y, 0.15, 0.2, 0, stratify=True)
    mean, std = x[train].astype(np.float64).mean(0), x[train].astype(np.float64).std(0)
    np.testing.assert_allclose(data.scaler.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(data.scaler.std, std, rtol=1e-5)
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(0), 1, rtol=1e-4)
    for part, xs, ys in ((train, data.x_train, data.y_train), (val, data.x_val, data.y_val),
                         (test, data.x_test, data.y_test)):
        np.testing.assert_allclose(xs, (x[part] - mean) / std, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(ys, y[part])
    assert data.task == "binary" and data.num_classes == 2 and data.num_features == 30
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert set(data.splits) == {"train", "val", "test"}
    assert data.splits["val"][0] is data.x_val
    other = datasets.load("breast_cancer", seed=1)
    assert datasets.load("breast_cancer", seed=0).y_train.tolist() == data.y_train.tolist()
    assert not np.array_equal(other.x_train, data.x_train)


def test_digits_images_regression_and_empty_val():
    digits = datasets.load("digits", images=True, val_fraction=0.0)
    x, y = datasets.raw_arrays("digits")
    train, val, _ = datasets.split_indices(y, 0.0, 0.2, 0, stratify=True)
    assert len(val) == 0 and digits.x_val.shape == (0, 8, 8, 1) and digits.y_val.shape == (0,)
    np.testing.assert_allclose(digits.x_train, (x[train] / 16).reshape(-1, 8, 8, 1))
    assert digits.x_train.min() >= 0 and digits.x_train.max() <= 1
    assert digits.scaler is None and digits.num_classes == 10 and digits.task == "multiclass"
    diabetes = datasets.load("diabetes", standardize=False)
    dx, dy = datasets.raw_arrays("diabetes")
    train, _, _ = datasets.split_indices(dy, 0.15, 0.2, 0, stratify=False)
    np.testing.assert_array_equal(diabetes.x_train, dx[train])  # raw, unscaled features
    np.testing.assert_array_equal(diabetes.y_train, dy[train])
    assert diabetes.task == "regression" and diabetes.num_classes is None
    assert datasets.load("diabetes").y_train.tolist() == dy[train].tolist()  # y never scaled


@pytest.mark.parametrize("kwargs,argument", [
    (dict(name="mnist"), "name"),
    (dict(name=None), "name"),
    (dict(name="iris", seed=-1), "seed"),
    (dict(name="iris", val_fraction=1.2), "val_fraction"),
    (dict(name="iris", test_fraction="0.2"), "test_fraction"),
    (dict(name="iris", val_fraction=0.5, test_fraction=0.5), "val_fraction + test_fraction"),
    (dict(name="iris", images=True), "images"),
])
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=re.escape(f"argument '{argument}'")):
        datasets.load(**kwargs)
