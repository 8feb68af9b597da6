"""Metrics on the console: a line per epoch, and a live progress bar on a terminal."""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

import numpy as np

from jaxdl.train.callbacks import Callback


def _number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else f"{value}"


def format_logs(logs: dict[str, Any]) -> str:
    """``loss 0.1234 · accuracy 0.9500 · val_loss ...`` with 4 significant decimals.

    A population's values ([N]) read ``loss 0.0107..0.2329 (median 0.0241)`` over the
    members that still train. Matrix-valued metrics (a confusion matrix) are left out.
    """
    parts = []
    for key, value in logs.items():
        if np.ndim(value) >= 2:
            continue
        if not np.ndim(value):
            parts.append(f"{key} {_number(float(value))}")
            continue
        finite = np.asarray(value, np.float64)
        finite = finite[np.isfinite(finite)]
        if not finite.size:
            parts.append(f"{key} nan")
            continue
        parts.append(f"{key} {_number(finite.min())}..{_number(finite.max())} "
                     f"(median {_number(float(np.median(finite)))})")
    return " · ".join(parts)


def format_perf(record: dict[str, Any]) -> str:
    """One line: compile time, throughput, FLOPs and MFU when known, cache hits."""
    parts = [f"compile {record.get('compile_s', 0):.2f}s",
             f"{record.get('steps_per_s', 0):,.0f} steps/s",
             f"{record.get('examples_per_s', 0):,.0f} examples/s"]
    if record.get("flops_per_step"):
        parts.append(f"{record['flops_per_step']:.3g} FLOPs/step")
    if record.get("mfu") is not None:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    if "compilation_cache_hits" in record:
        parts.append(f"compilation cache {record['compilation_cache_hits']} hits / "
                     f"{record['compilation_cache_misses']} misses")
    return "perf · " + " · ".join(parts)


class ConsoleLogger(Callback):
    """Prints ``Epoch e/E · metrics · time``; a rich progress bar above it on a terminal."""

    needs_every_epoch = False

    def __init__(self, stream: IO[str] | None = None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._progress = None

    def on_train_begin(self, state, context):
        self.members = context.get("members")
        self.epochs = context["epochs"]
        self.start = self.last = time.perf_counter()
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[logs]}"),
                                      console=Console(file=self.stream), transient=True)
            self._task = self._progress.add_task("fit", total=self.epochs,
                                                 completed=context.get("initial_epoch", 0),
                                                 logs="")
            self._progress.start()
        return state

    def on_epoch_end(self, epoch, logs, state):
        now = time.perf_counter()
        members = ""
        reported = None if self.members is None else self.members.reported
        if reported is not None:
            members = f" · {int(np.sum(reported))}/{len(reported)} members"
        line = (f"Epoch {epoch + 1}/{self.epochs}{members} · {format_logs(logs)} · "
                f"{now - self.last:.2f}s")
        self.last = now
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
            self._progress.update(self._task, completed=epoch + 1,
                                  logs=format_logs({k: v for k, v in logs.items()
                                                    if k in ("loss", "val_loss")}))
        else:
            print(line, file=self.stream, flush=True)
        return state

    def on_train_end(self, state):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        return state
