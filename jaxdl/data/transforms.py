"""Cleaning (host, once) and normalization (pure, fit on the training split only).

    x, y, report = jdl.data.clean(x, y)               # drop NaN/inf rows and duplicates
    scaler = jdl.data.Standardizer.fit(x_train)       # statistics of the train split
    x_val = scaler(x_val)                             # pure: numpy or inside jit

Scalers are ``flax.struct`` pytrees: their statistics are arrays, so they can
be stored with a run (``to_dict``/``scaler_from_dict``, JSON) and applied on
device.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdl import errors

NONFINITE_POLICIES = ("drop", "impute_mean", "impute_median", "error")


class Cleaned(NamedTuple):
    """What :func:`clean` returns: the kept rows and a report of what it did."""

    x: np.ndarray
    y: np.ndarray | None
    report: dict[str, int]


def _rows_finite(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind != "f":
        return np.ones(len(a), bool)
    return np.isfinite(a.reshape(len(a), -1)).all(axis=1)


def clean(x: Any, y: Any = None, *, nonfinite: str = "drop",
          drop_duplicates: bool = True) -> Cleaned:
    """Drops or imputes non-finite rows and drops duplicate examples, keeping order.

    Args:
      x: features [n, ...]; y: optional labels [n, ...] (rows with non-finite labels
        are always dropped).
      nonfinite: "drop" rows with NaN/inf in x, "impute_mean"/"impute_median" them per
        column from the finite values, or raise ("error").
      drop_duplicates: drop repeated (x row, y) pairs after the first.

    Returns:
      ``Cleaned(x, y, report)``; report counts rows_in, nonfinite_rows, imputed_values,
      duplicate_rows, rows_out.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise errors.unknown_name("nonfinite", "policy", nonfinite, list(NONFINITE_POLICIES))
    x = np.asarray(x)
    if x.dtype.kind not in "biuf" or x.ndim == 0 or len(x) == 0:
        raise errors.input_error("x", "a non-empty numeric array [n, ...]", errors.describe(x),
                                 "check how the data was loaded")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise errors.input_error("y", f"one label per row of x ({len(x)})",
                                     errors.describe(y), "pass x and y of the same length")
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
            x = x.astype(np.float32 if x.dtype.itemsize <= 4 else np.float64, copy=True)
            flat = x.reshape(len(x), -1)
            bad = ~np.isfinite(flat)
            stat = np.nanmean if nonfinite == "impute_mean" else np.nanmedian
            with np.errstate(all="ignore"):
                fill = stat(np.where(bad, np.nan, flat), axis=0)
            flat[bad] = np.take(np.nan_to_num(fill), np.nonzero(bad)[1])
            report["imputed_values"] = int(bad.sum())
    report["nonfinite_rows"] = int((~keep).sum())
    x, y = x[keep], (y[keep] if y is not None else None)
    if drop_duplicates and len(x):
        rows = x.reshape(len(x), -1)
        if y is not None:
            rows = np.concatenate([rows, y.reshape(len(y), -1).astype(rows.dtype)], axis=1)
        _, first = np.unique(rows, axis=0, return_index=True)
        unique = np.zeros(len(x), bool)
        unique[first] = True
        report["duplicate_rows"] = int((~unique).sum())
        x, y = x[unique], (y[unique] if y is not None else None)
    report["rows_out"] = len(x)
    return Cleaned(x, y, report)


def _fit_input(x: Any) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 0 or len(x) == 0:
        raise errors.input_error("x", "a non-empty array [n, features]", errors.describe(x),
                                 "fit on the training split")
    if not np.isfinite(x).all():
        raise errors.input_error("x", "finite values to fit statistics on",
                                 "NaN/inf values", "clean them first: jdl.data.clean(x, y)")
    return x


def _check_features(x: Any, expected: tuple[int, ...], kind: str) -> None:
    shape = tuple(getattr(x, "shape", np.shape(x)))[1:]
    if shape != expected:
        raise errors.input_error("x", f"examples of shape {expected} (what the {kind} was "
                                 "fit on)", f"examples of shape {shape}",
                                 "apply the scaler to data with the training columns")


