"""fit: train a state over a batch source with the compiled block, epoch by epoch.

The only place with side effects during training (callbacks, checkpoints,
host transfers). Its pieces, each decided once:

- the data: a batch source (:mod:`jaxdl.train.sources`) and the validation set;
- the plan: the fixed grid of dispatches (:mod:`jaxdl.train.plan`);
- per dispatch: run the block, act on non-finite steps (:mod:`jaxdl.nonfinite`),
  end epochs (history, callbacks), save on the checkpoint cadence or a signal.

Read this after :mod:`jaxdl.state` and :mod:`jaxdl.step`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl import metrics as metrics_lib
from jaxdl import nonfinite as nonfinite_lib
from jaxdl.checkpoint.resume import FitCheckpoints, Position
from jaxdl.data import arrays
from jaxdl.data import validate as check
from jaxdl.state import TrainState
from jaxdl.train import hooks as hooks_lib
from jaxdl.train import inputs
from jaxdl.train.callbacks import Callback
from jaxdl.train.infer import evaluate_arrays
from jaxdl.train.members import Members, members_for
from jaxdl.train.plan import Dispatch, Plan, check_steps_per_dispatch, make_plan
from jaxdl.train.programs import Programs
from jaxdl.train.sources import BatchSource, make_source, on_device, sequential_plan


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


class FitResult(tuple):
    """``(state, history)``, unpacked like Keras' fit; ``stats`` holds a :class:`FitStats`."""

    def __new__(cls, state: TrainState, history: dict[str, list[Any]], stats: FitStats):
        result = super().__new__(cls, (state, history))
        result.stats = stats
        return result

    @property
    def state(self) -> TrainState:
        return self[0]

    @property
    def history(self) -> dict[str, list[Any]]:
        return self[1]


