"""The schema of a checkpoint's meta: the keys the kit writes, checked on every read.

A checkpoint's meta is data from disk. Its digest says whether it is the meta that was
saved; this says whether it is one the kit can use at all — so that an edited file, or a
hostile one written with a matching digest, is refused before it positions a resume,
shapes a restore target or normalizes a prediction. A meta that fails is
:class:`~jaxdl.checkpoint.integrity.Damaged`: its checkpoint is set aside like a corrupt one.

Checked when present (a script's own ``Checkpointer.save(step, tree, meta)`` may hold
other keys, which pass as they are; these names are the kit's):

- written by the Checkpointer: ``structure`` (always);
- by a fit (:mod:`jaxdl.checkpoint.resume`): ``position`` (``epoch``, ``step_in_epoch``,
  ``step`` — the checkpoint's own step), ``origin_epoch``, ``finished``, ``history_log`` (where
  :mod:`jaxdl.checkpoint.history_log` stood; older checkpoints hold the whole ``history``),
  ``diverged``, ``callbacks``, and the run's identity ``seed``, ``batch_size``,
  ``num_examples``, ``shuffle``;
- by ``jaxdl train``: ``config``, ``num_features``, ``input_dtype``, ``scaler``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from jaxdl.checkpoint.integrity import Damaged

# TrainState.step is an int32; epochs and counts are bounded by it too.
_LIMIT = 2**31 - 1
_BYTES = 2**40  # a history log's length: far above any run's (a restore reads this many)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _bad(key: str, expected: str, value: Any) -> Damaged:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return Damaged(f"its meta is invalid: {key} must be {expected}, got {text}")


def _integer(key: str, value: Any, low: int = 0, high: int = _LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(key, f"an integer in [{low}, {high}]", value)
    return value


def _count(meta: dict[str, Any], key: str, low: int = 0, high: int = _LIMIT) -> int | None:
    """``meta[key]`` checked as an integer in [low, high]; None when the key is absent."""
    return _integer(key, meta[key], low, high) if key in meta else None


def _flag(meta: dict[str, Any], key: str) -> None:
    if key in meta and not isinstance(meta[key], bool):
        raise _bad(key, "true or false", meta[key])


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _position(meta: dict[str, Any], step: int) -> int | None:
    """Checks the position; returns the epochs it has done (None when there is none)."""
    position = meta.get("position")
    if position is None:
        return None
    if not isinstance(position, dict) or set(position) != {"epoch", "step_in_epoch", "step"}:
        raise _bad("position", "{epoch, step_in_epoch, step}", position)
    epoch = _integer("position.epoch", position["epoch"])
    _integer("position.step_in_epoch", position["step_in_epoch"])
    if _integer("position.step", position["step"]) != step:
        raise _bad("position.step", f"this checkpoint's step {step}", position["step"])
    origin = _count(meta, "origin_epoch", high=epoch)
    num_examples = _count(meta, "num_examples", low=1)
    batch_size = _count(meta, "batch_size", low=1)
    if num_examples and batch_size and position["step_in_epoch"] >= -(-num_examples //
                                                                     batch_size):
        raise _bad("position.step_in_epoch", "less than the steps per epoch",
                   position["step_in_epoch"])
    return epoch - (origin or 0)


def check_history(history: Any, done: int | None = None) -> None:
    """Raises :class:`Damaged` unless ``history`` is ``{name: [value per epoch]}`` with at
    most ``done`` values per name (the epochs its checkpoint's position has done)."""
    if not isinstance(history, dict):
        raise _bad("history", "a {name: [value per epoch]} object", history)
    for key, values in history.items():
        # Per epoch: a number, or nested lists of them (one per member; a confusion matrix).
        if not isinstance(values, list) or not all(_numbers(v) for v in values):
            raise _bad(f"history[{key!r}]", "a list of numbers (or of lists of numbers, one "
                       "per member)", values)
        if done is not None and len(values) > done:
            raise _bad(f"history[{key!r}]", f"at most the {done} epochs done",
                       f"{len(values)} values")


def _history(meta: dict[str, Any], done: int | None) -> None:
    if "history" in meta:  # written before the log
        check_history(meta["history"], done)
    log = meta.get("history_log")
    if log is None:
        return
    if not (isinstance(log, dict) and set(log) == {"entries", "bytes", "sha256"}
            and isinstance(log["sha256"], str) and _HEX64.fullmatch(log["sha256"])):
        raise _bad("history_log", "{entries, bytes, sha256} (where the history file stood)",
                   log)
    _integer("history_log.entries", log["entries"])
    _integer("history_log.bytes", log["bytes"], high=_BYTES)


def _numbers(value: Any, depth: int = 0) -> bool:
    if isinstance(value, list):
        return depth < 3 and all(_numbers(v, depth + 1) for v in value)
    return _number(value)


def _progress(meta: dict[str, Any]) -> None:
    diverged = meta.get("diverged")
    if diverged is not None and not (isinstance(diverged, dict) and all(
            k.isdigit() and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _LIMIT
            for k, v in diverged.items())):
        raise _bad("diverged", "a {member: step} object of non-negative integers", diverged)
    callbacks = meta.get("callbacks")
    if callbacks is not None and not (isinstance(callbacks, list) and all(
            isinstance(c, dict) for c in callbacks)):
        raise _bad("callbacks", "a list of objects (one per callback)", callbacks)
    seed = meta.get("seed")
    seeds = seed if isinstance(seed, list) and seed else [seed]
    if seed is not None and not all(isinstance(s, int) and not isinstance(s, bool)
                                    for s in seeds):
        raise _bad("seed", "an integer or a list of integers", seed)
    _flag(meta, "finished")
    _flag(meta, "shuffle")
    if "config" in meta and not isinstance(meta["config"], dict):
        raise _bad("config", "an object", meta["config"])


def _is_shape(features: Any) -> bool:
    return isinstance(features, list) and len(features) <= 8 and all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= _LIMIT for n in features)


