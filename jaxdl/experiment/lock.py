"""One writer per workdir: an ``flock`` on ``DIR/.jaxdl.lock``, held for the whole command.

``jaxdl train`` (:func:`jaxdl.experiment.train_and_evaluate`) and ``jaxdl data prepare
--out DIR`` hold it exclusively from start to end, and write who they are into it (pid,
host, command, start time) so that a second writer is refused with a message naming the
first::

    with exclusive(workdir, "--workdir"):
        ...  # the only writer of workdir until the block ends

The kernel drops an ``flock`` when its process dies, however it dies: a run killed with
SIGKILL never leaves the workdir stuck (its name stays in the file, stale, until the next
writer overwrites it). The commands that only read a run take the lock shared while they
open its checkpoints (:func:`shared`); while a writer holds it they read a private copy
instead (:mod:`jaxdl.experiment.restore`), so that nothing a live run is committing is
ever renamed or deleted by a reader.

A multi-process run holds one lock per process (``.jaxdl.lock`` for process 0,
``.jaxdl.lock.<i>`` for the others): its processes share the workdir, and a second run of
as many processes is refused in each of them.

The errors for paths a command cannot write (:func:`check_path`, :func:`unwritable`,
:func:`unwritable_file`) live here too. Standard library only: the CLI calls them before
it imports JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jaxdl import errors

LOCK_NAME = ".jaxdl.lock"
# A holder that has just taken the lock writes its name a moment later; readers hold it
# for as long as it takes them to open the checkpoints.
_PATIENCE_S = 2.0


def lock_file(directory: Path, process: int = 0) -> Path:
    """The lock file of ``directory`` for process ``process`` of a run."""
    return directory / (LOCK_NAME if process == 0 else f"{LOCK_NAME}.{process}")


def is_lock_file(path: Path) -> bool:
    """Whether ``path`` is one of the lock files (not part of what a run wrote)."""
    return path.name == LOCK_NAME or path.name.startswith(LOCK_NAME + ".")


def check_path(path: Path, argument: str) -> None:
    """Refuses a path that is not valid UTF-8 (Orbax writes checkpoints only under such)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError as e:
        raise errors.input_error(
            argument, "a path of UTF-8 characters (checkpoints are written only there)",
            f"{os.fsencode(path)!r}, whose byte {os.fsencode(path)[e.start:e.start + 1]!r} at "
            f"position {e.start} is not UTF-8",
            f"pass a path made of UTF-8 characters, e.g. {argument} ./runs/a") from None


def unwritable(argument: str, path: Path, error: OSError) -> errors.InputError:
    """The error for a folder that cannot be created or written (``error`` says why)."""
    example = {"--out": "./data/records"}.get(argument, "./runs/a")
    return errors.input_error(argument, "a folder that can be created and written",
                              f"{path} ({error.strerror or type(error).__name__})",
                              f"pick a writable location, e.g. {argument} {example}")


def unwritable_file(argument: str, path: Path, reason: str) -> errors.InputError:
    """The error for an output file that cannot be written (``reason`` says why)."""
    return errors.input_error(argument, "a file path that can be written",
                              f"{str(path)!r}, {reason}",
                              "pass a file path in an existing folder you can write to")


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says (empty fields: a reader, or not written yet)."""

    pid: int | None = None
    host: str = ""
    command: str = ""
    since: str = ""

    @classmethod
    def read(cls, fd: int) -> Holder:
        try:
            fields = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
            return cls(**{f.name: fields.get(f.name, f.default)
                          for f in dataclasses.fields(cls)})
        except (OSError, ValueError, TypeError):
            return cls()

    @property
    def writer(self) -> bool:
        """Whether the file names a writer that may be alive (a dead one on this host: no)."""
        if self.pid is None:
            return False
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True

    def describe(self) -> str:
        return (f"locked by pid {self.pid} on host {self.host} since {self.since}: "
                f"{self.command}")


def _try(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _busy(argument: str, directory: Path, holder: Holder) -> errors.InputError:
    if holder.writer:
        return errors.input_error(
            argument, "a folder that no other jaxdl process is writing", f"{directory}, "
            f"{holder.describe()}", f"wait for that process to finish or stop it (kill "
            f"{holder.pid}), or pass another {argument}; a process that dies releases it")
    return errors.input_error(
        argument, "a folder that no other jaxdl process is using",
        f"{directory}, which another jaxdl command is reading (predict, evaluate, sample or "
        "explain)", f"run again once it has finished, or pass another {argument}")


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, argument: str, process: int = 0
              ) -> Iterator[None]:
    """Holds ``directory``'s lock exclusively (creating the folder) until the block ends.

    Args:
      directory: the workdir (or records folder) to own.
      argument: how the caller names it in errors ("--workdir", "--out").
      process: this process's index in a multi-process run.

    Raises:
      InputError: naming ``argument`` when the folder cannot be created or written, or
        when another process holds the lock (its pid, host and command, from the file).
    """
    directory = Path(directory)
    check_path(directory, argument)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file(directory, process), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise unwritable(argument, directory, e) from None
    try:
        deadline = time.monotonic() + _PATIENCE_S
        while not _try(fd, fcntl.LOCK_EX):
            holder = Holder.read(fd)
            if holder.writer or time.monotonic() > deadline:
                raise _busy(argument, directory, holder)
            time.sleep(0.05)
        program = sys.argv[0] if sys.argv and sys.argv[0] else "python"
        if program.endswith(("jaxdl", os.path.join("jaxdl", "__main__.py"))):
            program = "jaxdl"  # `python -m jaxdl` or the console script
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": " ".join([program, *sys.argv[1:]]),
              "since": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a reader that takes it next is not mistaken for this run
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


@contextlib.contextmanager
def shared(directory: str | os.PathLike) -> Iterator[Holder | None]:
    """Holds ``directory``'s lock shared if no writer holds it; never creates anything.

    Yields:
      None while the lock is held shared (or the folder has no lock file: no writer of
      this kit ever ran there), so a writer cannot start until the block ends; or the
      live writer's :class:`Holder`, holding nothing: then only read a copy.
    """
    try:
        fd = os.open(lock_file(Path(directory)), os.O_RDONLY)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EACCES, errno.ENOTDIR):
            raise
        yield None
        return
    try:
        if _try(fd, fcntl.LOCK_SH):
            yield None
        else:
            yield Holder.read(fd)
    finally:
        os.close(fd)
