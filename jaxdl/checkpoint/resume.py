"""What a fit saves to go on exactly where it stopped, and how it reads it back.

A fit's checkpoint holds the state, the current epoch's training statistics
(``acc``), the callbacks' arrays, and as JSON meta its :class:`Position` (epoch,
step in epoch, where the history log stood: :mod:`jaxdl.checkpoint.history_log`) and the
run's identity (seed, batch size, example count, shuffle): a checkpoint of other data or
settings is refused, never half-used.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdl import errors
from jaxdl.checkpoint import failures
from jaxdl.checkpoint.history_log import HistoryLog
from jaxdl.checkpoint.integrity import Damaged
from jaxdl.checkpoint.schema import check_history
from jaxdl.state import TrainState

if TYPE_CHECKING:  # the manager imports Orbax (a second): only a fit that checkpoints needs it
    from jaxdl.checkpoint.manager import Checkpointing
    from jaxdl.train.callbacks import Callback


@dataclasses.dataclass
class Position:
    """Where a fit stands: what a checkpoint's ``position`` and ``history`` record."""

    origin: int
    epoch: int
    first: int
    history: dict[str, list[Any]]
    finished: bool = False
    # A population's members stopped by nan_policy="raise": member (str) -> step.
    diverged: dict[str, int] = dataclasses.field(default_factory=dict)


def _best_of(value: float | list[float], mode: str) -> float:
    """A population's value for keeping the best checkpoint: its best member's."""
    if not isinstance(value, list):
        return value
    finite = [v for v in value if np.isfinite(v)]
    if not finite:
        return float("nan")
    return min(finite) if mode == "min" else max(finite)


# What restore() reads from a fit's meta: a checkpoint without one of them is unusable (the
# schema checks their types and ranges, jaxdl.checkpoint.schema), as is one with neither a
# history_log nor (written before the log) a history.
_REQUIRED = ("position", "origin_epoch", "finished", "callbacks")


class FitCheckpoints:
    """Saves and restores one fit's checkpoints (state, statistics, callbacks, position)."""

    def __init__(self, checkpointing: Checkpointing, callbacks: Sequence[Callback],
                 identity: dict[str, Any], data: Any = None):
        self.checkpointing, self.callbacks, self.identity = checkpointing, callbacks, identity
        # A dataset's reading position (jaxdl.train.prefetch.IterableSource): saved as
        # ``data_position`` in the meta, handed back on restore to position the reading.
        self.data = data
        self.checkpointer = checkpointing.checkpointer
        self.log = HistoryLog(self.checkpointer.directory)

    def _callback_tree(self, arrays_of) -> dict[str, Any]:
        extra = {str(i): arrays_of(cb) for i, cb in enumerate(self.callbacks)}
        return {k: v for k, v in extra.items() if v is not None}

    def save(self, step: int, state: TrainState, acc: Any, position: Position) -> None:
        """Writes a checkpoint at optimizer step ``step`` (asynchronously)."""
        from jaxdl.checkpoint.targets import storable

        try:
            # Appended now, so the log holds the history at this step (an async save
            # serializes the meta later, while the fit appends to the history).
            log = self.log.record(position.history)
        except OSError as e:
            self.checkpointer.wait()  # what is in flight commits (or fails) before telling
            raise failures.write_failed(self.checkpointer.directory, step, e,
                                        f"its history log {self.log.path.name}") from None
        tree = {"state": storable(state), "acc": acc}
        extra = self._callback_tree(lambda cb: cb.checkpoint_arrays())
        if extra:
            tree["callbacks"] = extra
        meta = {**self.checkpointing.meta, **self.identity,
                "position": {"epoch": position.epoch, "step_in_epoch": position.first,
                             "step": step},
                "origin_epoch": position.origin, "finished": position.finished,
                "history_log": log,
                "diverged": dict(position.diverged),
                "callbacks": copy.deepcopy([cb.state_dict() for cb in self.callbacks])}
        if self.data is not None:
            meta["data_position"] = copy.deepcopy(self.data.checkpoint_state())
        # Numbers only: a confusion matrix (2 or more axes) cannot rank checkpoints.
        metrics = ({k: _best_of(v[-1], self.checkpointer.best_mode)
                    for k, v in position.history.items() if np.ndim(v[-1]) <= 1}
                   if position.history else None)
        self.checkpointer.save(step, tree, meta, metrics)

    def with_history(self, meta: dict[str, Any]) -> dict[str, Any]:
        """``meta`` with its ``history`` read from the log it records, checked against its
        position (raises :class:`Damaged`: the step is then set aside like a corrupt one)."""
        if "history_log" in meta:
            history = self.log.read(meta["history_log"])
        elif "history" in meta:  # written before the log
            history = {k: list(v) for k, v in meta["history"].items()}
        else:
            raise Damaged("its meta lacks history_log")
        check_history(history, meta["position"]["epoch"] - meta["origin_epoch"])
        return {**meta, "history": history}

    def restore(self, state: TrainState, acc: Any) -> tuple[TrainState, Any, Position | None]:
        """The newest good checkpoint's state, statistics and position (callbacks reloaded);
        ``(state, acc, None)`` when there is none. ``state``/``acc`` give the structure and
        shardings to restore into."""
        from jaxdl.checkpoint.targets import storable, unstorable

        target = {"state": storable(state), "acc": acc}
        extra = self._callback_tree(lambda cb: cb.checkpoint_template(state))
        if extra:
            target["callbacks"] = extra
        found = self.checkpointer.restore(target, required=_REQUIRED,
                                          prepare=self.with_history)
        if found is None:
            return state, acc, None
        tree, meta, step = found
        changed = {k: (meta.get(k), v) for k, v in self.identity.items() if meta.get(k) != v}
        if changed:
            raise errors.input_error(
                "checkpoint", f"a checkpoint of this run's data and settings (step {step} under "
                f"{self.checkpointer.directory})",
                "different " + ", ".join(f"{k} (saved {a}, now {b})" for k, (a, b) in
                                         changed.items()),
                "run with the settings the checkpoint was made with, or use a new directory")
        for i, cb in enumerate(self.callbacks):
            cb.load_state_dict(meta["callbacks"][i] if i < len(meta["callbacks"]) else {},
                               tree.get("callbacks", {}).get(str(i)))
        position = Position(
            origin=meta["origin_epoch"], epoch=meta["position"]["epoch"],
            first=meta["position"]["step_in_epoch"],
            history=meta["history"], finished=meta["finished"],
            diverged=dict(meta.get("diverged", {})))
        self.log.continue_from(meta.get("history_log"), position.history)
        if self.data is not None:
            position = self.data.resume(position, meta.get("data_position"))
        return unstorable(tree["state"]), tree["acc"], position


def saved_history(checkpointer: Any, step: int) -> dict[str, list[Any]]:
    """The history a fit's checkpoint ``step`` under ``checkpointer`` vouches for (its meta
    verified, then the log it records: :mod:`jaxdl.checkpoint.history_log`).

    Raises:
      CheckpointError: the step or the history log is unusable.
    """
    meta = checkpointer.read_meta(step)
    try:
        if "history_log" in meta:
            return HistoryLog(checkpointer.directory).read(meta["history_log"])
        return meta["history"]
    except (Damaged, KeyError) as e:
        raise errors.CheckpointError(
            f"checkpoint {step} under {checkpointer.directory} has no usable history: "
            f"{errors.first_sentence(e)}. Fix: restore from the checkpoints before it "
            "(restore() sets this one aside).") from None
