"""Pure step functions, built once from (model, loss, optimizer, metrics).

    train_step(state, batch) -> (state, stats)
    eval_step(state, batch)  -> stats
    predict_step(state, x)   -> predictions

A batch is a dict ``{"x": [B, ...], "y": [B, ...], "mask": [B] float32}``, plus
``"weight": [B] float32`` for weighted examples; ``x`` and ``y`` may be pytrees of
arrays [B, ...] (a model with several inputs or outputs). The mask is 0 for padding
rows, so a padded last batch counts only its real examples. ``stats`` maps metric
names (always ``"loss"`` first) to additive statistics (see :mod:`jaxdl.metrics`).
The steps read no globals, print nothing and never leave the device; randomness is
``fold_in(state.rng, state.step)``.

Features wrap the step rather than add flags to it. :func:`make_train_step` composes:

    objective_grad        value and gradients of the loss, normalized by a given Norm
    accumulate_gradients  k micro-batches in a lax.scan, one update (grad_accum_steps)
    batch_mean/spmd_mean  the Norm of one batch, or of a global batch with collectives
    apply_update          the optimizer step; nonfinite.guard wraps it (nan_policy)
    base_step             train_step(state, batch): augment, gradients, update

and ``precision="bfloat16"`` wraps the model's apply (:mod:`jaxdl.precision`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdl import losses as losses_lib
from jaxdl import metrics as metrics_lib
from jaxdl import nonfinite, norms
from jaxdl import precision as precision_lib
from jaxdl.accumulate import (  # noqa: F401 - part of the step API
    accumulate_gradients,
    check_grad_accum_steps,
    check_micro_batches,
    split_micro_batches,
)
from jaxdl.state import TrainState

Batch = dict[str, jax.Array]
Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (params, model_state, batch, key[, norm]) -> ((value, (model_state, stats)), grads)
GradFn = Callable[..., Any]
AxisName = str | tuple[str, ...]


def mode_argument(model: nn.Module) -> str | None:
    """The name of the model's train/eval switch: "train", "training", "deterministic" or None."""
    parameters = inspect.signature(type(model).__call__).parameters
    for name in ("train", "training", "deterministic", "is_training"):
        if name in parameters:
            return name
    return None


def make_apply(model: nn.Module, precision: str = "float32"
               ) -> Callable[..., tuple[jax.Array, Any]]:
    """``apply(params, model_state, x, train, rng) -> (outputs, new_model_state)``.

    Passes the mode to the model under whatever name its ``__call__`` uses, and
    updates mutable collections (batch statistics) only in training. ``precision``:
    the compute dtype policy of :func:`jaxdl.precision.policy_apply`.
    """
    mode = mode_argument(model)

    def apply(params, model_state, x, train: bool, rng=None):
        kwargs = {}
        if mode is not None:
            kwargs[mode] = (not train) if mode == "deterministic" else train
        rngs = {"dropout": rng} if (train and rng is not None) else None
        variables = {"params": params, **model_state}
        if train and model_state:
            outputs, updates = model.apply(variables, x, rngs=rngs, mutable=list(model_state),
                                           **kwargs)
            return outputs, {**model_state, **updates}
        return model.apply(variables, x, rngs=rngs, **kwargs), model_state

    return precision_lib.policy_apply(apply, precision)


def reported_metrics(
    loss: losses_lib.Loss, metrics: Sequence[metrics_lib.Metric]
) -> tuple[metrics_lib.Metric, ...]:
    """Everything a step reports: ``loss`` first, then the given metrics."""
    return (metrics_lib.loss_metric(loss.per_example), *metrics)


class Norm(NamedTuple):
    """A batch's loss is ``scale * sum(weight * loss * mask) / count``, ``count`` its real
    examples (``sum(mask)``: Keras' sample-weight semantics; no weight: ``weight = 1``).

    Made once per batch, before any micro-batch split (SPMD: see :func:`spmd_mean`)."""

    scale: float | jax.Array
    count: jax.Array


