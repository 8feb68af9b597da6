"""Count metrics: true/false positives/negatives and the confusion matrix.

Keras' binary semantics: an example is predicted positive when its probability is above
0.5 (its logit above 0); ``tp``, ``fp``, ``tn`` and ``fn`` count examples (every output
position of a multi-label output), weighted by the sample weights when there are some.
They are refused for a multiclass loss (one-vs-rest counts would be ambiguous: use
``"confusion"``, whose diagonal and margins hold them). ``"confusion"`` is the matrix
``[classes][classes]`` (rows: true class, columns: predicted; 2 x 2 for binary), as
``sklearn.metrics.confusion_matrix`` lays it out.

    trainer = jdl.Trainer(model, loss="binary_crossentropy", metrics=["tp", "fn"])
    trainer.evaluate(state, x, y, confusion=True)["confusion"]     # [[tn, fp], [fn, tp]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl import errors
from jaxdl import metrics as metrics_lib

COUNTS = ("tp", "fp", "tn", "fn")
NAMES = (*COUNTS, "confusion")


def _binary(outputs: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(predicted, actual) bool [B, positions]: logit > 0 is probability > 0.5."""
    flat = outputs.reshape(outputs.shape[0], -1)
    return flat > 0, labels.reshape(flat.shape) > 0.5


def _count_stats(name: str):
    def stats(outputs, labels, mask):
        predicted, actual = _binary(outputs, labels)
        hit = {"tp": predicted & actual, "fp": predicted & ~actual,
               "tn": ~predicted & ~actual, "fn": ~predicted & actual}[name]
        return jnp.sum(hit * mask[:, None].astype(jnp.float32))

    return stats


def _confusion_stats(task: str):
    def stats(outputs, labels, mask):
        if task == "binary":
            predicted, actual = _binary(outputs, labels)
            classes = 2
        else:
            predicted = jnp.argmax(outputs, axis=-1)
            if labels.ndim == outputs.ndim and labels.shape[-1] == outputs.shape[-1]:
                labels = jnp.argmax(labels, axis=-1)  # one-hot or probabilities
            actual = labels.reshape(predicted.shape)
            classes = outputs.shape[-1]
        predicted = predicted.reshape(mask.shape[0], -1).astype(jnp.int32)
        actual = actual.reshape(predicted.shape).astype(jnp.int32)
        weight = jnp.broadcast_to(mask[:, None].astype(jnp.float32), predicted.shape)
        cells = (actual * classes + predicted).reshape(-1)
        matrix = jnp.zeros(classes * classes, jnp.float32).at[cells].add(weight.reshape(-1))
        return matrix.reshape(classes, classes)

    return stats


def _same(stats):
    return stats


def build(name: str, task: str) -> metrics_lib.Metric:
    """The count metric ``name`` (one of :data:`NAMES`) for a loss's ``task``."""
    if name in COUNTS and task == "binary":
        return metrics_lib.Metric(name, _count_stats(name), _same)
    if name == "confusion" and task in ("binary", "multiclass"):
        return metrics_lib.Metric(name, _confusion_stats(task), _same)
    needs = "a binary loss (binary_crossentropy)" if name in COUNTS else "a classification loss"
    fix = ("use metrics=['confusion'] for a multiclass loss (its rows and columns hold "
           "every class's counts)" if name in COUNTS and task == "multiclass"
           else "drop the metric or pick a loss that matches the labels")
    if task == "custom":
        raise errors.input_error(
            "task", f"the task of the loss for metric {name!r} (a callable loss has none)",
            "None", "pass Trainer(..., loss=fn, task='binary' | 'multiclass')")
    raise errors.input_error("metrics", f"metric {name!r} to be used with {needs}",
                             f"a {task} loss", fix)
