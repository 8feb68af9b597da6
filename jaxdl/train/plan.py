"""The dispatch plan of a fit: how many epochs and steps each compiled block runs.

Decided once from the run's settings (epochs, steps per epoch, steps per
dispatch, whether a callback needs every epoch, whether the model runs well in
a rolled loop, the checkpoint cadence), never from where a run was resumed: a
resumed run executes the same compiled blocks on the same batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxdl.data import validate as check

# With nothing to run between epochs, "auto" fuses whole epochs up to this many
# steps per dispatch: enough to amortize the ~0.1 ms dispatch, few enough that
# progress still shows.
AUTO_STEPS_PER_DISPATCH = 2048


def dispatch_shape(steps_per_epoch: int, epochs: int, steps_per_dispatch: int | str,
                   every_epoch: bool, loop_friendly: bool) -> tuple[int, int]:
    """(epochs, steps) of one dispatch block.

    ``steps_per_dispatch``: an int (Keras' ``steps_per_execution``: whole epochs
    when it is a multiple of an epoch), "epoch", or "auto" (per-step dispatch
    where loops are slow, else whole epochs up to :data:`AUTO_STEPS_PER_DISPATCH`).
    ``every_epoch``: a callback must see each epoch, so a block never spans two.
    """
    per_epoch = steps_per_epoch
    if steps_per_dispatch == "auto":
        if not loop_friendly:
            return 1, 1
        if per_epoch > AUTO_STEPS_PER_DISPATCH:
            return 1, math.ceil(per_epoch / math.ceil(per_epoch / AUTO_STEPS_PER_DISPATCH))
        per_block = 1 if every_epoch else AUTO_STEPS_PER_DISPATCH // per_epoch
        return max(1, min(epochs, per_block)), per_epoch
    if steps_per_dispatch == "epoch":
        return 1, per_epoch
    if steps_per_dispatch < per_epoch:
        return 1, steps_per_dispatch
    return (1 if every_epoch else max(1, min(epochs, steps_per_dispatch // per_epoch))), per_epoch


def check_steps_per_dispatch(value: Any) -> int | str:
    """``steps_per_dispatch`` as "auto", "epoch" or an int >= 1, or the kit's error."""
    if value in ("auto", "epoch"):
        return value
    return check.positive_int(value, "steps_per_dispatch",
                              "pass an integer >= 1, 'epoch' or 'auto'")


def checkpoint_caps(epochs_per_block: int, steps_per_block: int, steps_per_epoch: int,
                    every_epochs: int | None, every_steps: int | None) -> tuple[int, int]:
    """Shrinks blocks so that every save point is a dispatch boundary."""
    if every_epochs:
        epochs_per_block = max(d for d in range(1, epochs_per_block + 1)
                               if every_epochs % d == 0)
    if every_steps and every_steps < steps_per_epoch * epochs_per_block:
        if every_steps >= steps_per_epoch:
            epochs_per_block = every_steps // steps_per_epoch
        else:
            epochs_per_block, steps_per_block = 1, min(steps_per_block, every_steps)
    return epochs_per_block, steps_per_block


@dataclasses.dataclass(frozen=True)
class Dispatch:
    """One call of the compiled block: steps ``[first_step, first_step + S)`` of each epoch
    in ``epochs`` (S = the plan's ``steps_per_block``)."""

    epochs: tuple[int, ...]
    first_step: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """The fixed grid of dispatches from epoch ``origin`` to ``epochs`` (exclusive)."""

    origin: int
    epochs: int
    steps_per_epoch: int
    epochs_per_block: int
    steps_per_block: int

    def dispatches(self, start: tuple[int, int] = (0, 0)) -> Iterator[Dispatch]:
        """The grid's dispatches at or after ``start`` = (epoch, step in epoch)."""
        for dispatch in self._grid():
            if (dispatch.epochs[0], dispatch.first_step) >= start:
                yield dispatch

    def _grid(self) -> Iterator[Dispatch]:
        if self.epochs_per_block > 1:
            for first in range(self.origin, self.epochs, self.epochs_per_block):
                yield Dispatch(tuple(range(first, min(first + self.epochs_per_block,
                                                      self.epochs))), 0)
            return
        for epoch in range(self.origin, self.epochs):
            for first in range(0, self.steps_per_epoch, self.steps_per_block):
                yield Dispatch((epoch,), first)

    def ends_epoch(self, dispatch: Dispatch) -> bool:
        """Whether ``dispatch`` runs the last step of its epochs."""
        return dispatch.first_step + self.steps_per_block >= self.steps_per_epoch

    def steps_in(self, dispatch: Dispatch) -> int:
        """The optimizer steps ``dispatch`` runs (a ragged last block runs fewer)."""
        per_epoch = min(self.steps_per_block, self.steps_per_epoch - dispatch.first_step)
        return per_epoch * len(dispatch.epochs)

    def after(self, dispatch: Dispatch) -> tuple[int, int]:
        """(epoch, step in epoch) where the run stands once ``dispatch`` ran."""
        if self.ends_epoch(dispatch):
            return dispatch.epochs[-1] + 1, 0
        return dispatch.epochs[0], dispatch.first_step + self.steps_per_block

    def position(self, dispatch: Dispatch) -> np.ndarray:
        """int32 [E, 2]: per block row (first step, real); padding rows are not real."""
        position = np.zeros((self.epochs_per_block, 2), np.int32)
        position[:, 0] = dispatch.first_step
        position[: len(dispatch.epochs), 1] = 1
        return position

    def static(self, batch_size: int, host_examples: int | None) -> dict[str, Any]:
        """The block's static arguments (each distinct value is one compile)."""
        num_epochs = self.epochs - self.origin
        return dict(batch_size=batch_size, num_steps=self.steps_per_block,
                    ragged_steps=self.steps_per_epoch % self.steps_per_block != 0,
                    ragged_epochs=(self.epochs_per_block > 1
                                   and num_epochs % self.epochs_per_block != 0),
                    num_examples=host_examples)


def make_plan(origin: int, epochs: int, steps_per_epoch: int, steps_per_dispatch: int | str,
              every_epoch: bool, loop_friendly: bool, checkpointing: Any = None) -> Plan:
    """The plan of a fit resuming at epoch ``origin`` (see :func:`dispatch_shape`)."""
    num_epochs = max(0, epochs - origin)
    shape = dispatch_shape(steps_per_epoch, num_epochs, steps_per_dispatch, every_epoch,
                           loop_friendly)
    if checkpointing is not None:
        shape = checkpoint_caps(*shape, steps_per_epoch, checkpointing.every_epochs,
                                checkpointing.every_steps)
    return Plan(origin, epochs, steps_per_epoch, *shape)
