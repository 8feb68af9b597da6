"""Cleaning (host, once) and normalization (pure, fit on the training split only).

    x, y, report = jdl.data.clean(x, y)               # drop NaN/inf rows and duplicates
    scaler = jdl.data.Standardizer.fit(x_train)       # statistics of the train split
    x_val = scaler(x_val)                             # pure: numpy or inside jit

Scalers are ``flax.struct`` pytrees: their statistics are arrays, so they can
be stored with a run (``to_dict``/``scaler_from_dict``, JSON) and applied on
device.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdl import errors
from jaxdl.data.validate import nonfinite_rows

NONFINITE_POLICIES = ("drop", "impute_mean", "impute_median", "error")


class Cleaned(NamedTuple):
    """What :func:`clean` returns: the kept rows and a report of what it did."""

    x: np.ndarray
    y: np.ndarray | None
    report: dict[str, int]


def _rows_finite(a: np.ndarray) -> np.ndarray:
    finite = np.ones(len(a), bool)
    finite[nonfinite_rows(a)] = False
    return finite


def _as_rows(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validates the inputs of :func:`clean`: numeric x [n, ...], n >= 1, y of length n."""
    try:
        x = np.asarray(x)
    except ValueError:  # ragged nested lists
        x = np.asarray(x, dtype=object)
    if x.dtype.kind not in "biuf" or x.ndim == 0 or len(x) == 0:
        raise errors.input_error("x", "a non-empty numeric array [n, ...]", errors.describe(x),
                                 "check how the data was loaded (one row per example)")
    if y is None:
        return x, None
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != len(x):
        given = "a scalar" if y.ndim == 0 else f"{len(y)} labels"
        raise errors.input_error("y", f"one label per row of x ({len(x)} rows)",
                                 f"{given} ({errors.describe(y)})",
                                 "pass x and y of the same length")
    return x, y


def _impute(x: np.ndarray, keep: np.ndarray, how: str) -> tuple[np.ndarray, int]:
    """x with non-finite entries replaced by the column statistic of the kept rows."""
    x = x.astype(np.float32 if x.dtype.itemsize <= 4 else np.float64, copy=True)
    flat = x.reshape(len(x), -1)  # a view: writing into it writes into x
    # Rows dropped for their labels neither give statistics nor count as imputed.
    bad = ~np.isfinite(flat) & keep[:, None]
    finite = np.where(~np.isfinite(flat) | ~keep[:, None], np.nan, flat)
    empty = np.isnan(finite).all(axis=0) & bad.any(axis=0)
    if empty.any():
        column = int(np.flatnonzero(empty)[0])
        raise errors.input_error("x", f"finite values to {how.replace('_', ' ')} from",
                                 f"column {column} with no finite value",
                                 "drop that column, or use nonfinite='drop'")
    with warnings.catch_warnings():  # all-NaN columns warn, but have nothing to fill
        warnings.simplefilter("ignore", RuntimeWarning)
        fill = (np.nanmean if how == "impute_mean" else np.nanmedian)(finite, axis=0)
    flat[bad] = np.take(fill, np.nonzero(bad)[1])
    return x, int(bad.sum())


