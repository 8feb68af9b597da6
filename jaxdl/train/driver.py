"""One fit's dispatch loop: run the block, act on non-finite steps, end epochs, save.

:class:`FitRun` holds a fit's fixed parts (programs, plan, source, validation,
members, callbacks, checkpoints); :func:`train` walks its plan — again from the last
checkpoint after a rollback — then ends training and saves the end. The host
counts steps itself, so nothing waits on the device between dispatches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxdl import errors
from jaxdl import nonfinite as nonfinite_lib
from jaxdl.checkpoint.resume import FitCheckpoints, Position
from jaxdl.state import TrainState
from jaxdl.train import hooks as hooks_lib
from jaxdl.train.callbacks import Callback
from jaxdl.train.infer import evaluate_arrays
from jaxdl.train.members import Members
from jaxdl.train.plan import Dispatch, Plan
from jaxdl.train.programs import Programs
from jaxdl.train.sources import BatchSource


def host_step(state: TrainState) -> int:
    """The run's optimizer step (a population's members that stopped lag behind: the max)."""
    return int(np.max(jax.device_get(state.step)))


@dataclasses.dataclass(frozen=True)
class FitStats:
    """What a fit measured: compile and training seconds, steps and their rates."""

    compile_s: float
    train_s: float
    steps: int
    steps_per_s: float
    examples_per_s: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Validation:
    """The validation set on device; ``fused``: evaluated inside the training block."""

    data: dict[str, jax.Array]
    plan: dict[str, jax.Array]
    fused: bool

    def logs(self, programs: Programs, state: TrainState, outputs: Any, row: int
             ) -> dict[str, Any]:
        if self.fused:
            return {f"val_{k}": outputs[k][row] for k in programs.names}
        results = evaluate_arrays(programs, state, self.data, self.plan)
        return {f"val_{k}": v for k, v in results.items()}


@dataclasses.dataclass
class Progress:
    """The driver's counters, kept on the host (no device sync per dispatch)."""

    step: int
    last_saved: int
    stop: bool
    dispatches: int = 0
    compile_s: float = 0.0
    handled_bad: set[int] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class FitRun:
    """One fit's fixed parts: what runs, on what, with which callbacks and checkpoints."""

    programs: Programs
    plan: Plan
    static: dict[str, Any]
    source: BatchSource
    validation: Validation | None
    members: Members
    callbacks: Sequence[Callback]
    checkpointing: Any
    saver: FitCheckpoints | None
    hooks: list[hooks_lib.Hooks] = dataclasses.field(default_factory=list)  # read at start
    # A population run member by member (population_mode="sequential"), else None.
    member_blocks: Any = None

    def run_block(self, dispatch: Dispatch, state: TrainState, acc: Any, progress: Progress
                  ) -> tuple[TrainState, Any, Any]:
        """One dispatch of the compiled block; the first one's time is compile time."""
        programs = self.programs
        feed = self.source.feed(self.plan, dispatch)
        traces_before, started = programs.traces["block"], time.perf_counter()
        validation = self.validation
        arguments = dict(state=state, acc=acc, data=self.source.data, idx=feed,
                         position=self.plan.position(dispatch),
                         val_data=validation.data if validation and validation.fused else None,
                         val_plan=validation.plan if validation else None,
                         active=self.members.device_active(put_fn(programs)))
        if self.member_blocks is not None:
            state, acc, outputs = self.member_blocks(**arguments, **self.static,
                                                     trained=self.members.shown)
        else:
            state, acc, outputs = programs.block(**arguments, **self.static)
        first = progress.dispatches == 0
        if first:
            # The first call traces and compiles (or loads from the cache) before it
            # returns; execution itself is asynchronous.
            progress.compile_s = time.perf_counter() - started
        if first or programs.traces["block"] != traces_before:
            programs.watch(first, arguments, traces_before)
        progress.dispatches += 1
        return state, acc, outputs

    def bad_step(self, dispatch: Dispatch, record: Any, state: TrainState,
                 position: Position, progress: Progress) -> int | None:
        """Acts on the dispatch's non-finite steps; returns a step to roll back from."""
        policy, members = self.programs.nan_policy, self.members
        if policy not in ("raise", "rollback"):
            return None
        record = jax.device_get(record)
        rows = len(dispatch.epochs)
        if members.size and policy == "raise":
            for member, step in members.diverge(record, rows, state).items():
                position.diverged[str(member)] = step
            return None
        if members.size and record:
            record = nonfinite_lib.over_members(record)
        bad = nonfinite_lib.first_bad(record, rows, progress.handled_bad)
        if bad is None:
            return None
        if policy == "raise":
            raise nonfinite_lib.nonfinite_error(bad, state.params)
        progress.handled_bad.add(bad["step"])
        return bad["step"]

    def end_epochs(self, dispatch: Dispatch, outputs: Any, state: TrainState,
                   position: Position) -> tuple[TrainState, bool]:
        """History and callbacks for each epoch the dispatch finished; whether to stop."""
        programs, members = self.programs, self.members
        train_out, val_out, bad_out = jax.device_get(outputs)
        stop = False
        for i, epoch in enumerate(dispatch.epochs):
            logs = {k: train_out[k][i] for k in programs.train_names(train_out)}
            if bad_out and programs.nan_policy != "raise":
                logs["nonfinite_steps"] = bad_out["count"][i]
            if self.validation is not None:
                logs.update(self.validation.logs(programs, state, val_out, i))
            logs = members.logs(logs)
            for key, value in logs.items():
                position.history.setdefault(key, []).append(members.history_value(value))
            state = hooks_lib.call_all(self.hooks, "on_epoch_end", state, epoch, logs)
            stop = members.update(self.callbacks) or stop
        return state, stop

    def save_if_due(self, dispatch: Dispatch, state: TrainState, acc: Any,
                    position: Position, progress: Progress) -> None:
        """Saves on the cadence, at the end and on a signal (then raises Preempted)."""
        checkpointing = self.checkpointing
        if checkpointing is None:
            return
        signum = checkpointing.stop_requested()
        done = progress.stop or position.epoch >= self.plan.epochs
        due = (checkpointing.every_steps
               and progress.step - progress.last_saved >= checkpointing.every_steps) or (
            checkpointing.every_epochs and self.plan.ends_epoch(dispatch)
            and (position.epoch - position.origin) % checkpointing.every_epochs == 0)
        preempted = signum is not None or checkpointing.reached_preemption(progress.step)
        # The end of training is saved once the callbacks' on_train_end ran (see train):
        # the last checkpoint then holds the state fit returns (EarlyStopping's best).
        if (due and not done) or preempted:
            position.finished = bool(done)
            self.saver.save(progress.step, state, acc, position)
            progress.last_saved = progress.step
        if preempted:
            checkpointing.checkpointer.wait()
            raise errors.Preempted(signum or 15, progress.step)

    def end_training(self, state: TrainState) -> TrainState:
        """The callbacks' ``on_train_end``, in order; the state they leave is fit's result."""
        return hooks_lib.call_all(self.hooks, "on_train_end", state)

    def batch_logs(self, outputs: Any) -> dict[str, Any]:
        """A one-step dispatch's logs: the epoch's running training metrics through it."""
        train_out = jax.device_get(outputs[0])
        return self.members.logs({k: train_out[k][0] for k in self.programs.train_names(train_out)})

    def walk(self, state: TrainState, acc: Any, position: Position, progress: Progress
             ) -> tuple[TrainState, Any, Position, bool]:
        """Runs the plan from ``position``; returns early (True) after a rollback."""
        for dispatch in self.plan.dispatches((position.epoch, position.first)):
            if progress.stop:
                break
            state = hooks_lib.begin_dispatch(self.hooks, dispatch, state)
            state, acc, outputs = self.run_block(dispatch, state, acc, progress)
            bad = self.bad_step(dispatch, outputs[2], state, position, progress)
            if bad is not None:
                restored, acc, found = nonfinite_lib.rollback(
                    self.checkpointing, bad, lambda s=state, a=acc: self.saver.restore(s, a))
                state, position = restored, found or position
                progress.step = progress.last_saved = host_step(state)
                progress.stop = False
                return state, acc, position, True
            progress.step += self.plan.steps_in(dispatch)
            position.epoch, position.first = self.plan.after(dispatch)
            state = hooks_lib.end_batch(self.hooks, dispatch, state,
                                        lambda o=outputs: self.batch_logs(o))
            if self.plan.ends_epoch(dispatch):
                state, stop = self.end_epochs(dispatch, outputs, state, position)
                progress.stop = progress.stop or stop
            self.save_if_due(dispatch, state, acc, position, progress)
        return state, acc, position, False


