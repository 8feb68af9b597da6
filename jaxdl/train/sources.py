"""Batch sources: where the training block's batches come from.

A source gives the compiled block two arguments per dispatch: ``data`` (an
on-device data set to gather batches from, or None) and ``feed`` (row indices
into ``data``, or the batches themselves, [E, S, B, ...]). Every source yields
the same batches in the same order for a given (seed, epoch), so where the data
lives never changes the numbers:

- :class:`ArraySource` with the data set on the devices (batches gathered there);
- :class:`ArraySource` fed from the host (data too large to replicate, or a
  multi-host run: each process sends only its slice of every global batch);
- :class:`RecordSource`: on-disk records read ahead by a grain pipeline.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.data import arrays, trees
from jaxdl.train.members import Members
from jaxdl.train.plan import Dispatch, Plan


def on_device(x: Any, y: Any = None, placement: Any = None, weight: np.ndarray | None = None
              ) -> dict[str, Any]:
    """The data set on device for the whole run (replicated over a mesh: batches are
    gathered from it on device, then split over the data axes). ``x``, ``y``: arrays or
    pytrees of arrays [n, ...]; ``weight``: per-example weights [n] float32, or None."""
    data = {"x": x} if y is None else {"x": x, "y": y}
    if weight is not None:
        data["weight"] = weight
    if placement is not None:
        return placement.put_replicated(data)
    return jax.tree.map(jnp.asarray, data)


def sequential_plan(n: int, batch_size: int) -> dict[str, jax.Array]:
    """Row indices and masks [batches, B] that visit ``n`` rows once, in order."""
    idx, mask = arrays.sequential_plan(n, batch_size)
    return {"idx": jax.device_put(idx), "mask": jax.device_put(mask)}


class BatchSource(Protocol):
    """What the fit driver needs of a source of training batches."""

    num_examples: int
    data: Any  # on-device data the block gathers from; None when ``feed`` holds batches
    host_fed: bool

    def feed(self, plan: Plan, dispatch: Dispatch) -> Any:
        """The block's ``idx`` argument for ``dispatch``."""

    def close(self) -> None:
        """Releases threads or files the source holds."""


class _EpochOrder:
    """Row order per epoch and member seed, a function of (seed, epoch) only."""

    def __init__(self, num_examples: int, batch_size: int, shuffle: bool, members: Members):
        self.n, self.batch_size, self.shuffle, self.members = (num_examples, batch_size,
                                                               shuffle, members)
        self._cached: tuple[int, list[np.ndarray]] | None = None

    def indices(self, plan: Plan, dispatch: Dispatch) -> np.ndarray:
        """int32 [E, S, (N,) B]: the rows of every step of ``dispatch``."""
        idx = np.zeros((plan.epochs_per_block, plan.steps_per_block, *self.members.index_axes,
                        self.batch_size), np.int32)
        for i, epoch in enumerate(dispatch.epochs):
            if self._cached is None or self._cached[0] != epoch:
                self._cached = (epoch, [arrays.epoch_order(seed, epoch, self.n, self.shuffle)
                                        for seed in self.members.seeds])
            rows = [arrays.block_indices(order, self.batch_size, dispatch.first_step,
                                         plan.steps_per_block) for order in self._cached[1]]
            idx[i] = np.stack(rows, axis=1) if self.members.per_member else rows[0]
        return idx


class ArraySource:
    """In-memory arrays, on the devices or fed from the host per dispatch."""

    def __init__(self, x: Any, y: Any, batch_size: int, shuffle: bool,
                 members: Members, placement: Any = None, host_fed: bool = False,
                 weight: np.ndarray | None = None):
        self.num_examples, self.host_fed = trees.rows(x), host_fed
        self._arrays = {"x": x, "y": y} if weight is None else {"x": x, "y": y, "weight": weight}
        self._placement, self._batch_size = placement, batch_size
        self._order = _EpochOrder(self.num_examples, batch_size, shuffle, members)
        self.data = None if host_fed else on_device(x, y, placement, weight)

    def feed(self, plan: Plan, dispatch: Dispatch) -> Any:
        idx = self._order.indices(plan, dispatch)
        if self.host_fed:
            return self._placement.feed(self._arrays, idx, self._batch_size)
        return idx

    def close(self) -> None:
        pass


class RecordSource:
    """On-disk records read ahead by a grain :class:`~jaxdl.data.pipeline.Pipeline`, each
    process reading only its rows of every global batch."""

    data = None
    host_fed = True

    def __init__(self, records: Any, batch_size: int, seed: int, shuffle: bool,
                 placement: Any = None):
        from jaxdl.data.pipeline import Pipeline

        self.num_examples, self._placement, self._batch_size = (len(records), placement,
                                                                batch_size)
        self._pipe = Pipeline(records, batch_size, seed=seed, shuffle=shuffle,
                              fields=("x", "y"), rows=placement.local_rows(batch_size)
                              if placement else None)

    def feed(self, plan: Plan, dispatch: Dispatch) -> Any:
        local = self._pipe.block(list(dispatch.epochs), dispatch.first_step,
                                 plan.steps_per_block, num_epochs=plan.epochs_per_block)
        local = {"x": local["x"], "y": local["y"]}
        if self._placement is not None:
            return self._placement.feed_local(local, self._batch_size)
        return jax.device_put(local)

    def close(self) -> None:
        self._pipe.close()


def make_source(programs: Any, x: Any, y: Any, records: Any, batch_size: int,
                shuffle: bool, members: Members, weight: np.ndarray | None = None
                ) -> BatchSource:
    """Where the training batches come from (see :mod:`jaxdl.train.sources`); ``weight``:
    per-example weights [n] that ride along in every batch as ``batch["weight"]``."""
    placement = programs.placement
    host_fed = records is not None or (placement is not None and placement.host_data)
    if host_fed and programs.population == "member":
        raise errors.input_error("seed", "one seed when batches come from the host (records, "
                                 "or data_placement='host': each member's own order needs the "
                                 "data set on the devices)", f"{len(members.seeds)} seeds",
                                 "pass one seed, or arrays with data_placement='device'")
    if records is not None:
        return RecordSource(records, batch_size, members.seeds[0], shuffle, placement)
    return ArraySource(x, y, batch_size, shuffle, members, placement, host_fed, weight)
