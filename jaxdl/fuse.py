"""Step wrappers: many steps (and epochs) per dispatch with ``lax.scan``.

``make_train_block`` turns ``train_step`` into one compiled program that runs a
block of ``[epochs, steps]`` batches, shuffled and gathered on device (see
:mod:`jaxdl.data.arrays`), accumulates each epoch's metric statistics,
and evaluates the validation set at each epoch's end — so a whole small run can
be a single dispatch, and a per-step run is the same code with a 1x1 block.

Fusion is not free everywhere: XLA:CPU compiles convolutions inside loops
without its fast kernels (a CNN's backward pass ran ~18x slower in a rolled
scan), so :func:`loop_friendly` tells the driver when to dispatch per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import metrics as metrics_lib
from jaxdl.data import arrays
from jaxdl.step import Batch


def gather(data: dict[str, jax.Array], idx: jax.Array, mask: jax.Array) -> Batch:
    """The batch of rows ``idx`` [B] of on-device ``data`` (``x``, ``y``: arrays or pytrees;
    ``weight`` [n] when weighted), with its padding ``mask`` [B]."""
    batch = {key: jax.tree.map(lambda a: jnp.take(a, idx, axis=0), value)
             for key, value in data.items()}
    batch["mask"] = mask
    return batch


def _results(reported: Sequence[metrics_lib.Metric], stats: dict[str, Any]) -> dict[str, Any]:
    return {m.name: m.result(stats[m.name]) for m in reported}


def _first(tree: Any) -> Any:
    return jax.tree.map(lambda a: a[0], tree)


def vmapped(results: Callable[[dict[str, Any]], dict[str, jax.Array]], population: bool
            ) -> Callable[[dict[str, Any]], dict[str, jax.Array]]:
    """``results`` per member ([N]) for a population's statistics, else as it is."""
    return jax.vmap(results) if population else results


def results_fn(reported: Sequence[metrics_lib.Metric], population: bool = False
               ) -> Callable[[dict[str, Any]], dict[str, jax.Array]]:
    """Accumulated statistics -> ``{name: result}``; per member ([N]) for a population."""
    return vmapped(lambda stats: _results(reported, stats), population)


def make_evaluate(
    eval_step: Callable[..., dict[str, Any]], reported: Sequence[metrics_lib.Metric],
    results: Callable[[dict[str, Any]], dict[str, jax.Array]] | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """``evaluate(state, data, plan) -> {name: scalar}`` over all batches of ``plan``.

    ``plan`` holds ``idx`` and ``mask`` of shape [batches, batch_size]; masked
    rows do not count, so the result is exact over the full set. ``results``:
    statistics -> values (default :func:`results_fn`).
    """
    results = results or results_fn(reported)

    def evaluate(state, data, plan):
        def body(acc, row):
            return metrics_lib.merge(acc, eval_step(state, gather(data, *row))), None

        rows = (plan["idx"], plan["mask"])
        acc = metrics_lib.empty(jax.eval_shape(eval_step, state, gather(data, *_first(rows))))
        acc, _ = jax.lax.scan(body, acc, rows)
        return results(acc)

    return evaluate


def _with_active(train_step: Callable[..., Any], freeze_nonfinite: bool) -> Callable[..., Any]:
    """A population's step on ``(state, active)``: members that stopped keep their state;
    with ``freeze_nonfinite`` a member whose step was non-finite stops right there."""
    def step_fn(carried, batch):
        state, active = carried
        state, stats = train_step(state, batch, active)
        if freeze_nonfinite:
            active = active & (stats["nonfinite"]["count"] == 0)
        return (state, active), stats

    return step_fn


def _epoch_fn(step_fn: Callable[..., Any], data: Any, validation: Callable[[Any], Any],
              results: Callable[[dict[str, Any]], dict[str, jax.Array]], *, n: int,
              batch_size: int, num_steps: int, ragged_steps: bool) -> Callable[..., Any]:
    """``one_epoch(carry, (rows, (first_step, real)))``: steps ``[first, first + S)`` of an
    epoch, then its results, validation (at the epoch's end) and non-finite records."""
    steps_in_epoch = arrays.steps_per_epoch(n, batch_size)

    def one_step(carry, row):
        state, acc = carry
        if data is None:
            # A dataset's batches bring their own mask (its short batches' padding).
            batch = {"mask": row["mask"], **row["idx"]}
        else:
            batch = gather(data, row["idx"], row["mask"])
        if ragged_steps:
            skip = lambda s, b: (s, metrics_lib.empty(
                jax.eval_shape(lambda s, b: step_fn(s, b)[1], s, b)))
            state, stats = jax.lax.cond(row["valid"], step_fn, skip, state, batch)
        else:
            state, stats = step_fn(state, batch)
        return (state, metrics_lib.merge(acc, stats)), None

    def one_epoch(carry, row):
        state, acc = carry
        rows, (first, _) = row
        step_ids = first + jnp.arange(num_steps)
        steps = {"idx": rows,
                 "mask": jax.vmap(lambda s: arrays.row_mask(n, batch_size, s))(step_ids),
                 "valid": step_ids < steps_in_epoch}
        acc = jax.tree.map(lambda a, e: jnp.where(first == 0, e, a), acc,
                           metrics_lib.empty(acc))
        if num_steps == 1:
            (state, acc), _ = one_step((state, acc), _first(steps))
        else:
            (state, acc), _ = jax.lax.scan(one_step, (state, acc), steps)
        val_shapes = jax.eval_shape(validation, state)
        val = jax.lax.cond(first + num_steps >= steps_in_epoch, validation,
                           lambda s: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                                                  val_shapes), state)
        return (state, acc), (results(acc), val, acc.get("nonfinite", {}))

    return one_epoch


