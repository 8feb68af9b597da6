"""Integrated gradients, its completeness gap, and steps grown until the gap is small."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check
from jaxdl.explain import _checks
from jaxdl.explain import _program as prog
from jaxdl.explain._program import Link, PredictFn

# steps="auto": the first count tried, doubled until every row's relative gap is small.
AUTO_FIRST_STEPS = 32


class Gap(NamedTuple):
    """Completeness of attributions, per example (float32 [B] each, ``steps`` int32 [B]).

    ``gap = attributions.sum() - (output - reference)``; ``relative = |gap| /
    max(|output - reference|, floor)`` with a floor at float32 round-off of the outputs.
    """

    output: np.ndarray
    reference: np.ndarray
    gap: np.ndarray
    relative: np.ndarray
    steps: np.ndarray


def relative_gap(gap: np.ndarray, output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``|gap| / |output - reference|``, the denominator floored at 1e-3 of the outputs'
    magnitude: a row whose output barely moves is judged on the gap itself."""
    scale = 1e-3 * np.maximum(np.maximum(np.abs(output), np.abs(reference)), 1e-3)
    return (np.abs(gap) / np.maximum(np.abs(output - reference), scale)).astype(np.float32)


def ig_traced(fn, args, link, x, baseline, target, steps: int, chunk: int):
    """Traceable integrated gradients [B, ...] (trapezoid rule, ``steps`` intervals)."""
    target = prog.default_targets(fn, args, link, x, target)
    points = steps + 1
    num_chunks = -(-points // chunk)
    # Trapezoid rule on [0, 1] with `steps` intervals; padded points carry zero weight.
    alphas = jnp.zeros(num_chunks * chunk).at[:points].set(jnp.linspace(0.0, 1.0, points))
    weights = jnp.zeros(num_chunks * chunk).at[:points].set(
        jnp.full(points, 1.0 / steps).at[0].set(0.5 / steps).at[-1].set(0.5 / steps))
    grad = prog.example_grad(fn, args, link)

    def example(xi, bi, ti, a, w):  # a, w [chunk] -> weighted gradient sum [...]
        path = bi[None] + prog.expand(a, xi.ndim + 1) * (xi - bi)[None]
        grads = jax.vmap(grad, in_axes=(0, None))(path, ti)
        return jnp.tensordot(w, grads, axes=1)

    def body(total, aw):
        a, w = aw
        return total + jax.vmap(example, in_axes=(0, 0, 0, None, None))(
            x, baseline, target, a, w), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x),
                            (alphas.reshape(num_chunks, chunk), weights.reshape(num_chunks, chunk)))
    return (x - baseline) * total


@functools.partial(jax.jit, static_argnames=("fn", "link", "steps", "chunk"))
def _integrated_gradients(fn, args, link, x, baseline, target, steps, chunk):
    target = prog.default_targets(fn, args, link, x, target)
    attributions = ig_traced(fn, args, link, x, baseline, target, steps, chunk)
    return (attributions, prog.chosen(fn, args, link, x, target),
            prog.chosen(fn, args, link, baseline, target))


def _steps(steps: Any, max_steps: int) -> int | None:
    """None for "auto", else the checked count."""
    if isinstance(steps, str):
        if steps != "auto":
            raise errors.input_error("steps", "an integer >= 1 or 'auto'", repr(steps),
                                     "pass steps=64, or steps='auto' with a tolerance")
        return None
    return check.positive_int(steps, "steps", "pass steps=64")


