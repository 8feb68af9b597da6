"""One entry point over every method: the attributions with what they explain.

:func:`attribute` returns an :class:`Explanation`: the attributions, the output index each
row was explained for, the explained value ``f(x)``, the reference ``f(baseline)`` and the
completeness gap where the method has one (integrated gradients, expected gradients,
gradient x input against zeros), and the steps used. ``jaxdl explain`` writes these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from jaxdl import errors
from jaxdl.explain import _checks
from jaxdl.explain._program import Link, PredictFn
from jaxdl.explain.expected import expected_gradients
from jaxdl.explain.gradients import explained_outputs, gradient_x_input, saliency
from jaxdl.explain.integrated import Gap, integrated_gradients, relative_gap
from jaxdl.explain.noise import smoothgrad
from jaxdl.explain.occlusion import occlusion

METHODS: dict[str, Callable[..., np.ndarray]] = {
    "expected_gradients": expected_gradients,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "occlusion": occlusion,
    "saliency": saliency,
    "smoothgrad": smoothgrad,
}
# Methods whose attributions sum to f(x) - f(reference): exactly, in the limit of steps, or
# in expectation (expected gradients); gradient x input only for a linear model.
COMPLETE = ("integrated_gradients", "expected_gradients", "gradient_x_input")


class Explanation(NamedTuple):
    """Attributions [B, ...] float32 and, per row (arrays [B]): ``target`` (int32 output
    index), ``output`` (the explained value f(x)); where the method is complete also
    ``reference``, ``gap``, ``relative_gap`` (float32) and ``steps`` (int32), else None."""

    attributions: np.ndarray
    target: np.ndarray
    output: np.ndarray
    reference: np.ndarray | None = None
    gap: np.ndarray | None = None
    relative_gap: np.ndarray | None = None
    steps: np.ndarray | None = None


def attribute(method: str, predict_fn: PredictFn, x: Any, target: Any = None, *,
              baseline: Any = None, probabilities: bool = False, link: Link | None = None,
              **options: Any) -> Explanation:
    """``METHODS[method]`` on ``x`` with the target fixed first, and its completeness.

    Args:
      method: a name in :data:`METHODS`.
      predict_fn, x, target, probabilities, link: as in :func:`jaxdl.explain.saliency`;
        the target (None: argmax) is resolved once, at ``x``.
      baseline: integrated gradients' baseline, expected gradients' background [M, ...],
        occlusion's fill value, smoothgrad's (inner integrated gradients); None: zeros.
      **options: the method's own keywords (``steps``, ``tolerance``, ``samples``, ...).

    Returns:
      An :class:`Explanation`.

    Example::

        e = attribute("integrated_gradients", predict_fn, x, steps="auto")
        e.gap            # [B]: attributions.sum() - (f(x) - f(baseline)), per row
    """
    if method not in METHODS:
        raise errors.unknown_name("method", "explanation method", method, list(METHODS))
    common = {"probabilities": probabilities, "link": link}
    output, chosen = explained_outputs(predict_fn, x, target, **common)
    x = _checks.inputs(x)
    if method in ("integrated_gradients", "expected_gradients"):
        key = "baseline" if method == "integrated_gradients" else "background"
        values, gap = METHODS[method](predict_fn, x, target=chosen, return_gap=True,
                                      **{key: baseline}, **common, **options)
        return Explanation(values, chosen, output, gap.reference, gap.gap, gap.relative,
                           gap.steps)
    if method in ("occlusion", "smoothgrad"):
        options["baseline"] = 0.0 if method == "occlusion" and baseline is None else baseline
    values = METHODS[method](predict_fn, x, target=chosen, **common, **options)
    if method != "gradient_x_input":
        return Explanation(values, chosen, output)
    reference, _ = explained_outputs(predict_fn, np.zeros_like(x), chosen, **common)
    return _with_gap(values, chosen, output, reference)


def _with_gap(values: np.ndarray, target: np.ndarray, output: np.ndarray,
              reference: np.ndarray) -> Explanation:
    gap = (values.reshape(len(values), -1).sum(axis=1) - (output - reference)).astype(
        np.float32)
    return Explanation(values, target, output, reference, gap,
                       relative_gap(gap, output, reference), None)


__all__ = ["COMPLETE", "METHODS", "Explanation", "Gap", "attribute"]
