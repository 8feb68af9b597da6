"""The kit's callbacks: early stopping, LR on plateau, NaN policy; the base classes.

Callbacks live outside ``jit``: the fit driver calls them after each dispatch,
once per finished epoch, with that epoch's logs (``loss``, metrics, ``val_*``).
They may return a new state (restored weights, a lowered learning rate) or None
(unchanged) and set ``stop_training``. When callbacks are given, each dispatch ends
at an epoch boundary, so a stop takes effect exactly where Keras would stop. How
hooks are called — the kit's or Keras' signatures, batch hooks, what a hook may
return — is :mod:`jaxdl.train.hooks`, where :class:`Callback` and
:class:`LambdaCallback` are defined.

Populations (:mod:`jaxdl.population`): each log value is a float64 array [N],
one per member (NaN for members that no longer train; ``context["members"]`` in
``on_train_begin``, a :class:`~jaxdl.train.members.MemberView`, says which trained
the epoch being reported). The kit's callbacks then act per member: early
stopping and NaN termination stop single members (``stopped_members``), the
plateau callback lowers single members' learning rates; ``stop_training`` means
every member is done.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import jax
import numpy as np

from jaxdl import errors
from jaxdl import metrics as metrics_lib
from jaxdl import optim as optim_lib
from jaxdl.state import TrainState
from jaxdl.train.hooks import Callback, LambdaCallback

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "ReduceLROnPlateau", "TerminateOnNaN",
           "member_logs"]


def _copy(state: TrainState) -> TrainState:
    # The driver donates the state to the next dispatch: keep our own buffers.
    return jax.tree.map(lambda a: a.copy(), state)


def _json_float(value: Any) -> Any:
    if np.ndim(value):
        return [_json_float(float(v)) for v in np.asarray(value).ravel()]
    value = float(value)
    return value if math.isfinite(value) else str(value)


def _from_json(value: Any, dtype: Any = np.float64) -> Any:
    if isinstance(value, list):
        return np.asarray([float(v) for v in value], dtype)
    return float(value) if dtype == np.float64 else value


def member_logs(logs: dict[str, Any], members: Any = None) -> list[tuple[int | None, dict]]:
    """``[(None, logs)]`` for one model; ``[(i, logs of member i), ...]`` for a population
    (the members the epoch trained, when ``members``, the fit's
    :class:`~jaxdl.train.members.MemberView`, is given). Matrix-valued metrics (the
    confusion matrix: 2 or more axes) are left out: the writers record numbers."""
    logs = {k: v for k, v in logs.items() if np.ndim(v) < 2}
    sizes = {np.size(v) for v in logs.values() if np.ndim(v)}
    if not sizes:
        return [(None, {k: float(v) for k, v in logs.items()})]
    n = sizes.pop()
    active = None if members is None else members.reported
    members = range(n) if active is None else np.flatnonzero(active)
    return [(int(i), {k: float(np.asarray(v).reshape(n)[i]) for k, v in logs.items()})
            for i in members]


class _Monitor(Callback):
    """Tracks the best value of one logged quantity."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise errors.input_error("mode", "'auto', 'min' or 'max'", repr(mode),
                                     "use 'min' for losses and errors, 'max' for accuracies")
        if mode == "auto":
            mode = metrics_lib.mode(monitor)
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def _value(self, logs: dict[str, float]) -> float | None:
        if self.monitor not in logs:
            warnings.warn(f"{type(self).__name__}: monitored quantity {self.monitor!r} is not "
                          f"in the logs (available: {sorted(logs)}); pass validation_data "
                          f"or monitor one of those.", stacklevel=3)
            return None
        return logs[self.monitor]

    def _improved(self, value: Any) -> Any:
        """Elementwise for a population: [N] bools (NaN never improves)."""
        with np.errstate(invalid="ignore"):
            if self.mode == "min":
                return np.less(value, self.best - self.min_delta)
            return np.greater(value, self.best + self.min_delta)

    def _per_member(self, value: Any) -> bool:
        """Whether ``value`` is a population's [N]; sets up per-member counters once."""
        if not np.ndim(value):
            return False
        if not np.ndim(self.best):
            self.best = np.full(np.size(value), self.best)
            self._start_members(np.size(value))
        return True

    def _start_members(self, n: int) -> None:
        pass


