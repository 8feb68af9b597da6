"""A fit's history as an append-only file beside the steps, ``DIR/history.jsonl``.

Each save appends one line, the values the history gained since the previous save
(``{"loss": [0.52, 0.47], "val_loss": [0.61]}``), and the checkpoint's meta records where
the log stood: ``{"entries": lines, "bytes": length, "sha256": chain}``, the chain being
``sha256(previous chain + line)`` over the lines. A save therefore writes what is new, not
the whole history again (a checkpoint's bytes no longer grow with the run), and the meta,
covered by the step's digest, vouches for the log's first ``bytes``: a restore reads only
those, checks the chain, and replays them; lines after them (saved by a timeline a resume
dropped, or a half-written append) are cut off by the next save.

Meta written before the log (``"history"``: the whole ``{name: [value per epoch]}``) is
still read as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import jax

from jaxdl.checkpoint.integrity import Damaged

NAME = "history.jsonl"
_START = "0" * 64  # the chain before the first line


def chained(previous: str, line: bytes) -> str:
    """The chain's next link: sha256 of the previous link's hex and the line's bytes."""
    return hashlib.sha256(previous.encode() + line).hexdigest()


@dataclasses.dataclass
class _Point:
    """Where the log stands: its lines, their bytes, the chain over them, and how many
    values of each history key they hold."""

    entries: int = 0
    bytes: int = 0
    sha256: str = _START
    lengths: dict[str, int] = dataclasses.field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {"entries": self.entries, "bytes": self.bytes, "sha256": self.sha256}


class HistoryLog:
    """Appends a fit's history to ``directory/history.jsonl`` and reads it back verified.

    Only process 0 writes the file (every process keeps the same point, so each meta
    records the same log); a restore reads it on every process.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / NAME
        self._point = _Point()

    def record(self, history: dict[str, list[Any]]) -> dict[str, Any]:
        """Appends what ``history`` gained since the last record (or restore) and returns
        the meta entry that vouches for the log up to here."""
        point = self._point
        new = {k: v[point.lengths.get(k, 0):] for k, v in history.items()
               if len(v) > point.lengths.get(k, 0)}
        line = (json.dumps(new, separators=(",", ":")) + "\n").encode()
        if jax.process_index() == 0:
            self._write_at(point.bytes, line)
        self._point = _Point(point.entries + 1, point.bytes + len(line),
                             chained(point.sha256, line),
                             {k: len(v) for k, v in history.items()})
        return self._point.meta()

    def _write_at(self, offset: int, line: bytes) -> None:
        if offset == 0:  # a new log: written aside and renamed over whatever was there
            temporary = self.path.with_name(NAME + ".tmp")
            temporary.write_bytes(line)
            os.replace(temporary, self.path)
            return
        # O_NOFOLLOW: a link put in place of the log is refused, never written through.
        fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{self.path} is not a regular file")
            os.ftruncate(fd, offset)  # drops lines no kept checkpoint vouches for
            view = memoryview(line)
            while view:
                view = view[os.pwrite(fd, view, offset + len(line) - len(view)):]
        finally:
            os.close(fd)

    def read(self, entry: dict[str, Any]) -> dict[str, list[Any]]:
        """The history the log held when ``entry`` (a meta's ``history_log``) was recorded.

        Raises:
          Damaged: the log is missing, shorter than ``entry`` says, not a regular file, or
            its first ``entry["bytes"]`` do not chain to ``entry["sha256"]``.
        """
        data = self._prefix(entry["bytes"])
        lines = data.splitlines(keepends=True)
        if len(lines) != entry["entries"] or (lines and not lines[-1].endswith(b"\n")):
            raise Damaged(f"its history log {self.path} does not hold the {entry['entries']} "
                          f"lines its meta records in its first {entry['bytes']} bytes")
        chain, history = _START, {}
        for line in lines:
            chain = chained(chain, line)
        if chain != entry["sha256"]:
            raise Damaged(f"its history log {self.path} does not match its meta (sha256 of "
                          "the lines it records): the file was edited or damaged")
        for number, line in enumerate(lines, 1):
            try:
                new = json.loads(line)
            except ValueError as e:
                raise Damaged(f"line {number} of its history log {self.path} is not JSON "
                              f"({e})") from None
            if not isinstance(new, dict) or not all(isinstance(v, list) for v in new.values()):
                raise Damaged(f"line {number} of its history log {self.path} is not a "
                              "{name: [values]} object")
            for key, values in new.items():
                history.setdefault(key, []).extend(values)
        return history

    def _prefix(self, size: int) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise Damaged(f"its history log {self.path} is missing") from None
        except OSError as e:
            raise Damaged(f"its history log {self.path} cannot be read ({e})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO that would block
            os.close(fd)
            raise Damaged(f"its history log {self.path} is not a regular file")
        with os.fdopen(fd, "rb") as file:
            data = file.read(size)
        if len(data) != size:
            raise Damaged(f"its history log {self.path} is shorter ({len(data)} bytes) than "
                          f"its meta records ({size})")
        return data

    def continue_from(self, entry: dict[str, Any] | None, history: dict[str, list[Any]]
                      ) -> None:
        """The next record appends after ``entry`` (a restored meta's ``history_log``),
        whose log replays to ``history``; None: a meta without a log (the next line then
        holds the whole ``history``)."""
        if entry is None:
            self._point = _Point()
            return
        self._point = _Point(entry["entries"], entry["bytes"], entry["sha256"],
                             {k: len(v) for k, v in history.items()})