def train(fit: FitRun, state: TrainState, acc: Any, position: Position, step: int
           ) -> tuple[TrainState, FitStats, Position]:
    """Walks the plan (again after each rollback), ends training, saves the end, and
    measures."""
    progress = Progress(step, step, any(cb.stop_training for cb in fit.callbacks))
    started = time.perf_counter()
    try:
        rolled_back = True
        while rolled_back:
            state, acc, position, rolled_back = fit.walk(state, acc, position, progress)
        state = fit.end_training(state)
        if fit.checkpointing is not None and progress.step != progress.last_saved:
            position.finished = True
            fit.saver.save(progress.step, state, acc, position)
    finally:
        if fit.checkpointing is not None:
            fit.checkpointing.checkpointer.wait()  # nothing in flight is lost; errors surface
    jax.block_until_ready(state.step)
    elapsed = time.perf_counter() - started - progress.compile_s
    steps = progress.step - step
    rate = steps / elapsed if steps and elapsed > 0 else 0.0
    stats = FitStats(progress.compile_s, elapsed, steps, rate,
                     rate * fit.static["batch_size"])
    return state, stats, position


def put_fn(programs: Programs) -> Any:
    """Puts a host tree on the devices the programs run on (replicated over a mesh)."""
    return programs.placement.put_replicated if programs.placement else jax.device_put