class Standardizer(struct.PyTreeNode):
    """``(x - mean) / std`` with statistics from the training split.

    Attributes:
      mean, std: float32 arrays of the per-feature shape; constant features have std 1.
    """

    mean: Any
    std: Any

    @classmethod
    def fit(cls, x: Any) -> Standardizer:
        """Statistics over axis 0 of ``x`` [n, ...] (the training split only)."""
        x = _fit_input(x)
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0).astype(np.float32),
                   std=np.where(std > 0, std, 1.0).astype(np.float32))

    def __call__(self, x: Any) -> Any:
        """Standardized float32 ``x``; numpy in, numpy out; jax in (or under jit), jax out."""
        _check_features(x, tuple(np.shape(self.mean)), "Standardizer")
        xp = np if isinstance(x, np.ndarray) else jnp
        return ((xp.asarray(x, xp.float32) - self.mean) / self.std).astype(xp.float32)

    def inverse(self, x: Any) -> Any:
        """Undoes :meth:`__call__`."""
        return x * self.std + self.mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe statistics, for a checkpoint's metadata."""
        return {"kind": "standardizer", "mean": np.asarray(self.mean).tolist(),
                "std": np.asarray(self.std).tolist()}


class MinMaxScaler(struct.PyTreeNode):
    """Maps each feature's training range onto ``feature_range`` (default [0, 1])."""

    minimum: Any
    scale: Any
    feature_range: tuple[float, float] = struct.field(pytree_node=False, default=(0.0, 1.0))

    @classmethod
    def fit(cls, x: Any, feature_range: tuple[float, float] = (0.0, 1.0)) -> MinMaxScaler:
        """Per-feature min and range over axis 0 of ``x`` (constant features: range 1)."""
        low, high = feature_range
        if not low < high:
            raise errors.input_error("feature_range", "(low, high) with low < high",
                                     repr(feature_range), "pass e.g. (0.0, 1.0)")
        x = _fit_input(x)
        span = x.max(axis=0) - x.min(axis=0)
        return cls(minimum=x.min(axis=0).astype(np.float32),
                   scale=((high - low) / np.where(span > 0, span, 1.0)).astype(np.float32),
                   feature_range=(float(low), float(high)))

    def __call__(self, x: Any) -> Any:
        """Scaled float32 ``x`` (numpy or jax, as given)."""
        _check_features(x, tuple(np.shape(self.minimum)), "MinMaxScaler")
        xp = np if isinstance(x, np.ndarray) else jnp
        scaled = (xp.asarray(x, xp.float32) - self.minimum) * self.scale + self.feature_range[0]
        return scaled.astype(xp.float32)

    def inverse(self, x: Any) -> Any:
        """Undoes :meth:`__call__`."""
        return (x - self.feature_range[0]) / self.scale + self.minimum

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe statistics, for a checkpoint's metadata."""
        return {"kind": "minmax", "minimum": np.asarray(self.minimum).tolist(),
                "scale": np.asarray(self.scale).tolist(),
                "feature_range": list(self.feature_range)}


def scaler_from_dict(data: dict[str, Any]) -> Standardizer | MinMaxScaler:
    """Rebuilds a scaler from :meth:`Standardizer.to_dict` / :meth:`MinMaxScaler.to_dict`."""
    kind = data.get("kind")
    if kind == "standardizer":
        return Standardizer(np.asarray(data["mean"], np.float32),
                            np.asarray(data["std"], np.float32))
    if kind == "minmax":
        return MinMaxScaler(np.asarray(data["minimum"], np.float32),
                            np.asarray(data["scale"], np.float32),
                            tuple(data["feature_range"]))
    raise errors.input_error("scaler", "a dict with kind 'standardizer' or 'minmax'",
                             repr(kind), "pass what Standardizer.to_dict() returned")
