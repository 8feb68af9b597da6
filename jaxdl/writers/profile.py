"""``--config.profile.steps=START:END``: a jax.profiler trace of those training steps.

The trace lands in ``WORKDIR/profile/`` (TensorBoard's profile plugin or
Perfetto open it). Tracing starts and stops at epoch boundaries (dispatch
boundaries: a compiled block cannot be split), the first ones at or after
START and END.
"""

from __future__ import annotations

from pathlib import Path

import jax

from jaxdl import errors
from jaxdl.train.callbacks import Callback


def parse_steps(text: str) -> tuple[int, int] | None:
    """"START:END" -> (start, end); "" -> None; anything else is a clear error."""
    if not text:
        return None
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        start, end = -1, -1
    if not 0 <= start < end:
        raise errors.input_error("profile.steps", "'START:END' with 0 <= START < END",
                                 repr(text), "pass e.g. --config.profile.steps=10:20")
    return start, end


class Profiler(Callback):
    """Traces steps [start, end) with ``jax.profiler`` into ``directory``."""

    def __init__(self, directory: str | Path, start: int, end: int):
        self.directory, self.start, self.end = Path(directory), start, end
        self.active = False
        self.traced: tuple[int, int] | None = None

    def _step(self, epoch: int) -> int:
        return (epoch + 1) * self.steps_per_epoch

    def on_train_begin(self, state, context):
        self.steps_per_epoch = context["steps_per_epoch"]
        self._maybe_start(context.get("step", 0))
        return state

    def _maybe_start(self, step: int) -> None:
        if not self.active and self.traced is None and self.start <= step < self.end:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.active, self.began = True, step

    def on_epoch_end(self, epoch, logs, state):
        step = self._step(epoch)
        if self.active and step >= self.end:
            jax.block_until_ready(state.step)
            jax.profiler.stop_trace()
            self.active, self.traced = False, (self.began, step)
        else:
            self._maybe_start(step)
        return state

    def on_train_end(self, state):
        if self.active:
            jax.block_until_ready(state.step)
            jax.profiler.stop_trace()
            self.active = False
        return state
