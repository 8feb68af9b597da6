"""A grain pipeline over on-disk :mod:`records <jaxdl.data.records>`: the batches of
the in-memory path, read from disk ahead of the step.

The batch order is the in-memory path's, exactly: epoch ``e`` visits the rows in
``arrays.epoch_order(seed, e, n, shuffle)`` cut by ``arrays.block_indices``, and the
last partial batch is padded with a real row and masked out. So a run fed from
records sees the same batches as one fed from arrays, and the position in the
data is just ``(epoch, step)``: a resumed run asks for the next block and gets the
batches an uninterrupted run would have got.

Each process reads only its rows of every global batch, ``[p*B/P, (p+1)*B/P)`` for
process ``p`` of ``P`` (the slice ``Placement.feed`` sends from a process on a mesh
whose batch axis is laid out process by process; pass ``rows=placement.local_rows(B)``
to follow the mesh instead).

How it reads: a grain ``MapDataset`` whose element ``j`` is the ``j``-th *block* of
batches from the start position, one NumPy fancy index per field and block into the
memory-mapped files (a gather per row would spend its time in Python). Elements are
read ``prefetch`` blocks ahead by ``num_threads`` threads (grain ``ReadOptions``;
NumPy copies release the GIL), or by ``num_workers`` processes (grain ``mp_prefetch``,
for decoding work that holds the GIL; plain records gain nothing from it, see
``benchmarks/pipeline.py``). Reading continues in the background between calls
while the requested positions follow on from each other; any other position starts
a new read-ahead from there.

    records = jdl.data.open_records("/data/digits/train")
    with Pipeline(records, batch_size=32, seed=0) as pipe:
        block = pipe.batches(epoch=0, first_step=0, num_steps=8)
        block["x"].shape, block["mask"].shape    # (8, 32, 64), (8, 32)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl.data import arrays
from jaxdl.data import validate as check
from jaxdl.data.records import Records

# grain's elements are addressed by index; the stream from a position is "endless"
# (reading stops when the caller stops asking, a few blocks of prefetch later).
_ENDLESS = 2**40


def block_plan(seed: int, epoch: int, num_examples: int, batch_size: int, first_step: int,
               num_steps: int, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Global rows and mask of steps ``[first_step, first_step + num_steps)`` of an epoch.

    Returns:
      ``(idx, mask)``: idx int32 [num_steps, batch_size], exactly
      ``arrays.block_indices(arrays.epoch_order(seed, epoch, n, shuffle), ...)``; mask
      float32 [num_steps, batch_size], 0 on the padding past the end of the epoch.
    """
    order = arrays.epoch_order(seed, epoch, num_examples, shuffle)
    return _plan(order, num_examples, batch_size, first_step, num_steps)


def _plan(order: np.ndarray, n: int, batch_size: int, first_step: int, num_steps: int
          ) -> tuple[np.ndarray, np.ndarray]:
    idx = arrays.block_indices(order, batch_size, first_step, num_steps)
    flat = first_step * batch_size + np.arange(num_steps * batch_size)
    return idx, (flat < n).astype(np.float32).reshape(num_steps, batch_size)


