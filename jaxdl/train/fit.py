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

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl import metrics as metrics_lib
from jaxdl.checkpoint.resume import FitCheckpoints, Position
from jaxdl.data import arrays, trees
from jaxdl.data import validate as check
from jaxdl.state import TrainState
from jaxdl.train import datasets, inputs, iterables, sequential
from jaxdl.train import hooks as hooks_lib
from jaxdl.train.callbacks import Callback
from jaxdl.train.driver import FitRun, FitStats, Validation, host_step, put_fn, train
from jaxdl.train.members import Members, members_for
from jaxdl.train.plan import check_steps_per_dispatch, make_plan
from jaxdl.train.prefetch import IterableSource
from jaxdl.train.programs import Programs
from jaxdl.train.sources import BatchSource, make_source, on_device, sequential_plan


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


def _statistics(programs: Programs, state: TrainState, x: Any, y: Any,
                batch_size: int, members: Members, put: Any) -> Any:
    """Empty training statistics on device, shaped like one step's (``x``, ``y``: arrays or
    pytrees; weights change no statistic's shape)."""
    probe = {"x": trees.spec(x, (*members.index_axes, batch_size)),
             "y": trees.spec(y, (*members.index_axes, batch_size))}
    probe["mask"] = jax.ShapeDtypeStruct((batch_size,), jnp.float32)
    # numpy zeros: an eager jnp.zeros would compile a broadcast per shape.
    return put(metrics_lib.empty(programs.abstract(
        "train_stats", lambda s, b: programs.train_step(s, b)[1], state, probe)))


# TrainState.step is int32: a run must end before it wraps around.
MAX_STEPS = 2**31 - 1


def _check_step_count(epochs: int, steps_per_epoch: int) -> None:
    if epochs * steps_per_epoch > MAX_STEPS:
        most = MAX_STEPS // steps_per_epoch
        raise errors.input_error("epochs", f"at most {most:,} epochs ({steps_per_epoch} steps "
                                 "each: the step counter is a 32-bit integer)", f"{epochs:,}",
                                 f"train for fewer epochs, e.g. epochs={min(most, 1000)}")


def _member_blocks(programs: Programs, members: Members, mode: str, loop_friendly: bool
                   ) -> sequential.MemberBlocks | None:
    """The member-by-member runner when a population is trained sequentially, else None."""
    if members.size is None or sequential.choose(mode, loop_friendly) == "vmap":
        return None
    mesh = programs.placement.mesh if programs.placement else None
    if mesh is not None and mesh.shape.get("population", 1) > 1:
        if mode == "auto":  # the members are spread over devices: vmap keeps them there
            return None
        raise errors.input_error("population_mode", "'vmap' or 'auto' with a mesh that splits "
                                 "the members (mesh.population > 1)", repr(mode),
                                 "drop the population axis of the mesh, or use 'vmap'")
    return sequential.MemberBlocks(programs.block, members.per_member)


