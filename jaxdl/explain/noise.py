"""SmoothGrad: a noise tunnel over any gradient method (captum's ``NoiseTunnel``).

The inner method is applied to ``samples`` noisy copies ``x + N(0, stdev^2)`` of the batch,
one after the other inside one program (a scan: memory of one copy), and the results are
averaged ("smoothgrad"), averaged squared ("smoothgrad_sq") or their variance taken
("vargrad"). The target is chosen once, at the clean input.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check
from jaxdl.explain import _checks
from jaxdl.explain import _program as prog
from jaxdl.explain._program import Link, PredictFn
from jaxdl.explain.gradients import gradient_x_input_traced, saliency_traced
from jaxdl.explain.integrated import ig_traced

INNER = ("saliency", "gradient_x_input", "integrated_gradients")
KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _inner(method: str, fn, args, link, x, baseline, target, steps: int, chunk: int):
    if method == "integrated_gradients":
        return ig_traced(fn, args, link, x, baseline, target, steps, chunk)
    body = saliency_traced if method == "saliency" else gradient_x_input_traced
    return body(fn, args, link, x, target)


@functools.partial(jax.jit, static_argnames=("fn", "link", "method", "kind", "samples",
                                             "steps", "chunk"))
def _smoothgrad(fn, args, link, x, baseline, target, key, row_offset, stdev, method, kind,
                samples, steps, chunk):
    target = prog.default_targets(fn, args, link, x, target)
    rows = row_offset + jnp.arange(x.shape[0])

    def body(carry, k):  # k: the key of one noisy copy; each row's noise from it and its index
        total, squares = carry
        noise = jax.vmap(lambda r: jax.random.normal(jax.random.fold_in(k, r), x.shape[1:],
                                                     x.dtype))(rows)
        noisy = x + stdev * noise
        a = _inner(method, fn, args, link, noisy, baseline, target, steps, chunk)
        return (total + a, squares + a * a), None

    zeros = jnp.zeros_like(x)
    (total, squares), _ = jax.lax.scan(body, (zeros, zeros), jax.random.split(key, samples))
    mean, mean_sq = total / samples, squares / samples
    if kind == "smoothgrad":
        return mean
    return mean_sq if kind == "smoothgrad_sq" else jnp.maximum(mean_sq - mean * mean, 0.0)


def smoothgrad(predict_fn: PredictFn, x: Any, target: Any = None, *, method: str = "saliency",
               samples: int = 16, stdev: float = 0.15, kind: str = "smoothgrad",
               seed: int = 0, baseline: Any = None, steps: int = 32,
               probabilities: bool = False, link: Link | None = None, row_offset: int = 0
               ) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): ``method`` averaged over noisy copies of ``x``.

    Args:
      predict_fn, target, probabilities, link: as in :func:`jaxdl.explain.saliency`.
      x: inputs [B, ...], finite.
      method: the inner method: "saliency", "gradient_x_input" or "integrated_gradients".
      samples: noisy copies (>= 1).
      stdev: the noise's standard deviation, in the units of ``x`` (0.15: 15% of a training
        standard deviation for standardized inputs).
      kind: "smoothgrad" (mean), "smoothgrad_sq" (mean of squares) or "vargrad" (variance).
      seed: copy ``s`` of row ``i`` has the noise ``normal(fold_in(k_s, row_offset + i))``
        with ``k_s = jax.random.split(jax.random.key(seed), samples)[s]``: a row's noise
        does not depend on the batching.
      baseline, steps: integrated gradients' (None: zeros), for ``method`` of that name.
      row_offset: the index of ``x[0]`` in a larger set explained batch by batch.

    Returns:
      float32 numpy array [B, ...] shaped like ``x``.

    Example::

        smooth = smoothgrad(predict_fn, x, samples=32, stdev=0.1)
    """
    x = _checks.inputs(x)
    if method not in INNER:
        raise errors.unknown_name("method", "gradient method", method, list(INNER))
    if kind not in KINDS:
        raise errors.unknown_name("kind", "noise-tunnel kind", kind, list(KINDS))
    samples = check.positive_int(samples, "samples", "pass samples=16")
    steps = check.positive_int(steps, "steps", "pass steps=32")
    stdev = _checks.positive(stdev, "stdev", "pass stdev=0.15")
    width = _checks.output_width(predict_fn, x)
    target = _checks.targets(target, len(x), width)
    baseline = _checks.baseline(baseline, x)
    fn, args = prog.split(predict_fn)
    out = _smoothgrad(fn, args, prog.link_of(probabilities, link, width), x, baseline, target,
                      jax.random.key(seed), jnp.int32(check.positive_int(
                          row_offset, "row_offset", "pass row_offset=0", minimum=0)),
                      jnp.float32(stdev), method, kind, samples, steps,
                      prog.chunk_size(steps + 1, x.size, None))
    return np.asarray(out)
