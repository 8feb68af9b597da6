"""Populations: many models trained as one ``jax.vmap``-ed program.

A population state is a :class:`~jaxdl.state.TrainState` whose every leaf has a
leading member axis ``[N, ...]``: N parameter sets, N optimizer states, N RNG
keys. Per-member hyper-parameters (learning rate, weight decay, momentum, any
numeric optax option) live in the optimizer state through
``optax.inject_hyperparams``, so they are data: checkpointed with the state and
changeable between steps without recompiling. The training step is the
single-model step under ``jax.vmap``; one compile and one dispatch advance
every member.

    state = trainer.init(0, x[:1], population=32,
                         hparams={"learning_rate": np.geomspace(1e-4, 1e-1, 32)})
    state, history = trainer.fit(state, x, y, epochs=20, validation_data=(xv, yv))
    history["val_loss"]                      # per epoch: a list of 32 values
    best = jdl.population.best(state, history, metric="val_loss")
    best.index, best.value, best.hparams     # the winner; best.state is its TrainState
    trainer.predict(state, x_test, ensemble=True)   # mean of member probabilities

Member ``i`` computes exactly what a single run with ``seeds[i]`` and the
member's hyper-parameters computes (same batches by default; pass one data
seed per member to ``fit`` for per-member orders).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from optax import tree_utils as otu

from jaxdl import errors, optim
from jaxdl.state import TrainState


def size(state: Any) -> int | None:
    """The number of members of a population state, or None for a single model."""
    step = getattr(state, "step", None)
    shape = getattr(step, "shape", ())
    return int(shape[0]) if len(shape) == 1 else None


def member(state: TrainState, index: int) -> TrainState:
    """Member ``index`` of a population state, as a single-model TrainState."""
    n = size(state)
    if n is None:
        raise errors.input_error("state", "a population state (from init(..., population=N))",
                                 "a single-model state", "pass the population's state")
    if not isinstance(index, int | np.integer) or not -n <= index < n:
        raise errors.input_error("index", f"a member index in [0, {n})", repr(index),
                                 f"pick a member between 0 and {n - 1}")
    return jax.tree.map(lambda a: a[index], state)


def abstract_member(state: Any) -> Any:
    """Shapes and dtypes of one member of ``state`` (nothing computed)."""
    return jax.eval_shape(lambda s: jax.tree.map(lambda a: a[0], s), state)


def _injected(opt_state: Any) -> dict[str, list[tuple[Any, jax.Array]]]:
    """name -> [(path, value)] of every hyper-parameter injected in ``opt_state``
    (outermost state first), :func:`jaxdl.optim.with_lr_scale`'s multiplier left out."""
    kit_scale = optim.lr_scale_filter(opt_state)
    # Candidate names from every ``hyperparams`` dict; ``keep`` then takes only the
    # injected states' values.
    names = {name: None for _, hyper in otu.tree_get_all_with_path(
        opt_state, "hyperparams", filtering=lambda _, value: isinstance(value, dict))
        for name in hyper}

    def keep(path, value):
        return optim.is_injected(path, value) and not kit_scale(path, value)

    found = {name: otu.tree_get_all_with_path(opt_state, name, filtering=keep)
             for name in names}
    return {name: values for name, values in found.items() if values}


def hparams(state: TrainState) -> dict[str, np.ndarray]:
    """The injected hyper-parameters of ``state`` (per member [N] for a population).

    The kit's own learning-rate multiplier (``ReduceLROnPlateau``) is not listed.
    """
    return {name: np.asarray(jax.device_get(values[0][1]))
            for name, values in _injected(state.opt_state).items()}


