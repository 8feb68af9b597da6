"""Any iterable of batches as a data set: what a batch is, how long an epoch is, where the
reading stands.

A *dataset* is anything iterable that yields batches ``(x, y)``, ``(x, y, sample_weight)``
or ``{"x": ..., "y": ..., "sample_weight": ...}`` of numpy or jax arrays (or array-likes
``np.asarray`` converts: torch tensors); ``x`` and ``y`` may be pytrees. A list of such
batches, a generator, a grain ``MapDataset``/``IterDataset``/``DataLoader``, an object
with ``as_numpy_iterator()`` (tf.data) or a torch ``DataLoader`` all are.

- Epochs: without ``steps_per_epoch`` an epoch is one pass of a fresh iterator of a
  re-iterable (its ``len()``, or its batches counted by one pass before training); with
  ``steps_per_epoch`` the batches are one stream that goes on across epochs (a
  re-iterable is opened again when it runs out; a one-shot iterator running out is an
  error) — Keras' rule.
- Batches: the first fixes the structure, shapes and dtypes (checked like arrays) and the
  batch size ``B`` (or ``batch_size``); every batch is cast to it and padded to ``B`` rows
  with a ``mask`` (0 on the padding), so the compiled step never changes shape.
- Position: an iterator with ``get_state()``/``set_state()`` (grain's) is captured after
  the last batch of every block, so a checkpoint resumes it exactly; one without is
  restarted at the interrupted epoch's first batch, with a warning.

The source the fit driver reads is :class:`jaxdl.train.prefetch.IterableSource`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from jaxdl import errors
from jaxdl.data import trees

logger = logging.getLogger("jaxdl")

# A length this large is an endless dataset (grain's endless repeat() reports one near
# sys.maxsize); the step counter is int32 anyway.
ENDLESS = 2**31 - 1
# A re-iterable without len() is counted by one pass; past this many batches it is taken
# for endless (a count that never ends would hang the fit).
MAX_COUNTED = 100_000
_KEYS = {"x": "x", "y": "y", "sample_weight": "weight"}
_FORMS = ("batches (x, y), (x, y, sample_weight) or {'x': ..., 'y': ..., "
          "'sample_weight': ...}")


def _is_batch(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "x" in value
    return isinstance(value, tuple | list) and len(value) in (2, 3) and trees.is_tree(value)


def is_dataset(value: Any) -> bool:
    """Whether ``value`` is an iterable of batches (not arrays, a pytree of them, records).

    A list is one when its first item is a batch (``(x, y)``, a dict with ``"x"``); a
    list of numbers or arrays stays one array (or a pytree), as before.
    """
    from jaxdl.train.inputs import is_records

    if value is None or isinstance(value, str | bytes | Mapping | tuple | np.ndarray |
                                   jax.Array) or is_records(value):
        return False
    if hasattr(value, "__array__") or hasattr(value, "shape"):
        return False  # array-likes: data frames, tensors
    if hasattr(value, "as_numpy_iterator"):
        return True
    if isinstance(value, list):
        return bool(value) and _is_batch(value[0])
    return isinstance(value, Iterable)


def parts(raw: Any, index: str, need_y: bool) -> dict[str, Any]:
    """A raw batch as ``{"x", "y", "weight"}`` (``y``/``weight`` absent when not given);
    for prediction (``need_y`` False) only ``{"x"}``: a tuple's first item, else the batch."""
    if isinstance(raw, Mapping) and "x" in raw:
        unknown = sorted(str(k) for k in raw if k not in _KEYS)
        if unknown:
            raise errors.type_error("x", _FORMS, f"batch {index}: a dict with keys "
                                    f"{sorted(map(str, raw))}", "name its parts 'x', 'y' and "
                                    f"'sample_weight' (unknown: {unknown})")
        found = {_KEYS[k]: v for k, v in raw.items() if v is not None}
    elif isinstance(raw, tuple | list) and len(raw) in (1, 2, 3) and (
            len(raw) > 1 or not need_y):
        found = {k: v for k, v in zip(("x", "y", "weight"), raw, strict=False) if v is not None}
    elif not need_y:
        found = {"x": raw}
    else:
        found = {}
    if "x" not in found or (need_y and "y" not in found):
        raise errors.type_error("x", _FORMS, f"batch {index}: {errors.describe(raw)}",
                                "yield (x, y) pairs, e.g. `for i in ...: yield x[i:j], y[i:j]`")
    return found if need_y else {"x": found["x"]}


