"""How a checkpoint that could not be written is told: once, naming the step that failed,
its cause in a few words, and what is truly intact.

Intact means committed and verifiable: a step directory Orbax finished (its name is only
digits; one still being written is ``<step>.orbax-checkpoint-tmp``) with its digest beside
it. A step Orbax was still writing, or whose digest could not be written, is not.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jaxdl import errors
from jaxdl.checkpoint import digests

# tensorstore reports an OS error inside its own text: "... [os_error_code='28']".
_OS_CODE = re.compile(r"os_error_code='?(\d+)")


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it, outermost first (Orbax wraps, futures re-raise)."""
    seen: list[BaseException] = []
    while error is not None and all(error is not e for e in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def reason(error: BaseException) -> str:
    """The cause of a failed write in a few words, e.g. "No space left on device (errno 28)"."""
    chain = _chain(error)
    for e in chain:
        if isinstance(e, OSError) and e.errno:
            return f"{os.strerror(e.errno)} (errno {e.errno})"
    for e in chain:
        found = _OS_CODE.search(str(e))
        if found:
            return f"{os.strerror(int(found.group(1)))} (errno {found.group(1)})"
    root = chain[-1]
    return f"{type(root).__name__}: {errors.first_sentence(root, 200)}"


def intact(directory: Path, failed: int | None = None) -> list[int]:
    """Committed steps under ``directory`` that have their digest, ``failed`` excepted."""
    if not directory.is_dir():
        return []
    verifiable = set(digests.steps_with_digests(directory))
    return sorted(int(p.name) for p in directory.iterdir()
                  if p.name.isdigit() and int(p.name) != failed and p.is_dir()
                  and int(p.name) in verifiable)


def write_failed(directory: Path, step: int | None, error: BaseException,
                 part: str | None = None) -> errors.CheckpointError:
    """The error for a write of ``step`` (None: unknown) under ``directory`` that failed;
    ``part``: which of its files, when not the step's own (e.g. "its history log")."""
    which = f"checkpoint {step}" if step is not None else "a checkpoint"
    what = f"{which} under {directory}" + (f" ({part})" if part else "")
    kept = intact(directory, step)
    return errors.CheckpointError(
        f"writing {what} failed: {reason(error)}. The checkpoints committed before it with "
        f"their digests are intact: {kept or 'none'}. Fix: free disk space or make the "
        "directory writable, then run again to resume.")


def directory_gone(directory: Path, error: BaseException | None = None
                   ) -> errors.CheckpointError:
    """The error for a checkpoint directory deleted (emptied, replaced) under a run."""
    detail = f" ({reason(error)})" if error is not None else ""
    return errors.CheckpointError(
        f"the checkpoint directory {directory} was deleted, emptied or replaced while the run "
        f"was writing to it{detail}; the checkpoints saved there before are gone. Fix: leave the "
        "folder alone while a run trains; run the same command again to start over, or put a "
        "copy of the checkpoints back there first to resume.")
