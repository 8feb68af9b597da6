"""Metrics as TensorBoard event files, laid out as Keras lays them out.

    tensorboard/train/        epoch_loss, epoch_accuracy, ... per epoch; perf/* at the end
    tensorboard/validation/   epoch_loss, epoch_accuracy, ... (the same tags: the curves overlay)
    tensorboard/              test/loss, test/accuracy, ... and the hparams plugin's records
    tensorboard/member_<i>/   a population: the same three per member (train/, validation/,
                              and member_<i>/ itself with its test metrics and its session)

Only process 0 writes; on the other processes of a multi-host run every method
does nothing, so all processes can build the same callback list. A run resumed
at step ``s`` keeps what was written up to ``s`` and replaces what came after
it, as ``metrics.jsonl`` does.

Example::

    tb = TensorBoardWriter("runs/a/tensorboard")
    state, history = trainer.fit(state, x, y, epochs=5, callbacks=[tb])
    tb.write({"step": int(state.step), "split": "test", **trainer.evaluate(state, xt, yt)})
    tb.write_hparams({"learning_rate": 1e-3, "batch_size": 32}, metrics=["loss"])
    tb.close()
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxdl import errors
from jaxdl.train.callbacks import Callback, member_logs
from jaxdl.writers import hparams as hparams_lib
from jaxdl.writers._process import is_process_zero
from jaxdl.writers.events import EventFile

# Keys of a metrics.jsonl record that locate it rather than measure something.
_RECORD_KEYS = ("step", "epoch", "split", "member")
# split -> (run folder inside the member's folder, tag prefix); None: no split.
LAYOUT = {"train": ("train", "epoch_"), "val": ("validation", "epoch_"),
          "perf": ("train", "perf/"), "test": ("", "test/"), None: ("", "")}


def _require(module: str, who: str) -> None:
    """Fails at construction, not an epoch later, when a dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise errors.JaxdlError(
            f"{who} needs the '{module}' package, which is not installed although jaxdl "
            f"depends on it. Fix: pip install {module} (or reinstall jaxdl).")


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


def _scalars(tags: dict[str, float]) -> Any:
    """One ``Summary`` holding all of ``tags``: a third of the cost of one per tag."""
    from tensorboardX.proto.summary_pb2 import Summary

    return Summary(value=[Summary.Value(tag=tag, simple_value=value)
                          for tag, value in tags.items()])


def _folder(member: int | None, run: str) -> str:
    """The run folder under the log folder: ``train``, ``member_3/validation``, ``""``."""
    parts = ([] if member is None else [f"member_{member}"]) + ([run] if run else [])
    return "/".join(parts)