def _fit_source(programs: Programs, state: TrainState, source: BatchSource,
                x: Any, y: Any, val: tuple[Any, Any, np.ndarray | None] | None,
                members: Members, *, epochs: int, batch_size: int, shuffle: bool,
                callbacks: Sequence[Callback], steps_per_dispatch: int | str,
                initial_epoch: int, checkpointing: Any, population_mode: str) -> FitResult:
    """:func:`fit` once its arguments are checked and its batch source is open."""
    hooks = hooks_lib.prepare(callbacks)  # a hook fit cannot call is refused before compiling
    friendly = programs.loop_friendly(state, x)
    validation = None if val is None else Validation(
        on_device(val[0], val[1], programs.placement, val[2]),
        sequential_plan(trees.rows(val[0]), batch_size),
        friendly)
    position = Position(origin=initial_epoch, epoch=initial_epoch, first=0, history={})
    # What a checkpoint must match to belong to this run; the example shape also lets a
    # new process rebuild the state to restore into (jaxdl.train.load).
    saver = None if checkpointing is None else FitCheckpoints(checkpointing, callbacks, {
        "seed": members.identity_seed, "batch_size": batch_size,
        "num_examples": source.num_examples, "shuffle": bool(shuffle),
        "num_features": trees.shapes(x), "input_dtype": trees.dtypes(x)},
        data=source if isinstance(source, IterableSource) else None)
    acc = _statistics(programs, state, x, y, batch_size, members, put_fn(programs))
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
    run = FitRun(programs, plan, static, source, validation, members, callbacks, checkpointing,
                 saver, hooks, _member_blocks(programs, members, population_mode, friendly))
    step = host_step(state)  # counted on the host from here on: no sync per dispatch
    context = dict(epochs=epochs, initial_epoch=position.epoch, steps_per_epoch=steps_per_epoch,
                   batch_size=batch_size, step=step, population=members.size,
                   members=members.view)
    state = hooks_lib.call_all(hooks, "on_train_begin", state, context)
    state, stats, position = train(run, state, acc, position, step)
    return FitResult(state, position.history, stats)


def fit(programs: Programs, state: TrainState, x: Any, y: Any = None, *, epochs: int = 1,
        batch_size: int | None = None, validation_data: Any = None,
        validation_split: float = 0.0, shuffle: bool | None = None,
        seed: int | Sequence[int] = 0, steps_per_epoch: int | None = None,
        callbacks: Sequence[Callback] = (), steps_per_dispatch: int | str = "auto",
        initial_epoch: int = 0, checkpointing: Any = None,
        population_mode: str = "auto", sample_weight: Any = None,
        class_weight: Any = None) -> FitResult:
    """Trains ``state`` on (x, y) for ``epochs - initial_epoch`` epochs.

    Args:
      programs: the compiled programs (model, loss, optimizer, metrics).
      state: the TrainState to start from (it is donated: do not reuse it).
      x: inputs [n, ...]; y: labels [n, ...]; either may be a pytree (dict, tuple, list) of
        arrays with a common leading dimension n (the model gets ``x``'s structure; a
        loss per output takes ``y``'s, see :mod:`jaxdl.outputs`). Or ``x`` on-disk records
        with fields "x" and "y" (:func:`jaxdl.data.open_records`) and ``y=None``: batches
        are read by a grain pipeline ahead of the step, in the order arrays would have
        (the same batches), each process reading only its rows. Or ``x`` a dataset (any
        iterable of ``(x, y)``, ``(x, y, sample_weight)`` or ``{"x", "y", "sample_weight"}``
        batches) and ``y=None``: see :mod:`jaxdl.train.iterables`.
      epochs: index of the last epoch (Keras semantics with ``initial_epoch``).
      batch_size: examples per step (default 32; a dataset's: its first batch's); the last
        batch of an epoch is padded and masked.
      validation_data: ``(x_val, y_val)``, ``(x_val, y_val, sample_weight_val)`` or records,
        evaluated at the end of every epoch (unweighted unless it carries weights); or a
        dataset of batches, read once into arrays.
      validation_split: fraction of (x, y), taken from the end before shuffling, held out
        for validation (ignored when ``validation_data`` is given).
      shuffle: reshuffle every epoch, the order a function of ``(seed, epoch)``; None:
        True for arrays, a dataset's own order (True is refused for a dataset).
      steps_per_epoch: with a dataset, the batches of an epoch, read as one stream across
        epochs (required for a one-shot iterator or an endless dataset); None: one pass of a
        re-iterable per epoch (its ``len()``, else counted by one pass).
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
      population_mode: "vmap", "sequential" or "auto" (:mod:`jaxdl.train.sequential`).
      sample_weight: per-example weights [n] (finite, >= 0): a batch's loss is
        ``sum(w_i * l_i) / sum(mask_i)`` over its real rows (Keras), its metrics weighted
        means normalised by ``sum(w_i)`` (see :mod:`jaxdl.weights`).
      class_weight: ``{label: weight}`` or ``"balanced"``: each example weighs its label's
        weight (times ``sample_weight``); binary, sparse or one-hot labels.

    Returns:
      A :class:`FitResult` ``(state, history)``: history maps ``loss``, metric names and
      their ``val_`` versions to per-epoch Python floats — for a population, per-epoch
      lists of one float per member (NaN after a member stopped); ``.stats`` what it
      measured.
    """
    epochs = check.positive_int(epochs, "epochs", "pass epochs=10", minimum=0)
    initial_epoch = check.positive_int(initial_epoch, "initial_epoch",
                                       "pass initial_epoch=0", minimum=0)
    run = dict(epochs=epochs, callbacks=callbacks, initial_epoch=initial_epoch,
               steps_per_dispatch=check_steps_per_dispatch(steps_per_dispatch),
               checkpointing=checkpointing,
               population_mode=sequential.check_mode(population_mode))
    weights = {"sample_weight": sample_weight, "class_weight": class_weight}
    members = members_for(state, seed)
    if iterables.is_dataset(x):  # any iterable of batches: jaxdl.train.datasets
        return _fit_dataset(programs, state, x, y, members, run, weights,
                            batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                            shuffle=shuffle, validation_data=validation_data,
                            validation_split=validation_split)
    if steps_per_epoch is not None:
        raise errors.input_error("steps_per_epoch", "None with arrays (an epoch is one pass "
                                 "over them)", repr(steps_per_epoch),
                                 "drop steps_per_epoch, or pass a dataset of batches")
    return _fit_arrays(programs, state, x, y, members, run, weights, batch_size=batch_size,
                       shuffle=shuffle, validation_data=validation_data,
                       validation_split=validation_split)


