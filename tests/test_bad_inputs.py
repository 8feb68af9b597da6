"""Every bad input is a ValueError/TypeError naming the argument, expected, given and fix."""

import re

import jax
import numpy as np
import pytest

import jaxdl as jdl


@pytest.fixture(scope="module")
def state(binary_trainer, blobs):
    return binary_trainer.init(jax.random.key(0), blobs[0][:1])


def _check(info, argument):
    text = str(info.value)
    assert f"argument '{argument}'" in text, text
    assert re.search(r"expected .+, got .+\. Fix: .+", text), text


@pytest.mark.parametrize("case,argument,match", [
    ("wrong_features", "x", r"shape \(5,\)"),
    ("labels_out_of_range", "y", r"labels in \[0, 1\]"),
    ("nan_inputs", "x", r"jdl\.data\.clean"),
    ("empty", "x", "at least one example"),
    ("batch_size", "batch_size", "an integer >= 1"),
    ("length_mismatch", "y", r"one label per example of x \(100\)"),
    ("val_length_mismatch", "validation_data[1]", "one label per example"),
    ("validation_split", "validation_split", r"a float in \[0, 1\)"),
    ("steps_per_dispatch", "steps_per_dispatch", "'epoch' or 'auto'"),
])
def test_fit_rejects(binary_trainer, state, blobs, case, argument, match):
    x, y = blobs
    kwargs = dict(epochs=1, batch_size=16, verbose=0)
    if case == "wrong_features":
        x = x[:, :5]
    elif case == "labels_out_of_range":
        y = y + 1
    elif case == "nan_inputs":
        x = x.copy()
        x[7, 2] = np.nan
    elif case == "empty":
        x, y = x[:0], y[:0]
    elif case == "batch_size":
        kwargs["batch_size"] = 0
    elif case == "length_mismatch":
        y = y[:-1]
    elif case == "val_length_mismatch":
        kwargs["validation_data"] = (x[:10], y[:9])
    elif case == "validation_split":
        kwargs["validation_split"] = 1.5
    elif case == "steps_per_dispatch":
        kwargs["steps_per_dispatch"] = "fast"
    with pytest.raises((ValueError, TypeError), match=match) as info:
        binary_trainer.fit(state, x, y, **kwargs)
    _check(info, argument)


def test_evaluate_and_predict_check_features(binary_trainer, state, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="examples of shape") as info:
        binary_trainer.evaluate(state, x[:, :3], y)
    _check(info, "x")
    with pytest.raises(ValueError) as info:
        binary_trainer.predict(state, x[:, :3])
    _check(info, "x")


@pytest.mark.parametrize("kwargs,argument,match", [
    (dict(loss="crossentropy"), "loss", "known loss names"),
    (dict(loss="binary_crossentropy", metrics=["accuracy", "bogus"]), "metrics", "known metric"),
    (dict(loss="mse", optimizer="adamm"), "optimizer", "did you mean 'adam'"),
    (dict(loss="mse", metrics=["accuracy"]), "metrics", "classification loss"),
])
def test_trainer_rejects_unknown_names(kwargs, argument, match):
    with pytest.raises(ValueError, match=match) as info:
        jdl.Trainer(jdl.models.MLP(), **kwargs)
    _check(info, argument)


def test_trainer_rejects_a_module_class_and_bad_keys(binary_trainer, blobs):
    with pytest.raises(TypeError, match="instantiate it") as info:
        jdl.Trainer(jdl.models.MLP, loss="mse")
    _check(info, "model")
    with pytest.raises(TypeError) as info:
        binary_trainer.init("seed", blobs[0][:1])
    _check(info, "rng")


def test_multiclass_labels_out_of_range(blobs):
    x, _ = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(3,)), loss="sparse_categorical_crossentropy")
    state = trainer.init(0, x[:1])
    with pytest.raises(ValueError, match=r"class labels in \[0, 2\]") as info:
        trainer.evaluate(state, x[:10], np.arange(10))
    _check(info, "y")
