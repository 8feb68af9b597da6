"""The fit driver's view of a population: data seeds, who still trains, per-member logs.

A single model is the trivial case (``size`` None): one seed, logs as floats.
Callbacks see the members through :class:`MemberView` (``context["members"]`` in
``on_train_begin``): which members the epoch being reported trained.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl import nonfinite as nonfinite_lib
from jaxdl import population as population_lib
from jaxdl.state import TrainState


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class MemberView:
    """What callbacks may read of the members: ``size`` and ``reported``.

    ``reported``: bool [N], the members that trained in the epoch being reported
    (None for a single model).
    """

    def __init__(self, members: Members):
        self._members = members

    @property
    def size(self) -> int | None:
        return self._members.size

    @property
    def reported(self) -> np.ndarray | None:
        shown = self._members.shown
        return None if shown is None else shown.copy()


class Members:
    """Data seeds and the active mask of a fit (see :func:`members_for`)."""

    def __init__(self, size: int | None, seeds: list[int], per_member: bool):
        self.size, self.seeds, self.per_member = size, seeds, per_member
        self.index_axes = (size,) if per_member else ()
        self.active = np.ones(size, bool) if size else None
        self.shown = self.active  # members whose metrics the current dispatch reports
        self.diverged: dict[int, int] = {}
        self._device: tuple[bytes, Any] | None = None
        self.view = MemberView(self)

    @property
    def identity_seed(self) -> int | list[int]:
        """The seed a checkpoint records to recognize its run."""
        return self.seeds if self.per_member else int(self.seeds[0])

    def device_active(self, put: Callable[[Any], Any]) -> Any:
        """The active mask on device for the next dispatch (None for a single model)."""
        if self.size is None:
            return None
        self.shown = self.active.copy()
        if self._device is None or self._device[0] != self.active.tobytes():
            self._device = (self.active.tobytes(), put(self.active))
        return self._device[1]

    def logs(self, logs: dict[str, Any]) -> dict[str, Any]:
        """Floats for one model; float64 [N] for a population, NaN where a member stopped."""
        if self.size is None:  # a matrix-valued metric (confusion) as nested lists
            return {k: float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64).tolist()
                    for k, v in logs.items()}
        out = {}
        for key, value in logs.items():
            value = np.array(value, np.float64)
            value = value.reshape(self.size, *value.shape[1:] if value.ndim > 1 else ())
            value[~self.shown] = np.nan
            out[key] = value
        return out

    def history_value(self, value: Any) -> Any:
        """A log value as history keeps it: a float, or a list of one float per member."""
        return value.tolist() if self.size else value

    def update(self, callbacks: Sequence[Any]) -> bool:
        """Applies the callbacks' per-member stops; True when training should end."""
        if any(cb.stop_training for cb in callbacks):
            return True
        if self.size is None:
            return False
        for cb in callbacks:
            stopped = getattr(cb, "stopped_members", None)
            if stopped is not None:
                self.active &= ~np.asarray(stopped, bool)
        return not self.active.any()

    def restore(self, diverged: dict[str, int], callbacks: Sequence[Any]) -> None:
        """After a resume: members that diverged or stopped before the checkpoint stay out."""
        if self.size is None:
            return
        self.diverged = {int(m): step for m, step in diverged.items()}
        self.active[list(self.diverged)] = False
        self.update(callbacks)

    def diverge(self, record: dict[str, np.ndarray], rows: int, state: TrainState
                ) -> dict[int, int]:
        """``nan_policy="raise"`` per member: a member whose step was non-finite stops there
        (the block froze it on device); raises only when no member is left.

        Returns the members that stopped in this dispatch, member -> step.
        """
        newly = nonfinite_lib.diverged_members(record, rows, self.shown)
        hparams = population_lib.hparams(state) if newly else {}
        for m, step in newly.items():
            self.diverged[m] = step
            self.active[m] = False
            values = {k: float(v[m]) for k, v in hparams.items()}
            warnings.warn(f"population member {m}{f' {values}' if values else ''}: training "
                          f"step {step} was non-finite; this member stops with its last good "
                          "state, the others go on.", stacklevel=3)
        if self.diverged and len(self.diverged) == self.size:
            raise nonfinite_lib.all_diverged_error(self.size, self.diverged)
        return newly


def members_for(state: TrainState, seed: Any) -> Members:
    """The members of a fit of ``state`` with data ``seed`` (an int, or one per member)."""
    size = population_lib.size(state)
    if size is None or _is_int(seed):
        if not _is_int(seed):
            raise errors.type_error("seed", "an int" + (" (one seed per member is for "
                                    "population states)" if size is None else ""),
                                    errors.describe(seed), "pass seed=0")
        return Members(size, [int(seed)], False)
    seeds = list(seed) if isinstance(seed, Sequence | np.ndarray) else None
    if seeds is None or len(seeds) != size or not all(_is_int(s) for s in seeds):
        raise errors.input_error("seed", f"an int, or {size} ints (one data seed per member)",
                                 errors.describe(seed), "pass seed=0 (shared batches) or "
                                 f"seed=list(range({size})) (each member its own order)")
    return Members(size, [int(s) for s in seeds], True)
