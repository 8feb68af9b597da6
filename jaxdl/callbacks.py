"""Driver-side hooks run at epoch ends: early stopping, LR on plateau, NaN policy.

Callbacks live outside ``jit``: the fit driver calls them after each dispatch,
once per finished epoch, with that epoch's logs (``loss``, metrics, ``val_*``).
They may return a new state (restored weights, a lowered learning rate) and set
``stop_training``. When callbacks are given, each dispatch ends at an epoch
boundary, so a stop takes effect exactly where Keras would stop.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import jax

from jaxdl import errors
from jaxdl import optim as optim_lib
from jaxdl.state import TrainState


def _copy(state: TrainState) -> TrainState:
    # The driver donates the state to the next dispatch: keep our own buffers.
    return jax.tree.map(lambda a: a.copy(), state)


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


class Callback:
    """Base class; override what you need. ``stop_training`` ends ``fit`` after this epoch."""

    stop_training: bool = False

    def on_train_begin(self, state: TrainState, context: dict[str, Any]) -> TrainState:
        """Called once before the first dispatch; ``context`` has epochs, steps_per_epoch..."""
        return state

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState) -> TrainState:
        """Called after each epoch (0-based ``epoch``) with its logs; returns the state to go on."""
        return state

    def on_train_end(self, state: TrainState) -> TrainState:
        """Called once at the end of ``fit``; returns the state ``fit`` returns."""
        return state

    # Checkpointing: a resumed run must continue exactly where it stopped, so a
    # callback's own progress (counters as JSON, arrays as a pytree) is saved too.

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe progress (counters, best values) saved with each checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any], arrays: Any = None) -> None:
        """Restores what :meth:`state_dict` and :meth:`checkpoint_arrays` saved."""

    def checkpoint_arrays(self) -> Any:
        """A pytree of arrays to save with the checkpoint, or None."""
        return None

    def checkpoint_template(self, state: TrainState) -> Any:
        """The structure :meth:`checkpoint_arrays` has, given the run's state (or None)."""
        return None


class _Monitor(Callback):
    """Tracks the best value of one logged quantity."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise errors.input_error("mode", "'auto', 'min' or 'max'", repr(mode),
                                     "use 'min' for losses and errors, 'max' for accuracies")
        if mode == "auto":
            mode = "max" if any(k in monitor for k in ("acc", "auc", "f1", "precision",
                                                        "recall")) else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def _value(self, logs: dict[str, float]) -> float | None:
        if self.monitor not in logs:
            warnings.warn(f"{type(self).__name__}: monitored quantity {self.monitor!r} is not "
                          f"in the logs (available: {sorted(logs)}); pass validation_data "
                          f"or monitor one of those.", stacklevel=3)
            return None
        return logs[self.monitor]

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


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
        self.best_state: TrainState | None = None

    def on_epoch_end(self, epoch, logs, state):
        value = self._value(logs)
        if value is None or epoch < self.start_from_epoch:
            return state
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = _copy(state)
            return state
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stop_training, self.stopped_epoch = True, epoch
        return state

    def state_dict(self):
        return {"best": _json_float(self.best), "wait": self.wait, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "stop_training": self.stop_training,
                "has_best_state": self.best_state is not None}

    def load_state_dict(self, state, arrays=None):
        if not state:
            return
        self.best, self.wait = float(state["best"]), state["wait"]
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        self.stop_training = state["stop_training"]
        if arrays is not None and state["has_best_state"]:
            self.best_state = arrays

    def checkpoint_arrays(self):
        if not self.restore_best_weights or self.best_state is None:
            return None
        return {"params": self.best_state.params, "model_state": self.best_state.model_state}

    def checkpoint_template(self, state):
        if not self.restore_best_weights:
            return None
        return {"params": state.params, "model_state": state.model_state}

    def on_train_end(self, state):
        if self.restore_best_weights and self.best_state is not None:
            # Keep the step counter, data position and RNG moving forward; restore the model.
            best = self.best_state
            if isinstance(best, dict):  # restored from a checkpoint
                return state.replace(params=best["params"], model_state=best["model_state"])
            return state.replace(params=best.params, model_state=best.model_state)
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
        return {"best": _json_float(self.best), "wait": self.wait, "cooling": self.cooling,
                "history": self.history}

    def load_state_dict(self, state, arrays=None):
        if state:
            self.best, self.wait, self.cooling = float(state["best"]), state["wait"], \
                state["cooling"]
            self.history = [tuple(h) for h in state["history"]]

    def on_epoch_end(self, epoch, logs, state):
        value = self._value(logs)
        if value is None:
            return state
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
        if self.restore_last_good:
            self.good = _copy(state)
        return state

    def on_epoch_end(self, epoch, logs, state):
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
