"""Records: the kit's on-disk format for data sets larger than memory.

A records folder holds one NumPy ``.npy`` file per field (``x.npy``, ``y.npy``, ...),
each with a leading example axis, plus ``meta.json``::

    {"format": "jaxdl.records", "version": 1, "num_examples": 1797,
     "fields": {"x": {"shape": [64], "dtype": "float32"}, "y": {"shape": [], "dtype": "int32"}},
     "info": {"dataset": "digits", "split": "train", ...}}

Reading maps the files (``np.load(mmap_mode="r")``): nothing is loaded up front, and
a batch reads only its own rows. Plain ``.npy`` keeps the files readable by any
NumPy without the kit.

Writing streams: :class:`RecordWriter` appends chunks of rows to each field's file
behind a header of fixed, reserved length, and :meth:`RecordWriter.close` rewrites
that header with the final row count (the npy format allows padding the header
with spaces), so the total need not be known in advance and no data is copied
twice. ``meta.json`` is written last, atomically: a folder without it is an
unfinished write, and :func:`open_records` says so.

    write_records("/tmp/digits", {"x": x, "y": y})
    with RecordWriter("/tmp/big") as w:
        for x, y in chunks:
            w.append({"x": x, "y": y})
    records = open_records("/tmp/big")
    records[np.array([3, 1])]      # {"x": [2, ...], "y": [2]}
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxdl import errors

FORMAT = "jaxdl.records"
VERSION = 1
META = "meta.json"
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_HEADER_ALIGN = 64


class FieldSpec(NamedTuple):
    """One field's per-example shape and dtype (the leading example axis excluded)."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], length: int | None = None) -> bytes:
    """An npy 1.0 header, padded with spaces to ``length`` bytes (or the next 64)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": shape})
    size = len(_NPY_MAGIC) + 2 + len(text) + 1
    if length is None:
        length = -(-size // _HEADER_ALIGN) * _HEADER_ALIGN
    if size > length or length - len(_NPY_MAGIC) - 2 > 0xFFFF:
        raise AssertionError(f"npy header of {size} bytes does not fit {length}")
    text = text + " " * (length - size) + "\n"
    return _NPY_MAGIC + struct.pack("<H", len(text)) + text.encode("latin1")


def _field_name(name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise errors.input_error("arrays", "field names that are Python identifiers (they name "
                                 "files: x.npy, y.npy)", repr(name), "use names like 'x', 'y'")
    return name


class RecordWriter:
    """Writes a records folder chunk by chunk, for data that does not fit in memory.

    Args:
      directory: the records folder (created; parents too).
      info: JSON-safe facts stored under ``meta.json``'s "info" (source, split, ...).
      num_examples: the expected total, checked at :meth:`close` (optional).
      overwrite: replace records already in ``directory`` (else an error).

    The first :meth:`append` fixes the fields, their per-example shapes and dtypes;
    later chunks must match (values are cast only where NumPy casts safely).
    Used as a context manager, an exception leaves the folder without ``meta.json``
    (so it cannot be opened as complete records).
    """

    def __init__(self, directory: str | os.PathLike, info: Mapping[str, Any] | None = None, *,
                 num_examples: int | None = None, overwrite: bool = False):
        self.directory = Path(directory)
        if (self.directory / META).exists() and not overwrite:
            raise errors.input_error(
                "directory", "a new folder for records", f"{str(self.directory)!r}, which "
                "already holds records", "pass another folder, or overwrite=True (--overwrite)")
        if self.directory.exists() and not self.directory.is_dir():
            raise errors.input_error("directory", "a folder path", f"{str(self.directory)!r}, "
                                     "an existing file", "pass a folder path")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / META).unlink(missing_ok=True)
        self.info = dict(info or {})
        self.expected = num_examples
        self.num_examples = 0
        self.fields: dict[str, FieldSpec] = {}
        self._files: dict[str, Any] = {}
        self._header_len: dict[str, int] = {}
        self._closed = False

    def _start(self, chunk: dict[str, np.ndarray]) -> None:
        for name, value in chunk.items():
            dtype = value.dtype.newbyteorder("=")  # native order, so meta's name is exact
            if dtype.kind not in "biuf":
                raise errors.type_error(f"arrays[{name!r}]", "numbers or booleans",
                                        f"dtype {dtype}", "encode the field as numbers first")
            spec = FieldSpec(tuple(int(d) for d in value.shape[1:]), dtype)
            # Reserve room for the largest row count a header could ever need.
            length = len(_npy_header(spec.dtype, (2**63 - 1, *spec.shape)))
            handle = open(self.directory / f"{name}.npy", "wb")  # closed in close()/abort()
            handle.write(_npy_header(spec.dtype, (0, *spec.shape), length))
            self.fields[name], self._files[name], self._header_len[name] = spec, handle, length

    def append(self, chunk: Mapping[str, Any]) -> None:
        """Appends rows: ``{field: array [m, ...]}``, every field with the same ``m``."""
        if self._closed:
            raise errors.input_error("chunk", "an open writer", "a closed RecordWriter",
                                     "append every chunk before close()")
        if not isinstance(chunk, Mapping) or not chunk:
            raise errors.type_error("chunk", "a non-empty dict of arrays {field: [m, ...]}",
                                    errors.describe(chunk), "pass e.g. {'x': x, 'y': y}")
        arrays = {_field_name(k): np.asarray(v) for k, v in chunk.items()}
        lengths = {k: (len(v) if v.ndim else None) for k, v in arrays.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            raise errors.input_error(
                "arrays", "fields with a leading example axis of one common length",
                ", ".join(f"{k}: {n if n is not None else 'a scalar'}"
                          for k, n in lengths.items()),
                "pass the same number of rows for every field")
        if not self.fields:
            self._start(arrays)
        if set(arrays) != set(self.fields):
            raise errors.input_error("chunk", f"the fields {sorted(self.fields)} of the first "
                                     "chunk", f"{sorted(arrays)}", "append every field each time")
        for name, value in arrays.items():
            spec = self.fields[name]
            if value.shape[1:] != spec.shape or not np.can_cast(value.dtype, spec.dtype, "safe"):
                raise errors.input_error(
                    f"chunk[{name!r}]", f"rows of shape {spec.shape} and dtype {spec.dtype} "
                    "(as in the first chunk)",
                    f"rows of shape {value.shape[1:]} and dtype {value.dtype}",
                    "keep every chunk's per-example shape and dtype the same")
            self._files[name].write(np.ascontiguousarray(value, spec.dtype).tobytes())
        self.num_examples += next(iter(lengths.values()))

    def close(self) -> Records:
        """Finishes the files and writes ``meta.json``; returns the records, opened."""
        if self._closed:
            return open_records(self.directory)
        if not self.num_examples:
            self.abort()
            raise errors.input_error("arrays", "at least one example", "no rows",
                                     "append data before close()")
        if self.expected is not None and self.expected != self.num_examples:
            self.abort()
            raise errors.input_error("num_examples", f"{self.expected} rows, as declared",
                                     f"{self.num_examples} rows appended",
                                     "declare the true total, or leave num_examples out")
        for name, handle in self._files.items():
            spec = self.fields[name]
            handle.seek(0)
            handle.write(_npy_header(spec.dtype, (self.num_examples, *spec.shape),
                                     self._header_len[name]))
            handle.close()
        meta = {"format": FORMAT, "version": VERSION, "num_examples": self.num_examples,
                "fields": {k: {"shape": list(s.shape), "dtype": s.dtype.name}
                           for k, s in self.fields.items()},
                "info": self.info}
        tmp = self.directory / (META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self.directory / META)  # the commit point: complete or absent
        self._closed = True
        return open_records(self.directory)

    def abort(self) -> None:
        """Closes the files without writing ``meta.json`` (the folder stays unfinished)."""
        for handle in self._files.values():
            handle.close()
        self._closed = True

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_records(directory: str | os.PathLike, arrays: Mapping[str, Any],
                  info: Mapping[str, Any] | None = None, *, overwrite: bool = False,
                  chunk_rows: int = 65536) -> Records:
    """Writes in-memory arrays as a records folder.

    Args:
      directory: the folder to write.
      arrays: ``{field: array [n, ...]}``, e.g. ``{"x": x, "y": y}``, one common ``n``.
      info: JSON-safe facts kept in ``meta.json`` (e.g. ``{"dataset": "digits"}``).
      overwrite: replace existing records in ``directory``.
      chunk_rows: rows written per chunk (bounds the temporary copies).

    Returns:
      The written :class:`Records`, opened.
    """
    if not isinstance(arrays, Mapping) or not arrays:
        raise errors.type_error("arrays", "a non-empty dict of arrays {field: [n, ...]}",
                                errors.describe(arrays), "pass e.g. {'x': x, 'y': y}")
    values = {k: np.asarray(v) for k, v in arrays.items()}
    lengths = {k: (len(v) if v.ndim else None) for k, v in values.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1:
        raise errors.input_error(
            "arrays", "fields with a leading example axis of one common length",
            ", ".join(f"{k}: {n if n is not None else 'a scalar'}" for k, n in lengths.items()),
            "pass the same number of rows for every field (x and its labels y)")
    n = next(iter(lengths.values()))
    with RecordWriter(directory, info, num_examples=n, overwrite=overwrite) as writer:
        for start in range(0, max(n, 1), chunk_rows):
            writer.append({k: v[start:start + chunk_rows] for k, v in values.items()})
    return open_records(directory)


class Records:
    """Random access to a records folder (memory-mapped; pickles as its path).

    Attributes:
      directory: the folder.
      fields: ``{name: FieldSpec(shape, dtype)}``, per-example.
      info: the "info" facts of ``meta.json``.
      arrays: ``{name: read-only memmap [n, ...]}``; any NumPy indexing works on them.
    """

    def __init__(self, directory: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.directory, self.meta, self.arrays = directory, meta, arrays
        self.fields = {k: FieldSpec(v.shape[1:], v.dtype) for k, v in arrays.items()}
        self.info: dict[str, Any] = meta.get("info", {})

    def __len__(self) -> int:
        return int(self.meta["num_examples"])

    def __getitem__(self, idx: Any) -> dict[str, np.ndarray]:
        """Rows ``idx`` (an int or an integer array of any shape) of every field, in memory.

        ``records[np.array([[0, 5], [2, 2]])]["x"]`` has shape [2, 2, *x's shape].
        """
        if isinstance(idx, str):
            raise errors.type_error("idx", "row indices (an int or an integer array)",
                                    repr(idx), f"read a whole field as records.arrays[{idx!r}]")
        return {k: np.asarray(v[idx]) for k, v in self.arrays.items()}

    def __reduce__(self):  # worker processes reopen the files instead of copying the data
        return open_records, (self.directory,)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {s.dtype}{list(s.shape)}" for k, s in self.fields.items())
        return f"Records({str(self.directory)!r}, n={len(self)}, {fields})"


def _bad(directory: Path, expected: str, given: str, fix: str) -> errors.InputError:
    return errors.input_error("directory", expected, f"{str(directory)!r}: {given}", fix)


def open_records(directory: str | os.PathLike) -> Records:
    """Opens a records folder written by :func:`write_records` or ``jaxdl data prepare``.

    Raises:
      InputError: the folder is missing, unfinished (no ``meta.json``), its metadata is
        unreadable or of another version, or a field file is missing or disagrees with it.
    """
    directory = Path(directory).expanduser()
    what = "a records folder (written by jaxdl.data.write_records or `jaxdl data prepare`)"
    if not directory.is_dir():
        raise _bad(directory, what, "no such folder", "pass the folder the records were "
                   "written to, e.g. `jaxdl data prepare --dataset digits --out DIR`")
    meta_path = directory / META
    if not meta_path.is_file():
        raise _bad(directory, what, f"no {META} (not records, or a write that did not finish)",
                   "write the records again")
    try:
        meta = json.loads(meta_path.read_text())
        fields = meta["fields"]
        n = meta["num_examples"]
        if meta.get("format") != FORMAT or not isinstance(fields, dict) or not fields \
                or not isinstance(n, int):
            raise ValueError("missing format, fields or num_examples")
    except (ValueError, KeyError, TypeError) as e:
        raise _bad(directory, f"a {META} of format {FORMAT!r}", f"an unreadable {META} "
                   f"({errors.first_sentence(e)})", "write the records again") from None
    if meta.get("version") != VERSION:
        raise _bad(directory, f"records of format version {VERSION}",
                   f"version {meta.get('version')!r}", "write them again with this jaxdl")
    arrays = {}
    for name, spec in fields.items():
        path = directory / f"{_field_name(name)}.npy"
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise _bad(directory, f"a readable {path.name} for field {name!r}",
                       errors.first_sentence(e), "write the records again") from None
        want = (n, *spec.get("shape", ()))
        if array.shape != want or array.dtype != np.dtype(spec.get("dtype")):
            raise _bad(directory, f"{path.name} of shape {want} and dtype {spec.get('dtype')} "
                       f"as {META} says", f"shape {array.shape}, dtype {array.dtype}",
                       "write the records again (a field file was replaced or cut short)")
        arrays[name] = array
    return Records(directory, meta, arrays)


__all__ = ["FieldSpec", "RecordWriter", "Records", "open_records", "write_records"]