def make_train_block(
    train_step: Callable[..., tuple[Any, dict[str, Any]]],
    reported: Sequence[metrics_lib.Metric],
    evaluate: Callable[..., dict[str, jax.Array]] | None = None,
    results: Callable[[dict[str, Any]], dict[str, jax.Array]] | None = None,
    freeze_nonfinite: bool = False,
) -> Callable[..., Any]:
    """Builds ``block(state, acc, data, idx, position, val_data, val_plan, active, **static)``.

    ``idx`` is int32 [E, S, B]: row indices of S steps of each of E epochs
    (:func:`jaxdl.data.arrays.block_indices`); ``position`` is int32 [E, 2]:
    per epoch row ``(first_step, real)``. Each row runs steps ``[first_step,
    first_step + S)`` of its epoch; masks follow from the example count. Steps
    past the epoch's end (a ragged last block) and
    rows with ``real == 0`` (padding epochs of a ragged last dispatch) change
    nothing. ``acc`` carries the current epoch's training statistics across
    blocks. Returns ``(state, acc, (train, val))``: metric name -> [E] results,
    meaningful for rows that end an epoch. ``val_data=None``: no validation.

    Static arguments: ``batch_size``, ``num_steps``, ``shuffle``, ``ragged_steps``
    (some row may run past its epoch's end), ``ragged_epochs`` (some row is padding).
    ``active``: None, or a population's bool [N] passed to ``train_step(state, batch,
    active)`` (members that stopped keep their state); with ``freeze_nonfinite`` a member
    whose step was non-finite stops right there, inside the block (``nan_policy="raise"``
    per member). ``results``: as in :func:`make_evaluate`.
    """
    results = results or results_fn(reported)

    def block(state, acc, data, idx, position, val_data, val_plan, active=None, *, batch_size,
              num_steps, ragged_steps=False, ragged_epochs=False, num_examples=None):
        if active is None:
            step_fn, carried, state_of = train_step, state, lambda c: c
        else:  # a population: the active mask rides along with the state
            step_fn = _with_active(train_step, freeze_nonfinite)
            carried, state_of = (state, active), lambda c: c[0]

        def validation(carried):
            if val_data is None or evaluate is None:
                return {}
            return evaluate(state_of(carried), val_data, val_plan)

        # data=None: the host feeds the batches themselves ({"x", "y"} [E, S, B, ...]) in
        # place of ``idx`` (data too large to replicate, or a multi-host run).
        n = num_examples if data is None else jax.tree.leaves(data)[0].shape[0]
        one_epoch = _epoch_fn(step_fn, data, validation, results, n=n, batch_size=batch_size,
                              num_steps=num_steps, ragged_steps=ragged_steps)

        def maybe_epoch(carry, row):
            if not ragged_epochs:
                return one_epoch(carry, row)
            shapes = jax.eval_shape(one_epoch, carry, row)[1]
            skip = lambda c, r: (c, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))
            return jax.lax.cond(row[1][1] > 0, one_epoch, skip, carry, row)

        if position.shape[0] == 1:
            (carried, acc), out = maybe_epoch((carried, acc), (_first(idx), position[0]))
            out = jax.tree.map(lambda a: a[None], out)
        else:
            (carried, acc), out = jax.lax.scan(maybe_epoch, (carried, acc), (idx, position))
        return state_of(carried), acc, out

    return block


def _primitive_names(jaxpr: Any) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                names |= _primitive_names(inner)
    return names


def loop_friendly(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether ``fn`` runs at full speed inside a rolled ``lax.scan`` on this backend.

    False on CPU for anything with a convolution (XLA:CPU's fast convolution
    kernels are not used inside loops); True otherwise.
    """
    if jax.default_backend() != "cpu":
        return True
    names = _primitive_names(jax.make_jaxpr(fn)(*args).jaxpr)
    return not any("conv" in name for name in names)