def _fit_dataset(programs: Programs, state: TrainState, x: Any, y: Any, members: Members,
                 run: dict[str, Any], weights: dict[str, Any], **data: Any) -> FitResult:
    """:func:`fit` on a dataset of batches (``data``: its batch and validation options)."""
    source, x, y, val = datasets.open_fit(programs, state, x, y, members=members,
                                          weights=weights, **data)
    try:
        return _fit_source(programs, state, source, x, y, val, members,
                           batch_size=source.batch_size, shuffle=False, **{
                               **run, "steps_per_dispatch": datasets.dispatch_steps(
                                   programs, state, source, x, run["steps_per_dispatch"])})
    finally:
        source.close()


def _fit_arrays(programs: Programs, state: TrainState, x: Any, y: Any, members: Members,
                run: dict[str, Any], weights: dict[str, Any], *, batch_size: int | None,
                shuffle: bool | None, validation_data: Any, validation_split: float
                ) -> FitResult:
    """:func:`fit` on arrays (pytrees of them) or records."""
    batch_size = check.positive_int(arrays.DEFAULT_BATCH_SIZE if batch_size is None
                                    else batch_size, "batch_size", "pass batch_size=32")
    shuffle = check.boolean(True if shuffle is None else shuffle, "shuffle")
    if programs.placement is not None:
        programs.placement.check_batch(batch_size)
    records = x if inputs.is_records(x) else None
    x, y = inputs.checked(programs, state, *inputs.in_memory(
        x, y, rows=inputs.RECORDS_CHECKED_ROWS), "x", "y")
    weight = inputs.example_weights(programs, y, records, weights["sample_weight"],
                                    weights["class_weight"])
    x, y, weight, val = inputs.validation_set(programs, state, x, y, validation_data,
                                              validation_split, records, weight)
    source = make_source(programs, x, y, records, batch_size, shuffle, members, weight)
    try:
        return _fit_source(programs, state, source, x, y, val, members, batch_size=batch_size,
                           shuffle=shuffle, **run)
    finally:
        source.close()
