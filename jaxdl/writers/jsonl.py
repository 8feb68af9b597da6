"""Metrics as JSON lines: ``metrics.jsonl``, the record that resume, plots and tools read."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jaxdl.train.callbacks import Callback, member_logs
from jaxdl.writers._process import is_process_zero


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
        self.members = context.get("members")
        # A resumed run rewrites what came after its checkpoint: keep the train/val lines up
        # to the step it starts from, drop later ones and any test line.
        self.steps_per_epoch = context["steps_per_epoch"]
        start = context.get("step", 0)
        if self.path.exists() and is_process_zero():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("split") in ("train", "val")
                    and json.loads(line).get("step", 0) <= start]
            self.path.write_text("".join(line + "\n" for line in kept))
        return state

    def write(self, *records: dict[str, Any]) -> None:
        """Appends records as JSON lines (on process 0 only, in multi-host runs)."""
        if not is_process_zero() or not records:
            return
        with self.path.open("a") as f:  # one open per epoch: a population writes N lines
            f.write("".join(json.dumps({k: jsonable(v) for k, v in record.items()}) + "\n"
                            for record in records))

    def on_epoch_end(self, epoch, logs, state):
        step = (epoch + 1) * self.steps_per_epoch
        records = []
        for member, values in member_logs(logs, self.members):
            tag = {} if member is None else {"member": member}
            train = {k: v for k, v in values.items() if not k.startswith("val_")}
            records.append({"step": step, "epoch": epoch + 1, "split": "train", **tag, **train})
            val = {k[4:]: v for k, v in values.items() if k.startswith("val_")}
            if val:
                records.append({"step": step, "epoch": epoch + 1, "split": "val", **tag, **val})
        self.write(*records)
        return state
