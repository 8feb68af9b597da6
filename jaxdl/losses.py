"""Named losses over ``optax.losses``, as per-example functions.

A loss here is a :class:`Loss`: a per-example function ``(outputs, labels) -> [B]``
(the step takes the masked mean, so padded examples never count), the *link*
that turns model outputs into predictions (sigmoid, softmax or identity), the
task it implies (which the metrics follow), and a host-side label check run at
the data boundary before anything compiles.

Example::

    loss = jdl.losses.get("binary_crossentropy")
    loss.per_example(logits, labels)   # [B] float32
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import errors


class PerExampleLoss(Protocol):
    def __call__(self, outputs: jax.Array, labels: jax.Array) -> jax.Array: ...


class Loss(NamedTuple):
    """A loss with what the kit needs to know about it.

    Attributes:
      name: registry name (or the callable's name).
      per_example: ``(outputs [B, ...], labels [B, ...]) -> [B]`` float loss.
      link: outputs -> predictions (probabilities for classification).
      task: "binary", "multiclass", "regression" or "custom"; the metrics follow it.
      check_labels: host-side ``(labels, output_shape) -> None``; raises on bad labels.
    """

    name: str
    per_example: PerExampleLoss
    link: Callable[[jax.Array], jax.Array]
    task: str
    check_labels: Callable[[np.ndarray, tuple[int, ...]], None]


def _mean_over_features(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).mean(axis=1)


def _as_output_shape(labels: jax.Array, outputs: jax.Array) -> jax.Array:
    # Keras accepts y of shape (B,) against a (B, 1) output; so do we.
    if labels.shape != outputs.shape and labels.size == outputs.size:
        labels = labels.reshape(outputs.shape)
    return labels.astype(outputs.dtype)


def _binary_ce(outputs, labels):
    labels = _as_output_shape(labels, outputs)
    return _mean_over_features(optax.losses.sigmoid_binary_cross_entropy(outputs, labels))


def _categorical_ce(outputs, labels):
    return optax.losses.softmax_cross_entropy(outputs, labels.astype(outputs.dtype))


def _sparse_categorical_ce(outputs, labels):
    # Sequences (outputs [B, T, V], labels [B, T]): the mean over the T positions.
    labels = labels.reshape(outputs.shape[:-1]).astype(jnp.int32)
    return _mean_over_features(
        optax.losses.softmax_cross_entropy_with_integer_labels(outputs, labels))


def _mse(outputs, labels):
    labels = _as_output_shape(labels, outputs)
    return _mean_over_features(optax.losses.squared_error(outputs, labels))


def _mae(outputs, labels):
    return _mean_over_features(jnp.abs(outputs - _as_output_shape(labels, outputs)))


def _huber(outputs, labels, delta: float = 1.0):
    labels = _as_output_shape(labels, outputs)
    return _mean_over_features(optax.losses.huber_loss(outputs, labels, delta=delta))


# Label checks: host-side numpy, before any compile, so a bad label is an error
# that names the argument instead of a silent NaN or a clipped gather.


def _bad_labels(expected: str, given: str, fix: str) -> errors.InputError:
    return errors.input_error("y", expected, given, fix)


def _check_finite(labels: np.ndarray) -> None:
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        bad = int(np.argmax(~np.isfinite(labels).reshape(len(labels), -1).all(axis=1)))
        raise _bad_labels("finite labels", f"a non-finite label at row {bad}",
                          "drop or impute those rows with jdl.data.clean(x, y)")


def _check_binary(labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
    _check_finite(labels)
    if labels[0].size != int(np.prod(output_shape)):
        raise _bad_labels(f"{int(np.prod(output_shape))} label value(s) per example to match "
                          f"the model's output shape {output_shape}",
                          f"labels of shape {labels.shape}",
                          "binary_crossentropy needs one output unit per label "
                          "(e.g. features=(..., 1)) and labels in {0, 1}")
    if labels.size and (labels.min() < 0 or labels.max() > 1):
        raise _bad_labels("labels in [0, 1] for binary_crossentropy",
                          f"values from {labels.min()} to {labels.max()}",
                          "for more than two classes use sparse_categorical_crossentropy "
                          "with one output unit per class")


def _check_sparse(labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
    num_classes = output_shape[-1] if output_shape else 1
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise _bad_labels("integer class labels", "non-integer float labels",
                              "pass class indices (e.g. y.astype(int)) or use "
                              "categorical_crossentropy for one-hot/probability labels")
    elif labels.dtype.kind not in "iub":
        raise _bad_labels("integer class labels", f"labels of dtype {labels.dtype}",
                          "encode classes as integers 0..num_classes-1")
    # One class index per output position: [B] for outputs [B, V], [B, T] for [B, T, V].
    positions = int(np.prod(output_shape[:-1]))
    if len(labels) and labels[0].size != positions:
        raise _bad_labels(f"{positions} class label(s) per example to match the model's "
                          f"output shape {tuple(output_shape)} (one per position)",
                          f"labels of shape {labels.shape}",
                          "give one class index per output position (for a sequence model, "
                          "labels [B, T] beside logits [B, T, V])")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _bad_labels(f"class labels in [0, {num_classes - 1}] (the model has "
                          f"{num_classes} output units)",
                          f"labels from {labels.min()} to {labels.max()}",
                          "give the last layer one unit per class, or re-encode the labels")


def _check_categorical(labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
    _check_finite(labels)
    if labels.shape[1:] != tuple(output_shape):
        raise _bad_labels(f"one-hot labels of shape (n, {', '.join(map(str, output_shape))})",
                          f"labels of shape {labels.shape}",
                          "one-hot encode the labels (jax.nn.one_hot) or use "
                          "sparse_categorical_crossentropy for integer labels")
    if labels.size and (labels.min() < 0 or labels.max() > 1):
        raise _bad_labels("probabilities in [0, 1]", f"values from {labels.min()} to "
                          f"{labels.max()}", "pass one-hot or probability labels")


def _check_regression(labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
    _check_finite(labels)
    if labels[0].size != int(np.prod(output_shape)):
        raise _bad_labels(f"{int(np.prod(output_shape))} target value(s) per example to match "
                          f"the model's output shape {output_shape}",
                          f"labels of shape {labels.shape}",
                          "make the last layer's width equal the number of targets")


def _check_nothing(labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
    _check_finite(labels)


_identity = lambda outputs: outputs
_softmax = lambda outputs: jax.nn.softmax(outputs, axis=-1)

LOSSES: dict[str, Loss] = {
    "binary_crossentropy": Loss("binary_crossentropy", _binary_ce, jax.nn.sigmoid, "binary",
                                _check_binary),
    "categorical_crossentropy": Loss("categorical_crossentropy", _categorical_ce, _softmax,
                                     "multiclass", _check_categorical),
    "sparse_categorical_crossentropy": Loss("sparse_categorical_crossentropy",
                                            _sparse_categorical_ce, _softmax, "multiclass",
                                            _check_sparse),
    "mse": Loss("mse", _mse, _identity, "regression", _check_regression),
    "mae": Loss("mae", _mae, _identity, "regression", _check_regression),
    "huber": Loss("huber", _huber, _identity, "regression", _check_regression),
}


TASKS = ("binary", "multiclass", "regression")
# What a callable loss's predictions are, by the task it serves.
_LINKS = {"binary": jax.nn.sigmoid, "multiclass": _softmax, "regression": _identity}


def per_example_values(fn: PerExampleLoss, name: str) -> PerExampleLoss:
    """A user's loss, checked when traced: one value per example ([B]; [B, ...] is reduced
    by its mean over the rest). A scalar is refused: the step takes the masked mean itself,
    so that the padded rows of a last batch never count."""

    def per_example(outputs, labels):
        values = jnp.asarray(fn(outputs, labels))
        batch = jax.tree.leaves(outputs)[0].shape[0]
        if values.ndim == 0 or values.shape[0] != batch:
            raise errors.input_error(
                "loss", f"one loss value per example, [{batch}] or [{batch}, ...] (the kit "
                "takes the masked mean so that the padded rows of the last batch do not count)",
                f"{name} returning shape {tuple(values.shape)}",
                "return the per-example losses: drop the final .mean() (e.g. "
                "optax.losses.squared_error(outputs, labels).mean(axis=-1))")
        return values.reshape(batch, -1).mean(axis=1) if values.ndim > 1 else values

    per_example.__name__ = name
    return per_example


def _no_loss(outputs, labels):
    raise errors.input_error("loss", "a loss to evaluate with (validation, evaluate)",
                             "None (a custom train_step without one)",
                             "pass Trainer(..., loss=..., train_step=...) to evaluate")


def without_loss(task: str | None = None) -> Loss:
    """The loss of a Trainer whose own ``train_step`` needs none: ``predict`` follows
    ``task``; evaluating says a loss is needed."""
    if task is not None and task not in TASKS:
        raise errors.unknown_name("task", "task", task, list(TASKS))
    return Loss("none", _no_loss, _LINKS.get(task, _identity), task or "custom", _check_nothing)


def get(loss: str | Loss | PerExampleLoss, task: str | None = None) -> Loss:
    """Resolves a loss name, a :class:`Loss`, or a per-example callable.

    A callable ``fn(outputs, labels) -> [B]`` keeps the ``task`` it is given ("binary",
    "multiclass" or "regression"): the metrics and ``predict``'s link (sigmoid, softmax,
    identity) follow it; without one it is a "custom" loss whose predictions are the raw
    outputs and which takes no classification metric. ``outputs`` and ``labels`` may be
    pytrees (a VAE's ``(reconstruction, mean, logvar)`` against ``y = x``).
    """
    if task is not None and task not in TASKS:
        raise errors.unknown_name("task", "task", task, list(TASKS))
    if isinstance(loss, Loss):
        return loss if task is None else loss._replace(task=task, link=_LINKS[task])
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise errors.unknown_name("loss", "loss", loss, list(LOSSES), callable_ok=True)
        if task is not None and task != LOSSES[loss].task:
            raise errors.input_error("task", f"{LOSSES[loss].task!r} (the task of {loss}) or "
                                     "None", repr(task), "drop task=, it follows a named loss")
        return LOSSES[loss]
    if callable(loss):
        name = getattr(loss, "__name__", type(loss).__name__)
        return Loss(name, per_example_values(loss, name), _LINKS.get(task, _identity),
                    task or "custom", _check_nothing)
    raise errors.type_error("loss", "a loss name, a jdl.losses.Loss or a callable "
                            "fn(outputs, labels) -> per-example losses", errors.describe(loss),
                            f"pass one of {sorted(LOSSES)}")
