"""Pure step functions, built once from (model, loss, optimizer, metrics).

    train_step(state, batch) -> (state, stats)
    eval_step(state, batch)  -> stats
    predict_step(state, x)   -> predictions

A batch is a dict ``{"x": [B, ...], "y": [B, ...], "mask": [B] float32}``; the
mask is 0 for padding rows, so a padded last batch counts only its real
examples. ``stats`` maps metric names (always ``"loss"`` first) to additive
statistics (see :mod:`jaxdl.metrics`). The steps read no globals, print nothing
and never leave the device; randomness is ``fold_in(state.rng, state.step)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdl import losses as losses_lib
from jaxdl import metrics as metrics_lib
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


def make_apply(model: nn.Module) -> Callable[..., tuple[jax.Array, Any]]:
    """``apply(params, model_state, x, train, rng) -> (outputs, new_model_state)``.

    Passes the mode to the model under whatever name its ``__call__`` uses, and
    updates mutable collections (batch statistics) only in training.
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

    return apply


def reported_metrics(
    loss: losses_lib.Loss, metrics: Sequence[metrics_lib.Metric]
) -> tuple[metrics_lib.Metric, ...]:
    """Everything a step reports: ``loss`` first, then the given metrics."""
    return (metrics_lib.loss_metric(loss.per_example), *metrics)


def _stats(metrics, outputs, labels, mask):
    return {m.name: m.stats(outputs, labels, mask) for m in metrics}


def make_train_step(
    model: nn.Module,
    loss: losses_lib.Loss,
    tx: optax.GradientTransformation,
    metrics: Sequence[metrics_lib.Metric] = (),
    *,
    augment: Augment | None = None,
    nan_policy: str = "none",
    axis_name: str | tuple[str, ...] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]:
    """Builds the pure training step.

    Args:
      model: any Flax Linen module.
      loss: a resolved :class:`jaxdl.losses.Loss`.
      tx: the optax optimizer whose state is ``state.opt_state``.
      metrics: resolved metrics to compute on the (augmented) training batch.
      augment: optional ``aug(key, x, y) -> (x, y)`` applied on device first.
      nan_policy: "none", or "raise"/"skip"/"rollback": a step whose loss or gradients
        are non-finite changes nothing but ``state.step``, and ``stats["nonfinite"]``
        records it (see :func:`guard_nonfinite`); the driver acts on the policy.
      axis_name: for an explicit SPMD step (``jax.shard_map``) over these mesh axes: the
        batch is this device's shard; the loss is normalized by the *global* example count
        and local gradients are averaged with ``lax.pmean`` (so a padded last batch with
        uneven shards is still exact), batch statistics of the model are averaged, and the
        metric statistics summed, across the axes. The place for custom collectives.

    Returns:
      ``train_step(state, batch) -> (new_state, stats)``.
    """
    if nan_policy not in NAN_POLICIES:
        from jaxdl import errors

        raise errors.unknown_name("nan_policy", "NaN policy", nan_policy, list(NAN_POLICIES))
    apply = make_apply(model)
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

        def objective(params):
            outputs, model_state = apply(params, state.model_state, x, True, dropout_key)
            per_example = loss.per_example(outputs, y)
            value = scale * jnp.sum(per_example * mask) / jnp.maximum(count, 1e-12)
            return value, (outputs, model_state)

        (value, (outputs, model_state)), grads = jax.value_and_grad(
            objective, has_aux=True)(state.params)
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
        stats = _stats(reported, outputs, y, mask)
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
    model: nn.Module, loss: losses_lib.Loss, metrics: Sequence[metrics_lib.Metric] = ()
) -> Callable[[TrainState, Batch], dict[str, Any]]:
    """Builds ``eval_step(state, batch) -> stats`` (model in eval mode, no state change)."""
    apply = make_apply(model)
    reported = reported_metrics(loss, metrics)

    def eval_step(state: TrainState, batch: Batch):
        outputs, _ = apply(state.params, state.model_state, batch["x"], False)
        return _stats(reported, outputs, batch["y"], batch["mask"])

    return eval_step


def make_predict_step(
    model: nn.Module, link: Callable[[jax.Array], jax.Array] = lambda o: o
) -> Callable[[TrainState, jax.Array], jax.Array]:
    """Builds ``predict_step(state, x [B, ...]) -> link(outputs) [B, ...]`` in eval mode."""
    apply = make_apply(model)

    def predict_step(state: TrainState, x: jax.Array):
        outputs, _ = apply(state.params, state.model_state, x, False)
        return link(outputs)

    return predict_step
