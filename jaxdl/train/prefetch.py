"""Host batches read, padded and put on the devices ahead of the step, in a background thread.

:class:`Prefetcher` runs any iterator of items ``depth`` ahead of its consumer (double
buffering: one block on the device being trained on, the next already there). Errors
raised while reading reach the consumer at the item where they happened.

:class:`IterableSource` is the fit driver's :class:`~jaxdl.train.sources.BatchSource` over
a dataset (:mod:`jaxdl.train.iterables`): for each dispatch of the plan it reads the
block's batches, pads them into ``[E, S, B, ...]`` with their mask, puts them on the
devices (split over the data axes of a mesh), and keeps the iterator's position after the
block's last batch, which is what a checkpoint saved after that block stores.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxdl.checkpoint.resume import Position
from jaxdl.train import iterables
from jaxdl.train.plan import Dispatch, Plan

# Blocks ready ahead of the one being trained on: 2 hides a slow batch behind the next.
DEPTH = 2


class Prefetcher:
    """``items`` produced in a daemon thread, at most ``depth`` ahead of :meth:`get`."""

    def __init__(self, items: Iterator[Any], depth: int = DEPTH):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True,
                                        name="jaxdl-prefetch")
        self._thread.start()

    def _run(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(("error", e))

    def _put(self, message: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        """The next item; re-raises what the producer raised; StopIteration at the end."""
        kind, value = self._queue.get()
        if kind == "error":
            self.close()
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.get()
            except StopIteration:
                return

    def close(self) -> None:
        """Stops the producer (it ends at its next item) and waits briefly for it."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)


def to_devices(tree: Any, placement: Any, global_batch: int | None = None) -> Any:
    """Host arrays on the devices: a block [E, S, B, ...] split over the mesh's data axes
    along its batch axis (``global_batch`` given), a single batch replicated over the
    mesh, else on the default device.

    On the CPU backend the arrays stay numpy: host memory is the device's, and jit takes
    a numpy argument for a fraction of what a ``device_put`` costs (~70 us per array on a
    small CPU, the time of a whole MLP step).
    """
    if placement is not None:
        if global_batch is None:
            return placement.put_replicated(tree)
        return placement.feed_local(tree, global_batch)
    if jax.default_backend() == "cpu":
        return tree
    return jax.device_put(tree)


class IterableSource:
    """Training batches from a dataset, read ahead in a background thread."""

    data = None
    host_fed = True

    def __init__(self, reader: iterables.Reader, spec: iterables.Spec, steps_per_epoch: int,
                 placement: Any = None):
        self.reader, self.spec, self.steps_per_epoch = reader, spec, steps_per_epoch
        self.batch_size = spec.batch_size
        # The host-fed block's example count: every step a full batch (the batches' own
        # masks say which rows are real).
        self.num_examples = steps_per_epoch * spec.batch_size
        self._placement = placement
        self._global = spec.batch_size * jax.process_count()  # each process its own rows
        self._ahead: Prefetcher | None = None
        self._next: tuple[int, int] | None = None  # (epoch, step) the read-ahead is at
        self._consumed: dict[str, Any] | None = None
        self._warned = False

    def _blocks(self, plan: Plan, start: tuple[int, int]) -> Iterator[Any]:
        for dispatch in plan.dispatches(start):
            buffers, mask = iterables.empty_block(self.spec, (plan.epochs_per_block,
                                                              plan.steps_per_block))
            steps = min(plan.steps_per_block, plan.steps_per_epoch - dispatch.first_step)
            for i, epoch in enumerate(dispatch.epochs):
                for j in range(steps):
                    step = dispatch.first_step + j
                    index = f"{step} of epoch {epoch}"
                    raw = self.reader.next(epoch, step)
                    leaves, rows = self.spec.conform(
                        iterables.parts(raw, index, need_y=True), index)
                    iterables.pad_into(buffers, mask, (i, j), leaves, rows)
            after = plan.after(dispatch)
            state = {"epoch": after[0], "step": after[1], "iterator": self.reader.state()}
            block = to_devices(iterables.as_batch(self.spec, buffers, mask), self._placement,
                               self._global)
            yield dispatch, block, state

    def feed(self, plan: Plan, dispatch: Dispatch) -> Any:
        """The dispatch's batches on device, {"x", "y", "mask"(, "weight")} [E, S, B, ...]."""
        at = (dispatch.epochs[0], dispatch.first_step)
        if self._ahead is None or self._next != at:
            self._stop()
            self._ahead = Prefetcher(self._blocks(plan, at))
        got, block, state = self._ahead.get()
        assert got == dispatch, (got, dispatch)  # the read-ahead follows the plan's order
        self._next, self._consumed = plan.after(dispatch), state
        return block

    def checkpoint_state(self) -> dict[str, Any] | None:
        """JSON-able: where the data stands after the last block trained on."""
        return self._consumed

    def resume(self, position: Position, saved: Any) -> Position:
        """Positions the reading at a restored ``position`` (a resume or a rollback): exactly
        from the saved iterator state, else at the start of the interrupted epoch (once
        warned)."""
        self._stop()
        iterator = None
        if isinstance(saved, dict) and (saved.get("epoch"), saved.get("step")) == (
                position.epoch, position.first) and isinstance(saved.get("iterator"), dict):
            iterator = saved["iterator"]
        exact = self.reader.seek(position.epoch, position.first, iterator)
        if not exact and not self._warned:
            self._warned = True
            steps = (f"; the {position.first} steps of it trained before stay applied"
                     if position.first else "")
            warnings.warn(
                f"fit: the dataset's iterator cannot be put back where the checkpoint stopped "
                f"(it has no get_state()/set_state(), as grain's iterators have): resuming "
                f"at the start of epoch {position.epoch} with the batches it yields now"
                f"{steps}", UserWarning, stacklevel=2)
        if not exact and position.first:
            position = dataclasses.replace(position, first=0)
        # Until a block is trained on, a checkpoint stands where this one did.
        self._consumed = saved if exact else None
        return position

    def _stop(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
        self._ahead, self._next = None, None

    def close(self) -> None:
        self._stop()


def stream(reader: iterables.Reader, spec: iterables.Spec, need_y: bool, placement: Any
           ) -> Prefetcher:
    """One pass over a dataset for evaluate/predict, read ahead: ``(batch, rows)`` per batch,
    the batch padded to ``B`` and on the devices (replicated over a mesh)."""
    def batches() -> Iterator[tuple[Any, int]]:
        for i, raw in enumerate(reader.rest()):
            index = str(i)
            leaves, rows = spec.conform(iterables.parts(raw, index, need_y), index)
            buffers, mask = iterables.empty_block(spec, ())
            iterables.pad_into(buffers, mask, (), leaves, rows)
            yield to_devices(iterables.as_batch(spec, buffers, mask), placement), rows

    return Prefetcher(batches())


def real_rows(out: Any, rows: int, population: bool) -> Any:
    """A padded batch's outputs [(N,) B, ...] cut to the real rows, as numpy."""
    return jax.tree.map(lambda a: np.asarray(a)[:, :rows] if population
                        else np.asarray(a)[:rows], out)
