"""Streaming metrics as additive pytrees.

A :class:`Metric` turns one batch into *statistics* (a pytree of sums and
counts) and statistics into a value. Statistics of several batches, epochs or
devices combine by plain addition (``tree_map(add)``, ``lax.psum``), so a
metric accumulated over padded, masked batches equals the metric over the
full set exactly (AUC up to its histogram resolution).

Example::

    acc = jdl.metrics.get("accuracy", task="binary")
    stats = acc.stats(logits, labels, mask)     # pytree of float32 sums
    acc.result(stats)                           # scalar
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import errors

Stats = Any


class Metric(NamedTuple):
    """A streaming metric.

    Attributes:
      name: the key it reports under (``val_`` is prefixed for validation).
      stats: ``(outputs [B, ...], labels [B, ...], mask [B]) -> Stats``, additive. With
        sample weights the step passes ``weight * mask`` as the mask: a weighted mean is
        normalised by the sum of the weights (Keras' ``weighted_metrics``).
      result: ``Stats -> scalar``.
      per_example: set for a loss (``loss``, a per-output ``<name>_loss``):
        ``(outputs, labels) -> [B]``, reported like the training objective,
        ``sum(weight * loss * mask) / sum(mask)`` (see :func:`loss_stats`).
    """

    name: str
    stats: Callable[[jax.Array, jax.Array, jax.Array], Stats]
    result: Callable[[Stats], jax.Array]
    per_example: Callable[[jax.Array, jax.Array], jax.Array] | None = None


# Metric names that are better when higher; everything else (losses, errors) is minimized.
HIGHER_IS_BETTER = ("acc", "auc", "f1", "precision", "recall")


def mode(name: str) -> str:
    """"max" for accuracy-like names (``val_accuracy``, ``auc``...), "min" for the rest."""
    return "max" if any(k in name for k in HIGHER_IS_BETTER) else "min"


def ratio(stats: Stats) -> jax.Array:
    """``total / count`` of a ``(total, count)`` pair (0 when nothing was counted)."""
    total, count = stats
    return total / jnp.maximum(count, 1e-12)


def mean_stats(values: jax.Array, mask: jax.Array) -> Stats:
    """Statistics of a masked mean of per-example ``values`` [B]: (sum, count)."""
    values = values.astype(jnp.float32)
    return (jnp.sum(values * mask), jnp.sum(mask).astype(jnp.float32))


def loss_stats(values: jax.Array, mask: jax.Array, weight: jax.Array | None = None) -> Stats:
    """Statistics of a loss [B]: ``(sum(weight * values * mask), sum(mask))``, Keras' weighted
    loss (the weights scale examples; the count stays the real rows'). ``weight`` None:
    exactly :func:`mean_stats`."""
    if weight is None:
        return mean_stats(values, mask)
    values = values.astype(jnp.float32)
    return (jnp.sum(values * (weight * mask)), jnp.sum(mask).astype(jnp.float32))


def batch_stats(metrics: Any, outputs: Any, labels: Any, mask: jax.Array,
                weight: jax.Array | None = None) -> dict[str, Stats]:
    """``{name: stats}`` of one batch: losses by :func:`loss_stats`, the other metrics on
    ``weight * mask`` (the mask itself without weights)."""
    weighted = mask if weight is None else weight * mask
    return {m.name: loss_stats(m.per_example(outputs, labels), mask, weight)
            if m.per_example is not None else m.stats(outputs, labels, weighted)
            for m in metrics}


def mean_metric(name: str, per_example: Callable[[jax.Array, jax.Array], jax.Array]) -> Metric:
    """A metric that is the masked mean of a per-example value ``fn(outputs, labels) -> [B]``."""

    def stats(outputs, labels, mask):
        return mean_stats(per_example(outputs, labels), mask)

    return Metric(name, stats, ratio)


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def _binary_predictions(outputs, labels):
    # Outputs are logits: logit > 0 is probability > 0.5.
    return _flat(outputs) > 0, _flat(labels).reshape(_flat(outputs).shape) > 0.5


def _class_predictions(outputs, labels):
    predicted = jnp.argmax(outputs, axis=-1)
    if labels.ndim == outputs.ndim and labels.shape[-1] == outputs.shape[-1]:
        labels = jnp.argmax(labels, axis=-1)  # one-hot or probabilities
    return predicted, labels.reshape(predicted.shape).astype(predicted.dtype)


def _binary_accuracy(outputs, labels):
    predicted, actual = _binary_predictions(outputs, labels)
    return jnp.mean(predicted == actual, axis=1)


def _multiclass_accuracy(outputs, labels):
    predicted, actual = _class_predictions(outputs, labels)
    return (predicted == actual).reshape(predicted.shape[0], -1).mean(axis=1)


def _confusion_stats(task: str, num_classes_hint: int | None = None):
    """tp, fp, fn sums: scalars for binary, per-class vectors for multiclass."""

    def stats(outputs, labels, mask):
        if task == "binary":
            predicted, actual = _binary_predictions(outputs, labels)
            weight = mask[:, None]
        else:
            predicted, actual = _class_predictions(outputs, labels)
            classes = outputs.shape[-1]
            predicted = jax.nn.one_hot(predicted.reshape(len(mask), -1), classes) > 0
            actual = jax.nn.one_hot(actual.reshape(len(mask), -1), classes) > 0
            weight = mask[:, None, None]
        axes = tuple(range(predicted.ndim - 1)) if task != "binary" else None
        tp = jnp.sum((predicted & actual) * weight, axis=axes)
        fp = jnp.sum((predicted & ~actual) * weight, axis=axes)
        fn = jnp.sum((~predicted & actual) * weight, axis=axes)
        return (tp, fp, fn)

    return stats


def _safe_div(a, b):
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)


def _precision(stats):
    tp, fp, _ = stats
    return jnp.mean(_safe_div(tp, tp + fp))


def _recall(stats):
    tp, _, fn = stats
    return jnp.mean(_safe_div(tp, tp + fn))


def _f1(stats):
    tp, fp, fn = stats
    return jnp.mean(_safe_div(2 * tp, 2 * tp + fp + fn))


AUC_BINS = 2000


def _auc_stats(outputs, labels, mask):
    # Histograms of predicted probabilities for positives and negatives; the
    # ROC area follows exactly from the two histograms (ties within a bin
    # count one half), and histograms add across batches and devices.
    probs = jax.nn.sigmoid(_flat(outputs).astype(jnp.float32)).reshape(-1)
    positive = (_flat(labels).reshape(-1) > 0.5).astype(jnp.float32)
    weight = jnp.repeat(mask, probs.size // mask.size)
    bins = jnp.clip((probs * AUC_BINS).astype(jnp.int32), 0, AUC_BINS - 1)
    pos = jnp.zeros(AUC_BINS, jnp.float32).at[bins].add(positive * weight)
    neg = jnp.zeros(AUC_BINS, jnp.float32).at[bins].add((1 - positive) * weight)
    return (pos, neg)


def _auc_result(stats):
    pos, neg = stats
    positives_above = jnp.cumsum(pos[::-1])[::-1] - pos  # strictly higher bins
    pairs = jnp.sum(neg * (positives_above + 0.5 * pos))
    return _safe_div(pairs, jnp.sum(pos) * jnp.sum(neg))


def _squared_error(outputs, labels):
    outputs = _flat(outputs)
    return jnp.mean((outputs - _flat(labels).reshape(outputs.shape)) ** 2, axis=1)


def _absolute_error(outputs, labels):
    outputs = _flat(outputs)
    return jnp.mean(jnp.abs(outputs - _flat(labels).reshape(outputs.shape)), axis=1)


def _bits_per_token_stats(outputs, labels, mask):
    # Sums over tokens, not means over rows: bits per byte of a byte-level language model
    # (outputs [B, T, 256], labels [B, T]) is the mean over every unmasked token, also when
    # batches of different lengths are merged.
    labels = labels.reshape(outputs.shape[:-1]).astype(jnp.int32)
    nats = optax.losses.softmax_cross_entropy_with_integer_labels(outputs, labels)
    nats = nats.reshape(nats.shape[0], -1).astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    return (jnp.sum(nats * mask[:, None]), jnp.sum(mask) * nats.shape[1])


def _bits_result(stats):
    return ratio(stats) / np.log(2.0)


def _build(name: str, task: str) -> Metric:
    from jaxdl import count_metrics  # its own module: counts and the confusion matrix

    if name in count_metrics.NAMES:
        return count_metrics.build(name, task)
    classification = task in ("binary", "multiclass")
    if name == "accuracy" and classification:
        fn = _binary_accuracy if task == "binary" else _multiclass_accuracy
        return mean_metric("accuracy", fn)
    if name in ("precision", "recall", "f1") and classification:
        result = {"precision": _precision, "recall": _recall, "f1": _f1}[name]
        return Metric(name, _confusion_stats(task), result)
    if name == "auc" and task == "binary":
        return Metric("auc", _auc_stats, _auc_result)
    if name in ("bits_per_byte", "bpb") and task == "multiclass":
        return Metric(name, _bits_per_token_stats, _bits_result)
    if name == "mse":
        return mean_metric("mse", _squared_error)
    if name == "mae":
        return mean_metric("mae", _absolute_error)
    needs = {"auc": "a binary loss", "bits_per_byte": "a multiclass (token) loss",
             "bpb": "a multiclass (token) loss"}.get(name, "a classification loss")
    if task == "custom":  # a callable loss: say which task it serves
        raise errors.input_error(
            "task", f"the task of the loss for metric {name!r} (a callable loss has none)",
            "None", "pass Trainer(..., loss=fn, task='binary' | 'multiclass' | 'regression') "
            "so that the metrics and predict's link follow it")
    raise errors.input_error(
        "metrics", f"metric {name!r} to be used with {needs}", f"a {task} loss",
        "drop the metric or pick a loss that matches the labels "
        "(binary_crossentropy, sparse_categorical_crossentropy, ...)")


METRICS = ("accuracy", "precision", "recall", "f1", "auc", "mse", "mae", "bits_per_byte", "bpb",
           "tp", "fp", "tn", "fn", "confusion")


def get(metric: str | Metric | Callable, task: str) -> Metric:
    """Resolves a metric name, a :class:`Metric`, or a per-example callable for a task.

    Args:
      metric: a name in :data:`METRICS`, a :class:`Metric`, or ``fn(outputs, labels) -> [B]``
        (reported as the masked mean of its values under ``fn.__name__``).
      task: the loss's task: "binary", "multiclass", "regression" or "custom".
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in METRICS:
            raise errors.unknown_name("metrics", "metric", metric, list(METRICS),
                                     callable_ok=True)
        return _build(metric, task)
    if callable(metric):
        return mean_metric(getattr(metric, "__name__", type(metric).__name__), metric)
    raise errors.type_error("metrics", "metric names, jdl.metrics.Metric objects or callables",
                            errors.describe(metric), f"use names from {list(METRICS)}")


def loss_metric(per_example_loss: Callable, name: str = "loss") -> Metric:
    """The ``loss`` entry of every report: masked mean of the per-example loss
    (weighted like the objective, see :func:`loss_stats`)."""
    return mean_metric(name, per_example_loss)._replace(per_example=per_example_loss)


def _is_min(path) -> bool:
    return any(str(getattr(k, "key", "")).startswith("min_") for k in path)


def empty(stats: Stats) -> Stats:
    """The identity of :func:`merge` shaped like ``stats`` (zeros; dtype max for ``min_``)."""
    import numpy as onp

    def identity(path, x):
        if _is_min(path):
            return onp.full(x.shape, onp.iinfo(x.dtype).max if onp.issubdtype(x.dtype, onp.integer)
                            else onp.inf, x.dtype)
        return onp.zeros(x.shape, x.dtype)

    return jax.tree_util.tree_map_with_path(identity, stats)


def merge(a: Stats, b: Stats) -> Stats:
    """Combines statistics of two disjoint sets of examples.

    Sums, except entries under a dict key starting with ``min_`` (e.g. the first
    step that went non-finite), which combine by minimum.
    """

    def combine(path, x, y):
        return jnp.minimum(x, y) if _is_min(path) else x + y

    return jax.tree_util.tree_map_with_path(combine, a, b)


def results(metrics: tuple[Metric, ...], stats: dict[str, Stats]) -> dict[str, float]:
    """Host-side: final values as Python floats, in the metrics' order."""
    stats = jax.device_get(stats)
    return {m.name: float(np.asarray(m.result(stats[m.name]))) for m in metrics}
