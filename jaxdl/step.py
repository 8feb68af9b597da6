"""Pure step functions, built once from (model, loss, optimizer, metrics).

    train_step(state, batch) -> (state, stats)
    eval_step(state, batch)  -> stats
    predict_step(state, x)   -> predictions

A batch is a dict ``{"x": [B, ...], "y": [B, ...], "mask": [B] float32}``; the
mask is 0 for padding rows, so a padded last batch counts only its real
examples. ``stats`` maps metric names (always ``"loss"`` first) to additive
statistics (see :mod:`jaxdl.metrics`). The steps read no globals, print nothing
and never leave the device; randomness is ``fold_in(state.rng, state.step)``.

For big models: ``precision="bfloat16"`` computes in bfloat16 with float32
parameters and optimizer state (see :mod:`jaxdl.precision`), and
``grad_accum_steps=k`` runs the forward/backward pass over k micro-batches of
B/k rows in a ``lax.scan`` and applies one update, equal to the update of the
whole batch: only one micro-batch's activations are alive at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl import errors
from jaxdl import losses as losses_lib
from jaxdl import metrics as metrics_lib
from jaxdl import precision as precision_lib
from jaxdl.state import TrainState

Batch = dict[str, jax.Array]
Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


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


def _stats(metrics, outputs, labels, mask):
    return {m.name: m.stats(outputs, labels, mask) for m in metrics}


def check_grad_accum_steps(grad_accum_steps: Any) -> int:
    """``grad_accum_steps`` as an int >= 1, or the kit's error naming it."""
    if (isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, int | np.integer)
            or grad_accum_steps < 1):
        raise errors.input_error("grad_accum_steps", "an integer >= 1 (micro-batches per step)",
                                 repr(grad_accum_steps), "pass grad_accum_steps=1 (no "
                                 "accumulation) or the number of micro-batches, e.g. 4")
    return int(grad_accum_steps)