class EarlyStopping(_Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
      monitor: a log key, e.g. "val_loss" or "val_accuracy".
      patience: epochs without improvement before stopping.
      min_delta: smallest change that counts as an improvement.
      mode: "min", "max" or "auto" (max for accuracy-like names).
      restore_best_weights: return the state of the best epoch instead of the last.
      start_from_epoch: epochs to wait before counting.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        super().__init__(monitor, mode, min_delta)
        if patience < 0:
            raise errors.input_error("patience", "an integer >= 0", repr(patience),
                                     "pass e.g. patience=5")
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.wait, self.best_epoch, self.stopped_epoch = 0, None, None
        # The best epoch's {"params", "model_state"} (per member for a population).
        self.best_state: dict[str, Any] | None = None

    def _start_members(self, n):
        self.wait, self.best_epoch = np.zeros(n, int), np.full(n, -1)
        self.stopped_members = np.zeros(n, bool)
        self.stopped_epoch = np.full(n, -1)

    def on_epoch_end(self, epoch, logs, state):
        value = self._value(logs)
        if value is None or epoch < self.start_from_epoch:
            return state
        if self._per_member(value):
            return self._members_epoch(epoch, np.asarray(value, np.float64), state)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = _copy({"params": state.params,
                                         "model_state": state.model_state})
            return state
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stop_training, self.stopped_epoch = True, epoch
        return state

    def _members_epoch(self, epoch, value, state):
        from jaxdl import population

        running = ~self.stopped_members
        improved = self._improved(value) & running
        self.best = np.where(improved, value, self.best)
        self.best_epoch = np.where(improved, epoch, self.best_epoch)
        self.wait = np.where(improved, 0, self.wait + running)
        newly = running & (self.wait >= max(self.patience, 1))
        self.stopped_members = self.stopped_members | newly
        self.stopped_epoch = np.where(newly, epoch, self.stopped_epoch)
        self.stop_training = bool(self.stopped_members.all())
        if self.restore_best_weights and improved.any():
            kept = {"params": state.params, "model_state": state.model_state}
            self.best_state = _copy(kept) if self.best_state is None else population.select_jit(
                improved, kept, self.best_state)
        return state

    def state_dict(self):
        array = lambda v: v.tolist() if isinstance(v, np.ndarray) else v
        return {"best": _json_float(self.best), "wait": array(self.wait),
                "best_epoch": array(self.best_epoch), "stopped_epoch": array(self.stopped_epoch),
                "stop_training": self.stop_training,
                "stopped_members": array(self.stopped_members),
                "has_best_state": self.best_state is not None}

    def load_state_dict(self, state, arrays=None):
        if not state:
            return
        self.best, self.wait = _from_json(state["best"]), _from_json(state["wait"], int)
        self.best_epoch = _from_json(state["best_epoch"], int)
        self.stopped_epoch = _from_json(state["stopped_epoch"], int)
        self.stop_training = state["stop_training"]
        if state.get("stopped_members") is not None:
            self.stopped_members = np.asarray(state["stopped_members"], bool)
        if arrays is not None and state["has_best_state"]:
            self.best_state = arrays

    def checkpoint_arrays(self):
        if not self.restore_best_weights or self.best_state is None:
            return None
        return self.best_state

    def checkpoint_template(self, state):
        if not self.restore_best_weights:
            return None
        return {"params": state.params, "model_state": state.model_state}

    def on_train_end(self, state):
        if self.restore_best_weights and self.best_state is not None:
            # Keep the step counter, data position and RNG moving forward; restore the model.
            best = self.best_state
            if np.ndim(self.best_epoch):  # members that never improved keep their state
                from jaxdl import population

                best = population.select_jit(self.best_epoch >= 0, best, {
                    "params": state.params, "model_state": state.model_state})
            return state.replace(params=best["params"], model_state=best["model_state"])
        return state


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` when ``monitor`` stops improving.

    Works with any optimizer: the Trainer appends an injected scale
    (:func:`jaxdl.optim.with_lr_scale`), and this callback changes that value
    in the state — data, so nothing recompiles.

    Args:
      monitor, mode, min_delta: as in :class:`EarlyStopping`.
      factor: multiplier in (0, 1).
      patience: epochs without improvement before reducing.
      cooldown: epochs to wait after a reduction before counting again.
      min_scale: the scale (fraction of the initial learning rate) never goes below this.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, mode: str = "auto", cooldown: int = 0,
                 min_scale: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        if not 0 < factor < 1:
            raise errors.input_error("factor", "a float in (0, 1)", repr(factor),
                                     "pass e.g. factor=0.5")
        self.factor, self.patience, self.cooldown = factor, patience, cooldown
        self.min_scale = min_scale
        self.wait, self.cooling = 0, 0
        self.history: list[tuple[int, float]] = []

    def state_dict(self):
        array = lambda v: v.tolist() if isinstance(v, np.ndarray) else v
        return {"best": _json_float(self.best), "wait": array(self.wait),
                "cooling": array(self.cooling), "history": self.history}

    def load_state_dict(self, state, arrays=None):
        if state:
            self.best = _from_json(state["best"])
            self.wait, self.cooling = (_from_json(state[k], int) for k in ("wait", "cooling"))
            self.history = [tuple(h) for h in state["history"]]

    def _start_members(self, n):
        self.wait, self.cooling = np.zeros(n, int), np.zeros(n, int)

    def _members_epoch(self, epoch, value, state):
        cooled = self.cooling > 0
        self.cooling = np.maximum(self.cooling - 1, 0)
        self.wait = np.where(cooled, 0, self.wait)
        improved = self._improved(value)
        self.best = np.where(improved, value, self.best)
        counting = ~improved & ~cooled & np.isfinite(value)
        self.wait = np.where(improved, 0, self.wait + counting)
        due = counting & (self.wait >= self.patience)
        if due.any():
            scale = np.asarray(jax.device_get(optim_lib.lr_scale(state.opt_state)), np.float64)
            new_scale = np.where(due, np.maximum(scale * self.factor, self.min_scale), scale)
            if (new_scale < scale).any():
                state = state.replace(opt_state=optim_lib.set_lr_scale(state.opt_state,
                                                                       new_scale))
                self.history.append((epoch, new_scale.tolist()))
            self.wait = np.where(due, 0, self.wait)
            self.cooling = np.where(due, self.cooldown, self.cooling)
        return state

    def on_epoch_end(self, epoch, logs, state):
        value = self._value(logs)
        if value is None:
            return state
        if self._per_member(value):
            return self._members_epoch(epoch, np.asarray(value, np.float64), state)
        if self.cooling > 0:
            self.cooling -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return state
        if self.cooling > 0:
            return state
        self.wait += 1
        if self.wait >= self.patience:
            scale = float(optim_lib.lr_scale(state.opt_state))
            new_scale = max(scale * self.factor, self.min_scale)
            if new_scale < scale:
                state = state.replace(opt_state=optim_lib.set_lr_scale(state.opt_state,
                                                                       new_scale))
                self.history.append((epoch, new_scale))
            self.wait, self.cooling = 0, self.cooldown
        return state


class TerminateOnNaN(Callback):
    """Stops when a training metric is NaN/inf; by default returns the last finite state."""

    def __init__(self, restore_last_good: bool = True):
        self.restore_last_good = restore_last_good
        self.good: TrainState | None = None
        self.bad_epoch: int | None = None

    def on_train_begin(self, state, context):
        self.members = context.get("members")
        if self.restore_last_good:
            self.good = _copy(state)
        return state

    def on_epoch_end(self, epoch, logs, state):
        if any(np.ndim(v) for v in logs.values()):
            return self._members_epoch(epoch, logs, state)
        if all(math.isfinite(v) for k, v in logs.items() if not k.startswith("val_")):
            if self.restore_last_good:
                self.good = _copy(state)
            return state
        self.stop_training, self.bad_epoch = True, epoch
        warnings.warn(f"TerminateOnNaN: non-finite training metrics at epoch {epoch + 1} "
                      f"({logs}); stopping" + (", returning the last finite state."
                                               if self.restore_last_good else "."),
                      stacklevel=2)
        return self.good if self.restore_last_good and self.good is not None else state

    def _members_epoch(self, epoch, logs, state):
        from jaxdl import population

        n = next(np.size(v) for v in logs.values() if np.ndim(v))
        if self.stopped_members is None:
            self.stopped_members = np.zeros(n, bool)
        reported = None if self.members is None else self.members.reported
        trained = (np.ones(n, bool) if reported is None else reported) & ~self.stopped_members
        finite = np.all([np.isfinite(np.asarray(v, np.float64).reshape(n))
                         for k, v in logs.items() if not k.startswith("val_")], axis=0)
        bad = trained & ~finite
        if bad.any():
            self.stopped_members = self.stopped_members | bad
            self.stop_training = bool(self.stopped_members.all())
            warnings.warn(f"TerminateOnNaN: non-finite training metrics at epoch {epoch + 1} "
                          f"for members {np.flatnonzero(bad).tolist()}; those members stop"
                          + (" with their last finite state." if self.restore_last_good
                             else "."), stacklevel=2)
            if self.restore_last_good and self.good is not None:
                state = population.select_jit(bad, self.good, state)
        if self.restore_last_good:
            good = trained & finite
            if good.any():
                self.good = population.select_jit(good, state, self.good)
        return state
