"""Metrics as TensorBoard event files: scalars per epoch, one run folder per member.

Only process 0 writes; on the other processes of a multi-host run every method
does nothing, so all processes can build the same callback list. A run resumed
at step ``s`` keeps what was written up to ``s`` and replaces what came after
it, as ``metrics.jsonl`` does.

Example::

    tb = TensorBoardWriter("runs/a/tensorboard")
    state, history = trainer.fit(state, x, y, epochs=5, callbacks=[tb])
    tb.write({"step": int(state.step), "split": "test", **trainer.evaluate(state, xt, yt)})
    tb.close()
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path
from typing import Any

from jaxdl import errors
from jaxdl.train.callbacks import Callback, member_logs
from jaxdl.writers._process import is_process_zero

# Keys of a metrics.jsonl record that locate it rather than measure something.
_RECORD_KEYS = ("step", "epoch", "split", "member")


def _require(module: str, who: str, extra: str) -> None:
    """Fails at construction, not an epoch later, when an optional package is missing."""
    if importlib.util.find_spec(module) is None:
        raise errors.JaxdlError(
            f"{who} needs the '{module}' package, which is not installed. "
            f"Fix: pip install 'jaxdl[{extra}]' (or pip install {module}).")


def _split_key(key: str) -> tuple[str, str]:
    """``"val_loss"`` -> ``("val", "loss")``; ``"loss"`` -> ``("train", "loss")``."""
    return ("val", key[4:]) if key.startswith("val_") else ("train", key)


def _as_float(value: Any) -> float | None:
    """A number (or "nan"/"inf" as metrics.jsonl stores them) as a float; None otherwise."""
    if isinstance(value, bool):  # a flag, not a measurement
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if not math.isfinite(number) else None  # only the non-finite spellings
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TensorBoardWriter(Callback):
    """Writes epoch metrics as TensorBoard scalars under ``logdir``.

    Training metrics go to ``train/<name>``, validation metrics (logs keys
    ``val_<name>``) to ``val/<name>``, at the optimizer step after the epoch:
    ``(epoch + 1) * steps_per_epoch``, the ``step`` of metrics.jsonl. NaN and
    inf are written as they are (TensorBoard shows them as such). Records that
    carry a ``member`` (population runs) go to ``logdir/member_<i>``, so
    TensorBoard overlays members as runs under the same tags.

    A resumed run (``context["step"] = s > 0``) marks its first event file so
    that TensorBoard hides what an earlier attempt wrote after step ``s``.

    Events are queued and written by tensorboardX's thread; ``on_train_end``
    and :meth:`close` close the files, which is what guarantees they are on
    disk. After :meth:`write` outside ``fit``, call :meth:`close`.

    Args:
      logdir: folder for the event files (created if needed).
      steps_per_epoch: only for :meth:`write` before any ``fit``; ``fit`` sets it.
      flush_secs: how often queued events reach the disk while training
        (what a live TensorBoard sees).

    Raises:
      JaxdlError: when the ``tensorboardX`` package is not installed.
    """

    needs_every_epoch = False

    def __init__(self, logdir: str | Path, steps_per_epoch: int | None = None,
                 flush_secs: float = 10.0):
        _require("tensorboardX", "TensorBoardWriter", "tensorboard")
        self.logdir = Path(logdir)
        self.steps_per_epoch = steps_per_epoch
        self.flush_secs = flush_secs
        self._writers: dict[int | None, Any] = {}  # member (None: the run) -> SummaryWriter
        self._purge_step: int | None = None
        self._purged: set[int | None] = set()

    def _writer(self, member: int | None) -> Any:
        if member not in self._writers:
            # Imported here: tensorboardX (protobuf, numpy bridges) takes seconds to import.
            from tensorboardX import SummaryWriter

            logdir = self.logdir if member is None else self.logdir / f"member_{member}"
            # Purge only in the first file of a fit: a later file (the test line after
            # on_train_end) must not hide the curves written just before it.
            purge = self._purge_step if member not in self._purged else None
            self._purged.add(member)
            # TensorBoard reads a folder's files in name order and tensorboardX names them by
            # the second; a nanosecond suffix keeps two files of the same second distinct and
            # in the order they were written (a resume right after a crash, or a test).
            self._writers[member] = SummaryWriter(
                str(logdir), purge_step=purge, flush_secs=self.flush_secs,
                filename_suffix=f".{time.time_ns()}")
        return self._writers[member]

    def on_train_begin(self, state, context):
        self.members = context.get("members")
        self.steps_per_epoch = context["steps_per_epoch"]
        if is_process_zero():
            self.close()  # a second fit starts new files, with its own resume point
            # TensorBoard hides events at steps >= purge_step from earlier files: keep up to
            # the step this fit starts from, as metrics.jsonl does.
            self._purge_step = int(context.get("step", 0)) + 1
            self._purged = set()
        return state

    def on_epoch_end(self, epoch, logs, state):
        if not is_process_zero():
            return state
        step = (epoch + 1) * self.steps_per_epoch
        for member, values in member_logs(logs, self.members):
            writer = self._writer(member)  # a population: one run folder per member
            for key, value in values.items():
                split, name = _split_key(key)
                writer.add_scalar(f"{split}/{name}", value, step)
        return state

    def on_train_end(self, state):
        self.close()
        return state

    def write(self, record: dict[str, Any]) -> None:
        """Writes one record's numbers as scalars at ``record["step"]``.

        Args:
          record: a metrics.jsonl-shaped dict: ``step`` (int), optionally
            ``split`` ("train", "val", "test"), ``epoch`` and ``member``, and
            numbers. A name with a ``/`` is a tag as it is (``perf/steps_per_s``);
            other names become ``<split>/<name>`` (or stay bare without a split).
            Values that are not numbers are skipped.

        Raises:
          InputError: when ``step`` is missing or not an integer.

        Example::

            tb.write({"step": 1200, "split": "test", "loss": 0.21, "accuracy": 0.93})
            tb.write({"step": 1200, "perf/steps_per_s": 812.5})
        """
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise errors.input_error(
                "record", "a dict with an integer 'step'", errors.describe(record),
                "add the optimizer step, e.g. {'step': int(state.step), 'loss': 0.2}")
        if not is_process_zero():
            return
        split = record.get("split")
        writer = self._writer(record.get("member"))
        for key, value in record.items():
            number = _as_float(value)
            if key in _RECORD_KEYS or number is None:
                continue
            tag = key if "/" in key or not split else f"{split}/{key}"
            writer.add_scalar(tag, number, step)

    def close(self) -> None:
        """Writes out everything queued and closes the files; a later write opens new ones."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
