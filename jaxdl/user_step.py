"""A researcher's own training step, run by the kit's drivers.

``train_step(state, batch) -> (state, stats)`` is any pure function: built with
the kit's pieces (:func:`jaxdl.step.make_apply`, a loss, optax) or from scratch.
:func:`wrap` makes its statistics additive so that ``fit`` can fuse it, pad the
last batch and reduce per epoch exactly as it does its own step:

- a statistic given as ``(total, count)`` (e.g. :func:`jaxdl.metrics.mean_stats` of
  per-example values and ``batch["mask"]``) reports ``sum(total) / sum(count)``
  over the epoch: exact over padded batches;
- a scalar reports its mean over the epoch's steps (a padded last batch weighs as
  much as a full one: return ``(total, count)`` where that matters).

What the step must respect: purity (no I/O, no globals, no host values), randomness
only from ``jax.random.fold_in(state.rng, state.step)``, the batch's ``mask`` (0 for
padding rows: leave them out of losses and statistics), ``state.step + 1`` in the
state it returns, and the same tree structure, shapes and dtypes as the state it got.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import errors
from jaxdl import metrics as metrics_lib

Step = Callable[[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]

# Statistics the kit adds to a step's own (the non-finite guard's records).
RESERVED = ("nonfinite",)


def check_options(train_step: Any, **options: Any) -> None:
    """Refuses the step options a custom ``train_step`` cannot honour (the kit's own step
    implements them; yours decides its own augmentation, precision and accumulation)."""
    if not callable(train_step):
        raise errors.type_error("train_step", "a function (state, batch) -> (state, stats)",
                                errors.describe(train_step), "pass train_step=my_step")
    defaults = {"augment": None, "precision": "float32", "grad_accum_steps": 1,
                "strategy": "auto"}
    for name, value in options.items():
        if value != defaults[name]:
            raise errors.input_error(
                name, f"{defaults[name]!r} with a custom train_step (the kit's step "
                "implements it; yours is run as written)", repr(value),
                f"drop {name}=, or do it inside your step" + (
                    " (shard_map/pmap need the step's own collectives: use 'auto')"
                    if name == "strategy" else ""))


def _additive(name: str, value: Any) -> tuple[jax.Array, jax.Array]:
    if isinstance(value, tuple | list) and len(value) == 2:
        total, count = value
        return jnp.asarray(total, jnp.float32), jnp.asarray(count, jnp.float32)
    value = jnp.asarray(value)
    if value.ndim != 0:
        raise errors.input_error(
            f"train_step stats[{name!r}]", "a scalar or a (total, count) pair",
            f"an array of shape {tuple(value.shape)}",
            "reduce it in the step: a mean, or jdl.metrics.mean_stats(values, batch['mask'])")
    return value.astype(jnp.float32), jnp.ones((), jnp.float32)


def wrap(train_step: Step) -> Step:
    """``train_step`` with its statistics as additive ``(total, count)`` pairs."""

    def step(state, batch):
        new_state, stats = train_step(state, batch)
        if not isinstance(stats, dict):
            raise errors.type_error("train_step", "a function returning (state, stats) with "
                                    "stats a dict of scalars", f"stats {errors.describe(stats)}",
                                    "return (new_state, {'loss': loss})")
        if not hasattr(new_state, "params"):
            raise errors.type_error("train_step", "a function returning (state, stats) with "
                                    "state a jdl.TrainState", errors.describe(new_state),
                                    "return (state.replace(...), stats)")
        return new_state, {name: _additive(name, value) for name, value in stats.items()
                           if name not in RESERVED}

    return step


def metrics_of(stats_spec: dict[str, Any]) -> tuple[metrics_lib.Metric, ...]:
    """The reported metrics of a wrapped step's statistics: "loss" first, then by name."""
    names = sorted(stats_spec, key=lambda n: (n != "loss", n))
    return tuple(metrics_lib.Metric(n, None, metrics_lib.ratio) for n in names
                 if n not in RESERVED)


def results(stats: dict[str, Any]) -> dict[str, jax.Array]:
    """A wrapped step's accumulated statistics -> ``{name: total / count}``."""
    return {name: metrics_lib.ratio(value) for name, value in stats.items()
            if name not in RESERVED}


def make_step(train_step: Step, nan_policy: str = "none", axis_name: Any = None) -> Step:
    """The kit's form of a user's step: additive statistics, and under a NaN policy the
    state-level guard (:func:`jaxdl.nonfinite.guard_state`). ``axis_name`` is refused: an
    explicit SPMD strategy would need the step's own collectives."""
    from jaxdl import nonfinite

    if axis_name is not None:
        raise errors.input_error("strategy", "'auto' for a custom train_step (jit places it; "
                                 "shard_map/pmap need the step's own collectives)",
                                 repr(axis_name), "use strategy='auto'")
    step = wrap(train_step)
    return step if nan_policy == "none" else nonfinite.guard_state(step)
