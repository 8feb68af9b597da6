"""Permutation importance: how much a score drops when one column is shuffled (the
model-agnostic check; scikit-learn's ``permutation_importance``, on any score)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check


def permutation_importance(score_fn: Callable[[np.ndarray, np.ndarray], float], x: Any, y: Any,
                           n_repeats: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """How much the score drops when each column of a table is shuffled.

    Args:
      score_fn: ``(x [N, F], y [N, ...]) -> float``, higher is better (accuracy, negative
        loss); called ``1 + F * n_repeats`` times with arrays of the same shapes, so a jitted
        score compiles once.
      x: float table [N, F] (N >= 2), finite.
      y: labels [N, ...].
      n_repeats: shuffles per column.
      seed: seed of the ``numpy.random.Generator`` drawing the permutations.

    Returns:
      ``(mean [F], std [F])`` of ``score(x, y) - score(x with column f shuffled, y)``.

    Example::

        accuracy = lambda x, y: float(np.mean((trainer.predict(state, x)[:, 0] > 0.5) == y))
        mean, std = permutation_importance(accuracy, x_test, y_test)
    """
    x = check.as_features(x, "x")
    if x.ndim != 2 or len(x) < 2:
        raise errors.input_error("x", "a table [N, F] with N >= 2", errors.describe(x),
                                 "flatten the features, or use a gradient method for images")
    y = check.as_labels(y, len(x), "y", "x")
    n_repeats = check.positive_int(n_repeats, "n_repeats", "pass n_repeats=5")
    if not callable(score_fn):
        raise errors.type_error("score_fn", "a function (x, y) -> float", errors.describe(
            score_fn), "pass e.g. lambda x, y: accuracy of the model on (x, y)")

    def score(table: np.ndarray) -> float:
        value = float(np.asarray(score_fn(table, y)))
        if not math.isfinite(value):
            raise errors.input_error("score_fn", "a finite score", repr(value),
                                     "return a finite number, e.g. accuracy or -loss")
        return value

    reference = score(x)
    rng = np.random.default_rng(seed)
    drops = np.empty((x.shape[1], n_repeats), np.float64)
    shuffled = x.copy()
    for r in range(n_repeats):
        for f in range(x.shape[1]):
            shuffled[:, f] = x[rng.permutation(len(x)), f]
            drops[f, r] = reference - score(shuffled)
            shuffled[:, f] = x[:, f]
    return drops.mean(axis=1), drops.std(axis=1)