def set_hparams(state: TrainState, values: Mapping[str, Any]) -> TrainState:
    """A copy of ``state`` with injected hyper-parameters replaced (no recompile: data).

    ``values`` maps a name to a scalar or, for a population, one value per member.
    """
    found = _injected(state.opt_state)
    for name in values:
        if name not in found:
            raise errors.input_error("hparams", f"names of injected hyper-parameters "
                                     f"{sorted(found)}", repr(name),
                                     "request it when creating the population: "
                                     "init(..., hparams={name: values})")
    n = size(state)
    opt_state = state.opt_state
    for name, value in values.items():
        for path, old in found[name]:
            new = jnp.asarray(value, old.dtype)
            if new.shape != old.shape:
                raise errors.input_error(
                    f"hparams[{name!r}]", f"{n} values (one per member)" if n else
                    "a scalar", f"shape {new.shape}", "give one value per member")
            # Each occurrence keeps its own dtype, shape and placement: no recompile.
            opt_state = otu.tree_set(opt_state, lambda p, _, path=path: p == path,
                                     **{name: jax.device_put(new, getattr(old, "sharding",
                                                                          None))})
    return state.replace(opt_state=opt_state)


def expand(spec: Mapping[str, Any], population: int, seed: int = 0) -> dict[str, list[float]]:
    """Per-member values from a sweep spec: name -> list | {"log_uniform": [lo, hi]} |
    {"uniform": [lo, hi]} | {"grid": [values]} | {"log_grid": [lo, hi]}.

    Lists are taken as they are (length N); ``log_uniform``/``uniform`` draw N values
    from ``seed``; ``grid`` repeats its values to fill N (``[a, b]`` -> a, b, a, b, ...);
    ``log_grid`` spaces N values geometrically from lo to hi.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, rule in spec.items():
        where = f"population.hparams.{name}"
        if isinstance(rule, Mapping):
            if len(rule) != 1 or next(iter(rule)) not in ("log_uniform", "uniform", "grid",
                                                          "log_grid"):
                raise errors.input_error(where, "a list, or one of {'log_uniform': [lo, hi]}, "
                                         "{'uniform': [lo, hi]}, {'grid': [...]}, "
                                         "{'log_grid': [lo, hi]}", repr(dict(rule)),
                                         "e.g. {'log_uniform': [1e-4, 1e-1]}")
            kind, args = next(iter(rule.items()))
            args = list(args)
            if kind == "grid":
                if not args:
                    raise errors.input_error(where, "a non-empty grid", "[]", "list values")
                values = [args[i % len(args)] for i in range(population)]
            else:
                if len(args) != 2 or (kind.startswith("log") and min(args) <= 0):
                    raise errors.input_error(where, f"[lo, hi]{' > 0' * kind.startswith('log')}"
                                             f" for {kind}", repr(args), "e.g. [1e-4, 1e-1]")
                lo, hi = (math.log(a) for a in args) if kind.startswith("log") else args
                points = (np.linspace(lo, hi, population) if kind == "log_grid"
                          else rng.uniform(lo, hi, population))
                values = np.exp(points) if kind.startswith("log") else points
            out[name] = [float(v) for v in values]
        elif isinstance(rule, Sequence) and not isinstance(rule, str):
            if len(rule) != population:
                raise errors.input_error(where, f"{population} values (population.size)",
                                         f"{len(rule)} values",
                                         "give one value per member or change the size")
            out[name] = [float(v) for v in rule]
        else:
            raise errors.type_error(where, "a list of values or a sampling rule",
                                    errors.describe(rule), "e.g. [1e-3, 3e-3] or "
                                    "{'log_uniform': [1e-4, 1e-1]}")
    return out


class Best(NamedTuple):
    """The member :func:`best` picked."""

    index: int
    value: float
    hparams: dict[str, float]
    state: TrainState


def best(state: TrainState, history: Mapping[str, Any], metric: str = "val_loss",
         mode: str = "auto", judge: str = "last") -> Best:
    """The member with the best ``metric``.

    Args:
      state: a population state (as ``fit`` returned it).
      history: ``fit``'s history: per epoch, one value per member (NaN once a member
        stopped).
      metric: a history key, e.g. "val_loss" or "val_accuracy".
      mode: "min", "max" or "auto" (max for accuracy-like names).
      judge: "last": each member's last finite value — what its returned state scored
        (an early-stopped member's value where it stopped); "best": its best epoch's
        (the returned state's with ``EarlyStopping(restore_best_weights=True)``).
    """
    if metric not in history:
        raise errors.input_error("metric", f"a key of the history {sorted(history)}",
                                 repr(metric), "pass validation data to fit, or pick one of those")
    n = size(state)
    values = np.asarray(history[metric], dtype=np.float64)
    if n is None or values.ndim != 2 or values.shape[1] != n:
        raise errors.input_error("history", "the history of a population's fit (per epoch, "
                                 "one value per member)", f"values of shape {values.shape}",
                                 "pass the history fit returned for this population state")
    from jaxdl import metrics

    mode = metrics.mode(metric) if mode == "auto" else mode
    if mode not in ("min", "max"):
        raise errors.input_error("mode", "'min', 'max' or 'auto'", repr(mode), "pass mode='min'")
    if judge not in ("last", "best"):
        raise errors.input_error("judge", "'last' or 'best'", repr(judge), "pass judge='last'")
    sign = 1.0 if mode == "min" else -1.0
    finite = np.isfinite(values)
    if judge == "best":
        scores = np.where(finite, sign * values, np.inf).min(axis=0)
    else:
        last = values.shape[0] - 1 - np.argmax(finite[::-1], axis=0)  # last finite epoch
        scores = np.where(finite.any(axis=0), sign * values[last, np.arange(n)], np.inf)
    if not np.isfinite(scores).any():
        raise errors.NonFiniteError(f"every member's {metric} is non-finite: no member to "
                                    "pick. Fix: lower the learning rates of the sweep.")
    index = int(np.argmin(scores))
    return Best(index, float(sign * scores[index]),
                {k: float(v[index]) for k, v in hparams(state).items()},
                member(state, index))


def check_ensemble(state: Any, ensemble: bool) -> None:
    """Refuses ``predict(..., ensemble=True)`` on a single-model state."""
    if ensemble and size(state) is None:
        raise errors.input_error("ensemble", "a population state for ensemble=True",
                                 "a single-model state", "init(..., population=N), or "
                                 "pass ensemble=False")


def ensemble_mean(state: TrainState, predictions: Any) -> Any:
    """The mean over members of ``predictions`` [N, n, ...] (or a pytree of them), of the
    members whose parameters and predictions are all finite; one warning naming those
    left out. Raises NonFiniteError when no member is finite."""
    import warnings

    n = size(state)
    # Per member, on the device for the parameters: only [N] booleans come to the host.
    finite = [np.asarray(jnp.isfinite(a).reshape(n, -1).all(axis=1))
              for a in jax.tree.leaves(state.params)]
    usable = np.logical_and.reduce(finite + [np.isfinite(a).reshape(n, -1).all(axis=1)
                                             for a in jax.tree.leaves(predictions)])
    if not usable.any():
        raise errors.NonFiniteError(errors.message(
            "state", "a population with a member whose parameters and predictions are "
            "finite, for ensemble=True", f"{n} members, none finite", "retrain with "
            "nan_policy='raise' (a diverged member keeps its last finite state) or a "
            "smaller learning rate"))
    if not usable.all():
        warnings.warn(f"predict(ensemble=True): averaged {int(usable.sum())} of {n} "
                      f"members; left out {np.flatnonzero(~usable).tolist()}, whose "
                      "parameters or predictions are not finite", stacklevel=3)
    return jax.tree.map(lambda a: a[usable].mean(axis=0), predictions)


def select(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per member: ``new`` where ``mask`` [N] is true, else ``old`` (any pytree of [N, ...])."""

    def pick(a, b):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return a  # keys never change during training
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


select_jit = jax.jit(select)


def vmap_train_step(train_step: Any, member_data: bool = False) -> Any:
    """``step(state [N], batch, active [N] | None) -> (state, stats [N])`` from a member step.

    ``member_data``: the batch's x, y (and weight) carry a member axis ([N, B, ...]: each
    member's own order); else every member trains on the same batch. Members with
    ``active`` false keep their state (an early-stopped or diverged member).
    """

    def step(state, batch, active=None):
        # The mask follows from the step's position alone: the same for every member.
        batch_axes = {k: None if k == "mask" else 0 for k in batch} if member_data else None
        new, stats = jax.vmap(train_step, in_axes=(0, batch_axes))(state, batch)
        if active is not None:
            # Selecting every leaf costs a quarter of a small model's step: only when needed.
            new = jax.lax.cond(jnp.all(active), lambda: new, lambda: select(active, new, state))
        return new, stats

    return step
