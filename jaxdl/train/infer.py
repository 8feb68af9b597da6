"""evaluate and predict: exact passes over a data set with the compiled programs."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data import arrays, trees
from jaxdl.data import validate as check
from jaxdl.state import TrainState
from jaxdl.train import inputs, iterables
from jaxdl.train.programs import Programs
from jaxdl.train.sources import on_device, sequential_plan


def evaluate_arrays(programs: Programs, state: TrainState, data: dict[str, jax.Array],
                    plan: dict[str, jax.Array]) -> dict[str, Any]:
    """Metrics over on-device ``data`` batched by ``plan`` (idx/mask [batches, B]).

    Returns floats, or float64 [N] per metric for a population.
    """
    if programs.loop_friendly(state, data["x"]):
        results = programs.evaluate(state, data, plan)
    else:
        acc = None
        for idx, mask in zip(plan["idx"], plan["mask"], strict=True):
            acc = programs.eval_batch(acc, state, data, idx, mask)
        results = programs.results(acc)
    return values(programs, results)


def values(programs: Programs, results: dict[str, Any]) -> dict[str, Any]:
    """On-device metric results as Python values: floats, or float64 [N] per metric for a
    population."""
    results = jax.device_get(results)
    if programs.population is not None:  # one value per member
        return {k: np.asarray(results[k], np.float64) for k in programs.names}
    # A matrix-valued metric (the confusion matrix) as nested lists, the rest as floats.
    return {k: float(results[k]) if np.ndim(results[k]) == 0
            else np.asarray(results[k], np.float64).tolist() for k in programs.names}


def _check_batch_size(programs: Programs, batch_size: Any) -> int:
    if batch_size is None:
        batch_size = arrays.DEFAULT_BATCH_SIZE
    batch_size = check.positive_int(batch_size, "batch_size", "pass batch_size=32")
    if programs.placement is not None:
        programs.placement.check_batch(batch_size)
    return batch_size


def evaluate(programs: Programs, state: TrainState, x: Any, y: Any = None, *,
             batch_size: int | None = None, sample_weight: Any = None) -> dict[str, Any]:
    """Loss and metrics over all of (x, y), exactly (the last batch is padded and masked).

    ``x``, ``y``: arrays or pytrees of arrays [n, ...]; ``sample_weight`` [n]: the loss is
    ``sum(w_i * l_i) / n``, the metrics weighted means (see :mod:`jaxdl.weights`). Or ``x``
    a dataset of batches, streamed (:func:`jaxdl.train.datasets.evaluate`).
    """
    if iterables.is_dataset(x):
        from jaxdl.train import datasets

        return datasets.evaluate(programs, state, x, y, batch_size=batch_size,
                                 sample_weight=sample_weight)
    batch_size = _check_batch_size(programs, batch_size)
    x, y = inputs.checked(programs, state, *inputs.in_memory(x, y), "x", "y")
    weight = inputs.checked_weights(sample_weight, trees.rows(x))
    return evaluate_arrays(programs, state, on_device(x, y, programs.placement, weight),
                           sequential_plan(trees.rows(x), batch_size))


def predict(programs: Programs, state: TrainState, x: Any, *, batch_size: int | None = None
            ) -> np.ndarray:
    """Predictions for every example of ``x``: probabilities for classification losses.

    ``x``: an array or a pytree of arrays [n, ...], as the model takes it; or a dataset of
    batches, streamed (:func:`jaxdl.train.datasets.predict`).

    Returns:
      numpy array [n, *output_shape] (float32); [members, n, *output_shape] for a
      population; a model returning a pytree gives that pytree of such arrays.
    """
    if iterables.is_dataset(x):
        from jaxdl.train import datasets

        return datasets.predict(programs, state, x, batch_size=batch_size)
    batch_size = _check_batch_size(programs, batch_size)
    if inputs.is_records(x):
        x = np.asarray(x.arrays["x"])
    x = check.as_features(x, "x")
    rows = trees.rows(x)
    if rows <= batch_size and programs.placement is None:
        # One batch (a serving loop's request): one call on exactly these rows, no plan;
        # the shape check runs only to explain a failure (it costs a third of the call).
        try:
            return jax.tree.map(np.asarray, programs.predict_batch(state, x))
        except Exception:
            inputs.output_shape(programs, state, x)
            raise
    inputs.output_shape(programs, state, x)
    idx = sequential_plan(rows, batch_size)["idx"]
    data_x = on_device(x, None, programs.placement)["x"]
    if programs.loop_friendly(state, data_x):
        out = programs.predict_all(state, data_x, idx)
    else:
        out = jax.tree.map(lambda *batches: jnp.stack(batches), *[
            programs.predict_batch(state, jax.tree.map(lambda a, i=i: jnp.take(a, i, axis=0),
                                                       data_x)) for i in idx])
    return jax.tree.map(lambda a: _rows(np.asarray(a), rows, programs.population is not None),
                        jax.device_get(out))


def _rows(out: np.ndarray, rows: int, population: bool) -> np.ndarray:
    """[batches, (members,) B, ...] -> [(members,) rows, ...]: the real rows, in order."""
    if population:
        out = np.moveaxis(out, 1, 0)
        return out.reshape(out.shape[0], -1, *out.shape[3:])[:, :rows]
    return out.reshape(-1, *out.shape[2:])[:rows]