def objective_grad(apply: Callable[..., Any], loss: losses_lib.Loss,
                   reported: Sequence[metrics_lib.Metric]) -> GradFn:
    """The base gradient function of a training step.

    Args:
      apply: ``apply(params, model_state, x, train, rng)`` from :func:`make_apply`.
      loss: the loss whose per-example values are averaged.
      reported: :func:`reported_metrics`, ``loss`` first.

    Returns:
      ``grad_fn(params, model_state, (x [B, ...], y [B, ...], weight [B] | None, mask [B]),
      key, norm) -> ((value [] float32, (model_state, stats)), grads)``: the loss
      ``sum(weight * loss * mask)`` normalized by ``norm``, the model's new state, the
      metrics' additive statistics, and the gradients with respect to ``params``.
    """

    def objective(params, model_state, batch, key, norm):
        x, y, weight, mask = batch
        outputs, model_state = apply(params, model_state, x, True, key)
        per_example = loss.per_example(outputs, y)
        weighted = mask if weight is None else weight * mask
        value = norm.scale * jnp.sum(per_example * weighted) / jnp.maximum(norm.count, 1e-12)
        # The "loss" statistics from the per-example loss just computed: recomputing
        # it from the outputs cost a byte-level LM 10 % of its step on XLA:CPU.
        stats = {reported[0].name: metrics_lib.loss_stats(per_example, mask, weight),
                 **metrics_lib.batch_stats(reported[1:], outputs, y, mask, weight)}
        return value, (model_state, stats)

    return jax.value_and_grad(objective, has_aux=True)


def batch_mean(grad_fn: GradFn) -> GradFn:
    """``grad_fn(params, model_state, batch, key)`` of the mean over the batch's real rows.

    ``grad_fn`` takes a :class:`Norm` last; this passes the mask's sum (a padded last
    batch counts only its real examples).
    """

    def mean(params, model_state, batch, key):
        return grad_fn(params, model_state, batch, key, Norm(1.0, jnp.sum(batch[-1])))

    return mean


def spmd_mean(grad_fn: GradFn, axis_name: AxisName) -> GradFn:
    """Like :func:`batch_mean`, for an SPMD step (``shard_map``, ``pmap``) over ``axis_name``.

    The batch is this device's shard. The loss is normalized by the *global* example
    count (a padded last batch with uneven shards stays exact); value, gradients and
    floating model state (batch statistics) are averaged with ``lax.pmean`` and metric
    statistics summed across the axes. The place for custom collectives.
    """

    def mean(params, model_state, batch, key):
        # Local sum / global count, times the axis size so that pmean gives the mean.
        norm = Norm(jax.lax.psum(1, axis_name), jax.lax.psum(jnp.sum(batch[-1]), axis_name))
        (value, (model_state, stats)), grads = grad_fn(params, model_state, batch, key, norm)
        grads, value = jax.lax.pmean((grads, value), axis_name)
        model_state = jax.tree.map(
            lambda a: jax.lax.pmean(a, axis_name)
            if jnp.issubdtype(a.dtype, jnp.floating) else a, model_state)
        return (value, (model_state, jax.lax.psum(stats, axis_name))), grads

    return mean


def apply_update(tx: optax.GradientTransformation) -> nonfinite.Update:
    """``update(state, result) -> (new_state, stats)``: one optimizer step, ``step + 1``.

    ``result``: a gradient function's ``((value, (model_state, stats)), grads)``.
    """

    def update(state: TrainState, result: Any) -> tuple[TrainState, dict[str, Any]]:
        (_, (model_state, stats)), grads = result
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1,
                             params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state, model_state=model_state), stats

    return update


def _unchanged(key, x, y):
    return x, y


def base_step(grad_fn: GradFn, update: nonfinite.Update, augment: Augment | None = None
              ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]:
    """``train_step(state, batch)``: augment, ``grad_fn``, then ``update``.

    Args:
      grad_fn: ``(params, model_state, (x, y, weight, mask), key) -> ((value,
        (model_state, stats)), grads)``, e.g. ``batch_mean(objective_grad(...))``.
      update: ``(state, grad_fn's result) -> (new_state, stats)``, e.g.
        :func:`apply_update`, possibly wrapped by :func:`jaxdl.nonfinite.guard`.
      augment: optional ``aug(key, x, y) -> (x, y)``, applied to the whole batch.

    Returns:
      ``train_step(state, batch) -> (new_state, stats)``; ``fold_in(state.rng,
      state.step)`` splits into a key for ``augment`` and one for the model.
    """
    augment = _unchanged if augment is None else augment

    def train_step(state: TrainState, batch: Batch):
        augment_key, dropout_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
        x, y = augment(augment_key, batch["x"], batch["y"])
        return update(state, grad_fn(state.params, state.model_state,
                                     (x, y, batch.get("weight"), batch["mask"]), dropout_key))

    return train_step


