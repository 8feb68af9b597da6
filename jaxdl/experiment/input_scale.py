"""Is a file of inputs on the scale the run was trained on? One check for ``jaxdl predict``
and ``jaxdl explain``, after the run's own normalization.

Raw pixels 0..255 (or 0..16) given to a run trained on pixels in [0, 1], or values in
another unit, give confident nonsense rather than an error; this flags them with an
:class:`InputScaleWarning` that names the fix. The test is deliberately loose (it flags
scale mistakes, not outliers):

- a standardizing run: a value more than 100 training standard deviations from the mean;
- a min-max scaled run: more than 10 training ranges outside the target interval;
- a run without a scaler (images): more than one training range (the widest feature's)
  outside a feature's training minimum and maximum, read from a sample of the run's
  training split (skipped when that data cannot be read).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from jaxdl import errors

Z_LIMIT = 100.0  # standard deviations
MINMAX_RANGES = 10.0  # target intervals beyond the training range
SAMPLE_ROWS = 4096  # training rows read for the range of a run without a scaler


class InputScaleWarning(UserWarning):
    """Inputs far outside the training data's scale (a unit or scaling mistake)."""


def training_sample(config: Any, limit: int = SAMPLE_ROWS) -> np.ndarray | None:
    """Up to ``limit`` rows of the run's training inputs as the model sees them (normalized),
    evenly spaced over the split; None when the run's data cannot be read."""
    from jaxdl.experiment import data as data_lib

    try:
        if config.data.records:
            from jaxdl.data import open_records, transforms

            records = open_records(f"{config.data.records}/train")
            rows = np.unique(np.linspace(0, len(records) - 1, min(limit, len(records))
                                         ).astype(np.int64))
            x = records[rows]["x"]
            scaler = records.info.get("scaler")
            return np.asarray(transforms.scaler_from_dict(scaler)(x)) if scaler else x
        x = data_lib.load(config).x_train
    except (errors.JaxdlError, OSError, ValueError, KeyError):
        return None
    rows = np.unique(np.linspace(0, len(x) - 1, min(limit, len(x))).astype(np.int64))
    return np.asarray(x[rows])


def _bounds(scaler: dict[str, Any] | None, config: Any) -> tuple[Any, Any, str, str] | None:
    """(low, high, what the training scale is, the fix) in the model's input space."""
    if scaler and scaler.get("kind") == "standardizer":
        return (-Z_LIMIT, Z_LIMIT, f"within {Z_LIMIT:g} training standard deviations of the "
                "training mean once the run standardizes them",
                "pass raw inputs in the units of the training columns: the run standardizes "
                "them itself (do not scale them first)")
    if scaler and scaler.get("kind") == "minmax":
        low, high = (float(v) for v in scaler["feature_range"])
        span = MINMAX_RANGES * (high - low)
        return (low - span, high + span, f"near [{low:g}, {high:g}] once the run scales them",
                "pass raw inputs in the units of the training columns: the run scales them "
                "itself")
    sample = training_sample(config)
    if sample is None or sample.dtype.kind != "f" or not len(sample):
        return None
    low, high = sample.min(axis=0), sample.max(axis=0)
    span = float((high - low).max()) or 1.0
    what = f"values near the training data's range [{float(low.min()):.4g}, " \
           f"{float(high.max()):.4g}] (the run applies no normalization)"
    fix = "scale the inputs as the training data were (e.g. digits images: pixel / 16, " \
          "in [0, 1])" if config.data.images else "scale the inputs as the training data were"
    return low - span, high + span, what, fix


def check(x: np.ndarray, scaler: dict[str, Any] | None, config: Any, source: str,
          argument: str = "--input", names: list[str] | None = None) -> str | None:
    """Warns (:class:`InputScaleWarning`) when ``x`` lies far outside the training scale.

    Args:
      x: the inputs [N, ...] as the model receives them (after the run's normalization).
      scaler: the run's scaler dict (checkpoint meta ``scaler``), or None.
      config: the run's config (for a run without a scaler: where its training data is).
      source: the file's name, for the message.
      argument: the CLI argument named in the message.
      names: flat feature names, for the message (default ``feature_i``).

    Returns:
      The warning's text, or None when the inputs look right (or cannot be judged).
    """
    if x.dtype.kind != "f" or not len(x):
        return None
    bounds = _bounds(scaler, config)
    if bounds is None:
        return None
    low, high, what, fix = bounds
    with np.errstate(invalid="ignore"):
        bad = (x < low) | (x > high)
    if not bad.any():
        return None
    flat = bad.reshape(len(x), -1)
    row = int(np.flatnonzero(flat.any(axis=1))[0])
    column = int(np.flatnonzero(flat[row])[0])
    if names is None:
        from jaxdl.data.datasets import FEATURE_NAMES

        names = list(FEATURE_NAMES.get(config.data.name, ()))
    name = names[column] if column < len(names) else f"feature_{column}"
    value = float(x.reshape(len(x), -1)[row, column])
    text = errors.message(argument, f"values on the training data's scale ({what})",
                          f"{int(flat.sum())} value(s) in {int(flat.any(axis=1).sum())} row(s) "
                          f"of {source} far outside it (first: row {row}, {name} at {value:.4g} "
                          "as the model sees it)", fix)
    # Shown as "jaxdl:0: InputScaleWarning: ..." (no source line: the cause is the file).
    warnings.warn_explicit(InputScaleWarning(text), InputScaleWarning, "jaxdl", 0,
                           module="jaxdl.experiment.input_scale")
    return text
