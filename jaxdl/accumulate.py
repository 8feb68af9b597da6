"""Gradient accumulation: a wrapper that sums a gradient function over micro-batches.

``grad_accum_steps=k`` splits each batch [B, ...] into k micro-batches of B/k rows
and applies the whole batch's update with only one micro-batch's activations in
memory (see :func:`jaxdl.step.make_train_step`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl import metrics as metrics_lib

GradFn = Callable[..., Any]
AxisName = str | tuple[str, ...]


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


def accumulate_gradients(grad_fn: GradFn, grad_accum_steps: int,
                         axis_name: AxisName | None = None) -> GradFn:
    """Wraps ``grad_fn`` to sum it over micro-batches in a ``lax.scan``.

    Only one micro-batch's activations are alive at a time. The :class:`Norm` is the
    whole batch's, so the sums of the values and gradients are the whole batch's.

    Args:
      grad_fn: ``(params, model_state, batch, key, norm) -> ((value, (model_state,
        stats)), grads)``, e.g. :func:`objective_grad`.
      grad_accum_steps: k; the batch's [B, ...] leaves split into k micro-batches
        (:func:`split_micro_batches`; :func:`check_micro_batches` at trace time).
      axis_name: inside an SPMD step, the axes the batch is split over: the sums start
        as values varying over them (the scan's carry types must match).

    Returns:
      A ``grad_fn`` of the same signature: micro-batch i uses ``fold_in(key, i)``, the
      model state is threaded through the micro-batches; it returns the summed value,
      the last model state, merged metric statistics, and gradients summed in float32
      (cast to the parameters' dtypes).
    """

    def accumulated(params, model_state, batch, key, norm):
        devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
        check_micro_batches(batch[-1].shape[0], grad_accum_steps, devices)
        micro = split_micro_batches(batch, grad_accum_steps)
        first = jax.tree.map(lambda a: a[0], micro)
        (_, (_, stats_spec)), _ = jax.eval_shape(grad_fn, params, model_state, first, key, norm)

        def body(carry, inputs):
            grads, value, model_state, stats = carry
            i, batch = inputs
            (v, (model_state, s)), g = grad_fn(params, model_state, batch,
                                               jax.random.fold_in(key, i), norm)
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

    return accumulated
