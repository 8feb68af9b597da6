"""Gradients you can see: norms of the gradient, the update and the parameters, and the
learning rate, as statistics of the training step (``log_norms=True``).

A step wrapper around the update stage (like :func:`jaxdl.nonfinite.guard`): it
sees the gradients and the state before and after the update, and adds
``(value, 1)`` pairs that the drivers average per epoch — the global norms, the
same per top-level module of the parameters (``grad_norm/dense_0``, ...) and the
current learning rate read from the optimizer state. Off, it costs nothing: the
step is not wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdl import metrics as metrics_lib
from jaxdl.state import TrainState

KINDS = ("grad_norm", "update_norm", "param_norm")
LEARNING_RATE = "learning_rate"


def _once(value: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step's value as additive (total, count) statistics: the epoch mean."""
    return jnp.asarray(value, jnp.float32), jnp.ones((), jnp.float32)


def _norms(kind: str, tree: Any) -> dict[str, tuple[jax.Array, jax.Array]]:
    out = {kind: _once(optax.tree.norm(tree))}
    if isinstance(tree, dict) and len(tree) > 1:  # per top-level module
        out.update({f"{kind}/{name}": _once(optax.tree.norm(sub)) for name, sub in tree.items()})
    return out


def learning_rate(opt_state: Any, step: jax.Array,
                  schedule: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array | None:
    """The learning rate of the update at ``step``: an injected ``learning_rate`` in
    ``opt_state``, else ``schedule(step)``; times the kit's ReduceLROnPlateau multiplier
    when there is one. None when neither knows it (an optax transform of your own)."""
    rate = optax.tree_utils.tree_get(opt_state, LEARNING_RATE)
    if rate is None and schedule is not None:
        rate = schedule(step)
    if rate is None:
        return None
    scale = optax.tree_utils.tree_get(opt_state, "step_size")
    return rate if scale is None else rate * scale


def with_norms(update: Callable[[TrainState, Any], tuple[TrainState, dict[str, Any]]],
               schedule: Callable[[jax.Array], jax.Array] | None = None
               ) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, Any]]]:
    """Wraps a step's update stage (``update(state, ((loss, aux), grads))``) so that its
    statistics also hold the norms and the learning rate (float32 scalars, per step).
    ``schedule``: ``step -> rate`` of the optimizer, when its state does not hold it."""

    def logged(state: TrainState, result: Any) -> tuple[TrainState, dict[str, Any]]:
        _, grads = result
        new, stats = update(state, result)
        applied = jax.tree.map(lambda a, b: a - b, new.params, state.params)
        stats = {**stats, **_norms("grad_norm", grads), **_norms("update_norm", applied),
                 **_norms("param_norm", new.params)}
        rate = learning_rate(new.opt_state, state.step, schedule)
        if rate is not None:
            stats[LEARNING_RATE] = _once(rate)
        return new, stats

    return logged


def is_norm(name: str) -> bool:
    """Whether a statistic's name is one :func:`with_norms` adds."""
    return name == LEARNING_RATE or name.split("/")[0] in KINDS


def results(stats: dict[str, Any]) -> dict[str, jax.Array]:
    """The epoch means of the statistics :func:`with_norms` added."""
    return {name: metrics_lib.ratio(value) for name, value in stats.items() if is_norm(name)}
