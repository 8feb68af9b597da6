"""Losses against optax and numpy, and the label checks at the boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl as jdl
from jaxdl import losses

RNG = np.random.default_rng(1)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_binary_crossentropy_matches_numpy_and_accepts_flat_labels():
    logits = RNG.normal(size=(6, 1)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 1, 0])
    p = _sigmoid(logits[:, 0])
    expected = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    got = losses.get("binary_crossentropy").per_example(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sparse_and_categorical_agree_with_optax():
    logits = jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)
    labels = jnp.array([0, 2, 1, 1, 0])
    sparse = losses.get("sparse_categorical_crossentropy").per_example(logits, labels)
    dense = losses.get("categorical_crossentropy").per_example(logits, jax.nn.one_hot(labels, 3))
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(sparse, expected, rtol=1e-6)
    np.testing.assert_allclose(dense, expected, rtol=1e-6)


@pytest.mark.parametrize("name,fn", [
    ("mse", lambda o, y: (o - y) ** 2),
    ("mae", lambda o, y: np.abs(o - y)),
    ("huber", lambda o, y: np.where(np.abs(o - y) <= 1, 0.5 * (o - y) ** 2, np.abs(o - y) - 0.5)),
])
def test_regression_losses_match_numpy(name, fn):
    outputs = RNG.normal(size=(7, 1)).astype(np.float32) * 2
    labels = RNG.normal(size=7).astype(np.float32)
    got = losses.get(name).per_example(jnp.asarray(outputs), jnp.asarray(labels))
    np.testing.assert_allclose(got, fn(outputs[:, 0], labels), rtol=1e-5, atol=1e-6)


def test_unknown_loss_lists_known_names():
    with pytest.raises(ValueError, match="binary_crossentropy.*did you mean"):
        losses.get("binary_crossentropyy")


def test_callable_loss_is_custom():
    loss = losses.get(lambda o, y: jnp.sum(o, axis=-1))
    assert loss.task == "custom"


@pytest.mark.parametrize("name,labels,shape,match", [
    ("binary_crossentropy", np.array([0, 1, 2]), (1,), r"labels in \[0, 1\]"),
    ("sparse_categorical_crossentropy", np.array([0, 3]), (3,), r"class labels in \[0, 2\]"),
    ("sparse_categorical_crossentropy", np.array([0.5, 1.0]), (3,), "integer class labels"),
    ("categorical_crossentropy", np.array([0, 1]), (3,), "one-hot labels of shape"),
    ("mse", np.array([0.0, np.nan]), (1,), "finite labels"),
])
def test_label_checks_name_the_argument(name, labels, shape, match):
    with pytest.raises(jdl.InputError, match="argument 'y'") as info:
        losses.get(name).check_labels(labels, shape)
    assert info.match(match) and "Fix:" in str(info.value)


def test_sparse_crossentropy_over_sequences_is_the_mean_over_positions():
    logits = jnp.asarray(RNG.normal(size=(3, 5, 7)), jnp.float32)          # [B, T, V]
    labels = jnp.asarray(RNG.integers(0, 7, size=(3, 5)))                  # [B, T]
    loss = losses.get("sparse_categorical_crossentropy")
    got = loss.per_example(logits, labels)
    assert got.shape == (3,)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    loss.check_labels(np.asarray(labels), (5, 7))                          # accepted
    with pytest.raises(jdl.InputError, match=r"argument 'y'.*5 class label\(s\) per example"):
        loss.check_labels(np.asarray(labels)[:, :4], (5, 7))
