"""Metrics as a CSV table: one row per epoch (and member), columns that never move.

Only process 0 writes. A run resumed at step ``s`` keeps the rows up to ``s``
and replaces what came after them, as ``metrics.jsonl`` does.

Example::

    table = CsvWriter("runs/a/metrics.csv")
    state, history = trainer.fit(state, x, y, epochs=5, callbacks=[table])
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from jaxdl.train.callbacks import Callback, member_logs
from jaxdl.writers._process import is_process_zero


def _cell(value: Any) -> str:
    # str(float) is the shortest text that reads back as the same float; non-finite values
    # are spelled as Python's float() reads them back.
    number = float(value)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return str(number)


class CsvWriter(Callback):
    """Writes one CSV row per epoch: ``epoch, step``, training metrics, then ``val_`` metrics.

    ``epoch`` counts from 1 and ``step`` is the optimizer step after the epoch,
    as in metrics.jsonl. The header comes from the first epoch's logs. Columns
    never move: a key that appears later is added at the end (the file is
    rewritten, earlier rows empty there), and a key missing from an epoch
    leaves its cell empty. NaN and inf are written ``nan``, ``inf``, ``-inf``.
    A resumed run keeps the rows up to the step it starts from.

    Args:
      path: the .csv file (its folder is created if needed).
    """

    needs_every_epoch = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.steps_per_epoch: int | None = None
        self.columns: list[str] | None = None

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.path.exists():
            return [], []
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            if self.columns is None:
                return  # nothing kept: the first epoch writes the header
            writer = csv.DictWriter(f, self.columns, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def on_train_begin(self, state, context):
        self.members = context.get("members")
        self.steps_per_epoch = context["steps_per_epoch"]
        if not is_process_zero():
            return state
        start = int(context.get("step", 0))
        columns, rows = self._read()
        kept = [row for row in rows if (row.get("step") or "").isdigit()
                and int(row["step"]) <= start]
        self.columns = columns if kept else None
        self._rewrite(kept)
        return state

    def on_epoch_end(self, epoch, logs, state):
        if not is_process_zero():
            return state
        rows = [{"epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
                 **({} if member is None else {"member": member}),
                 **{key: _cell(value) for key, value in values.items()}}
                for member, values in member_logs(logs, self.members)]
        if not rows:
            return state
        lead = ["epoch", "step", *(["member"] if "member" in rows[0] else [])]
        keys = ([k for k in logs if not k.startswith("val_")] +
                [k for k in logs if k.startswith("val_")])
        if self.columns is None:
            self.columns = [*lead, *keys]
            self._rewrite(rows)
            return state
        new = [k for k in [*lead, *keys] if k not in self.columns]
        if new:  # rare (e.g. a metric that starts mid-run): rewrite under the wider header
            self.columns += new
            self._rewrite([*self._read()[1], *rows])
            return state
        # Opened per epoch so that a crashed run leaves every finished epoch on disk.
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns, restval="").writerows(rows)
        return state
