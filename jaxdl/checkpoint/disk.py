"""A checkpoint directory as files: whether a step there may be used, and how a step that
may not is put aside.

These are the checks that come before any array is read (:func:`verified_meta`): the step
is a folder of this directory (not a link out of it); its digest is well formed, and only
the newest step may lack one; its meta matches the digest and the schema. A step that
fails is renamed ``<step>.corrupt-<utc>`` (kept, out of Orbax's step list) by
:func:`rename_aside`.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxdl import errors
from jaxdl.checkpoint import digests
from jaxdl.checkpoint.integrity import (
    Damaged,
    checksums,
    fetch_checksums,
    host_checksums,
    meta_checksum,
    on_host,
)
from jaxdl.checkpoint.schema import check_meta


def check_inside(directory: str | Path, root: str | Path) -> None:
    """Raises CheckpointError unless ``directory`` resolves (links followed) inside ``root``.

    A run's ``checkpoints/`` replaced by a link to another run's would otherwise resume
    that run, or write into it.
    """
    resolved, top = Path(directory).resolve(), Path(root).resolve()
    if resolved != top and top not in resolved.parents:
        raise errors.CheckpointError(
            f"the checkpoint directory {directory} resolves to {resolved}, outside its run's "
            f"folder {top}: it would use another run's checkpoints. Fix: replace the link "
            f"with a folder of this run's own (move the checkpoints into {top}), or pass "
            "another --workdir.")


class Anchor:
    """An open handle on a directory, to tell when it was deleted (or replaced) under us.

    While the handle is open the directory's inode cannot be reused, so a folder deleted
    and made again (Orbax makes missing parents when it writes) has another inode, and a
    deleted one has no links left.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:  # nothing to hold: nothing is checked
            self._fd = None

    def holds(self) -> bool:
        """Whether ``path`` is still the directory this anchor was made on."""
        if self._fd is None:
            return True
        try:
            now, held = os.stat(self.path), os.fstat(self._fd)
        except OSError:
            return False
        return held.st_nlink > 0 and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def close(self) -> None:
        """Lets the handle go."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def newest_step(directory: Path, steps: list[int]) -> int | None:
    """The newest step ``directory`` has seen: one of ``steps``, or one renamed aside."""
    aside = [int(p.name.split(".")[0]) for p in directory.glob("*.corrupt-*")
             if p.name.split(".")[0].isdigit() and p.is_dir()]
    return max([*steps, *aside], default=None)


def why(error: BaseException, limit: int = 80) -> str:
    """A short reason for a list of what was tried: a check's own words, or a library's
    error with its type, e.g. "KeyError (...)"."""
    if isinstance(error, Damaged):
        return str(error)
    return f"{type(error).__name__} ({errors.first_sentence(error, limit)})"


def verified_meta(directory: Path, step: int, newest: int | None,
                  read_json: Callable[[int], Any]
                  ) -> tuple[dict[str, Any], dict[str, list[int]] | None]:
    """``(meta, expected array checksums or None)`` of ``step``, checked.

    Args:
      directory: the checkpoint directory.
      step: the step to check.
      newest: :func:`newest_step` (only it may lack a digest).
      read_json: reads ``step``'s meta item (Orbax's JSON restore).

    Raises:
      Damaged: the step must not be used (the message says why); or the reader's own
        error when the meta cannot be read at all.
    """
    path = directory / str(step)
    if directory.resolve() not in path.resolve().parents:
        raise Damaged(f"it is a link to {path.resolve()}, outside {directory}")
    digest = digests.read(directory, step)
    if digest is None and newest is not None and step < newest:
        raise Damaged(f"it has no digest, though checkpoint {newest} was saved after it "
                      "(every save writes one)")
    meta = read_json(step)
    if digest is not None and digest[1] is not None and meta_checksum(meta) != digest[1]:
        raise Damaged("its meta does not match its digest (edited or damaged)")
    check_meta(meta, step)
    return meta, None if digest is None else digest[0]


def bad_leaves(tree: Any, expected: dict[str, list[int]] | None) -> list[str]:
    """Paths of ``tree`` whose bytes differ from ``expected`` (none when it is None: the
    newest step, saved right before the process stopped)."""
    if expected is None:
        return []
    actual = host_checksums(tree) if on_host(tree) else fetch_checksums(checksums(tree))
    return [leaf for leaf, value in actual.items() if expected.get(leaf) != value]


def rename_aside(directory: Path, step: int) -> str:
    """Renames ``step`` (and its digest) to ``<step>.corrupt-<utc>``; returns the new name."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    source = directory / str(step)
    aside = directory / f"{step}.corrupt-{stamp}"
    digest = digests.path_of(directory, step)
    if jax.process_index() == 0:  # one writer for the directory's names
        if source.exists() or source.is_symlink():
            source.rename(aside)
        if digest.exists():
            digest.rename(directory / f"{aside.name}.digest.json")
    return aside.name


def unreadable_metrics(directory: Path) -> list[tuple[int, Exception]]:
    """Steps whose stored metrics (Orbax's ``<step>/metrics/metrics``, read back when a
    manager opens the directory) are not JSON, with the error."""
    found = []
    for path in directory.glob("*/metrics/metrics"):
        step = path.parent.parent.name
        try:
            if step.isdigit():
                json.loads(path.read_text())
        except (OSError, ValueError) as e:
            found.append((int(step), e))
    return found