def make_train_step(
    model: nn.Module,
    loss: losses_lib.Loss,
    tx: optax.GradientTransformation,
    metrics: Sequence[metrics_lib.Metric] = (),
    *,
    augment: Augment | None = None,
    nan_policy: str = "none",
    axis_name: AxisName | None = None,
    precision: str = "float32",
    grad_accum_steps: int = 1,
    log_norms: bool = False,
    learning_rate: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]:
    """Builds the pure training step, composing the wrappers above.

    Args:
      model: any Flax Linen module.
      loss: a resolved :class:`jaxdl.losses.Loss`.
      tx: the optax optimizer whose state is ``state.opt_state``.
      metrics: resolved metrics to compute on the (augmented) training batch.
      augment: optional ``aug(key, x, y) -> (x, y)`` applied on device first (to the
        whole batch, before any micro-batch split).
      nan_policy: "none", or "raise"/"skip"/"rollback": a step whose loss or gradients
        are non-finite changes nothing but ``state.step``, and ``stats["nonfinite"]``
        records it (see :func:`jaxdl.nonfinite.guard`); the driver acts on the policy.
      axis_name: for an explicit SPMD step (``jax.shard_map``) over these mesh axes: the
        batch is this device's shard, and the step averages over the axes (see
        :func:`spmd_mean`).
      precision: "float32", or "bfloat16": compute in bfloat16 on float32 parameters,
        gradients and optimizer state (see :mod:`jaxdl.precision`). "float16" is refused.
      grad_accum_steps: k > 1 splits each batch [B, ...] into k micro-batches of B/k rows
        (B must divide, checked when the step is traced) and applies the whole batch's
        update (see :func:`accumulate_gradients`); BatchNorm statistics are per
        micro-batch (as in every framework).
      log_norms: also report the gradient, update and parameter norms and the learning
        rate (see :func:`jaxdl.norms.with_norms`); ``learning_rate``: ``step -> rate`` of
        ``tx`` when its state does not hold it.

    Returns:
      ``train_step(state, batch) -> (new_state, stats)``.
    """
    nonfinite.check_policy(nan_policy)
    grad_accum_steps = check_grad_accum_steps(grad_accum_steps)
    grad_fn = objective_grad(make_apply(model, precision), loss, reported_metrics(loss, metrics))
    if grad_accum_steps > 1:
        grad_fn = accumulate_gradients(grad_fn, grad_accum_steps, axis_name)
    grad_fn = batch_mean(grad_fn) if axis_name is None else spmd_mean(grad_fn, axis_name)
    update = apply_update(tx)
    if log_norms:
        update = norms.with_norms(update, learning_rate)
    if nan_policy != "none":
        update = nonfinite.guard(update)
    return base_step(grad_fn, update, augment)


def make_eval_step(
    model: nn.Module, loss: losses_lib.Loss, metrics: Sequence[metrics_lib.Metric] = (), *,
    precision: str = "float32",
) -> Callable[[TrainState, Batch], dict[str, Any]]:
    """Builds ``eval_step(state, batch) -> stats`` (model in eval mode, no state change).

    ``precision``: the compute dtype, as in :func:`make_train_step` (outputs float32).
    """
    apply = make_apply(model, precision)
    reported = reported_metrics(loss, metrics)

    def eval_step(state: TrainState, batch: Batch):
        outputs, _ = apply(state.params, state.model_state, batch["x"], False)
        return metrics_lib.batch_stats(reported, outputs, batch["y"], batch["mask"],
                                       batch.get("weight"))

    return eval_step


def make_predict_step(
    model: nn.Module, link: Callable[[jax.Array], jax.Array] = lambda o: o, *,
    precision: str = "float32",
) -> Callable[[TrainState, jax.Array], jax.Array]:
    """Builds ``predict_step(state, x [B, ...]) -> link(outputs) [B, ...]`` in eval mode.

    ``precision``: the compute dtype, as in :func:`make_train_step`; the outputs are
    cast to float32 before ``link``.
    """
    apply = make_apply(model, precision)

    def predict_step(state: TrainState, x: jax.Array):
        outputs, _ = apply(state.params, state.model_state, x, False)
        return link(outputs)

    return predict_step
