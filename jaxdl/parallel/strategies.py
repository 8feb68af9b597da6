"""Parallel strategies as step wrappers: a strategy takes the step and returns a step.

- "auto": ``jax.jit`` with NamedShardings — the state placed by the partition rules,
  each batch constrained to be split over (data, fsdp); XLA inserts the collectives.
- "shard_map": an explicit SPMD step under ``jax.shard_map``: each device computes the
  gradients of its shard of the batch and they are averaged with ``lax.pmean`` over
  (data, fsdp) (see :func:`jaxdl.step.spmd_mean`); parameters are replicated.
  This is where custom collectives go.
- "pmap": legacy replicated data parallel with ``jax.pmap`` (in maintenance mode since
  JAX 0.8 and built on shard_map there): the same SPMD step mapped over the devices,
  the batch reshaped to [devices, batch / devices, ...]; kept as a thin adapter for
  code that still expects pmap semantics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import PartitionSpec

from jaxdl.parallel.placement import BATCH_AXES

STRATEGIES = ("auto", "shard_map", "pmap")
PMAP_AXIS = "batch"
# The mesh axes an explicit SPMD step of each strategy averages over.
SPMD_AXES: dict[str, str | tuple[str, ...]] = {"shard_map": BATCH_AXES, "pmap": PMAP_AXIS}


def shard_map_step(spmd_step: Callable[..., Any], mesh: jax.sharding.Mesh) -> Callable[..., Any]:
    """Runs ``spmd_step(state, local_batch)`` on every device of ``mesh``.

    The state is replicated (``P()``), the batch split over (data, fsdp) along its
    first axis; the step's outputs (state and summed statistics) are replicated.
    """
    # check_vma=False: the step's collectives are explicit (spmd_mean pmeans the local
    # gradients, as under pmap). With varying-axis checks on, autodiff would already psum
    # the gradient of the replicated parameters, and the pmean would then scale it by
    # the number of devices.
    return jax.shard_map(spmd_step, mesh=mesh,
                         in_specs=(PartitionSpec(), PartitionSpec(BATCH_AXES)),
                         out_specs=(PartitionSpec(), PartitionSpec()), check_vma=False)


def pmap_step(spmd_step: Callable[..., Any], mesh: jax.sharding.Mesh) -> Callable[..., Any]:
    """Runs ``spmd_step(state, local_batch)`` with ``jax.pmap`` over the mesh's devices.

    The state goes in replicated (``in_axes=None``) and comes out once
    (``out_axes=None``: the step averages gradients and sums statistics over
    :data:`PMAP_AXIS`, so every device holds the same result), placed back as
    replicated on ``mesh`` so the next dispatch sees the same shardings.
    """
    from jaxdl import errors

    if jax.process_count() > 1:
        raise errors.input_error(
            "strategy", "'auto' or 'shard_map' across several processes (pmap maps over "
            "each host's local devices only)", f"'pmap' with {jax.process_count()} processes",
            "use --config.strategy=shard_map for the same replicated data parallelism")
    devices = list(mesh.devices.flat)
    replicated = jax.sharding.NamedSharding(mesh, PartitionSpec())
    mapped = jax.pmap(spmd_step, axis_name=PMAP_AXIS, in_axes=(None, 0), out_axes=None,
                      devices=devices)

    def step(state, batch):
        split = jax.tree.map(
            lambda a: a.reshape(len(devices), a.shape[0] // len(devices), *a.shape[1:]), batch)
        return jax.lax.with_sharding_constraint(mapped(state, split), replicated)

    return step


def spmd_step(strategy: str, make_step: Callable[..., Any], mesh: jax.sharding.Mesh
              ) -> Callable[..., Any]:
    """The training step of an explicit SPMD ``strategy`` ("shard_map" or "pmap").

    Args:
      strategy: "shard_map" (:func:`shard_map_step`) or "pmap" (:func:`pmap_step`).
      make_step: ``make_step(axis_name=...) -> spmd_step(state, local_batch)``, e.g. a
        ``functools.partial`` of :func:`jaxdl.step.make_train_step`; built over the
        strategy's :data:`SPMD_AXES`.
      mesh: the devices to run on.

    Returns:
      ``step(state, batch) -> (state, stats)`` on the global batch, state replicated.
    """
    wrap = {"shard_map": shard_map_step, "pmap": pmap_step}[strategy]
    return wrap(make_step(axis_name=SPMD_AXES[strategy]), mesh)