def integrated_gradients(predict_fn: PredictFn, x: Any, baseline: Any = None,
                         steps: int | str = 64, target: Any = None, *,
                         probabilities: bool = False, link: Link | None = None,
                         points_per_chunk: int | None = None, return_gap: bool = False,
                         tolerance: float = 0.01, max_steps: int = 1024
                         ) -> np.ndarray | tuple[np.ndarray, Gap]:
    """Integrated gradients along the straight path from ``baseline`` to ``x``.

    ``(x - baseline) * mean of grad f`` over the path, by the trapezoid rule with ``steps``
    intervals (``steps + 1`` gradient evaluations per example), all examples and path points
    in one jitted program. Completeness: ``attributions[i].sum()`` approaches
    ``f(x[i]) - f(baseline[i])`` as ``steps`` grows (exactly for a linear ``f``), where ``f``
    is the chosen output (see :func:`jaxdl.explain.saliency`); the target is chosen at ``x``.

    Args:
      predict_fn: pure ``x [B, ...] -> outputs [B, K]``, as in :func:`saliency`.
      x: inputs [B, ...], finite.
      baseline: the reference input: None (zeros: the training mean after standardization),
        a scalar, one example [...], or one per example [B, ...].
      steps: intervals of the path (>= 1), or "auto": 32, doubled (one program per count)
        until every row's relative gap is under ``tolerance`` or ``max_steps`` is reached;
        each row keeps the first result that met it (``Gap.steps`` says which).
      target, probabilities, link: as in :func:`saliency`.
      points_per_chunk: path points evaluated at once (a scan walks the chunks); None sizes
        them to hold about 4M input values at a time.
      return_gap: also return the completeness :class:`Gap` (captum's ``delta``).
      tolerance: steps="auto": the largest relative gap accepted (0.01: 1%).
      max_steps: steps="auto": the cap on the doubling.

    Returns:
      float32 numpy array [B, ...] shaped like ``x``; with ``return_gap``, a tuple
      ``(attributions, Gap)``.

    Example::

        attributions = integrated_gradients(lambda x: x @ w, x)   # == w.T * x, exactly
        attributions, gap = integrated_gradients(f, x, steps="auto", return_gap=True)
    """
    x = _checks.inputs(x)
    max_steps = check.positive_int(max_steps, "max_steps", "pass max_steps=1024")
    fixed = _steps(steps, max_steps)
    tolerance = _checks.positive(tolerance, "tolerance", "pass tolerance=0.01 (1%)")
    width = _checks.output_width(predict_fn, x)
    target = _checks.targets(target, len(x), width)
    baseline = _checks.baseline(baseline, x)
    if points_per_chunk is not None:
        points_per_chunk = check.positive_int(points_per_chunk, "points_per_chunk",
                                              "pass None to size it automatically")
    fn, args = prog.split(predict_fn)
    link = prog.link_of(probabilities, link, width)
    counts = [fixed] if fixed is not None else _doublings(min(AUTO_FIRST_STEPS, max_steps),
                                                          max_steps)
    result = None
    for count in counts:
        chunk = prog.chunk_size(count + 1, x.size, points_per_chunk)
        attributions, output, reference = (np.asarray(a) for a in _integrated_gradients(
            fn, args, link, x, baseline, target, count, chunk))
        gap = attributions.reshape(len(x), -1).sum(axis=1) - (output - reference)
        now = Gap(output, reference, gap.astype(np.float32),
                  relative_gap(gap, output, reference), np.full(len(x), count, np.int32))
        result = (attributions, now) if result is None else _keep_converged(result, (
            attributions, now), tolerance)
        if (result[1].relative <= tolerance).all():
            break
    return result if return_gap else result[0]


def _doublings(first: int, cap: int) -> list[int]:
    counts = [first]
    while counts[-1] < cap:
        counts.append(min(2 * counts[-1], cap))
    return counts


def _keep_converged(old: tuple[np.ndarray, Gap], new: tuple[np.ndarray, Gap], tolerance: float
                    ) -> tuple[np.ndarray, Gap]:
    """Rows already under ``tolerance`` keep ``old``; the others take ``new``."""
    done = old[1].relative <= tolerance
    rows = done.reshape((-1,) + (1,) * (old[0].ndim - 1))
    return (np.where(rows, old[0], new[0]),
            Gap(*(np.where(done, a, b) for a, b in zip(old[1], new[1], strict=True))))