def numeric(found: dict[str, Any], index: str) -> dict[str, Any]:
    """Every leaf as a numpy array (``np.asarray``), numeric, with one common row count."""
    def leaf(path: str, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise errors.type_error("x", "numeric arrays in every batch",
                                    f"batch {index}: {path} of dtype {array.dtype}",
                                    "encode non-numeric values as numbers in the pipeline")
        return array

    out = {key: trees.map_with_path(lambda p, v, key=key: leaf(key + p, v), tree)
           for key, tree in found.items()}
    rows = {}
    for key, tree in out.items():
        trees.map_with_path(lambda p, a, key=key: rows.setdefault(
            key + p, a.shape[0] if a.ndim else None), tree)
    if len(set(rows.values())) != 1 or None in rows.values() or 0 in rows.values():
        raise errors.input_error("x", "batches whose arrays all hold the same number (>= 1) "
                                 "of rows, one per example", f"batch {index} with rows " +
                                 ", ".join(f"{k}: {v}" for k, v in rows.items()),
                                 "yield x, y and sample_weight with one row per example each")
    return out


def _plain(leaf: Any) -> bool:
    """A numpy array of numbers: taken as it is (the fast path of every batch)."""
    return isinstance(leaf, np.ndarray) and leaf.dtype.kind in "biuf"


@dataclasses.dataclass(frozen=True)
class Spec:
    """What every batch must look like: the first batch's structure, per-leaf example shapes
    and dtypes, and the padded batch size ``B``."""

    structure: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    batch_size: int
    names: tuple[str, ...] = ()  # each leaf as messages name it: x, y['b'], weight

    @property
    def step_bytes(self) -> int:
        """Host bytes of one padded batch (every leaf and the mask)."""
        return self.batch_size * (4 + sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                                          for shape, dtype in zip(self.shapes, self.dtypes,
                                                                  strict=True)))

    def conform(self, found: dict[str, Any], index: str) -> tuple[list[np.ndarray], int]:
        """A parsed batch's leaves (flattened), cast to the spec; and its row count."""
        leaves, structure = jax.tree.flatten(found)
        if structure != self.structure or not all(_plain(a) for a in leaves):
            # The careful path (array-likes, nested lists, any mistake): named leaves.
            leaves, structure = jax.tree.flatten(numeric(found, index))
        rows = leaves[0].shape[0] if leaves[0].ndim else 0
        if rows == 0 or any(a.ndim == 0 or a.shape[0] != rows for a in leaves):
            numeric(found, index)  # raises, naming each leaf's rows
        if structure != self.structure:
            raise errors.input_error("x", "every batch with the first batch's structure",
                                     f"batch {index} shaped {structure} where the first was "
                                     f"{self.structure}", "yield batches of one structure "
                                     "(the same keys, with or without sample_weight)")
        out = []
        for i, (array, shape, dtype) in enumerate(zip(leaves, self.shapes, self.dtypes,
                                                      strict=True)):
            if array.shape[1:] != shape and shape == (1,) and array.ndim == 1:
                array = array[:, None]  # one feature per example, as the first batch had
            if array.shape[1:] != shape:
                raise errors.input_error("x", "every batch with the first batch's example "
                                         "shapes", f"batch {index}: {self.names[i]} of shape "
                                         f"{array.shape} where the first batch had "
                                         f"{(array.shape[0], *shape)}", "yield batches that "
                                         "differ only in their number of rows")
            out.append(array if array.dtype == dtype else array.astype(dtype))
        if rows > self.batch_size:
            raise errors.input_error("x", f"batches of at most {self.batch_size} rows (the "
                                     "first batch's size, or batch_size)", f"batch {index} "
                                     f"with {rows} rows", "yield batches no larger than the "
                                     "first one, or pass batch_size=<the largest batch>")
        return out, rows