class TensorBoardWriter(Callback):
    """Writes epoch metrics as TensorBoard scalars under ``logdir``, Keras' way.

    Training metrics go to the run ``train`` and validation metrics (logs keys
    ``val_<name>``) to the run ``validation``, both under the tag
    ``epoch_<name>``, so TensorBoard overlays a metric's two curves in one
    chart; the step is the optimizer step after the epoch,
    ``(epoch + 1) * steps_per_epoch``, the ``step`` of metrics.jsonl. NaN and
    inf are written as they are. Records that carry a ``member`` (population
    runs) go under ``logdir/member_<i>/``, so TensorBoard overlays members as
    runs under the same tags.

    A resumed run (``context["step"] = s > 0``) marks its first event file so
    that TensorBoard hides what an earlier attempt wrote after step ``s``.

    Events are written in the calling thread (:mod:`jaxdl.writers.events`) and
    reach the disk every ``flush_secs``; ``on_train_end`` and :meth:`close`
    close the files, which is what guarantees they are on disk. After
    :meth:`write` outside ``fit``, call :meth:`close`. A file that cannot be
    written (a full disk) does not stop the run: the writer warns once and
    writes nothing more until the next ``fit`` (metrics.jsonl is the record).

    Args:
      logdir: folder for the event files (created if needed).
      steps_per_epoch: only for :meth:`write` before any ``fit``; ``fit`` sets it.
      flush_secs: how often written events reach the disk while training
        (what a live TensorBoard sees).

    Raises:
      JaxdlError: when the ``tensorboardX`` package is not installed.
    """

    needs_every_epoch = False

    def __init__(self, logdir: str | Path, steps_per_epoch: int | None = None,
                 flush_secs: float = 10.0):
        _require("tensorboardX", "TensorBoardWriter")
        self.logdir = Path(logdir)
        self.steps_per_epoch = steps_per_epoch
        self.flush_secs = flush_secs
        self._files: dict[str, EventFile] = {}  # run folder ("": the log folder) -> its file
        self._purge_step: int | None = None
        self._purged: set[str] = set()
        self._failed: OSError | None = None

    def _fail(self, error: OSError) -> None:
        """Stops writing after an I/O error, saying so once; the run goes on."""
        if self._failed is None:
            warnings.warn(f"TensorBoardWriter: cannot write under {self.logdir} ({error}); "
                          "no more TensorBoard events until the next fit. metrics.jsonl "
                          "still records every epoch.", RuntimeWarning, stacklevel=2)
        self._failed = error
        for events in self._files.values():
            with contextlib.suppress(OSError):  # closes the descriptor even if flushing fails
                events.close()
        self._files = {}

    def _open(self, folder: str) -> EventFile | None:
        """``folder``'s file, opened on first use; None once writing failed."""
        if self._failed is None and folder not in self._files:
            # Purge only in the first file of a fit: a later file (the test line after
            # on_train_end) must not hide the curves written just before it.
            purge = self._purge_step if folder not in self._purged else None
            self._purged.add(folder)
            try:
                self._files[folder] = EventFile(self.logdir / folder, purge, self.flush_secs)
            except OSError as error:
                self._fail(error)
        return self._files.get(folder)

    def _add(self, folder: str, summary: Any, step: int) -> None:
        events = self._open(folder)
        if events is None:
            return
        try:
            events.add(summary, step)
        except OSError as error:
            self._fail(error)

    def on_train_begin(self, state, context):
        self.members = context.get("members")
        self.steps_per_epoch = context["steps_per_epoch"]
        if is_process_zero():
            self.close()  # a second fit starts new files, with its own resume point
            # TensorBoard hides events at steps >= purge_step from earlier files: keep up to
            # the step this fit starts from, as metrics.jsonl does.
            self._purge_step = int(context.get("step", 0)) + 1
            self._purged, self._failed = set(), None  # a new fit tries the disk again
            # Opened now, before fit starts timing the epochs (a fit always logs training
            # metrics; the validation folders open with the first validation metrics).
            size = context.get("population")
            for member in [None] if size is None else range(size):
                self._open(_folder(member, LAYOUT["train"][0]))
        return state

    def on_epoch_end(self, epoch, logs, state):
        if not is_process_zero():
            return state
        step = (epoch + 1) * self.steps_per_epoch
        for member, values in member_logs(logs, self.members):
            runs: dict[str, dict[str, float]] = {}
            for key, value in values.items():
                split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
                run, prefix = LAYOUT[split]
                runs.setdefault(_folder(member, run), {})[prefix + name] = value
            for folder, tags in runs.items():
                self._add(folder, _scalars(tags), step)
        return state

    def on_train_end(self, state):
        self.close()
        return state

    def write(self, record: dict[str, Any]) -> None:
        """Writes one record's numbers as scalars at ``record["step"]``.

        Args:
          record: a metrics.jsonl-shaped dict: ``step`` (int), optionally
            ``split``, ``epoch`` and ``member``, and numbers. By split: "train"
            -> run ``train``, tag ``epoch_<name>``; "val" -> ``validation``,
            ``epoch_<name>``; "test" -> the log folder itself (the member's
            folder), ``test/<name>``; "perf" -> ``train``, ``perf/<name>``; no
            split -> the log folder, ``<name>``. Values that are not numbers are
            skipped.

        Raises:
          InputError: when ``step`` is missing or not an integer, or ``split`` is
            not one of those.

        Example::

            tb.write({"step": 1200, "split": "test", "loss": 0.21, "accuracy": 0.93})
            tb.write({"step": 1200, "split": "perf", "steps_per_s": 812.5})
        """
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise errors.input_error(
                "record", "a dict with an integer 'step'", errors.describe(record),
                "add the optimizer step, e.g. {'step': int(state.step), 'loss': 0.2}")
        split = record.get("split")
        if not isinstance(split, str | None) or split not in LAYOUT:
            raise errors.input_error(
                "record", f"a 'split' among {[s for s in LAYOUT if s]} or none",
                repr(split), "write {'step': ..., 'split': 'test', 'loss': ...}")
        if not is_process_zero():
            return
        run, prefix = LAYOUT[split]
        tags = {prefix + key: number for key, number in
                ((k, _as_float(v)) for k, v in record.items() if k not in _RECORD_KEYS)
                if number is not None}
        if tags:  # a record without numbers leaves no folder behind
            self._add(_folder(record.get("member"), run), _scalars(tags), step)

    def write_hparams(self, hparams: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                      metrics: Sequence[str], step: int = 0) -> None:
        """Records the hyper-parameters of the run for TensorBoard's hparams dashboard.

        Args:
          hparams: one run's settings, name -> bool, number or string (other values are
            shown as text); or a population's: one mapping per member, member ``i``'s
            session being its folder ``member_<i>``.
          metrics: names of the test metrics given to :meth:`write` (split "test"):
            the table's columns, read from each session's ``test/<name>``.
          step: the step the records carry (the run's last).

        Example::

            tb.write_hparams([{"learning_rate": 1e-3}, {"learning_rate": 3e-3}],
                             metrics=["loss", "accuracy"])
        """
        sessions: list[tuple[int | None, Any]] = []
        if isinstance(hparams, Mapping):
            sessions = [(None, hparams)]
        elif isinstance(hparams, Sequence) and not isinstance(hparams, str):
            sessions = list(enumerate(hparams))  # member i's session: member_<i>/
        if not sessions or not all(isinstance(v, Mapping) for _, v in sessions):
            raise errors.input_error(
                "hparams", "a mapping name -> value, or one such mapping per member",
                errors.describe(hparams), "pass e.g. {'learning_rate': 1e-3, 'batch_size': 32}")
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        if not is_process_zero():
            return
        for member, values in sessions:
            for summary in hparams_lib.session_summaries(values):
                self._add(_folder(member, ""), summary, step)
        experiment = hparams_lib.experiment_summary(
            [values for _, values in sessions], [("", f"test/{m}") for m in metrics])
        self._add("", experiment, step)

    def close(self) -> None:
        """Writes out everything written and closes the files; a later write opens new ones."""
        files, self._files = self._files, {}
        failed = None
        for events in files.values():
            try:
                events.close()
            except OSError as error:  # the descriptor is closed all the same
                failed = error
        if failed is not None:
            self._fail(failed)
