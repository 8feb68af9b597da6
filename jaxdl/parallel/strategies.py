"""Parallel strategies as step wrappers: a strategy takes the step and returns a step.

- "auto": ``jax.jit`` with NamedShardings — the state placed by the partition rules,
  each batch constrained to be split over (data, fsdp); XLA inserts the collectives.
- "shard_map": an explicit SPMD step under ``jax.shard_map``: each device computes the
  gradients of its shard of the batch and they are averaged with ``lax.pmean`` over
  (data, fsdp) (see ``make_train_step(axis_name=...)``); parameters are replicated.
  This is where custom collectives go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import PartitionSpec

from jaxdl.parallel.placement import BATCH_AXES

STRATEGIES = ("auto", "shard_map")


def shard_map_step(spmd_step: Callable[..., Any], mesh: jax.sharding.Mesh) -> Callable[..., Any]:
    """Runs ``spmd_step(state, local_batch)`` on every device of ``mesh``.

    The state is replicated (``P()``), the batch split over (data, fsdp) along its
    first axis; the step's outputs (state and summed statistics) are replicated.
    """
    return jax.shard_map(spmd_step, mesh=mesh,
                         in_specs=(PartitionSpec(), PartitionSpec(BATCH_AXES)),
                         out_specs=(PartitionSpec(), PartitionSpec()))
