"""Losses and metrics per named output, for a model that returns a dict of outputs.

Like Keras' multi-output models::

    trainer = jdl.Trainer(model, loss={"a": "binary_crossentropy", "b": "mse"},
                          loss_weights={"a": 1.0, "b": 0.5},
                          metrics={"a": ["accuracy"], "b": ["mae"]})

The model returns ``{"a": [B, ...], "b": [B, ...]}`` and ``y`` is ``{"a": [n, ...],
"b": [n, ...]}``. The training objective is ``sum_k loss_weights[k] * loss_k`` per
example; every report holds that total as ``loss``, each output's own loss as
``<k>_loss`` and each metric as ``<k>_<metric>`` (``val_<k>_<metric>`` on validation).
A per-output loss or metric is only a wrapper that selects ``outputs[k]`` and
``labels[k]``; everything else (masks, weights, devices) is the kit's as for one output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl import losses as losses_lib
from jaxdl import metrics as metrics_lib


def _select(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
    """``fn`` applied to output ``key``'s outputs and labels."""
    return lambda outputs, labels, *rest: fn(outputs[key], labels[key], *rest)


def _keys_error(argument: str, what: str, expected: Sequence[str], given: Any) -> Exception:
    return errors.input_error(argument, f"{what} with the keys of the loss {sorted(expected)}",
                              repr(sorted(given)) if isinstance(given, Mapping | set | list)
                              else errors.describe(given),
                              "give the model's outputs, the labels and loss= the same names")


def _loss_weights(weights: Mapping[str, Any] | None, names: Sequence[str]) -> dict[str, float]:
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise errors.input_error("loss_weights", f"keys among the loss's outputs {list(names)}",
                                 repr(unknown), "name only outputs that have a loss")
    out = {}
    for name in names:
        value = weights.get(name, 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not (
                math.isfinite(value) and value >= 0):
            raise errors.input_error(f"loss_weights[{name!r}]", "a finite number >= 0",
                                     repr(value), "pass e.g. loss_weights={'a': 1.0, 'b': 0.5}")
        out[name] = float(value)
    return out


def _check_labels(parts: dict[str, losses_lib.Loss]) -> Callable[[Any, Any], None]:
    names = list(parts)

    def check(labels: Any, output_shape: Any) -> None:
        if not isinstance(output_shape, Mapping) or set(output_shape) != set(names):
            raise _keys_error("loss", "a model returning a dict of outputs", names,
                              list(output_shape) if isinstance(output_shape, Mapping)
                              else output_shape)
        if not isinstance(labels, Mapping) or set(labels) != set(names):
            raise _keys_error("y", "a dict of labels", names, list(labels)
                              if isinstance(labels, Mapping) else labels)
        for name, loss in parts.items():
            try:
                loss.check_labels(np.asarray(labels[name]), tuple(output_shape[name]))
            except errors.InputError as e:
                raise (e.renamed(f"y[{name!r}]") if e.argument == "y" else e) from None

    return check


def per_output_loss(loss: Mapping[str, Any], loss_weights: Mapping[str, Any] | None
                    ) -> tuple[losses_lib.Loss, tuple[metrics_lib.Metric, ...]]:
    """The total :class:`~jaxdl.losses.Loss` of a dict of losses, and the ``<k>_loss``
    metrics that report each output's own.

    ``per_example(outputs, labels) -> [B]`` is ``sum_k w_k * loss_k(outputs[k],
    labels[k])``; ``link`` maps each output through its loss's link (``predict`` returns
    ``{k: [n, ...]}``); ``check_labels`` checks the output names and each output's labels.
    """
    if not loss:
        raise errors.input_error("loss", "a loss per output, e.g. {'a': 'mse'}", "{}",
                                 "name at least one output")
    if any(not isinstance(k, str) for k in loss):
        raise errors.type_error("loss", "output names (str keys)", repr(list(loss)),
                                "key the losses by the names of the model's outputs")
    parts = {k: losses_lib.get(v) for k, v in loss.items()}
    weights = _loss_weights(loss_weights, list(parts))
    per_output = {k: _select(v.per_example, k) for k, v in parts.items()}

    def per_example(outputs, labels):
        total = None
        for name, fn in per_output.items():
            value = weights[name] * fn(outputs, labels)
            total = value if total is None else total + value
        return total

    def link(outputs):
        return {k: v.link(outputs[k]) for k, v in parts.items()}

    name = "+".join(f"{k}:{v.name}" for k, v in parts.items())
    total = losses_lib.Loss(name, per_example, link, "custom", _check_labels(parts))
    reported = tuple(metrics_lib.loss_metric(fn, f"{k}_loss") for k, fn in per_output.items())
    return total, reported


def per_output_metrics(metrics: Mapping[str, Any], loss: Mapping[str, Any]
                       ) -> tuple[metrics_lib.Metric, ...]:
    """``<k>_<name>`` metrics on output ``k``, each following that output's loss's task."""
    unknown = sorted(set(metrics) - set(loss))
    if unknown:
        raise errors.input_error("metrics", f"keys among the loss's outputs {list(loss)}",
                                 repr(unknown), "key the metrics by the outputs that have a loss")
    out = []
    for key, names in metrics.items():
        names = [names] if isinstance(names, str) else list(names)
        task = losses_lib.get(loss[key]).task
        for name in names:
            metric = metrics_lib.get(name, task)
            out.append(metric._replace(
                name=f"{key}_{metric.name}", stats=_select(metric.stats, key),
                per_example=None if metric.per_example is None
                else _select(metric.per_example, key)))
    return tuple(out)


def resolve(loss: Any, loss_weights: Mapping[str, Any] | None, metrics: Any,
            task: str | None, custom_step: bool = False
            ) -> tuple[losses_lib.Loss, tuple[metrics_lib.Metric, ...]]:
    """A Trainer's ``(loss, metrics)``: one loss and its metrics, or a loss per output.

    ``custom_step``: the Trainer has its own ``train_step``, so ``loss`` may be None.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(loss, Mapping):
        if task is not None:
            raise errors.input_error("task", "None with a loss per output (each output's "
                                     "task follows its loss)", repr(task), "drop task=")
        total, reported = per_output_loss(loss, loss_weights)
        if metrics and not isinstance(metrics, Mapping):
            raise errors.input_error("metrics", "metrics per output, e.g. {'a': ['accuracy']}, "
                                     "with a loss per output", repr(list(metrics)),
                                     f"key them by output: metrics={{{next(iter(loss))!r}: "
                                     f"{list(metrics)!r}}}")
        return total, reported + per_output_metrics(metrics or {}, loss)
    if loss_weights is not None:
        raise errors.input_error("loss_weights", "None with a single loss (weights are per "
                                 "output)", repr(loss_weights),
                                 "pass loss={'a': ..., 'b': ...} or drop loss_weights")
    if isinstance(metrics, Mapping):
        raise errors.input_error("metrics", "a list with a single loss (metrics per output "
                                 "need a loss per output)", repr(dict(metrics)),
                                 "pass loss={name: loss} per output, or metrics=[...]")
    one = (losses_lib.get(loss, task) if loss is not None or not custom_step
           else losses_lib.without_loss(task))
    return one, tuple(metrics_lib.get(m, one.task) for m in metrics)
