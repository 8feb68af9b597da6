"""Example weights: checked ``sample_weight`` and ``class_weight`` turned into it.

Keras semantics, decided here and in :func:`jaxdl.metrics.loss_stats`: a batch's loss is
``sum(w_i * l_i) / sum(mask_i)`` over its real rows, and weighted metrics normalise by the
sum of the weights. ``class_weight={label: weight}`` is the same as passing, per example,
the weight of its label (one-hot labels: of their argmax), times any ``sample_weight``.

    loss = jdl.losses.get("binary_crossentropy")
    w = jdl.weights.from_class_weight(y, {0: 1.0, 1: 3.0}, loss)    # [n] float32
    jdl.weights.balanced(y)             # {label: n / (classes * count)}, as sklearn
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl import losses as losses_lib
from jaxdl.data import trees


def check_sample_weight(weight: Any, num_examples: int, argument: str = "sample_weight"
                        ) -> np.ndarray:
    """``weight`` as float32 [n]: one finite, non-negative number per example."""
    try:
        array = np.asarray(weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise errors.type_error(argument, "one number per example", errors.describe(weight),
                                f"pass {argument}=np.ones(n)") from None
    if array.ndim != 1 or len(array) != num_examples:
        raise errors.input_error(argument, f"one weight per example, shape ({num_examples},)",
                                 f"shape {array.shape}", f"pass {num_examples} weights, "
                                 "one per row of x")
    bad = np.flatnonzero(~np.isfinite(array) | (array < 0))
    if len(bad):
        raise errors.input_error(argument, "finite weights >= 0",
                                 f"{array[bad[0]]} at row {bad[0]}",
                                 "replace it (a weight of 0 leaves the example out)")
    return array.astype(np.float32)


def labels_of(y: Any, loss: losses_lib.Loss) -> np.ndarray:
    """The class label of every example [n] (int), for ``class_weight``: a binary label
    above 0.5 is 1; one-hot (categorical_crossentropy) labels give their argmax."""
    if trees.is_tree(y):
        raise errors.input_error("class_weight", "None for labels that are a pytree (a "
                                 "model with several outputs)", "a class_weight",
                                 "pass per-example weights as sample_weight instead")
    y = np.asarray(y)
    one_label = y.reshape(len(y), -1).shape[1] == 1
    if loss.task == "binary" and one_label:
        return (y.reshape(len(y)) > 0.5).astype(np.int64)
    if loss.name == "categorical_crossentropy" and y.ndim == 2:
        return np.argmax(y, axis=1)  # one-hot or probabilities
    if loss.task == "multiclass" and one_label:
        return y.reshape(len(y)).astype(np.int64)
    raise errors.input_error("class_weight", "a classification loss with one label per "
                             "example (binary, sparse or one-hot)",
                             f"a {loss.task} loss with labels of shape {y.shape}",
                             "pass per-example weights as sample_weight instead")


def balanced(labels: np.ndarray) -> dict[int, float]:
    """sklearn's ``compute_class_weight("balanced")``: ``n / (classes * count(label))``."""
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): float(len(labels) / (len(classes) * n))
            for c, n in zip(classes, counts, strict=True)}


def from_class_weight(y: Any, class_weight: Mapping[Any, float] | str,
                      loss: losses_lib.Loss) -> np.ndarray:
    """Per-example weights [n] float32 from ``{label: weight}`` or ``"balanced"``.

    Labels missing from the mapping weigh 1 (Keras); a label the data does not have is
    an error (a typo would otherwise pass silently).
    """
    labels = labels_of(y, loss)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise errors.input_error("class_weight", "'balanced' or a {label: weight} mapping",
                                     repr(class_weight), "pass class_weight='balanced'")
        class_weight = balanced(labels)
    if not isinstance(class_weight, Mapping):
        raise errors.type_error("class_weight", "'balanced' or a {label: weight} mapping",
                                errors.describe(class_weight),
                                "pass e.g. class_weight={0: 1.0, 1: 3.0}")
    present = set(np.unique(labels).tolist())
    table = {}
    for label, weight in class_weight.items():
        key = int(label) if isinstance(label, int | np.integer | str) and str(
            label).lstrip("-").isdigit() else label
        if key not in present:
            raise errors.input_error("class_weight", f"labels the data has {sorted(present)}",
                                     f"label {label!r}", "drop it, or check the label encoding "
                                     "(class indices 0..num_classes-1)")
        if isinstance(weight, bool) or not isinstance(weight, int | float | np.number) or not (
                np.isfinite(weight) and weight >= 0):
            raise errors.input_error(f"class_weight[{label!r}]", "a finite weight >= 0",
                                     repr(weight), "pass e.g. class_weight={0: 1.0, 1: 3.0}")
        table[key] = np.float32(weight)
    out = np.ones(len(labels), np.float32)
    for key, weight in table.items():
        out[labels == key] = weight
    return out


def combined(y: Any, loss: losses_lib.Loss, sample_weight: np.ndarray | None,
             class_weight: Mapping[Any, float] | str | None) -> np.ndarray | None:
    """``sample_weight * class weights`` (either may be None; None when both are)."""
    if class_weight is None:
        return sample_weight
    weights = from_class_weight(y, class_weight, loss)
    return weights if sample_weight is None else sample_weight * weights
