"""Checks of user data at the API boundary, before anything compiles.

Each failure is an :class:`jaxdl.errors.InputError` that names the argument,
says what was expected and what was given, and how to fix it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl.data import trees


def nonfinite_rows(array: np.ndarray) -> np.ndarray:
    """Indices of the rows [n, ...] holding NaN or inf (none for non-float arrays)."""
    if array.dtype.kind not in "fc":
        return np.zeros(0, np.int64)
    return np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))


def as_features(x: Any, argument: str = "x") -> Any:
    """``x`` as a numeric numpy array [n, ...] (float32 unless integer), checked finite.

    A pytree of arrays (dict, tuple, list: :mod:`jaxdl.data.trees`) is checked leaf by
    leaf, each like a plain ``x``, and every leaf must hold the same number of examples;
    errors name the leaf (``x['meta']``).
    """
    if trees.is_tree(x):
        tree = trees.map_with_path(lambda path, leaf: _features(leaf, argument + path), x)
        _same_rows(tree, argument)
        return tree
    return _features(x, argument)


def _same_rows(tree: Any, argument: str, num_examples: int | None = None,
               x_argument: str = "x") -> None:
    """Raises unless every leaf of ``tree`` has ``num_examples`` rows (default: the first's)."""
    found: list[tuple[str, int]] = []
    trees.map_with_path(lambda path, leaf: found.append((path, len(leaf))), tree)
    if not found:
        raise errors.input_error(argument, "a pytree with at least one array", repr(tree),
                                 f"pass {argument} as an array or a dict of arrays")
    expected = found[0][1] if num_examples is None else num_examples
    for path, n in found:
        if n != expected:
            what = (f"{expected} examples, as {argument}{found[0][0]} has" if num_examples is None
                    else f"one label per example of {x_argument} ({expected})")
            raise errors.input_error(argument + path, what, f"{n}",
                                     "give every input and label leaf the same number of rows")


def _features(x: Any, argument: str) -> np.ndarray:
    if x is None:
        raise errors.type_error(argument, "an array of examples [n, features...]", "None",
                                f"pass the input data as {argument}=array")
    try:
        array = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise errors.type_error(argument, "an array-like of numbers", errors.describe(x),
                                f"convert it with numpy first ({e})") from None
    if array.dtype.kind not in "biuf":
        raise errors.type_error(argument, "numeric values", f"dtype {array.dtype}",
                                "encode non-numeric columns as numbers first")
    if array.ndim == 0:
        raise errors.input_error(argument, "an array with a leading example axis [n, ...]",
                                 "a scalar", f"pass {argument} as an array of examples")
    if array.shape[0] == 0:
        raise errors.input_error(argument, "at least one example", f"an empty array of shape "
                                 f"{array.shape}", "check the data loading and filtering steps")
    if array.ndim == 1:
        array = array[:, None]  # one feature per example, as Keras does
    if array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
        rows = nonfinite_rows(array)
        if len(rows):
            raise errors.input_error(
                argument, "finite values (no NaN or inf)",
                f"{len(rows)} row(s) with NaN/inf, first at row {rows[0]}",
                "drop or impute them first: x, y, report = jdl.data.clean(x, y)")
    elif array.dtype.kind in "bu" or array.dtype == np.int64:
        array = array.astype(np.int32)
    return array


def as_labels(y: Any, num_examples: int, argument: str = "y", x_argument: str = "x"
              ) -> Any:
    """``y`` as a numpy array [n, ...] whose length matches ``x``'s; a pytree of label
    arrays (a model with several outputs) leaf by leaf, errors naming the leaf."""
    if trees.is_tree(y):
        tree = trees.map_with_path(lambda path, leaf: _labels(
            leaf, num_examples, argument + path, x_argument), y)
        _same_rows(tree, argument, num_examples, x_argument)
        return tree
    return _labels(y, num_examples, argument, x_argument)


def _labels(y: Any, num_examples: int, argument: str, x_argument: str) -> np.ndarray:
    if y is None:
        raise errors.type_error(argument, "labels, one per example", "None",
                                f"pass labels, e.g. fit(x, {argument}=labels)")
    array = np.asarray(y)
    if array.dtype.kind not in "biuf":
        raise errors.type_error(argument, "numeric labels", f"dtype {array.dtype}",
                                "encode classes as integers 0..num_classes-1")
    if array.ndim == 0 or len(array) != num_examples:
        given = "a scalar" if array.ndim == 0 else f"{len(array)} labels"
        raise errors.input_error(argument, f"one label per example of {x_argument} "
                                 f"({num_examples})", given,
                                 f"pass {x_argument} and {argument} with the same length")
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    return array.astype(np.int32)


def positive_int(value: Any, argument: str, fix: str, minimum: int = 1) -> int:
    """``value`` as an int >= minimum, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise errors.input_error(argument, f"an integer >= {minimum}", repr(value), fix)
    return int(value)


def fraction(value: Any, argument: str) -> float:
    """``value`` as a float in [0, 1), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise errors.input_error(argument, "a float in [0, 1)", repr(value),
                                 f"pass e.g. {argument}=0.2, or 0 to disable it")
    return float(value)


def boolean(value: Any, argument: str) -> bool:
    """``value`` as a bool (numpy's too), or a clear error: ``"no"`` is not False."""
    if not isinstance(value, bool | np.bool_):
        raise errors.input_error(argument, "True or False", repr(value),
                                 f"pass {argument}=True or {argument}=False")
    return bool(value)
