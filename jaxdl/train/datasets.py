"""fit, evaluate and predict over a dataset: any iterable of batches
(:mod:`jaxdl.train.iterables`).

:func:`open_fit` checks what a fit over a dataset may not combine, decides the steps per
epoch, checks the first batch against the model like arrays, and opens the
:class:`~jaxdl.train.prefetch.IterableSource` the fit driver trains from. :func:`evaluate`
and :func:`predict` stream one pass, padded and masked like the array path, so their
results are exact.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.data import trees
from jaxdl.data import validate as check
from jaxdl.state import TrainState
from jaxdl.train import inputs, iterables, prefetch
from jaxdl.train import plan as plan_lib
from jaxdl.train.members import Members
from jaxdl.train.programs import Programs

# Blocks read ahead sit in host memory (prefetch.DEPTH + 1 of them): "auto" dispatch keeps
# one under this size (a fused block of 2048 image batches would not fit).
BLOCK_BYTES = 64 * 2**20


def dispatch_steps(programs: Programs, state: TrainState, source: prefetch.IterableSource,
                   x: Any, requested: int | str) -> int | str:
    """``steps_per_dispatch`` for a dataset: as requested, except that "auto" fusing steps
    (a loop-friendly model) fuses no more than :data:`BLOCK_BYTES` of batches."""
    if requested != "auto" or not programs.loop_friendly(state, x):
        return requested
    cap = max(1, BLOCK_BYTES // source.spec.step_bytes)
    return requested if cap >= plan_lib.AUTO_STEPS_PER_DISPATCH else cap


def _refuse(argument: str, value: Any, expected: str, fix: str) -> None:
    raise errors.input_error(argument, expected, errors.describe(value), fix)


def _check_combination(programs: Programs, y: Any, shuffle: Any, validation_split: Any,
                       members: Members, weights: dict[str, Any]) -> None:
    """What a fit over a dataset cannot take: each a clear error."""
    if y is not None:
        _refuse("y", y, "None when x is a dataset of batches (each batch holds its labels)",
                "yield (x, y) batches and drop y")
    if shuffle is not None and check.boolean(shuffle, "shuffle"):
        raise errors.input_error("shuffle", "None or False with a dataset (it owns its "
                                 "order)", "True", "shuffle in the pipeline, e.g. grain "
                                 "ds.shuffle(seed=0) or a shuffling loader, and drop shuffle")
    if check.fraction(validation_split, "validation_split"):
        raise errors.input_error("validation_split", "0 with a dataset (its batches are not "
                                 "held in memory to cut)", repr(validation_split),
                                 "pass validation_data=(x_val, y_val) or another dataset")
    for name, value in weights.items():
        if value is not None:
            _refuse(name, value, "None with a dataset (weights come in its batches)",
                    "yield (x, y, sample_weight) batches")
    if programs.population == "member":
        raise errors.input_error("seed", "one seed with a dataset (its one order is every "
                                 "member's)", f"{len(members.seeds)} seeds",
                                 "pass one seed, or arrays to give each member its own order")


def _steps_per_epoch(reader: iterables.Reader, given: Any) -> int:
    """Steps per epoch: ``given`` (one stream across epochs), else one pass of a
    re-iterable (its len(), or counted)."""
    if given is not None:
        return check.positive_int(given, "steps_per_epoch", "pass steps_per_epoch=100")
    if reader.one_shot:
        raise errors.input_error("steps_per_epoch", "an integer >= 1 with a one-shot iterator "
                                 "(a generator cannot be read again and its length is "
                                 "unknown)", "None", "pass steps_per_epoch=N, or a "
                                 "re-iterable (a list, a grain dataset) to read every epoch "
                                 "from the start")
    length = reader.length()
    if length is not None and length >= iterables.ENDLESS:
        raise errors.input_error("steps_per_epoch", "an integer >= 1 with an endless dataset",
                                 f"None (len() = {length:,})", "pass steps_per_epoch=N")
    if length is None:
        length = reader.count()
    reader.per_epoch, reader.pass_length = True, length
    return length


def materialize(dataset: Any, need_y: bool = True) -> tuple[Any, ...]:
    """A dataset's batches concatenated into arrays: ``(x, y)`` or ``(x, y, sample_weight)``
    (a validation set, read once and then held on device)."""
    reader = iterables.Reader(dataset)
    try:
        reader.first()
        found = [iterables.numeric(iterables.parts(b, str(i), need_y), str(i))
                 for i, b in enumerate(reader.rest())]
    except (errors.InputError, errors.InputTypeError) as e:
        raise e.renamed("validation_data") from None
    structure = jax.tree.structure(found[0])
    for i, f in enumerate(found):
        if jax.tree.structure(f) != structure:
            raise errors.input_error("validation_data", "every batch with the first batch's "
                                     "structure", f"batch {i} shaped {jax.tree.structure(f)}",
                                     "yield batches of one structure")
    joined = jax.tree.map(lambda *a: np.concatenate(a), *found)
    return tuple(joined[k] for k in ("x", "y", "weight") if k in joined)


def _first(programs: Programs, state: TrainState, reader: iterables.Reader,
           batch_size: int | None, need_y: bool) -> tuple[dict[str, Any], iterables.Spec]:
    """The first batch checked like arrays (the model, the loss, the weights) and the spec
    every batch is held to."""
    raw = iterables.parts(reader.first(), "0", need_y)
    found = iterables.numeric(raw, "0")
    if need_y:
        x, y = inputs.checked(programs, state, found["x"], found["y"], "x", "y")
        first = {"x": x, "y": y}
        if "weight" in found:
            first["weight"] = inputs.checked_weights(found["weight"], trees.rows(x),
                                                     "sample_weight")
    else:
        first = {"x": check.as_features(found["x"], "x")}
        inputs.output_shape(programs, state, first["x"])
    rows = trees.rows(first["x"])
    size = rows if batch_size is None else check.positive_int(batch_size, "batch_size",
                                                              "pass batch_size=32")
    if programs.placement is not None:
        programs.placement.check_batch(size * jax.process_count())
    spec = iterables.make_spec(raw, first, size)
    spec.conform(raw, "0")  # a first batch larger than batch_size is refused here
    return first, spec


def open_fit(programs: Programs, state: TrainState, dataset: Any, y: Any, *,
             batch_size: int | None, steps_per_epoch: Any, shuffle: Any,
             validation_data: Any, validation_split: Any, members: Members,
             weights: dict[str, Any]) -> tuple[prefetch.IterableSource, Any, Any, Any]:
    """The source over ``dataset``, its first batch's (x, y) and the validation set.

    Returns ``(source, x, y, val)``: ``val`` as :func:`jaxdl.train.inputs.validation_set`
    gives it; a dataset as ``validation_data`` is read once into arrays (then held on
    device and evaluated exactly, as arrays are).
    """
    _check_combination(programs, y, shuffle, validation_split, members, weights)
    reader = iterables.Reader(dataset)
    steps = _steps_per_epoch(reader, steps_per_epoch)
    first, spec = _first(programs, state, reader, batch_size, need_y=True)
    val = None
    if validation_data is not None:
        if iterables.is_dataset(validation_data):
            validation_data = materialize(validation_data)
        val = inputs.validation_set(programs, state, first["x"], first["y"], validation_data,
                                    0.0, None)[-1]
    source = prefetch.IterableSource(reader, spec, steps, programs.placement)
    return source, first["x"], first["y"], val


def evaluate(programs: Programs, state: TrainState, dataset: Any, y: Any = None, *,
             batch_size: int | None = None, sample_weight: Any = None) -> dict[str, Any]:
    """Loss and metrics over one pass of ``dataset``, exactly (each batch padded to the first
    one's size and masked); ``{name: float}``, float64 [N] per metric for a population."""
    from jaxdl.train.infer import values

    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            _refuse(name, value, "None when x is a dataset of batches (each batch holds it)",
                    f"yield it in the batches and drop {name}")
    reader = iterables.Reader(dataset)
    _, spec = _first(programs, state, reader, batch_size, need_y=True)
    put = programs.placement.put_replicated if programs.placement else jax.device_put
    idx, acc = put(jnp.arange(spec.batch_size, dtype=jnp.int32)), None
    ahead = prefetch.stream(reader, spec, True, programs.placement)
    try:
        for batch, _ in ahead:
            mask = batch.pop("mask")
            acc = programs.eval_batch(acc, state, batch, idx, mask)
    finally:
        ahead.close()
    return values(programs, programs.results(acc))


def predict(programs: Programs, state: TrainState, dataset: Any, *,
            batch_size: int | None = None) -> Any:
    """Predictions for every example of one pass of ``dataset`` (batches ``x``, or (x, ...)
    tuples / dicts whose ``x`` is taken), in order: [n, ...], [N, n, ...] for a population."""
    reader = iterables.Reader(dataset)
    _, spec = _first(programs, state, reader, batch_size, need_y=False)
    outputs = []
    ahead = prefetch.stream(reader, spec, False, programs.placement)
    try:
        for batch, rows in ahead:
            outputs.append((programs.predict_batch(state, batch["x"]), rows))
    finally:
        ahead.close()
    population = programs.population is not None
    pieces = [prefetch.real_rows(jax.device_get(out), rows, population)
              for out, rows in outputs]
    return jax.tree.map(lambda *a: np.concatenate(a, axis=1 if population else 0), *pieces)
