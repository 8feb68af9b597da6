"""Where everything lives on a mesh: the state by the partition rules, batches split over
the data axes, small on-device data sets replicated.

The "auto" strategy: ``jax.jit`` places the state with these NamedShardings
(made already sharded by ``jit(init, out_shardings=...)``), each batch is
constrained to be split over (data, fsdp), and XLA partitions the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from jaxdl import errors
from jaxdl.parallel.mesh import from_user_mesh, make_mesh
from jaxdl.parallel.rules import Rule, partition_specs, state_shardings

BATCH_AXES = ("data", "fsdp")


class Placement:
    """A mesh with its rules.

    Args:
      mesh: a ``jax.sharding.Mesh`` with axes (data, fsdp, tensor), or sizes for
        :func:`jaxdl.parallel.make_mesh` (e.g. ``{"data": 2, "fsdp": -1}``).
      rules: ordered ``(regex, PartitionSpec)`` overrides of the FSDP default.
      logical_rules: Flax logical axis name -> mesh axis (for ``nn.with_logical_partitioning``).
    """

    def __init__(self, mesh: jax.sharding.Mesh | Mapping[str, int],
                 rules: Sequence[Rule] = (),
                 logical_rules: Sequence[tuple[str, str | None]] = (),
                 strategy: str = "auto", data: str = "auto"):
        from jaxdl.parallel.strategies import STRATEGIES

        if strategy not in STRATEGIES:
            raise errors.unknown_name("strategy", "strategy", strategy, list(STRATEGIES))
        self.strategy = strategy
        if data not in ("auto", "device", "host"):
            raise errors.unknown_name("data placement", "data placement", data,
                                      ["auto", "device", "host"])
        # "device": the data set replicated on every device, batches gathered there;
        # "host": each process sends only its slice of every global batch (multi-host).
        self.host_data = data == "host" or (data == "auto" and jax.process_count() > 1)
        self.mesh = (from_user_mesh(mesh) if isinstance(mesh, jax.sharding.Mesh)
                     else make_mesh(mesh))
        if strategy == "pmap" and self.mesh.shape["tensor"] != 1:
            raise errors.input_error(
                "mesh", "tensor=1 for the pmap strategy (it replicates parameters and splits "
                "batches over every device)", f"tensor={self.mesh.shape['tensor']}",
                "use strategy 'auto' for tensor parallelism")
        self.rules, self.logical_rules = list(rules), list(logical_rules)
        self.unused_rules: list[str] = []

    @property
    def data_parallel(self) -> int:
        """How many ways a batch is split (data x fsdp)."""
        return self.mesh.shape["data"] * self.mesh.shape["fsdp"]

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(BATCH_AXES))

    def state_shardings(self, abstract_state: Any, boxed_params: Any = None,
                        population: bool = False, tx: Any = None) -> Any:
        """NamedShardings for a TrainState (params by the rules, optimizer state alike;
        everything replicated under the shard_map strategy).

        ``boxed_params``: the params as the model's init returns them, with Flax's
        logical-partitioning boxes, so logical axis names can be mapped by
        ``logical_rules``. ``population``: every leaf has a leading member axis, split
        over the mesh's ``population`` axis (``boxed_params`` are one member's).
        ``tx``: the optimizer of ``abstract_state.opt_state``, whose params-shaped trees
        then follow the parameters by structure (see :func:`jaxdl.parallel.state_shardings`).
        """
        if self.strategy in ("shard_map", "pmap"):
            return jax.tree.map(lambda _: self.replicated(), abstract_state)
        members = None
        if population:
            members = jax.tree.leaves(abstract_state)[0].shape[0]
            groups = self.mesh.shape.get("population", 1)
            if members % groups:
                raise errors.input_error(
                    "population", f"a member count divisible by the mesh's population axis "
                    f"({groups})", str(members),
                    f"use a multiple of {groups} members, or another mesh")
            if boxed_params is None:
                boxed_params = jax.tree.map(
                    lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), abstract_state.params)
        specs, self.unused_rules = partition_specs(
            abstract_state.params if boxed_params is None else boxed_params, self.mesh,
            self.rules, self.logical_rules)
        if members is None:
            return state_shardings(abstract_state, specs, self.mesh, tx=tx)
        axis = self.population_axis
        specs = jax.tree.map(lambda spec: PartitionSpec(axis, *spec), specs,
                             is_leaf=lambda x: isinstance(x, PartitionSpec))
        return state_shardings(abstract_state, specs, self.mesh,
                               default=PartitionSpec(axis), tx=tx)

    @property
    def population_axis(self) -> str | None:
        """The mesh axis a population's members are split over; None for a raw
        ``jax.sharding.Mesh`` without one (every device then holds every member)."""
        return "population" if "population" in self.mesh.axis_names else None

    def check_batch(self, batch_size: int, argument: str = "batch_size") -> None:
        if batch_size % self.data_parallel:
            raise errors.input_error(
                argument, f"a global batch divisible by the data-parallel size "
                f"{self.data_parallel} (mesh data={self.mesh.shape['data']} x "
                f"fsdp={self.mesh.shape['fsdp']})", str(batch_size),
                f"use a multiple of {self.data_parallel}, e.g. "
                f"{max(self.data_parallel, batch_size // self.data_parallel * self.data_parallel)}")

    def constrain_batch(self, batch: dict[str, Any], member_axis: bool = False
                        ) -> dict[str, Any]:
        """Inside jit: every batch array (each leaf of a pytree x or y) split over
        (data, fsdp) along its first axis.

        ``member_axis``: x, y and weight are [N, B, ...] (each population member's own
        batch): the member axis goes over ``population``, the batch axis over (data, fsdp).
        """
        sharding = self.batch_sharding()
        if member_axis:
            per_member = NamedSharding(self.mesh, PartitionSpec(self.population_axis,
                                                                BATCH_AXES))
        return {k: jax.tree.map(lambda a, k=k: jax.lax.with_sharding_constraint(
            a, per_member if member_axis and k != "mask" else sharding), v)
            for k, v in batch.items()}

    def put_replicated(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated())

    def local_rows(self, batch_size: int) -> slice:
        """The rows of every global batch whose shards live on this process's devices."""
        index = self.batch_sharding().addressable_devices_indices_map((batch_size,))
        starts = [i[0].start or 0 for i in index.values()]
        stops = [batch_size if i[0].stop is None else i[0].stop for i in index.values()]
        return slice(min(starts), max(stops))

    def feed(self, arrays: dict[str, Any], idx: Any, batch_size: int) -> dict[str, jax.Array]:
        """Global [E, S, B, ...] batches built from this process's rows only.

        ``idx`` [E, S, B] are the global batch indices (every process computes the
        same); each process gathers its slice of the batch axis from its host copy
        and ``jax.make_array_from_process_local_data`` assembles the global arrays.
        """
        rows = self.local_rows(batch_size)
        return self.feed_local({key: jax.tree.map(lambda a: a[idx[:, :, rows]], value)
                                for key, value in arrays.items()}, batch_size)

    def feed_local(self, local: dict[str, Any], batch_size: int) -> dict[str, jax.Array]:
        """Global [E, S, B, ...] arrays from this process's rows [E, S, local rows, ...]
        (:meth:`local_rows`; e.g. what a :class:`jaxdl.data.Pipeline` read)."""
        sharding = NamedSharding(self.mesh, PartitionSpec(None, None, BATCH_AXES))
        return jax.tree.map(lambda value: jax.make_array_from_process_local_data(
            sharding, value, (*value.shape[:2], batch_size, *value.shape[3:])), local)