@dataclasses.dataclass(frozen=True)
class _Validation:
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
class _Progress:
    """The driver's counters, kept on the host (no device sync per dispatch)."""

    step: int
    last_saved: int
    stop: bool
    dispatches: int = 0
    compile_s: float = 0.0
    handled_bad: set[int] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class _Fit:
    """One fit's fixed parts: what runs, on what, with which callbacks and checkpoints."""

    programs: Programs
    plan: Plan
    static: dict[str, Any]
    source: BatchSource
    validation: _Validation | None
    members: Members
    callbacks: Sequence[Callback]
    checkpointing: Any
    saver: FitCheckpoints | None
    hooks: list[hooks_lib.Hooks] = dataclasses.field(default_factory=list)  # read at start

    def run_block(self, dispatch: Dispatch, state: TrainState, acc: Any, progress: _Progress
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
                         active=self.members.device_active(_put(programs)))
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
                 position: Position, progress: _Progress) -> int | None:
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
                    position: Position, progress: _Progress) -> None:
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
        # The end of training is saved once the callbacks' on_train_end ran (see _train):
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

    def walk(self, state: TrainState, acc: Any, position: Position, progress: _Progress
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


def _statistics(programs: Programs, state: TrainState, x: np.ndarray, y: np.ndarray,
                batch_size: int, members: Members, put: Any) -> Any:
    """Empty training statistics on device, shaped like one step's."""
    probe = {k: jax.ShapeDtypeStruct((*members.index_axes, batch_size, *v.shape[1:]), v.dtype)
             for k, v in {"x": x, "y": y}.items()}
    probe["mask"] = jax.ShapeDtypeStruct((batch_size,), jnp.float32)
    # numpy zeros: an eager jnp.zeros would compile a broadcast per shape.
    return put(metrics_lib.empty(programs.abstract(
        "train_stats", lambda s, b: programs.train_step(s, b)[1], state, probe)))


def _train(fit: _Fit, state: TrainState, acc: Any, position: Position, step: int
           ) -> tuple[TrainState, FitStats, Position]:
    """Walks the plan (again after each rollback), ends training, saves the end, and
    measures."""
    progress = _Progress(step, step, any(cb.stop_training for cb in fit.callbacks))
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


# TrainState.step is int32: a run must end before it wraps around.
MAX_STEPS = 2**31 - 1


def _check_step_count(epochs: int, steps_per_epoch: int) -> None:
    if epochs * steps_per_epoch > MAX_STEPS:
        most = MAX_STEPS // steps_per_epoch
        raise errors.input_error("epochs", f"at most {most:,} epochs ({steps_per_epoch} steps "
                                 "each: the step counter is a 32-bit integer)", f"{epochs:,}",
                                 f"train for fewer epochs, e.g. epochs={min(most, 1000)}")


def _put(programs: Programs) -> Any:
    """Puts a host tree on the devices the programs run on (replicated over a mesh)."""
    return programs.placement.put_replicated if programs.placement else jax.device_put


def _fit_source(programs: Programs, state: TrainState, source: BatchSource,
                x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None,
                members: Members, *, epochs: int, batch_size: int, shuffle: bool,
                callbacks: Sequence[Callback], steps_per_dispatch: int | str,
                initial_epoch: int, checkpointing: Any) -> FitResult:
    """:func:`fit` once its arguments are checked and its batch source is open."""
    hooks = hooks_lib.prepare(callbacks)  # a hook fit cannot call is refused before compiling
    friendly = programs.loop_friendly(state, x)
    validation = None if val is None else _Validation(
        on_device(*val, programs.placement), sequential_plan(len(val[0]), batch_size),
        friendly)
    position = Position(origin=initial_epoch, epoch=initial_epoch, first=0, history={})
    # What a checkpoint must match to belong to this run; the example shape also lets a
    # new process rebuild the state to restore into (jaxdl.train.load).
    saver = None if checkpointing is None else FitCheckpoints(checkpointing, callbacks, {
        "seed": members.identity_seed, "batch_size": batch_size,
        "num_examples": source.num_examples, "shuffle": bool(shuffle),
        "num_features": list(x.shape[1:]), "input_dtype": str(x.dtype)})
    acc = _statistics(programs, state, x, y, batch_size, members, _put(programs))
    if saver is not None and checkpointing.resume:
        state, acc, found = saver.restore(state, acc)
        if found is not None:
            position = found
            members.restore(position.diverged, callbacks)
    steps_per_epoch = arrays.steps_per_epoch(source.num_examples, batch_size)
    _check_step_count(epochs, steps_per_epoch)
    steps_per_dispatch, every_epoch = hooks_lib.plan_options(hooks, steps_per_dispatch)
    plan = make_plan(position.origin, epochs, steps_per_epoch, steps_per_dispatch, every_epoch,
                     friendly, checkpointing)
    static = plan.static(batch_size, source.num_examples if source.host_fed else None)
    run = _Fit(programs, plan, static, source, validation, members, callbacks, checkpointing,
               saver, hooks)
    step = host_step(state)  # counted on the host from here on: no sync per dispatch
    context = dict(epochs=epochs, initial_epoch=position.epoch, steps_per_epoch=steps_per_epoch,
                   batch_size=batch_size, step=step, population=members.size,
                   members=members.view)
    state = hooks_lib.call_all(hooks, "on_train_begin", state, context)
    state, stats, position = _train(run, state, acc, position, step)
    return FitResult(state, position.history, stats)


def fit(programs: Programs, state: TrainState, x: Any, y: Any, *, epochs: int = 1,
        batch_size: int = 32, validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0, shuffle: bool = True, seed: int | Sequence[int] = 0,
        callbacks: Sequence[Callback] = (), steps_per_dispatch: int | str = "auto",
        initial_epoch: int = 0, checkpointing: Any = None) -> FitResult:
    """Trains ``state`` on (x, y) for ``epochs - initial_epoch`` epochs.

    Args:
      programs: the compiled programs (model, loss, optimizer, metrics).
      state: the TrainState to start from (it is donated: do not reuse it).
      x: inputs [n, ...]; y: labels [n, ...]. Or ``x`` on-disk records with fields "x" and
        "y" (:func:`jaxdl.data.open_records`) and ``y=None``: batches are read by a grain
        pipeline ahead of the step, in the order arrays would have (the same batches),
        each process reading only its rows.
      epochs: index of the last epoch (Keras semantics with ``initial_epoch``).
      batch_size: examples per step; the last batch of an epoch is padded and masked.
      validation_data: ``(x_val, y_val)`` or records, evaluated at the end of every epoch.
      validation_split: fraction of (x, y), taken from the end before shuffling, held out
        for validation (ignored when ``validation_data`` is given).
      shuffle: reshuffle every epoch; the order depends only on ``(seed, epoch)``.
      seed: the shuffle seed; for a population either one seed (every member sees the
        same batches) or one per member (each member its own order, ``programs`` built
        with ``population="member"``).
      callbacks: :class:`jaxdl.Callback` objects, run after every epoch; ``on_train_begin``
        gets a context with ``epochs``, ``initial_epoch``, ``steps_per_epoch``,
        ``batch_size``, ``step``, ``population`` and ``members`` (a
        :class:`~jaxdl.train.members.MemberView`).
      steps_per_dispatch: see :func:`jaxdl.train.plan.dispatch_shape`.
      initial_epoch: epoch to start at.
      checkpointing: a :class:`jaxdl.checkpoint.Checkpointing`: resume from its newest
        good checkpoint, save on its cadence, at the end and on preemption.

    Returns:
      A :class:`FitResult` ``(state, history)``: history maps ``loss``, metric names and
      their ``val_`` versions to per-epoch Python floats — for a population, per-epoch
      lists of one float per member (NaN after a member stopped); ``.stats`` what it
      measured.
    """
    epochs = check.positive_int(epochs, "epochs", "pass epochs=10", minimum=0)
    batch_size = check.positive_int(batch_size, "batch_size", "pass batch_size=32")
    initial_epoch = check.positive_int(initial_epoch, "initial_epoch",
                                       "pass initial_epoch=0", minimum=0)
    steps_per_dispatch = check_steps_per_dispatch(steps_per_dispatch)
    shuffle = check.boolean(shuffle, "shuffle")
    if programs.placement is not None:
        programs.placement.check_batch(batch_size)
    members = members_for(state, seed)
    records = x if inputs.is_records(x) else None
    x, y = inputs.checked(programs, state, *inputs.in_memory(
        x, y, rows=inputs.RECORDS_CHECKED_ROWS), "x", "y")
    x, y, val = inputs.validation_set(programs, state, x, y, validation_data, validation_split,
                                records)
    source = make_source(programs, x, y, records, batch_size, shuffle, members)
    try:
        return _fit_source(programs, state, source, x, y, val, members, epochs=epochs,
                           batch_size=batch_size, shuffle=shuffle, callbacks=callbacks,
                           steps_per_dispatch=steps_per_dispatch, initial_epoch=initial_epoch,
                           checkpointing=checkpointing)
    finally:
        source.close()