def make_spec(raw_first: dict[str, Any], checked_first: dict[str, Any], batch_size: int
              ) -> Spec:
    """The spec of a dataset from its first batch, raw (parsed) and as the checks left it."""
    paths, structure = jax.tree_util.tree_flatten_with_path(numeric(raw_first, "0"))
    names = tuple(f"{path[0].key}{jax.tree_util.keystr(path[1:])}" for path, _ in paths)
    leaves = jax.tree.leaves(checked_first)
    if jax.tree.structure(checked_first) != structure:  # the checks rebuilt the containers
        leaves = [a for _, a in paths]
    return Spec(structure, tuple(a.shape[1:] for a in leaves), tuple(a.dtype for a in leaves),
                batch_size, names)


def pad_into(buffers: list[np.ndarray], mask: np.ndarray, at: tuple[int, ...],
             leaves: list[np.ndarray], rows: int) -> None:
    """Writes one batch at index ``at`` of the block buffers; the padding rows repeat the
    first row (real values keep a model's statistics sane) and are masked out."""
    real, pad = (*at, slice(None, rows)), (*at, slice(rows, None))
    for buffer, leaf in zip(buffers, leaves, strict=True):
        buffer[real] = leaf
        if rows < buffer.shape[len(at)]:
            buffer[pad] = leaf[:1]
    mask[real] = 1.0


