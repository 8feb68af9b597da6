"""One TensorBoard event file, written in the caller's thread.

tensorboardX's ``SummaryWriter`` hands every event to a writer thread through a
bounded ``multiprocessing.Queue``: an event costs a pickle and a queue hop, and
when that thread dies (a full disk) the next ``put`` on the full queue blocks
the training loop for good, while the error only reaches stderr. Writing here,
to a buffered file flushed every ``flush_secs`` and at :meth:`EventFile.close`,
costs microseconds per event and raises ``OSError`` where the caller can act on
it. The records are tensorboardX's (its protos, in its ``RecordWriter``'s TFRecord
framing with CRCs), so TensorBoard reads them as it reads a ``SummaryWriter``'s.

Example::

    events = EventFile(Path("runs/a/tensorboard/train"), purge_step=None, flush_secs=10)
    events.add(summary, step=120)
    events.close()
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any


class EventFile:
    """An event file in ``folder`` (created if needed), named as TensorBoard expects.

    Args:
      folder: the run folder.
      purge_step: when not None, TensorBoard hides the events at steps >= it that
        earlier files in the folder hold (a resumed run rewriting what came after
        its checkpoint), as ``SummaryWriter(purge_step=...)`` does.
      flush_secs: how often written events reach the disk (what a live TensorBoard sees).

    Raises:
      OSError: from any method, when the file cannot be created or written.
    """

    def __init__(self, folder: Path, purge_step: int | None, flush_secs: float):
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.record_writer import RecordWriter

        folder.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a folder's files in name order and the usual names carry the
        # second only; a nanosecond suffix keeps two files of the same second distinct and
        # in the order they were written (a resume right after a crash, or a test).
        now = time.time_ns()
        name = f"events.out.tfevents.{now // 10**9}.{socket.gethostname()}.{now}"
        self._file = RecordWriter(str(folder / name))
        self._flush_secs = flush_secs
        self._next_flush = time.monotonic() + flush_secs
        self._write(Event(file_version="brain.Event:2"))  # what readers check first
        if purge_step is not None:
            self._write(Event(step=purge_step, session_log=SessionLog(
                status=SessionLog.START)))

    def _write(self, event: Any) -> None:
        event.wall_time = time.time()
        self._file.write(event.SerializeToString())  # TFRecord framing, with its CRCs

    def add(self, summary: Any, step: int) -> None:
        """Appends a ``Summary`` at ``step``; flushes when ``flush_secs`` have passed."""
        from tensorboardX.proto.event_pb2 import Event

        self._write(Event(step=step, summary=summary))
        if time.monotonic() >= self._next_flush:
            self._file.flush()  # with an fsync: seconds apart, not per event
            self._next_flush = time.monotonic() + self._flush_secs

    def close(self) -> None:
        """Hands what is buffered to the OS and closes the file (no fsync: the events are
        a view of metrics.jsonl, not worth a disk round trip at the end of every fit)."""
        self._file.close()
