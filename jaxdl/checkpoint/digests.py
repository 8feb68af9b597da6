"""The digest beside each checkpoint, ``DIR/<step>.digest.json``: its format, its writer
(a background thread, so a save waits only for Orbax's copy of the arrays), and its reader.

A digest (format 2) holds the checksums of every leaf of the step's arrays and of its
meta::

    {"format": 2, "arrays": {"['w']": [sum, weighted sum], ...}, "meta": "<sha256 hex>"}

A digest of format 1 (a bare ``{leaf: [sum, weighted sum]}``, written before the meta was
covered) is still read: its arrays are verified, its meta only against the schema.
Anything else — ``null``, a list, a string, truncated JSON, checksums that are not two
32-bit integers — is a malformed digest: its checkpoint cannot be vouched for and is
unusable (:class:`~jaxdl.checkpoint.integrity.Damaged`), never taken as "missing".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jaxdl.checkpoint.integrity import Damaged, fetch_checksums, meta_checksum

FORMAT = 2
_SUFFIX = ".digest.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def path_of(directory: Path, step: int) -> Path:
    """Where ``step``'s digest lives."""
    return directory / f"{step}{_SUFFIX}"


def _is_checksum(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in value))


def _arrays(value: Any) -> dict[str, list[int]] | None:
    if isinstance(value, dict) and all(isinstance(k, str) and _is_checksum(v)
                                       for k, v in value.items()):
        return value
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(text: str) -> tuple[dict[str, list[int]], str | None]:
    """``(array checksums, meta checksum or None)`` of a digest file's text.

    Raises:
      Damaged: the text is not a digest (see the module docstring).
    """
    try:
        found = json.loads(text)
    except ValueError as e:
        raise Damaged(f"its digest file is not JSON ({e})") from None
    if isinstance(found, dict) and "format" in found:
        arrays, meta = _arrays(found.get("arrays")), found.get("meta")
        if (found.get("format") != FORMAT or set(found) != {"format", "arrays", "meta"}
                or arrays is None or not isinstance(meta, str) or not _HEX64.fullmatch(meta)):
            raise Damaged(f"its digest file is malformed: expected {{\"format\": {FORMAT}, "
                          "\"arrays\": {leaf: [sum, weighted sum]}, \"meta\": sha256}, got "
                          f"{_shown(found)}")
        return arrays, meta
    arrays = _arrays(found)
    if arrays is None:
        raise Damaged(f"its digest file is malformed: expected a JSON object of checksums, "
                      f"got {_shown(found)}")
    return arrays, None


def read(directory: Path, step: int) -> tuple[dict[str, list[int]], str | None] | None:
    """``step``'s parsed digest, or None when it has none.

    Raises:
      Damaged: the digest is there but malformed, or cannot be read.
    """
    path = path_of(directory, step)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise Damaged(f"its digest file cannot be read ({type(e).__name__}: {e})") from None
    return parse(text)


def steps_with_digests(directory: Path) -> list[int]:
    """Steps that have a digest file in ``directory``."""
    names = (p.name for p in directory.glob(f"*{_SUFFIX}"))
    return sorted(int(n[: -len(_SUFFIX)]) for n in names if n[: -len(_SUFFIX)].isdigit())


class Writer:
    """Writes one step's digest at a time, in a background thread.

    ``start`` returns at once; ``join`` waits for the write and hands back its error.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._thread: threading.Thread | None = None
        self._step: int | None = None
        self._error: Exception | None = None

    @property
    def step(self) -> int | None:
        """The step being written (None when idle)."""
        return self._step

    def start(self, step: int, sums: Any, meta: Any, kept: Iterable[int] | None = None
              ) -> None:
        """Writes ``step``'s digest from ``sums`` (:func:`~jaxdl.checkpoint.integrity.
        checksums`, still on device) and ``meta`` (hashed in the thread: a save does not
        wait for it; Orbax serializes the same object in its own thread). With ``kept``
        (Orbax's steps), the thread then removes the digests of steps deleted since."""
        self._step = step
        kept = None if kept is None else [*kept, step]
        self._thread = threading.Thread(target=self._write, args=(step, sums, meta, kept),
                                        name=f"jaxdl-digest-{step}", daemon=True)
        self._thread.start()

    def _write(self, step: int, sums: Any, meta: Any, kept: list[int] | None) -> None:
        if kept is not None:
            self._remove(kept)
        try:
            record = {"format": FORMAT, "arrays": fetch_checksums(sums),
                      "meta": meta_checksum(meta)}
            path = path_of(self.directory, step)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(record))
            os.replace(temporary, path)  # atomic: a digest file is whole or absent
        except Exception as e:  # handed to the caller by join()
            self._error = e

    def join(self) -> tuple[int, Exception] | None:
        """Waits for the write in flight; ``(step, error)`` if it failed."""
        step = self._step
        if self._thread is not None:
            self._thread.join()
        self._thread, self._step = None, None
        error, self._error = self._error, None
        return None if error is None or step is None else (step, error)

    def remove_orphans(self, kept: Iterable[int]) -> None:
        """Deletes digests (and leftover ``.tmp`` files) of steps that are neither ``kept``
        (Orbax's steps, the one in flight included) nor on disk (Orbax deleted them)."""
        self._remove([*kept, *([self._step] if self._step is not None else [])])

    def _remove(self, kept: list[int]) -> None:
        kept = set(kept)
        for path in [*self.directory.glob(f"*{_SUFFIX}"), *self.directory.glob("*.digest.tmp")]:
            step = path.name.split(".")[0]
            if (step.isdigit() and path.name in (f"{step}{_SUFFIX}", f"{step}.digest.tmp")
                    and int(step) not in kept and not (self.directory / step).exists()
                    and path.is_file()):
                with contextlib.suppress(OSError):  # tidying only: never fails a save
                    path.unlink()
