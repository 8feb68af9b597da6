"""Boundary checks of the attribution functions (host side, before anything compiles)."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check
from jaxdl.explain._program import PredictFn


def inputs(x: Any, argument: str = "x") -> np.ndarray:
    """``x`` as finite float32 [B, ...] (integers cast)."""
    return check.as_features(x, argument).astype(np.float32, copy=False)


def output_width(predict_fn: PredictFn, x: np.ndarray) -> int:
    """K, the outputs per example of ``predict_fn`` (checked on an abstract batch of 1)."""
    if not callable(predict_fn):
        raise errors.type_error("predict_fn", "a function x [B, ...] -> outputs [B, K]",
                                errors.describe(predict_fn),
                                "pass e.g. functools.partial(trainer.programs.outputs, state)")
    spec = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    try:
        shape = tuple(jax.eval_shape(predict_fn, spec).shape)
    except Exception as e:  # the model's own shape error, restated in the caller's terms
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise errors.input_error("x", "examples predict_fn accepts", f"examples of shape "
                                 f"{x.shape[1:]} (predict_fn said: {first[:200]})",
                                 "pass inputs shaped like the model's training data") from None
    if not shape or shape[0] != 1:
        raise errors.input_error("predict_fn", "outputs with a leading batch axis [B, K]",
                                 f"outputs of shape {shape} for a batch of 1",
                                 "return one row of outputs per example")
    return math.prod(shape[1:])


def targets(target: Any, n: int, width: int) -> np.ndarray | None:
    """None (argmax), or int32 [n] output indices in [0, width)."""
    if target is None:
        return None
    array = np.asarray(target)
    if array.dtype.kind not in "iu" or array.ndim > 1:
        raise errors.input_error("target", f"class indices, an int or an int array [{n}]",
                                 errors.describe(array), "pass e.g. target=y.astype(int)")
    array = np.broadcast_to(array, (n,)) if array.ndim == 0 else array
    if array.shape != (n,):
        raise errors.input_error("target", f"one class index per example [{n}]",
                                 f"shape {array.shape}", "pass one index per row of x")
    if array.size and (array.min() < 0 or array.max() >= width):
        raise errors.input_error("target", f"indices in [0, {width - 1}] (the model has "
                                 f"{width} outputs)", f"values from {array.min()} to "
                                 f"{array.max()}", "pass valid class indices, or None for "
                                 "the predicted class")
    return array.astype(np.int32)


def baseline(value: Any, x: np.ndarray, argument: str = "baseline") -> np.ndarray:
    """The reference input broadcast to ``x``'s shape, float32; None is zeros."""
    if value is None:
        return np.zeros_like(x)
    array = np.asarray(value, np.float32)
    try:
        array = np.broadcast_to(array, x.shape)
    except ValueError:
        raise errors.input_error(argument, f"an array broadcastable to x's shape {x.shape} "
                                 f"(e.g. one example of shape {x.shape[1:]})",
                                 f"shape {array.shape}", "pass None for zeros") from None
    if not np.isfinite(array).all():
        raise errors.input_error(argument, "finite values", "NaN/inf values",
                                 "pass None for zeros, or a finite reference input")
    return np.ascontiguousarray(array)


def background(value: Any, x: np.ndarray) -> np.ndarray:
    """Reference examples [M >= 1, ...] shaped like ``x``'s examples, finite float32."""
    if value is None:
        return np.zeros((1, *x.shape[1:]), np.float32)
    array = np.asarray(value, np.float32)
    if array.shape == x.shape[1:]:
        array = array[None]
    if array.ndim != x.ndim or array.shape[1:] != x.shape[1:] or not len(array):
        shape = ", ".join(map(str, x.shape[1:]))
        raise errors.input_error("background", f"reference examples [M, {shape}] (e.g. a "
                                 "sample of training rows)", f"shape {array.shape}",
                                 "pass rows shaped like x's, e.g. x_train[:100]")
    if not np.isfinite(array).all():
        raise errors.input_error("background", "finite values", "NaN/inf values",
                                 "drop or impute those rows first")
    return np.ascontiguousarray(array)


def positive(value: Any, argument: str, fix: str) -> float:
    """A finite float > 0 (a noise level, a tolerance)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise errors.input_error(argument, "a finite number > 0", repr(value), fix)
    return number
