"""The drivers: fit, evaluate and predict around the compiled programs.

This is the only place with side effects (callbacks, writers, host transfers).
Data is put on device once; each dispatch runs a block of steps (see
:mod:`jaxdl.fuse`) and fetches that block's per-epoch metrics in one transfer.

Read this after :mod:`jaxdl.state` and :mod:`jaxdl.step`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors, resume
from jaxdl import metrics as metrics_lib
from jaxdl.callbacks import Callback
from jaxdl.data import arrays
from jaxdl.data import validate as check
from jaxdl.programs import Programs
from jaxdl.state import TrainState

# With nothing to run between epochs, "auto" fuses whole epochs up to this many
# steps per dispatch: enough to amortize the ~0.1 ms dispatch, few enough that
# progress still shows.
AUTO_STEPS_PER_DISPATCH = 2048


def output_shape(programs: Programs, state: TrainState, x: np.ndarray,
                 argument: str = "x") -> tuple[int, ...]:
    """The model's per-example output shape for inputs like ``x``; a clear error if not."""
    spec = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    try:
        return tuple(programs.abstract("outputs", programs.outputs, programs.member_spec(state),
                                       spec).shape[1:])
    except Exception as e:  # flax/XLA shape errors: restate them in the user's terms
        raise errors.input_error(
            argument, "examples whose shape the model accepts (the shape it was initialized "
            "with)",
            f"examples of shape {x.shape[1:]} (the model said: {errors.first_sentence(e)})",
            "pass data with the same feature count as the sample given to init(), or "
            "re-initialize the model on this data") from None


def _checked(programs: Programs, state: TrainState, x: Any, y: Any, x_arg: str, y_arg: str
             ) -> tuple[np.ndarray, np.ndarray]:
    x = check.as_features(x, x_arg)
    y = check.as_labels(y, len(x), y_arg, x_arg)
    out_shape = output_shape(programs, state, x, x_arg)
    try:
        programs.loss.check_labels(y, out_shape)
    except errors.InputError as e:
        raise errors.InputError(str(e).replace("argument 'y'", f"argument '{y_arg}'", 1)) from None
    return x, y


def _is_records(x: Any) -> bool:
    from jaxdl.data.records import Records

    return isinstance(x, Records)


def _in_memory(x: Any, y: Any, x_arg: str = "x", y_arg: str = "y", rows: int | None = None
               ) -> tuple[Any, Any]:
    """On-disk records as (x, y) arrays (the first ``rows`` only, if given); arrays as they are."""
    if not _is_records(x):
        return x, y
    if y is not None:
        raise errors.input_error(y_arg, f"None when {x_arg} is records (their 'y' field holds "
                                 "the labels)", errors.describe(y), f"drop {y_arg}")
    missing = [f for f in ("x", "y") if f not in x.fields]
    if missing:
        raise errors.input_error(x_arg, "records with fields 'x' and 'y'",
                                 f"{x!r}", "write them with jdl.data.write_records(dir, "
                                 "{'x': x, 'y': y}) or jaxdl data prepare")
    if rows is None:
        return np.asarray(x.arrays["x"]), np.asarray(x.arrays["y"])
    return np.asarray(x.arrays["x"][:rows]), np.asarray(x.arrays["y"][:rows])


# Rows of streamed records whose labels are checked before training (a whole huge set
# would be read for it).
RECORDS_CHECKED_ROWS = 4096


def _on_device(x: np.ndarray, y: np.ndarray | None = None, placement: Any = None
               ) -> dict[str, jax.Array]:
    """The data set on device for the whole run (replicated over a mesh: batches are
    gathered from it on device, then split over the data axes)."""
    data = {"x": x} if y is None else {"x": x, "y": y}
    if placement is not None:
        return placement.put_replicated(data)
    return jax.tree.map(jnp.asarray, data)