def _first_occurrences(x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """Mask of the rows whose (x row, y) pair has not been seen earlier."""
    # x and y are uniqued separately and then as pairs of ids, so that neither is
    # cast to the other's dtype (an int cast would merge labels 0.0 and 0.5).
    _, ids = np.unique(x.reshape(len(x), -1), axis=0, return_inverse=True)
    if y is not None:
        _, y_ids = np.unique(y.reshape(len(y), -1), axis=0, return_inverse=True)
        _, ids = np.unique(np.stack([ids.ravel(), y_ids.ravel()], axis=1), axis=0,
                           return_inverse=True)
    _, first = np.unique(ids.ravel(), return_index=True)
    unique = np.zeros(len(x), bool)
    unique[first] = True
    return unique


def clean(x: Any, y: Any = None, *, nonfinite: str = "drop",
          drop_duplicates: bool = True) -> Cleaned:
    """Drops or imputes non-finite rows and drops duplicate examples, keeping order.

    Runs on the host, once, before the data is split.

    Args:
      x: numeric features [n, ...] (array-like).
      y: optional labels or targets [n, ...] of any dtype; rows with non-finite float
        labels are always dropped.
      nonfinite: what to do with rows holding NaN/inf in x: "drop" them, replace each
        bad value by its column's mean ("impute_mean") or median ("impute_median") over
        the finite values, or raise naming the first bad row ("error").
      drop_duplicates: drop repeated (x row, y) pairs after their first occurrence.

    Returns:
      ``Cleaned(x, y, report)``: the kept rows in their original order (x keeps its
      dtype, except that imputing makes it float), and a report counting rows_in,
      nonfinite_rows (dropped), imputed_values, duplicate_rows and rows_out.

    Example::

        x, y, report = clean([[1.0, 2.0], [np.nan, 0.0], [1.0, 2.0]], [0, 1, 0])
        # x == [[1., 2.]], y == [0]; report["nonfinite_rows"] == report["duplicate_rows"] == 1
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise errors.unknown_name("nonfinite", "policy", nonfinite, list(NONFINITE_POLICIES))
    x, y = _as_rows(x, y)
    report = {"rows_in": len(x), "nonfinite_rows": 0, "imputed_values": 0,
              "duplicate_rows": 0}
    x_ok = _rows_finite(x)
    keep = _rows_finite(y) if y is not None else np.ones(len(x), bool)
    if not x_ok.all():
        if nonfinite == "error":
            row = int(np.flatnonzero(~x_ok)[0])
            raise errors.input_error("x", "finite values", f"NaN/inf in row {row}",
                                     "use nonfinite='drop' or 'impute_mean'")
        if nonfinite == "drop":
            keep &= x_ok
        else:
            x, report["imputed_values"] = _impute(x, keep, nonfinite)
    report["nonfinite_rows"] = int((~keep).sum())
    x, y = x[keep], (y[keep] if y is not None else None)
    if drop_duplicates and len(x):
        unique = _first_occurrences(x, y)
        report["duplicate_rows"] = int((~unique).sum())
        x, y = x[unique], (y[unique] if y is not None else None)
    report["rows_out"] = len(x)
    return Cleaned(x, y, report)


def _fit_input(x: Any) -> np.ndarray:
    """x [n, ...] as float64 (statistics in double precision), checked for fitting."""
    try:
        x = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        raise errors.input_error("x", "a numeric array [n, features]", errors.describe(x),
                                 "fit on the numeric training features") from None
    if x.ndim == 0 or len(x) == 0:
        raise errors.input_error("x", "a non-empty array [n, features]", errors.describe(x),
                                 "fit on the training split")
    rows = nonfinite_rows(x)
    if len(rows):
        raise errors.input_error("x", "finite values to fit statistics on",
                                 f"NaN/inf in {len(rows)} rows, the first row {rows[0]}",
                                 "clean them first: jdl.data.clean(x, y)")
    return x


def _check_features(x: Any, expected: tuple[int, ...], kind: str) -> None:
    shape = tuple(getattr(x, "shape", None) or np.shape(x))[1:]
    if shape != expected:
        raise errors.input_error("x", f"examples of shape {expected} (what the {kind} was "
                                 "fit on)", f"examples of shape {shape}",
                                 "apply the scaler to data with the training columns")


def _float32(x: Any) -> tuple[Any, Any]:
    """(x as float32, the array module to keep): numpy stays numpy, the rest becomes jax."""
    xp = np if isinstance(x, np.ndarray | np.generic) else jnp
    return xp.asarray(x, xp.float32), xp


class Standardizer(struct.PyTreeNode):
    """``(x - mean) / std`` with statistics from the training split.

    A pytree whose leaves are the statistics, so it can be passed into ``jax.jit``,
    stored with a run and applied on device.

    Attributes:
      mean: float32 [*features], the per-feature mean of the training rows.
      std: float32 [*features], their standard deviation; 1 where it is 0 (a constant
        feature is only centred, never divided by zero).

    Example::

        scaler = Standardizer.fit(x_train)          # x_train: [n, 30]
        x_val = scaler(x_val)                       # float32 [m, 30]
    """

    mean: Any
    std: Any

    @classmethod
    def fit(cls, x: Any) -> Standardizer:
        """Fits the statistics over axis 0.

        Args:
          x: the training split only, numeric [n, *features] with no NaN/inf.

        Returns:
          A Standardizer with float32 ``mean`` and ``std`` of shape ``features``.
        """
        x = _fit_input(x)
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0).astype(np.float32),
                   std=np.where(std > 0, std, 1.0).astype(np.float32))

    def __call__(self, x: Any) -> Any:
        """Standardizes ``x`` [m, *features] to float32 of the same shape.

        Pure: numpy in, numpy out; jax in (also under ``jit``), jax out.
        """
        _check_features(x, tuple(np.shape(self.mean)), "Standardizer")
        x, xp = _float32(x)
        return ((x - self.mean) / self.std).astype(xp.float32)

    def inverse(self, x: Any) -> Any:
        """Maps standardized float32 ``x`` [m, *features] back to the original units."""
        _check_features(x, tuple(np.shape(self.mean)), "Standardizer")
        x, xp = _float32(x)
        return (x * self.std + self.mean).astype(xp.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe statistics (nested lists and a "kind"), for a checkpoint's metadata."""
        return {"kind": "standardizer", "mean": np.asarray(self.mean).tolist(),
                "std": np.asarray(self.std).tolist()}


class MinMaxScaler(struct.PyTreeNode):
    """Maps each feature's training range onto ``feature_range`` (default [0, 1]).

    Attributes:
      minimum: float32 [*features], the per-feature minimum of the training rows.
      scale: float32 [*features], ``(high - low) / (max - min)``; a constant feature
        uses a range of 1 (it maps to ``low``, never divided by zero).
      feature_range: ``(low, high)``, static (not a pytree leaf).
    """

    minimum: Any
    scale: Any
    feature_range: tuple[float, float] = struct.field(pytree_node=False, default=(0.0, 1.0))

    @classmethod
    def fit(cls, x: Any, feature_range: tuple[float, float] = (0.0, 1.0)) -> MinMaxScaler:
        """Fits the per-feature minimum and range over axis 0.

        Args:
          x: the training split only, numeric [n, *features] with no NaN/inf.
          feature_range: ``(low, high)`` with ``low < high``, the target interval.

        Returns:
          A MinMaxScaler with float32 ``minimum`` and ``scale`` of shape ``features``.
        """
        try:
            low, high = (float(v) for v in feature_range)
            ordered = low < high
        except (TypeError, ValueError):
            ordered = False
        if not ordered:
            raise errors.input_error("feature_range", "(low, high) with low < high",
                                     repr(feature_range), "pass e.g. (0.0, 1.0)")
        x = _fit_input(x)
        span = x.max(axis=0) - x.min(axis=0)
        return cls(minimum=x.min(axis=0).astype(np.float32),
                   scale=((high - low) / np.where(span > 0, span, 1.0)).astype(np.float32),
                   feature_range=(low, high))

    def __call__(self, x: Any) -> Any:
        """Scales ``x`` [m, *features] to float32 (numpy or jax, as given; jittable)."""
        _check_features(x, tuple(np.shape(self.minimum)), "MinMaxScaler")
        x, xp = _float32(x)
        return ((x - self.minimum) * self.scale + self.feature_range[0]).astype(xp.float32)

    def inverse(self, x: Any) -> Any:
        """Maps scaled float32 ``x`` [m, *features] back to the original units."""
        _check_features(x, tuple(np.shape(self.minimum)), "MinMaxScaler")
        x, xp = _float32(x)
        return ((x - self.feature_range[0]) / self.scale + self.minimum).astype(xp.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe statistics (nested lists and a "kind"), for a checkpoint's metadata."""
        return {"kind": "minmax", "minimum": np.asarray(self.minimum).tolist(),
                "scale": np.asarray(self.scale).tolist(),
                "feature_range": list(self.feature_range)}


_FIELDS = {"standardizer": ("mean", "std"), "minmax": ("minimum", "scale", "feature_range")}


def scaler_from_dict(data: dict[str, Any]) -> Standardizer | MinMaxScaler:
    """Rebuilds a scaler from what its ``to_dict`` returned (e.g. after a JSON round trip).

    Args:
      data: ``{"kind": "standardizer", "mean": [...], "std": [...]}`` or
        ``{"kind": "minmax", "minimum": [...], "scale": [...], "feature_range": [lo, hi]}``.

    Returns:
      The Standardizer or MinMaxScaler, with float32 statistics.
    """
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in _FIELDS:
        raise errors.input_error("scaler", "a dict with kind 'standardizer' or 'minmax'",
                                 repr(kind) if isinstance(data, dict) else errors.describe(data),
                                 "pass what Standardizer.to_dict() returned")
    missing = [k for k in _FIELDS[kind] if k not in data]
    if missing:
        raise errors.input_error("scaler", f"a {kind!r} dict with keys {list(_FIELDS[kind])}",
                                 f"one without {missing}",
                                 "pass the dict that to_dict() returned, unchanged")
    if kind == "standardizer":
        return Standardizer(np.asarray(data["mean"], np.float32),
                            np.asarray(data["std"], np.float32))
    return MinMaxScaler(np.asarray(data["minimum"], np.float32),
                        np.asarray(data["scale"], np.float32),
                        tuple(float(v) for v in data["feature_range"]))