def empty_block(spec: Spec, lead: tuple[int, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """Zeroed buffers [*lead, B, ...] per leaf and the mask [*lead, B] (fresh each block: a
    device copy may alias host memory)."""
    b = spec.batch_size
    return ([np.zeros((*lead, b, *shape), dtype) for shape, dtype in
             zip(spec.shapes, spec.dtypes, strict=True)], np.zeros((*lead, b), np.float32))


def as_batch(spec: Spec, buffers: list[np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """The block as the step's batch contract: ``{"x", "y", "mask"}`` (+ ``"weight"``, 0 on
    the padding rows as well)."""
    batch = {**jax.tree.unflatten(spec.structure, buffers), "mask": mask}
    if "weight" in batch:
        batch["weight"] = batch["weight"] * mask
    return batch


def _encode(state: Any) -> dict[str, Any] | None:
    """An iterator state as JSON (bytes as base64: grain's DataLoader gives bytes); None when
    it is neither."""
    if isinstance(state, bytes):
        return {"bytes": base64.b64encode(state).decode("ascii")}
    try:
        json.dumps(state)
    except (TypeError, ValueError):
        return None
    return {"json": state}


def _decode(saved: dict[str, Any]) -> Any:
    if "bytes" in saved:
        return base64.b64decode(saved["bytes"])
    return saved["json"]


class Reader:
    """Pulls a dataset's raw batches in run order and knows where it stands.

    ``per_epoch``: every epoch opens a fresh iterator (a re-iterable without
    ``steps_per_epoch``); else one stream runs across epochs.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.one_shot = isinstance(dataset, Iterator)
        self.per_epoch = False
        self.pass_length: int | None = None  # per_epoch: every pass holds this many batches
        self._it: Iterator | None = dataset if self.one_shot else None
        self._pending: list[Any] = []
        self._fresh = False  # _it is a new pass; only _pending was read from it
        self._taken = 0  # batches given by this run (for messages)

    def length(self) -> int | None:
        """``len(dataset)`` when it has one (ENDLESS or more: endless)."""
        if self.one_shot:
            return None
        try:
            return int(len(self.dataset))
        except (TypeError, ValueError, NotImplementedError):
            return None  # tf.data says TypeError for an unknown or infinite cardinality

    def _open(self) -> Iterator:
        if self.one_shot:
            return self.dataset
        opener = getattr(self.dataset, "as_numpy_iterator", None)
        return iter(opener() if opener is not None else self.dataset)

    def count(self) -> int:
        """Batches in one pass of a re-iterable without len(), counted by reading it."""
        n = 0
        for _ in self._open():
            n += 1
            if n > MAX_COUNTED:
                raise errors.input_error(
                    "steps_per_epoch", f"an integer >= 1 for a dataset without len() that "
                    f"yields more than {MAX_COUNTED:,} batches (it is counted by one pass "
                    "otherwise; an endless one never ends)", "None",
                    "pass steps_per_epoch=N (one epoch = N batches of a continuing stream)")
        logger.info("counted %d batches in one pass of the dataset (it has no len(); pass "
                    "steps_per_epoch to skip the count)", n)
        return n

    def first(self) -> Any:
        """The first batch, kept to be read again as the run's first."""
        it = self._open()
        try:
            batch = next(it)
        except StopIteration:
            raise errors.input_error("x", "a dataset that yields at least one batch",
                                     f"{errors.describe(self.dataset)}, which yielded nothing",
                                     "check the pipeline (a filter that drops everything, or "
                                     "an iterator that was already used up)") from None
        self._it, self._pending, self._fresh = it, [batch], True
        return batch

    def rest(self) -> Iterator[Any]:
        """The current pass from where it stands (after :meth:`first`: from the first
        batch again), to its end: one read of a dataset."""
        while self._pending:
            yield self._pending.pop(0)
        yield from self._it

    @property
    def resumable(self) -> bool:
        return hasattr(self._it, "get_state") and hasattr(self._it, "set_state")

    def next(self, epoch: int, step: int) -> Any:
        """The raw batch for ``step`` of ``epoch`` (called in run order)."""
        if self.per_epoch and step == 0 and not self._fresh:
            self._it, self._pending = self._open(), []
        self._fresh = False
        if self._pending:
            batch = self._pending.pop(0)
        else:
            batch = self._pull(epoch, step)
        self._taken += 1
        if self.pass_length is not None and step + 1 == self.pass_length:
            self._check_ended(epoch)
        return batch

    def _pull(self, epoch: int, step: int) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            pass
        if self.per_epoch:
            raise errors.input_error("x", f"every pass of the dataset {self.pass_length} "
                                     "batches long (its len(), or its first pass counted)",
                                     f"{step} batches in epoch {epoch}",
                                     "make len() match the batches it yields, or pass "
                                     "steps_per_epoch") from None
        if self.one_shot:
            raise errors.input_error("x", "an iterator that lasts the whole run (epochs x "
                                     "steps_per_epoch batches)", f"one that ran out after "
                                     f"{self._taken} batches (epoch {epoch}, step {step})",
                                     "make it longer (repeat it), lower epochs or "
                                     "steps_per_epoch, or pass a re-iterable such as a list "
                                     "or a grain dataset") from None
        self._it = self._open()  # a stream over a re-iterable: the next pass
        try:
            return next(self._it)
        except StopIteration:
            raise errors.input_error("x", "a dataset that yields at least one batch per pass",
                                     f"an empty pass at epoch {epoch}, step {step}",
                                     "check the pipeline") from None

    def _check_ended(self, epoch: int) -> None:
        extra = next(self._it, None) if not self._pending else self._pending[0]
        if extra is not None:
            raise errors.input_error("x", f"every pass of the dataset {self.pass_length} "
                                     "batches long (its len(), or its first pass counted)",
                                     f"more in epoch {epoch}",
                                     "make len() match the batches it yields (nothing may be "
                                     "dropped), or pass steps_per_epoch")

    def state(self) -> dict[str, Any] | None:
        """The iterator's position after the last batch read, JSON-able; None if it cannot
        say."""
        if not self.resumable or self._pending:
            return None
        return _encode(self._it.get_state())

    def seek(self, epoch: int, step: int, saved: dict[str, Any] | None) -> bool:
        """Positions the reader at ``(epoch, step)`` from a checkpoint's iterator state;
        False when it cannot (the caller restarts the epoch)."""
        if self.per_epoch and step == 0:
            return True  # the epoch opens a fresh iterator
        if saved is not None and self.resumable:
            it = self._it if self.one_shot else self._open()
            try:
                it.set_state(_decode(saved))
            except Exception as e:
                raise errors.input_error(
                    "checkpoint", "a data position the dataset's iterator accepts "
                    "(set_state)", f"one it refused ({errors.first_sentence(e)})",
                    "resume with the dataset the checkpoint was made with, or use a new "
                    "checkpoint directory") from None
            self._it, self._pending, self._fresh = it, [], False
            return True
        if not self.one_shot and not self._fresh:
            self._it, self._pending, self._fresh = self._open(), [], True
        return False