def _is_shape_tree(features: Any, depth: int = 0) -> bool:
    """A pytree of shapes (a model with several inputs): dicts and lists of shapes."""
    if depth > 8:
        return False
    if _is_shape(features):
        return True
    items = features.values() if isinstance(features, dict) else features
    return isinstance(features, dict | list) and 0 < len(features) <= 64 and all(
        _is_shape_tree(f, depth + 1) for f in items)


def _is_dtype(dtype: Any) -> bool:
    try:
        return isinstance(dtype, str) and np.dtype(dtype).kind in "biuf" and (
            str(np.dtype(dtype)) == dtype)
    except TypeError:
        return False


def _dtypes_ok(dtype: Any, depth: int = 0) -> bool:
    if isinstance(dtype, dict | list) and depth <= 8:
        return all(_dtypes_ok(d, depth + 1)
                   for d in (dtype.values() if isinstance(dtype, dict) else dtype))
    return _is_dtype(dtype)


def _features(meta: dict[str, Any]) -> tuple[int, ...] | None:
    """The example shape when the inputs are one array (None for none or a pytree)."""
    features = meta.get("num_features")
    if features is not None and not _is_shape_tree(features):
        raise _bad("num_features", "a list of at most 8 positive integers (or a pytree of "
                   "them)", features)
    dtype = meta.get("input_dtype")
    if dtype is not None and not _dtypes_ok(dtype):
        raise _bad("input_dtype", "the name of a numeric dtype (e.g. 'float32')", dtype)
    return tuple(features) if _is_shape(features) else None


def _statistic(key: str, value: Any, shape: tuple[int, ...] | None, positive: bool = False
               ) -> None:
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise _bad(key, "a (nested) list of numbers", value) from None
    if array.dtype != np.float64 or not np.all(np.isfinite(array)) or (
            shape is not None and array.shape != shape) or (positive and np.any(array == 0)):
        expected = "finite numbers" + (" other than 0" if positive else "") + (
            f" of shape {list(shape)}" if shape is not None else "")
        raise _bad(key, expected, value)


def _scaler(meta: dict[str, Any], shape: tuple[int, ...] | None) -> None:
    scaler = meta.get("scaler")
    if scaler is None:
        return
    fields = {"standardizer": {"kind", "mean", "std"},
              "minmax": {"kind", "minimum", "scale", "feature_range"}}
    kind = scaler.get("kind") if isinstance(scaler, dict) else None
    if not isinstance(kind, str) or kind not in fields or set(scaler) != fields[kind]:
        raise _bad("scaler", "a standardizer {kind, mean, std} or a minmax {kind, minimum, "
                   "scale, feature_range}", scaler)
    if kind == "standardizer":
        _statistic("scaler.mean", scaler["mean"], shape)
        _statistic("scaler.std", scaler["std"], shape, positive=True)
        return
    _statistic("scaler.minimum", scaler["minimum"], shape)
    _statistic("scaler.scale", scaler["scale"], shape, positive=True)
    low_high = scaler["feature_range"]
    if not (isinstance(low_high, list) and len(low_high) == 2 and all(
            _number(v) and math.isfinite(v) for v in low_high) and low_high[0] < low_high[1]):
        raise _bad("scaler.feature_range", "[low, high] with low < high", low_high)


def _structure(meta: dict[str, Any]) -> None:
    structure = meta.get("structure")
    if not isinstance(structure, dict) or not all(
            isinstance(entry, dict) and set(entry) == {"shape", "dtype"}
            and isinstance(entry["dtype"], str) and isinstance(entry["shape"], list)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                    for n in entry["shape"])
            for entry in structure.values()):
        raise _bad("structure", "a {leaf: {shape, dtype}} object", structure)


def check_meta(meta: Any, step: int) -> None:
    """Raises :class:`Damaged` naming the first key of ``meta`` that breaks the schema.

    Args:
      meta: what the checkpoint's ``meta`` item holds (parsed JSON).
      step: the checkpoint's step (``position.step`` must be it).
    """
    if not isinstance(meta, dict):
        raise _bad("meta", "a JSON object", meta)
    _structure(meta)
    _history(meta, _position(meta, step))
    _count(meta, "origin_epoch")
    _count(meta, "num_examples", low=1)
    _count(meta, "batch_size", low=1)
    _progress(meta)
    _scaler(meta, _features(meta))
