"""What the command keeps off stderr unless ``--debug``: library noise after a failure
the command reports itself.

Orbax logs a failed background save (a full disk, a deleted folder) with tracebacks
through absl, and its native write callbacks, still completing after its event loop
closed, print one ``RuntimeError: Event loop is closed`` traceback per array straight to
``sys.stderr`` (from C, so neither ``sys.excepthook`` nor logging sees them). The command
says what happened in one paragraph; these would bury it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, NoReturn, TextIO

NOISE = ("RuntimeError: Event loop is closed",)
_START = "Traceback (most recent call last):"


class NoiseFilter:
    """A text stream that drops whole tracebacks ending in a :data:`NOISE` line.

    Tracebacks are gathered per writing thread (threads interleave their writes) and
    written once complete; everything else passes at once.
    """

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._pending: dict[int, str] = {}
        self._dropped: set[int] = set()  # threads whose noise line still lacks its newline
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        with self._lock:
            if thread in self._dropped and text.startswith("\n"):  # a dropped line's end
                text = text[1:]
            self._dropped.discard(thread)
            pending = self._pending.pop(thread, None)
            if pending is None and not text.startswith(_START):
                return self._stream.write(text)
            self._take(thread, (pending or "") + text)
        return len(text)

    def _take(self, thread: int, text: str) -> None:
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines[1:], 1):
            noise = line.rstrip("\n") in NOISE  # the printer may end the line in its next write
            if noise or (line.endswith("\n") and not line[0].isspace()
                         and not line.startswith(_START)):
                block, rest = "".join(lines[:i + 1]), "".join(lines[i + 1:])
                if noise and not line.endswith("\n"):
                    self._dropped.add(thread)
                if not noise:
                    self._stream.write(block)
                if rest.startswith(_START):
                    self._take(thread, rest)
                elif rest:
                    self._stream.write(rest)
                return
        self._pending[thread] = text

    def flush(self) -> None:
        # Pending tracebacks stay: a flush from another thread (a log handler's) may come
        # while one is half written.
        self._stream.flush()

    def release(self) -> None:
        """Writes what is pending and is not noise (an unfinished traceback is shown)."""
        with self._lock:
            for text in self._pending.values():
                if text.splitlines()[-1].strip() not in NOISE:
                    self._stream.write(text)
            self._pending.clear()
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding...
        return getattr(self._stream, name)


@contextlib.contextmanager
def library_noise_kept_off(debug: bool, restore: bool = True) -> Iterator[None]:
    """Unless ``debug``, while the command runs: absl (Orbax's log) and asyncio (its
    unretrieved write errors) only for critical records, and stderr without the
    closed-loop tracebacks. ``restore=False`` (the program itself) keeps the filter to
    the end of the process: Orbax's threads may still print while the interpreter
    exits."""
    if debug or isinstance(sys.stderr, NoiseFilter):
        yield
        return
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels, stream, original = [log.level for log in loggers], sys.stderr, sys.__stderr__
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    sys.stderr = NoiseFilter(stream)
    if not restore:  # the interpreter's exit puts sys.__stderr__ back as sys.stderr
        sys.__stderr__ = sys.stderr
    try:
        yield
    finally:
        if isinstance(sys.stderr, NoiseFilter):
            sys.stderr.release()
        if restore:
            sys.stderr, sys.__stderr__ = stream, original
            for log, level in zip(loggers, levels, strict=True):
                log.setLevel(level)


def exit_before_noise(code: int) -> NoReturn:
    """Ends the process now, after a failed save was reported: Orbax's write threads,
    still failing against its closed event loop, would print their tracebacks while the
    interpreter shuts down (past any stream filter). The checkpoints already committed
    are on disk, the workdir's lock goes with the process, and nothing else is pending."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