def check_micro_batches(batch_size: int, grad_accum_steps: int, devices: int = 1) -> None:
    """Raises unless a batch splits into ``grad_accum_steps`` equal micro-batches.

    ``batch_size`` is the batch one step sees; under an SPMD step (``shard_map``,
    ``pmap``) that is each device's share of a global batch over ``devices``.
    Called when the step is traced, i.e. on the host before anything compiles.
    """
    if batch_size % grad_accum_steps == 0:
        return
    multiple = grad_accum_steps * devices
    near = sorted({max(multiple, batch_size * devices // multiple * multiple),
                   (batch_size * devices // multiple + 1) * multiple})
    examples = " or ".join(str(n) for n in near)
    if devices == 1:
        expected = f"a batch divisible by grad_accum_steps={grad_accum_steps} (equal micro-batches)"
        given = str(batch_size)
        fix = (f"use a batch_size that is a multiple of {grad_accum_steps} (e.g. {examples}), "
               f"or a grad_accum_steps that divides {batch_size}")
    else:
        expected = (f"a batch whose share on each of the {devices} devices divides into "
                    f"grad_accum_steps={grad_accum_steps} equal micro-batches")
        given = f"{batch_size * devices} ({batch_size} per device)"
        fix = (f"use a batch_size that is a multiple of {grad_accum_steps} x {devices} = "
               f"{multiple} (e.g. {examples}), or a grad_accum_steps that divides {batch_size}")
    raise errors.input_error("batch_size", expected, given, fix)


def split_micro_batches(tree: Any, grad_accum_steps: int) -> Any:
    """Leaves [B, ...] -> [k, B // k, ...]; micro-batch j holds rows j, j + k, j + 2k, ...

    Strided rather than contiguous: on a mesh each device's block of rows stays on
    that device, so every micro-batch is spread over all the data shards (a
    contiguous split would give micro-batch 0 to the first devices only), and a
    padded last batch spreads its padding over the micro-batches.
    """
    k = grad_accum_steps
    return jax.tree.map(
        lambda a: jnp.swapaxes(a.reshape(a.shape[0] // k, k, *a.shape[1:]), 0, 1), tree)


def accumulate_gradients(grad_fn: Callable[..., Any], params: Any, model_state: Any,
                         batch: Any, key: jax.Array, grad_accum_steps: int,
                         axis_name: str | tuple[str, ...] | None = None) -> Any:
    """Sums ``grad_fn`` over micro-batches with a ``lax.scan``: one micro-batch alive at a time.

    Args:
      grad_fn: ``(params, model_state, batch, key) -> ((value, (model_state, stats)), grads)``
        (a ``jax.value_and_grad(..., has_aux=True)``) whose value is already normalized
        by the whole batch's example count, so the sums are the whole batch's.
      params, model_state: the model state is threaded through the micro-batches (batch
        statistics are updated once per micro-batch).
      batch: a pytree of [B, ...] arrays; see :func:`split_micro_batches`.
      key: micro-batch i uses ``fold_in(key, i)``.
      grad_accum_steps: k, dividing B.
      axis_name: inside ``shard_map``, the axes the batch is split over: the sums start
        as values that vary over them (the scan's carry types must match).

    Returns:
      The same structure as ``grad_fn``'s: summed value, last model state, merged
      metric statistics, and gradients summed in float32 (cast to the parameters' dtypes).
    """
    micro = split_micro_batches(batch, grad_accum_steps)
    first = jax.tree.map(lambda a: a[0], micro)
    (_, (_, stats_spec)), _ = jax.eval_shape(grad_fn, params, model_state, first, key)

    def body(carry, inputs):
        grads, value, model_state, stats = carry
        i, batch = inputs
        (v, (model_state, s)), g = grad_fn(params, model_state, batch,
                                           jax.random.fold_in(key, i))
        grads = jax.tree.map(lambda a, b: a + b.astype(a.dtype), grads, g)
        return (grads, value + v, model_state, metrics_lib.merge(stats, s)), None

    zeros = jax.tree.map(
        lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)), params)
    init = (zeros, jnp.zeros((), jnp.float32), model_state, metrics_lib.empty(stats_spec))
    if axis_name is not None:
        init = jax.lax.pcast(init, axis_name, to="varying")
    (grads, value, model_state, stats), _ = jax.lax.scan(
        body, init, (jnp.arange(grad_accum_steps), micro))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    return (value, (model_state, stats)), grads


def make_train_step(
    model: nn.Module,
    loss: losses_lib.Loss,
    tx: optax.GradientTransformation,
    metrics: Sequence[metrics_lib.Metric] = (),
    *,
    augment: Augment | None = None,
    nan_policy: str = "none",
    axis_name: str | tuple[str, ...] | None = None,
    precision: str = "float32",
    grad_accum_steps: int = 1,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]:
    """Builds the pure training step.

    Args:
      model: any Flax Linen module.
      loss: a resolved :class:`jaxdl.losses.Loss`.
      tx: the optax optimizer whose state is ``state.opt_state``.
      metrics: resolved metrics to compute on the (augmented) training batch.
      augment: optional ``aug(key, x, y) -> (x, y)`` applied on device first (to the
        whole batch, before any micro-batch split).
      nan_policy: "none", or "raise"/"skip"/"rollback": a step whose loss or gradients
        are non-finite changes nothing but ``state.step``, and ``stats["nonfinite"]``
        records it (see :func:`guard_nonfinite`); the driver acts on the policy.
      axis_name: for an explicit SPMD step (``jax.shard_map``) over these mesh axes: the
        batch is this device's shard; the loss is normalized by the *global* example count
        and local gradients are averaged with ``lax.pmean`` (so a padded last batch with
        uneven shards is still exact), batch statistics of the model are averaged, and the
        metric statistics summed, across the axes. The place for custom collectives.
      precision: "float32", or "bfloat16": the model computes on bfloat16 copies of the
        float32 parameters and floating inputs, outputs are cast to float32 before the
        loss; gradients, parameters and optimizer state stay float32
        (see :mod:`jaxdl.precision`). "float16" is refused (it needs loss scaling).
      grad_accum_steps: k > 1 splits each batch [B, ...] into k micro-batches of B/k rows
        (rows j, j+k, ...; B must divide, checked when the step is traced) and sums their
        gradients (in float32) and metric statistics in a ``lax.scan``, then applies one
        update: the same update as the whole batch (the loss is normalized by the whole
        batch's real example count, so padded batches are exact), with only one
        micro-batch's activations in memory. Dropout in micro-batch i draws from
        ``fold_in(key, i)``; the model state is threaded through the micro-batches, so
        BatchNorm statistics are per micro-batch (as in every framework).

    Returns:
      ``train_step(state, batch) -> (new_state, stats)``.
    """
    if nan_policy not in NAN_POLICIES:
        raise errors.unknown_name("nan_policy", "NaN policy", nan_policy, list(NAN_POLICIES))
    grad_accum_steps = check_grad_accum_steps(grad_accum_steps)
    apply = make_apply(model, precision)
    reported = reported_metrics(loss, metrics)

    def train_step(state: TrainState, batch: Batch):
        x, y, mask = batch["x"], batch["y"], batch["mask"]
        augment_key, dropout_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
        if augment is not None:
            x, y = augment(augment_key, x, y)

        if axis_name is None:
            scale = 1.0
            count = jnp.sum(mask)
        else:  # local sum / global count, times the axis size so that pmean gives the mean
            scale = jax.lax.psum(1, axis_name)
            count = jax.lax.psum(jnp.sum(mask), axis_name)

        def objective(params, model_state, batch, key):
            x, y, mask = batch
            outputs, model_state = apply(params, model_state, x, True, key)
            per_example = loss.per_example(outputs, y)
            value = scale * jnp.sum(per_example * mask) / jnp.maximum(count, 1e-12)
            # The "loss" statistics from the per-example loss just computed: recomputing
            # it from the outputs cost a byte-level LM 10 % of its step on XLA:CPU.
            stats = {reported[0].name: metrics_lib.mean_stats(per_example, mask),
                     **_stats(reported[1:], outputs, y, mask)}
            return value, (model_state, stats)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        if grad_accum_steps == 1:
            (value, (model_state, stats)), grads = grad_fn(
                state.params, state.model_state, (x, y, mask), dropout_key)
        else:
            devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
            check_micro_batches(mask.shape[0], grad_accum_steps, devices)
            (value, (model_state, stats)), grads = accumulate_gradients(
                grad_fn, state.params, state.model_state, (x, y, mask), dropout_key,
                grad_accum_steps, axis_name)
        if axis_name is not None:
            grads, value = jax.lax.pmean((grads, value), axis_name)
            model_state = jax.tree.map(
                lambda a: jax.lax.pmean(a, axis_name)
                if jnp.issubdtype(a.dtype, jnp.floating) else a, model_state)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            model_state=model_state,
        )
        if axis_name is not None:
            stats = jax.lax.psum(stats, axis_name)
        if nan_policy != "none":
            new_state, stats["nonfinite"] = guard_nonfinite(state, new_state, value, grads)
        return new_state, stats

    return train_step


NAN_POLICIES = ("none", "raise", "skip", "rollback")


def guard_nonfinite(old: TrainState, new: TrainState, loss: jax.Array, grads: Any
                    ) -> tuple[TrainState, dict[str, jax.Array]]:
    """Keeps ``old`` (with the step advanced) when the loss or a gradient is non-finite.

    Returns the state to continue with and additive statistics: ``count`` of such
    steps, ``loss`` (how many had a non-finite loss), ``grads`` (per gradient leaf, in
    ``jax.tree.leaves`` order, how many had a non-finite value) and ``min_step`` (the
    first such step; int32 max when none). Checked on device: no host round-trip.
    """
    bad_leaves = jnp.stack([~jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    bad = ~jnp.isfinite(loss) | jnp.any(bad_leaves)
    state = jax.lax.cond(bad, lambda: old.replace(step=new.step), lambda: new)
    record = {"count": bad.astype(jnp.float32),
              "loss": (~jnp.isfinite(loss)).astype(jnp.float32),
              "grads": bad_leaves.astype(jnp.float32),
              "min_step": jnp.where(bad, old.step, jnp.iinfo(jnp.int32).max)}
    return state, record


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
        return _stats(reported, outputs, batch["y"], batch["mask"])

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
