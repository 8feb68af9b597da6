"""Where metrics go: the console (a line per epoch, a live bar on a terminal) and JSONL.

Writers are callbacks that never change the state and do not need to run
between epochs (``needs_every_epoch = False``), so they do not stop the driver
from fusing several epochs into one dispatch: their lines then arrive together
when that dispatch ends.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from jaxdl.callbacks import Callback, member_logs


def _number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else f"{value}"


def format_logs(logs: dict[str, Any]) -> str:
    """``loss 0.1234 · accuracy 0.9500 · val_loss ...`` with 4 significant decimals.

    A population's values ([N]) read ``loss 0.0107..0.2329 (median 0.0241)`` over the
    members that still train.
    """
    parts = []
    for key, value in logs.items():
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
        if self.members_active is not None:
            members = f" · {int(np.sum(self.members_active))}/{len(self.members_active)} members"
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


def jsonable(value: Any) -> Any:
    """Floats stay full precision; NaN/inf become strings JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonlWriter(Callback):
    """Appends one JSON object per split per epoch to ``path`` (the metrics.jsonl contract).

    Each line: ``{"step", "epoch", "split", <metric>: float, ...}``; ``epoch`` counts
    from 1; ``step`` is the optimizer step after that epoch. A population writes one
    line per member that trained that epoch, with a ``"member"`` index.
    """

    needs_every_epoch = False

    def __init__(self, path: str | Path, steps_per_epoch: int | None = None):
        self.path = Path(path)
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, state, context):
        # A resumed run rewrites what came after its checkpoint: keep the train/val lines up
        # to the step it starts from, drop later ones and any test line.
        import jax

        self.steps_per_epoch = context["steps_per_epoch"]
        start = context.get("step", 0)
        if self.path.exists() and jax.process_index() == 0:
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("split") in ("train", "val")
                    and json.loads(line).get("step", 0) <= start]
            self.path.write_text("".join(line + "\n" for line in kept))
        return state

    def write(self, *records: dict[str, Any]) -> None:
        """Appends records as JSON lines (on process 0 only, in multi-host runs)."""
        import jax

        if jax.process_index() != 0 or not records:
            return
        with self.path.open("a") as f:  # one open per epoch: a population writes N lines
            f.write("".join(json.dumps({k: jsonable(v) for k, v in record.items()}) + "\n"
                            for record in records))

    def on_epoch_end(self, epoch, logs, state):
        step = (epoch + 1) * self.steps_per_epoch
        records = []
        for member, values in member_logs(logs, self.members_active):
            tag = {} if member is None else {"member": member}
            train = {k: v for k, v in values.items() if not k.startswith("val_")}
            records.append({"step": step, "epoch": epoch + 1, "split": "train", **tag, **train})
            val = {k[4:]: v for k, v in values.items() if k.startswith("val_")}
            if val:
                records.append({"step": step, "epoch": epoch + 1, "split": "val", **tag, **val})
        self.write(*records)
        return state