class _ReadBlocks:
    """grain element ``j`` -> the ``j``-th block from a start position (picklable).

    Blocks run ``first, first + k, ...`` to the end of the start epoch, then
    ``0, k, 2k, ...`` in every later epoch, like the driver's dispatch grid.
    """

    def __init__(self, records: Records, fields: Sequence[str], batch_size: int, seed: int,
                 shuffle: bool, rows: slice, num_steps: int, epoch: int, first_step: int):
        self.records, self.fields, self.batch_size = records, tuple(fields), batch_size
        self.seed, self.shuffle, self.rows, self.k = seed, shuffle, rows, num_steps
        self.epoch, self.first = epoch, first_step
        self.spe = arrays.steps_per_epoch(len(records), batch_size)
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_orders", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _orders={}, _lock=threading.Lock())

    def position(self, j: int) -> tuple[int, int]:
        """(epoch, first step) of block ``j``."""
        in_first = -(-(self.spe - self.first) // self.k)
        if j < in_first:
            return self.epoch, self.first + j * self.k
        per_epoch = -(-self.spe // self.k)
        later, j = divmod(j - in_first, per_epoch)
        return self.epoch + 1 + later, j * self.k

    def order(self, epoch: int) -> np.ndarray:
        with self._lock:  # threads share the permutation of an epoch, drawn once
            if epoch not in self._orders:
                if len(self._orders) > 2:
                    self._orders.pop(min(self._orders))
                self._orders[epoch] = arrays.epoch_order(self.seed, epoch, len(self.records),
                                                         self.shuffle)
            return self._orders[epoch]

    def __call__(self, j: int) -> dict[str, np.ndarray]:
        epoch, first = self.position(int(j))
        idx, mask = _plan(self.order(epoch), len(self.records), self.batch_size, first, self.k)
        local = idx[:, self.rows]
        out = {k: np.asarray(self.records.arrays[k][local]) for k in self.fields}
        out["mask"] = mask[:, self.rows]
        return out


class Pipeline:
    """Batches of on-disk records in the in-memory path's order, read ahead by grain.

    Args:
      records: opened :class:`~jaxdl.data.records.Records`.
      batch_size: the global batch size ``B`` (every process's rows together).
      seed: the shuffle seed; the order of epoch ``e`` depends on ``(seed, e)`` only.
      shuffle: reshuffle every epoch (else data order).
      num_threads: threads reading ahead (0: read on the caller's thread).
      prefetch: blocks read ahead (per worker process when ``num_workers > 0``).
      num_workers: grain worker processes (0: threads only).
      fields: the fields to read (default: all of the records').
      process_index, process_count: this process's slice of every global batch
        (default ``jax.process_index()`` and ``jax.process_count()``).
      rows: the slice of every global batch this process reads, overriding the two
        above (e.g. ``placement.local_rows(batch_size)``).

    Attributes:
      num_examples, steps_per_epoch: of one epoch.
      rows: this process's slice of the batch axis; ``local_batch_size`` its length.
      position: ``{"epoch", "step"}`` of the next batch (after the last one returned).
    """

    def __init__(self, records: Records, batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, num_threads: int = 2, prefetch: int = 2,
                 num_workers: int = 0, fields: Sequence[str] | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 rows: slice | None = None):
        if not isinstance(records, Records):
            raise errors.type_error("records", "Records (jaxdl.data.open_records(folder))",
                                    errors.describe(records),
                                    "open the folder first: jdl.data.open_records(path)")
        self.records = records
        self.batch_size = check.positive_int(batch_size, "batch_size", "pass batch_size=32")
        self.seed = check.positive_int(seed, "seed", "pass seed=0", minimum=0)
        self.shuffle = bool(shuffle)
        self.num_threads = check.positive_int(num_threads, "num_threads", "pass num_threads=2",
                                              minimum=0)
        self.prefetch = check.positive_int(prefetch, "prefetch", "pass prefetch=2", minimum=0)
        self.num_workers = check.positive_int(num_workers, "num_workers", "pass num_workers=0",
                                              minimum=0)
        fields = list(records.fields) if fields is None else list(fields)
        unknown = [f for f in fields if f not in records.fields]
        if unknown or not fields:
            raise errors.unknown_name("fields", "field", unknown[0] if unknown else fields,
                                      list(records.fields))
        self.fields = fields
        self.rows = self._rows(rows, process_index, process_count)
        self.local_batch_size = len(range(*self.rows.indices(self.batch_size)))
        self.num_examples = len(records)
        self.steps_per_epoch = arrays.steps_per_epoch(self.num_examples, self.batch_size)
        self.position = {"epoch": 0, "step": 0}
        self._stream: tuple[int, tuple[int, int], Any] | None = None

    def _rows(self, rows: slice | None, index: int | None, count: int | None) -> slice:
        if rows is not None:
            if not isinstance(rows, slice) or rows.step not in (None, 1) or \
                    not 0 <= (rows.start or 0) < (self.batch_size if rows.stop is None
                                                  else min(rows.stop, self.batch_size)):
                raise errors.input_error("rows", f"a contiguous slice of [0, {self.batch_size})",
                                         repr(rows), "pass placement.local_rows(batch_size)")
            return slice(rows.start or 0, min(self.batch_size, rows.stop or self.batch_size))
        if index is None or count is None:
            import jax

            index = jax.process_index() if index is None else index
            count = jax.process_count() if count is None else count
        count = check.positive_int(count, "process_count", "pass the number of processes")
        if not isinstance(index, int) or not 0 <= index < count:
            raise errors.input_error("process_index", f"an index in [0, {count})", repr(index),
                                     "pass jax.process_index()")
        if self.batch_size % count:
            raise errors.input_error(
                "batch_size", f"a global batch divisible by the process count {count}",
                str(self.batch_size), f"use a multiple of {count}")
        per = self.batch_size // count
        return slice(index * per, (index + 1) * per)

    # -- plans ---------------------------------------------------------------------------

    def plan(self, epoch: int, first_step: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Global ``(idx, mask)`` [num_steps, B] of a block (see :func:`block_plan`)."""
        return block_plan(self.seed, epoch, self.num_examples, self.batch_size, first_step,
                          num_steps, self.shuffle)

    # -- reading ---------------------------------------------------------------------------

    def _start(self, num_steps: int, epoch: int, first_step: int) -> Any:
        import grain

        read = _ReadBlocks(self.records, self.fields, self.batch_size, self.seed, self.shuffle,
                           self.rows, num_steps, epoch, first_step)
        dataset = grain.MapDataset.range(_ENDLESS).map(read)
        options = grain.ReadOptions(num_threads=self.num_threads,
                                    prefetch_buffer_size=self.prefetch if self.num_threads else 0)
        stream = dataset.to_iter_dataset(options)
        if self.num_workers:
            from absl import flags

            # grain 0.2.18 reads an absl flag when it starts workers and fails in scripts
            # that never parsed flags (google/grain#1355, fixed upstream by #1362): the
            # defaults are what such a script means.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            stream = stream.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.num_workers, per_worker_buffer_size=max(1, self.prefetch)))
        return iter(stream)

    def _check_position(self, epoch: Any, step: Any, num_steps: Any) -> tuple[int, int, int]:
        epoch = check.positive_int(epoch, "epoch", "pass an epoch index >= 0", minimum=0)
        num_steps = check.positive_int(num_steps, "num_steps", "pass num_steps=1")
        step = check.positive_int(step, "first_step", "pass a step index >= 0", minimum=0)
        if step >= self.steps_per_epoch:
            raise errors.input_error(
                "first_step", f"a step of the epoch, in [0, {self.steps_per_epoch})", str(step),
                f"an epoch of {self.num_examples} examples in batches of {self.batch_size} has "
                f"{self.steps_per_epoch} steps; start the next epoch at step 0")
        return epoch, step, num_steps

    def batches(self, epoch: int, first_step: int, num_steps: int) -> dict[str, np.ndarray]:
        """This process's rows of steps ``[first_step, first_step + num_steps)`` of ``epoch``.

        Steps past the end of the epoch are whole padding batches (mask 0), as
        ``arrays.block_indices`` makes them.

        Returns:
          ``{field: [num_steps, local_batch_size, ...], "mask": float32 [num_steps,
          local_batch_size]}``, NumPy arrays (the records' dtypes).
        """
        epoch, first_step, num_steps = self._check_position(epoch, first_step, num_steps)
        if self._stream is None or self._stream[:2] != (num_steps, (epoch, first_step)):
            self.close()
            self._stream = (num_steps, (epoch, first_step),
                            self._start(num_steps, epoch, first_step))
        out = next(self._stream[2])
        if self.num_workers:  # out of grain's shared memory, so the block outlives the workers
            out = {k: np.array(v) for k, v in out.items()}
        following = first_step + num_steps
        nxt = (epoch, following) if following < self.steps_per_epoch else (epoch + 1, 0)
        self._stream = (num_steps, nxt, self._stream[2])
        self.position = {"epoch": nxt[0], "step": nxt[1]}
        return out

    def block(self, epochs: Sequence[int], first_step: int, num_steps: int,
              num_epochs: int | None = None) -> dict[str, np.ndarray]:
        """A dispatch block of the driver: :meth:`batches` of each epoch, stacked.

        Args:
          epochs: the epochs of the block (consecutive), e.g. ``[4, 5]``.
          first_step, num_steps: the steps of each epoch in the block.
          num_epochs: the block's epoch capacity (default ``len(epochs)``); the rows of
            the missing epochs repeat row 0 with mask 0, as the driver fills them.

        Returns:
          ``{field: [num_epochs, num_steps, local_batch_size, ...], "mask": ...}``.
        """
        num_epochs = len(epochs) if num_epochs is None else num_epochs
        if not epochs or len(epochs) > num_epochs:
            raise errors.input_error("epochs", f"1 to {num_epochs} epochs", repr(list(epochs)),
                                     "pass the epochs of one dispatch block")
        parts = [self.batches(e, first_step, num_steps) for e in epochs]
        if len(parts) < num_epochs:
            row0 = np.zeros((num_steps, self.local_batch_size), np.int32)
            pad = {k: np.asarray(self.records.arrays[k][row0]) for k in self.fields}
            pad["mask"] = np.zeros((num_steps, self.local_batch_size), np.float32)
            parts += [pad] * (num_epochs - len(parts))
        return {k: np.stack([p[k] for p in parts]) for k in parts[0]}

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """One batch at a time, ``{field: [local_batch_size, ...], "mask": ...}``, from
        ``start_step`` to the end of ``epoch``."""
        for step in range(start_step, self.steps_per_epoch):
            yield {k: v[0] for k, v in self.batches(epoch, step, 1).items()}

    def __iter__(self) -> Pipeline:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        """The batch at :attr:`position`, across epochs without end."""
        batch = self.batches(self.position["epoch"], self.position["step"], 1)
        return {k: v[0] for k, v in batch.items()}

    # -- position ------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "batch_size": self.batch_size,
                "num_examples": self.num_examples, "shuffle": self.shuffle}

    def get_state(self) -> dict[str, int | bool]:
        """The position plus what the order depends on (JSON-safe, for a checkpoint)."""
        return {**self.position, **self._identity()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`get_state`; the next batches equal an uninterrupted run's."""
        if not isinstance(state, dict) or not {"epoch", "step"} <= set(state):
            raise errors.type_error("state", "a dict from Pipeline.get_state()",
                                    errors.describe(state), "pass what get_state() returned")
        mismatch = {k: (state[k], v) for k, v in self._identity().items()
                    if k in state and state[k] != v}
        if mismatch:
            raise errors.input_error(
                "state", "a position saved by a pipeline with the same data, seed, batch "
                "size and shuffle", ", ".join(f"{k}={a!r} (this pipeline: {b!r})"
                                              for k, (a, b) in mismatch.items()),
                "resume with the settings the state was saved with")
        epoch, step, _ = self._check_position(state["epoch"], state["step"], 1)
        self.position = {"epoch": epoch, "step": step}

    def close(self) -> None:
        """Stops reading ahead (worker processes exit)."""
        if self._stream is not None:
            closer = getattr(self._stream[2], "close", None)
            if closer is not None:
                closer()
            self._stream = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