def host_step(state: TrainState) -> int:
    """The run's optimizer step (a population's members that stopped lag behind: the max)."""
    return int(np.max(jax.device_get(state.step)))


def dispatch_shape(steps_per_epoch: int, epochs: int, steps_per_dispatch: int | str,
                   every_epoch: bool, loop_friendly: bool) -> tuple[int, int]:
    """(epochs, steps) of one dispatch block.

    ``steps_per_dispatch``: an int (Keras' ``steps_per_execution``: whole epochs
    when it is a multiple of an epoch), "epoch", or "auto" (per-step dispatch
    where loops are slow, else whole epochs up to :data:`AUTO_STEPS_PER_DISPATCH`).
    ``every_epoch``: a callback must see each epoch, so a block never spans two.
    """
    spe = steps_per_epoch
    if steps_per_dispatch == "auto":
        if not loop_friendly:
            return 1, 1
        if spe > AUTO_STEPS_PER_DISPATCH:
            return 1, math.ceil(spe / math.ceil(spe / AUTO_STEPS_PER_DISPATCH))
        per_block = 1 if every_epoch else AUTO_STEPS_PER_DISPATCH // spe
        return max(1, min(epochs, per_block)), spe
    if steps_per_dispatch == "epoch":
        return 1, spe
    k = steps_per_dispatch
    if k < spe:
        return 1, k
    return (1 if every_epoch else max(1, min(epochs, k // spe))), spe


def _steps_per_dispatch(value: Any) -> int | str:
    if value in ("auto", "epoch"):
        return value
    return check.positive_int(value, "steps_per_dispatch",
                              "pass an integer >= 1, 'epoch' or 'auto'")


def _sequential_plan(n: int, batch_size: int) -> dict[str, jax.Array]:
    idx, mask = arrays.sequential_plan(n, batch_size)
    return {"idx": jax.device_put(idx), "mask": jax.device_put(mask)}


def _dispatches(origin: int, epochs: int, spe: int, e_block: int, s_block: int):
    """The fixed grid of dispatches from epoch ``origin``: (epochs of the block, first step).

    The grid depends only on the run's settings, never on where it was resumed, so
    a resumed run executes the same compiled blocks on the same batches.
    """
    if e_block > 1:
        for start in range(origin, epochs, e_block):
            yield list(range(start, min(start + e_block, epochs))), 0
    else:
        for epoch in range(origin, epochs):
            for first in range(0, spe, s_block):
                yield [epoch], first


def _checkpoint_caps(e_block: int, s_block: int, spe: int, checkpointing: Any
                     ) -> tuple[int, int]:
    """Shrinks blocks so that every save point is a dispatch boundary."""
    if checkpointing is None:
        return e_block, s_block
    if checkpointing.every_epochs:
        e_block = max(d for d in range(1, e_block + 1) if checkpointing.every_epochs % d == 0)
    if checkpointing.every_steps:
        if checkpointing.every_steps >= spe * e_block:
            pass
        elif checkpointing.every_steps >= spe:
            e_block = checkpointing.every_steps // spe
        else:
            e_block, s_block = 1, min(s_block, checkpointing.every_steps)
    return e_block, s_block


class _Members:
    """The driver's view of a population: data seeds, who still trains, per-member logs.

    For a single model (``size`` None) it only turns logs into floats.
    """

    def __init__(self, size: int | None, seeds: list[int], per_member: bool):
        self.size, self.seeds, self.per_member = size, seeds, per_member
        self.idx_axes = (size,) if per_member else ()
        self.active = np.ones(size, bool) if size else None
        self.shown = self.active
        self.diverged: dict[int, int] = {}
        self._device: tuple[bytes, Any] | None = None

    def device_active(self, put: Any) -> Any:
        """The active mask on device for the next dispatch (None for a single model)."""
        if self.size is None:
            return None
        self.shown = self.active.copy()  # members whose metrics this dispatch reports
        if self._device is None or self._device[0] != self.active.tobytes():
            self._device = (self.active.tobytes(), put(self.active))
        return self._device[1]

    def logs(self, logs: dict[str, Any]) -> dict[str, Any]:
        """Floats for one model; float64 [N] for a population, NaN where a member stopped."""
        if self.size is None:
            return {k: float(v) for k, v in logs.items()}
        out = {}
        for key, value in logs.items():
            value = np.array(value, np.float64).reshape(self.size)
            value[~self.shown] = np.nan
            out[key] = value
        return out

    def update(self, callbacks: Sequence[Callback]) -> bool:
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

    def restore(self, run: resume.Run, callbacks: Sequence[Callback]) -> None:
        """After a resume: members that diverged or stopped before the checkpoint stay out."""
        if self.size is None:
            return
        self.diverged = {int(m): step for m, step in run.diverged.items()}
        self.active[list(self.diverged)] = False
        self.update(callbacks)

    def reduce_bad(self, bad: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Non-finite records over all members (for rollback, which restores them all)."""
        if self.size is None or not bad:
            return bad
        return {"count": bad["count"].sum(axis=1), "loss": bad["loss"].max(axis=1),
                "grads": bad["grads"].max(axis=1), "min_step": bad["min_step"].min(axis=1)}

    def diverge(self, bad: dict[str, np.ndarray], rows: int, state: TrainState,
                run: resume.Run) -> None:
        """``nan_policy="raise"`` per member: a member whose step was non-finite stops there
        (the block froze it on device); the run stops only when no member is left."""
        from jaxdl import population

        for m in np.flatnonzero(self.shown & (bad["count"][:rows] > 0).any(axis=0)):
            step = int(bad["min_step"][:rows, m].min())
            self.diverged[int(m)] = step
            run.diverged[str(m)] = step
            self.active[m] = False
            hparams = {k: float(v[m]) for k, v in population.hparams(state).items()}
            warnings.warn(f"population member {m}{f' {hparams}' if hparams else ''}: training "
                          f"step {step} was non-finite; this member stops with its last good "
                          "state, the others go on.", stacklevel=3)
        if self.diverged and len(self.diverged) == self.size:
            first = min(self.diverged.values())
            raise errors.NonFiniteError(
                f"every member of the population ({self.size}) went non-finite (the first at "
                f"step {first}). Fix: lower the learning rates, clip gradients (clip_norm), or "
                "check the inputs with jdl.data.clean.")


def _members(programs: Programs, state: TrainState, seed: Any) -> _Members:
    from jaxdl import population

    size = population.size(state)
    one_seed = isinstance(seed, int | np.integer) and not isinstance(seed, bool)
    if size is None or one_seed:
        if not one_seed:
            raise errors.type_error("seed", "an int" + (" (one seed per member is for "
                                    "population states)" if size is None else ""),
                                    errors.describe(seed), "pass seed=0")
        return _Members(size, [int(seed)], False)
    seeds = list(seed) if isinstance(seed, Sequence | np.ndarray) else None
    if seeds is None or len(seeds) != size or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) for s in seeds):
        raise errors.input_error("seed", f"an int, or {size} ints (one data seed per member)",
                                 errors.describe(seed), "pass seed=0 (shared batches) or "
                                 f"seed=list(range({size})) (each member its own order)")
    return _Members(size, [int(s) for s in seeds], True)


def fit(programs: Programs, state: TrainState, x: Any, y: Any, *, epochs: int = 1,
        batch_size: int = 32, validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0, shuffle: bool = True, seed: int | Sequence[int] = 0,
        callbacks: Sequence[Callback] = (), steps_per_dispatch: int | str = "auto",
        initial_epoch: int = 0, context: dict[str, Any] | None = None,
        checkpointing: Any = None) -> tuple[TrainState, dict[str, list[float]]]:
    """Trains ``state`` on (x, y) for ``epochs - initial_epoch`` epochs.

    Args:
      programs: the compiled programs (model, loss, optimizer, metrics).
      state: the TrainState to start from (it is donated: do not reuse it).
      x: inputs [n, ...]; y: labels [n, ...]. Or ``x`` on-disk records with fields "x" and
        "y" (:func:`jaxdl.data.open_records`) and ``y=None``: batches are read by a grain
        :class:`~jaxdl.data.pipeline.Pipeline` ahead of the step, in the order arrays
        would have (the same batches), each process reading only its rows.
      epochs: index of the last epoch (Keras semantics with ``initial_epoch``).
      batch_size: examples per step; the last batch of an epoch is padded and masked.
      validation_data: ``(x_val, y_val)``, evaluated at the end of every epoch.
      validation_split: fraction of (x, y), taken from the end before shuffling, held out
        for validation (ignored when ``validation_data`` is given).
      shuffle: reshuffle every epoch; the order depends only on ``(seed, epoch)``.
      seed: the shuffle seed; for a population either one seed (every member sees the
        same batches) or one per member (each member its own order, ``programs`` built
        with ``population="member"``).
      callbacks: :class:`jaxdl.callbacks.Callback` objects, run after every epoch.
      steps_per_dispatch: see :func:`dispatch_shape`.
      initial_epoch: epoch to start at.
      context: extra facts passed to ``Callback.on_train_begin``.
      checkpointing: a :class:`jaxdl.checkpoint.Checkpointing`: resume from its newest
        good checkpoint, save on its cadence, at the end and on preemption.

    Returns:
      ``(state, history)``: history maps ``loss``, metric names and their ``val_``
      versions to per-epoch Python floats — for a population, per-epoch lists of one
      float per member (NaN after a member stopped).
    """
    epochs = check.positive_int(epochs, "epochs", "pass epochs=10", minimum=0)
    batch_size = check.positive_int(batch_size, "batch_size", "pass batch_size=32")
    initial_epoch = check.positive_int(initial_epoch, "initial_epoch",
                                       "pass initial_epoch=0", minimum=0)
    spd = _steps_per_dispatch(steps_per_dispatch)
    if programs.placement is not None:
        programs.placement.check_batch(batch_size)
    members = _members(programs, state, seed)
    records = x if _is_records(x) else None
    x, y = _checked(programs, state, *_in_memory(x, y, rows=RECORDS_CHECKED_ROWS), "x", "y")
    if records is not None and validation_data is None and validation_split:
        raise errors.input_error("validation_split", "0 with records (they are not held in "
                                 "memory to cut)", repr(validation_split),
                                 "pass validation_data=open_records(<val folder>)")
    if validation_data is None and check.fraction(validation_split, "validation_split"):
        cut = len(x) - int(len(x) * validation_split)
        if cut <= 0 or cut == len(x):
            raise errors.input_error("validation_split", "a fraction leaving examples on both "
                                     "sides", f"{validation_split} of {len(x)} examples",
                                     "use a larger data set or another fraction")
        x, y, validation_data = x[:cut], y[:cut], (x[cut:], y[cut:])
    n = len(records) if records is not None else len(x)
    val = None
    if validation_data is not None:
        if _is_records(validation_data):  # evaluated from memory: validation sets are small
            validation_data = _in_memory(validation_data, None, "validation_data")
        if not (isinstance(validation_data, tuple | list) and len(validation_data) == 2):
            raise errors.type_error("validation_data", "a pair (x_val, y_val) or records",
                                    errors.describe(validation_data),
                                    "pass validation_data=(x_val, y_val)")
        val = _checked(programs, state, *validation_data, "validation_data[0]",
                       "validation_data[1]")

    host_fed = records is not None or (programs.placement is not None
                                       and programs.placement.host_data)
    if host_fed and programs.population == "member":
        raise errors.input_error("seed", "one seed when batches come from the host (records, "
                                 "or data_placement='host': each member's own order needs the "
                                 "data set on the devices)", f"{len(members.seeds)} seeds",
                                 "pass one seed, or arrays with data_placement='device'")
    data = None if host_fed else _on_device(x, y, programs.placement)
    friendly = programs.loop_friendly(state, x)
    every_epoch = any(getattr(cb, "needs_every_epoch", True) for cb in callbacks)
    spe = arrays.steps_per_epoch(n, batch_size)
    fused_val = val is not None and friendly
    val_data = _on_device(*val, programs.placement) if val is not None else None
    val_plan = _sequential_plan(len(val[0]), batch_size) if val is not None else None

    probe = {k: jax.ShapeDtypeStruct((*members.idx_axes, batch_size, *v.shape[1:]), v.dtype)
             for k, v in {"x": x, "y": y}.items()}
    probe["mask"] = jax.ShapeDtypeStruct((batch_size,), jnp.float32)
    # numpy zeros: an eager jnp.zeros would compile a broadcast per shape.
    put = programs.placement.put_replicated if programs.placement else jax.device_put
    acc = put(metrics_lib.empty(programs.abstract(
        "train_stats", lambda s, b: programs.train_step(s, b)[1], state, probe)))
    run = resume.Run(origin=initial_epoch, epoch=initial_epoch, first=0, history={})
    # What must match for a checkpoint to belong to this run (epochs may grow: resuming a
    # finished run with more epochs continues it).
    identity = {"seed": members.seeds if members.per_member else int(members.seeds[0]),
                "batch_size": batch_size, "num_examples": n, "shuffle": bool(shuffle)}
    if checkpointing is not None and checkpointing.resume:
        state, acc = resume.resume(checkpointing, state, acc, callbacks, identity, run)
        members.restore(run, callbacks)

    num_epochs = max(0, epochs - run.origin)
    e_block, s_block = dispatch_shape(spe, num_epochs, spd, every_epoch, friendly)
    e_block, s_block = _checkpoint_caps(e_block, s_block, spe, checkpointing)
    static = dict(batch_size=batch_size, num_steps=s_block, ragged_steps=spe % s_block != 0,
                  ragged_epochs=e_block > 1 and num_epochs % e_block != 0,
                  num_examples=n if host_fed else None)
    step = host_step(state)  # counted on the host from here on: no sync per dispatch
    ctx = dict(epochs=epochs, initial_epoch=run.epoch, steps_per_epoch=spe,
               batch_size=batch_size, step=step, population=members.size, **(context or {}))
    for cb in callbacks:
        state = cb.on_train_begin(state, ctx)

    order: tuple[int, list[np.ndarray]] | None = None
    dispatches, compile_s, first_step, fit_started = 0, 0.0, step, time.perf_counter()
    last_saved = step
    stop = any(cb.stop_training for cb in callbacks)  # e.g. an early stop restored
    pipe = None
    if records is not None:
        from jaxdl.data.pipeline import Pipeline

        pipe = Pipeline(records, batch_size, seed=members.seeds[0], shuffle=shuffle,
                        fields=("x", "y"), rows=programs.placement.local_rows(batch_size)
                        if programs.placement else None)
    handled_bad: set[int] = set()
    try:
        restart = True
        while restart:  # a rollback restarts the walk over the grid from a checkpoint
            restart = False
            for block_epochs, first in _dispatches(run.origin, epochs, spe, e_block, s_block):
                if stop:
                    break
                if (block_epochs[0], first) < (run.epoch, run.first):
                    continue  # done before the checkpoint this run resumed from
                idx = np.zeros((e_block, s_block, *members.idx_axes, batch_size), np.int32)
                position = np.zeros((e_block, 2), np.int32)  # (first step, real)
                position[:, 0] = first
                for i, e in enumerate(block_epochs):
                    if order is None or order[0] != e:
                        order = (e, [arrays.epoch_order(sd, e, n, shuffle)
                                     for sd in members.seeds])
                    rows = [arrays.block_indices(o, batch_size, first, s_block)
                            for o in order[1]]
                    idx[i] = np.stack(rows, axis=1) if members.per_member else rows[0]
                    position[i, 1] = 1
                traces_before = programs.traces["block"]
                started = time.perf_counter()
                if records is not None:  # read ahead by the pipeline, this process's rows
                    local = pipe.block(block_epochs, first, s_block, num_epochs=e_block)
                    local = {"x": local["x"], "y": local["y"]}
                    feed = (programs.placement.feed_local(local, batch_size)
                            if programs.placement else jax.device_put(local))
                elif host_fed:
                    feed = programs.placement.feed({"x": x, "y": y}, idx, batch_size)
                else:
                    feed = idx
                arguments = dict(state=state, acc=acc, data=data, idx=feed, position=position,
                                 val_data=val_data if fused_val else None, val_plan=val_plan,
                                 active=members.device_active(put))
                state, acc, (train_out, val_out, bad_out) = programs.block(
                    **arguments, **static)
                if dispatches == 0:
                    # The first call traces and compiles (or loads from the cache) before
                    # it returns; execution itself is asynchronous.
                    compile_s = time.perf_counter() - started
                if dispatches == 0 or programs.traces["block"] != traces_before:
                    programs.watch(dispatches == 0, arguments, traces_before)
                dispatches += 1
                if members.size and programs.nan_policy == "raise":
                    members.diverge(jax.device_get(bad_out), len(block_epochs), state, run)
                elif programs.nan_policy in ("raise", "rollback"):
                    bad = resume.first_bad(members.reduce_bad(jax.device_get(bad_out)),
                                           len(block_epochs), handled_bad)
                    if bad is not None and programs.nan_policy == "raise":
                        raise resume.nonfinite_error(bad, state)
                    if bad is not None:
                        handled_bad.add(bad["step"])
                        state, acc = resume.rollback(checkpointing, state, acc, callbacks, identity,
                                               run, bad["step"])
                        step, last_saved, stop, restart = host_step(state), host_step(state), \
                            False, True
                        break
                step += sum(min(s_block, spe - first) for _ in block_epochs)
                ends_epoch = first + s_block >= spe
                run.epoch, run.first = ((block_epochs[-1] + 1, 0) if ends_epoch
                                        else (block_epochs[0], first + s_block))
                if ends_epoch:
                    train_out, val_out, bad_out = jax.device_get((train_out, val_out, bad_out))
                    for i, e in enumerate(block_epochs):
                        logs = {k: train_out[k][i] for k in programs.names}
                        if bad_out and programs.nan_policy != "raise":
                            logs["nonfinite_steps"] = bad_out["count"][i]
                        if val is not None:
                            val_logs = ({k: val_out[k][i] for k in programs.names}
                                        if fused_val else
                                        evaluate_arrays(programs, state, val_data, val_plan))
                            logs.update({f"val_{k}": v for k, v in val_logs.items()})
                        logs = members.logs(logs)
                        for key, value in logs.items():
                            run.history.setdefault(key, []).append(
                                value.tolist() if members.size else value)
                        for cb in callbacks:
                            cb.members_active = members.shown
                            state = cb.on_epoch_end(e, logs, state)
                        stop = stop or members.update(callbacks)
                if checkpointing is None:
                    continue
                signum = checkpointing.stop_requested()
                done = stop or run.epoch >= epochs
                due = (checkpointing.every_steps
                       and step - last_saved >= checkpointing.every_steps) or (
                    checkpointing.every_epochs and ends_epoch
                    and (run.epoch - run.origin) % checkpointing.every_epochs == 0)
                preempted = signum is not None or checkpointing.reached_preemption(step)
                if due or done or preempted:
                    run.finished = bool(done)
                    resume.save(checkpointing, step, state, acc, callbacks, identity, run)
                    last_saved = step
                if preempted:
                    checkpointing.checkpointer.wait()
                    raise errors.Preempted(signum or 15, step)
        if checkpointing is not None and step != last_saved:
            run.finished = True
            resume.save(checkpointing, step, state, acc, callbacks, identity, run)
    finally:
        if pipe is not None:
            pipe.close()
        if checkpointing is not None:
            checkpointing.checkpointer.wait()  # nothing in flight is lost, and errors surface
    jax.block_until_ready(state.step)
    elapsed = time.perf_counter() - fit_started - compile_s
    steps = step - first_step
    programs.last_perf = {
        "compile_s": compile_s, "train_s": elapsed, "steps": steps,
        "steps_per_s": steps / elapsed if steps and elapsed > 0 else 0.0,
        "examples_per_s": steps * batch_size / elapsed if steps and elapsed > 0 else 0.0}
    for cb in callbacks:
        state = cb.on_train_end(state)
    return state, run.history


def evaluate_arrays(programs: Programs, state: TrainState, data: dict[str, jax.Array],
                    plan: dict[str, jax.Array]) -> dict[str, float]:
    """Metrics over on-device ``data`` batched by ``plan`` (idx/mask [batches, B])."""
    if programs.loop_friendly(state, data["x"]):
        results = programs.evaluate(state, data, plan)
    else:
        acc = None
        for idx, mask in zip(plan["idx"], plan["mask"], strict=True):
            acc = programs.eval_batch(acc, state, data, idx, mask)
        results = programs.results(acc)
    results = jax.device_get(results)
    if programs.population is not None:  # one value per member
        return {k: np.asarray(results[k], np.float64) for k in programs.names}
    return {k: float(results[k]) for k in programs.names}


def evaluate(programs: Programs, state: TrainState, x: Any, y: Any, *, batch_size: int = 32
             ) -> dict[str, float]:
    """Loss and metrics over all of (x, y), exactly (the last batch is padded and masked)."""
    batch_size = check.positive_int(batch_size, "batch_size", "pass batch_size=32")
    if programs.placement is not None:
        programs.placement.check_batch(batch_size)
    x, y = _checked(programs, state, *_in_memory(x, y), "x", "y")
    return evaluate_arrays(programs, state, _on_device(x, y, programs.placement),
                           _sequential_plan(len(x), batch_size))


def predict(programs: Programs, state: TrainState, x: Any, *, batch_size: int = 32
            ) -> np.ndarray:
    """Predictions for every example of ``x``: probabilities for classification losses.

    Returns:
      numpy array [n, *output_shape] (float32); [members, n, *output_shape] for a
      population.
    """
    batch_size = check.positive_int(batch_size, "batch_size", "pass batch_size=32")
    if programs.placement is not None:
        programs.placement.check_batch(batch_size)
    if _is_records(x):
        x = np.asarray(x.arrays["x"])
    x = check.as_features(x, "x")
    if len(x) <= batch_size and programs.placement is None:
        # One batch (a serving loop's request): one call on exactly these rows, no plan;
        # the shape check runs only to explain a failure (it costs a third of the call).
        try:
            return np.asarray(programs.predict_batch(state, x))
        except Exception:
            output_shape(programs, state, x)
            raise
    output_shape(programs, state, x)
    idx = _sequential_plan(len(x), batch_size)["idx"]
    data_x = _on_device(x, None, programs.placement)["x"]
    if programs.loop_friendly(state, data_x):
        out = programs.predict_all(state, data_x, idx)
    else:
        out = jnp.stack([programs.predict_batch(state, jnp.take(data_x, i, axis=0))
                         for i in idx])
    out = np.asarray(jax.device_get(out))  # [batches, (members,) B, ...]
    if programs.population is not None:
        out = np.moveaxis(out, 1, 0)
        return out.reshape(out.shape[0], -1, *out.shape[3:])[:, : len(x)]
    return out.reshape(-1, *out.shape[2:])[: len(x)]
