"""Streaming metrics against scikit-learn and numpy, masked and merged across batches."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from jaxdl import metrics

RNG = np.random.default_rng(2)


def _streamed(metric, outputs, labels, batch=7):
    """Accumulates over padded, masked batches, as the drivers do."""
    n = len(outputs)
    pad = (-n) % batch
    outputs = np.concatenate([outputs, np.repeat(outputs[:1], pad, 0)])
    labels = np.concatenate([labels, np.repeat(labels[:1], pad, 0)])
    mask = np.concatenate([np.ones(n), np.zeros(pad)]).astype(np.float32)
    stats = None
    for i in range(0, len(outputs), batch):
        s = metric.stats(jnp.asarray(outputs[i:i + batch]), jnp.asarray(labels[i:i + batch]),
                         jnp.asarray(mask[i:i + batch]))
        stats = s if stats is None else metrics.merge(stats, s)
    return float(metric.result(stats))


@pytest.fixture(scope="module")
def binary():
    logits = RNG.normal(size=(53, 1)).astype(np.float32)
    labels = (RNG.random(53) < 1 / (1 + np.exp(-2 * logits[:, 0]))).astype(np.int32)
    return logits, labels


@pytest.fixture(scope="module")
def multiclass():
    logits = RNG.normal(size=(61, 4)).astype(np.float32)
    labels = RNG.integers(0, 4, size=61).astype(np.int32)
    return logits, labels


def test_binary_metrics_match_sklearn(binary):
    logits, labels = binary
    predicted = (logits[:, 0] > 0).astype(int)
    for name, expected in [("accuracy", skm.accuracy_score(labels, predicted)),
                           ("precision", skm.precision_score(labels, predicted)),
                           ("recall", skm.recall_score(labels, predicted)),
                           ("f1", skm.f1_score(labels, predicted))]:
        got = _streamed(metrics.get(name, "binary"), logits, labels)
        assert got == pytest.approx(expected, abs=1e-6), name


def test_auc_matches_sklearn_within_histogram_resolution(binary):
    logits, labels = binary
    expected = skm.roc_auc_score(labels, logits[:, 0])
    assert _streamed(metrics.get("auc", "binary"), logits, labels) == pytest.approx(expected,
                                                                                     abs=2e-3)


def test_multiclass_metrics_match_sklearn_macro(multiclass):
    logits, labels = multiclass
    predicted = logits.argmax(-1)
    for name, expected in [
        ("accuracy", skm.accuracy_score(labels, predicted)),
        ("precision", skm.precision_score(labels, predicted, average="macro", zero_division=0)),
        ("recall", skm.recall_score(labels, predicted, average="macro", zero_division=0)),
        ("f1", skm.f1_score(labels, predicted, average="macro", zero_division=0)),
    ]:
        got = _streamed(metrics.get(name, "multiclass"), logits, labels)
        assert got == pytest.approx(expected, abs=1e-6), name


def test_regression_metrics_match_numpy():
    outputs = RNG.normal(size=(40, 1)).astype(np.float32)
    labels = RNG.normal(size=40).astype(np.float32)
    assert _streamed(metrics.get("mse", "regression"), outputs, labels) == pytest.approx(
        np.mean((outputs[:, 0] - labels) ** 2), rel=1e-5)
    assert _streamed(metrics.get("mae", "regression"), outputs, labels) == pytest.approx(
        np.mean(np.abs(outputs[:, 0] - labels)), rel=1e-5)


def test_callable_metric_is_masked_mean():
    metric = metrics.get(lambda o, y: o[:, 0] * 0 + y, "regression")
    labels = np.arange(10, dtype=np.float32)
    assert _streamed(metric, np.zeros((10, 1), np.float32), labels, batch=4) == 4.5


def test_mismatched_metric_and_unknown_names_are_clear():
    with pytest.raises(ValueError, match="argument 'metrics'.*classification loss"):
        metrics.get("accuracy", "regression")
    with pytest.raises(ValueError, match="did you mean 'accuracy'"):
        metrics.get("acuracy", "binary")


def test_sequence_accuracy_and_bits_per_byte_count_every_unmasked_token():
    logits = RNG.normal(size=(23, 6, 5)).astype(np.float32)                # [B, T, V]
    labels = RNG.integers(0, 5, size=(23, 6)).astype(np.int32)             # [B, T]
    accuracy = np.mean(logits.argmax(-1) == labels)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nats = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    assert _streamed(metrics.get("accuracy", "multiclass"), logits, labels) == pytest.approx(
        accuracy, abs=1e-6)
    for name in ("bits_per_byte", "bpb"):
        metric = metrics.get(name, "multiclass")
        assert metric.name == name
        assert _streamed(metric, logits, labels) == pytest.approx(nats.mean() / np.log(2),
                                                                  rel=1e-5)
    with pytest.raises(ValueError, match="argument 'metrics'.*bits_per_byte"):
        metrics.get("bits_per_byte", "regression")


def test_bits_per_byte_weighs_tokens_when_lengths_differ():
    # A batch of 6-token rows merged with one of 2-token rows: every token counts once.
    long, short = np.zeros((2, 6, 4), np.float32), np.zeros((3, 2, 4), np.float32)
    short[..., 0] = 10.0  # confident and right: ~0 nats per token
    metric = metrics.get("bits_per_byte", "multiclass")
    stats = metrics.merge(metric.stats(long, np.zeros((2, 6), np.int32), jnp.ones(2)),
                          metric.stats(short, np.zeros((3, 2), np.int32), jnp.ones(3)))
    uniform_bits = np.log(4) / np.log(2)
    expected = (12 * uniform_bits + 6 * float(np.log1p(3 * np.exp(-10.0))) / np.log(2)) / 18
    assert float(metric.result(stats)) == pytest.approx(expected, rel=1e-5)
