"""Expected gradients / GradientSHAP: integrated gradients averaged over a background.

``E[(x~ - x') * grad f(x' + a (x~ - x'))]`` over reference rows ``x'`` of a background
sample, ``a ~ U(0, 1)`` and, for GradientSHAP's noise, ``x~ = x + N(0, stdev^2)``
(Erion et al. 2021; captum's ``GradientShap``, shap's ``GradientExplainer``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data import validate as check
from jaxdl.explain import _checks
from jaxdl.explain import _program as prog
from jaxdl.explain._program import Link, PredictFn
from jaxdl.explain.integrated import Gap, relative_gap


def _draws(key: jax.Array, samples: int, rows: int) -> tuple[jax.Array, jax.Array]:
    """Stratified draws for one example: background indices and path fractions [samples].

    Latin-hypercube sampling, unbiased like plain draws but with less variance: the
    background rows are cycled (each used ``samples / rows`` times when that divides,
    which makes a linear model's attributions exact) and each fraction lies in its own
    stratum of [0, 1], the strata shuffled against the rows.
    """
    k_rows, k_strata, k_u = jax.random.split(key, 3)
    index = jax.random.permutation(k_rows, rows)[jnp.arange(samples) % rows]
    strata = jax.random.permutation(k_strata, samples)
    alphas = (strata + jax.random.uniform(k_u, (samples,))) / samples
    return index, alphas


@functools.partial(jax.jit, static_argnames=("fn", "link", "samples", "chunk"))
def _expected_gradients(fn, args, link, x, background, target, key, row_offset, stdev, samples,
                        chunk):
    target = prog.default_targets(fn, args, link, x, target)
    num_chunks = -(-samples // chunk)
    # Each row's draws come from (seed, its index) only: the same whatever the batching.
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, row_offset + jnp.arange(x.shape[0]))
    draw_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    index, alphas = jax.vmap(_draws, in_axes=(0, None, None))(draw_keys, samples,
                                                              background.shape[0])
    pad = num_chunks * chunk - samples  # padded draws carry zero weight

    def chunks(a):  # [B, samples] -> [num_chunks, B, chunk], the scan's order
        a = jnp.pad(a, ((0, 0), (0, pad)))
        return a.reshape(a.shape[0], num_chunks, chunk).transpose(1, 0, 2)

    weight = jnp.pad(jnp.full(samples, 1.0 / samples), (0, pad)).reshape(num_chunks, chunk)
    grad = prog.example_grad(fn, args, link)

    def example(xi, ti, idx, a, w, noise):  # [chunk] draws -> weighted sum [...]
        ref = background[idx]
        xn = xi[None] + noise
        path = ref + prog.expand(a, xi.ndim + 1) * (xn - ref)
        grads = jax.vmap(grad, in_axes=(0, None))(path, ti)
        return jnp.tensordot(w, (xn - ref) * grads, axes=1)

    def body(total, draws):
        idx, a, w, c = draws
        draw = c * chunk + jnp.arange(chunk)  # noise keyed by draw, not chunk: any chunking
        noise = stdev * jax.vmap(lambda k: jax.vmap(lambda d: jax.random.normal(
            jax.random.fold_in(k, d), x.shape[1:]))(draw))(noise_keys)
        part = jax.vmap(example, in_axes=(0, 0, 0, 0, None, 0))(x, target, idx, a, w, noise)
        return total + part, None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x),
                            (chunks(index), chunks(alphas), weight, jnp.arange(num_chunks)))
    # E f(x') over the background: its mean output (probability), then each example's target.
    out = fn(*args, background)
    out = (out if link is None else link(out)).reshape(background.shape[0], -1).mean(axis=0)
    reference = out[jnp.minimum(target, out.shape[0] - 1)]
    return total, prog.chosen(fn, args, link, x, target), reference


def expected_gradients(predict_fn: PredictFn, x: Any, background: Any = None,
                       samples: int = 64, target: Any = None, *, stdev: float = 0.0,
                       seed: int = 0, probabilities: bool = False, link: Link | None = None,
                       samples_per_chunk: int | None = None, return_gap: bool = False,
                       row_offset: int = 0) -> np.ndarray | tuple[np.ndarray, Gap]:
    """Expected gradients (GradientSHAP with ``stdev > 0``) over a background sample.

    Completeness holds in expectation: ``attributions[i].sum()`` estimates
    ``f(x[i]) - mean_m f(background[m])``; the Monte-Carlo error shrinks like
    ``1 / sqrt(samples)`` (exact for a linear model when ``samples`` is a multiple of M).

    Args:
      predict_fn, target, probabilities, link: as in :func:`jaxdl.explain.saliency`.
      x: inputs [B, ...], finite.
      background: reference examples [M, ...] (e.g. 100 training rows); None is one row of
        zeros (the training mean after standardization).
      samples: draws per example (>= 1).
      stdev: GradientSHAP's input noise (0: none), in the units of ``x``.
      seed: row ``i``'s draws come from ``jax.random.key(seed)`` and ``row_offset + i`` only.
      samples_per_chunk: draws evaluated at once; None sizes them like integrated gradients.
      return_gap: also return the :class:`~jaxdl.explain.Gap` against the background's
        mean output (``steps`` there is ``samples``).
      row_offset: the index of ``x[0]`` in a larger set explained batch by batch, so that
        a row's draws do not depend on the batching.

    Returns:
      float32 numpy array [B, ...] shaped like ``x``; with ``return_gap``, a tuple.

    Example::

        attributions = expected_gradients(predict_fn, x_test[:8], x_train[:100])
    """
    x = _checks.inputs(x)
    background = _checks.background(background, x)
    samples = check.positive_int(samples, "samples", "pass samples=64")
    stdev = 0.0 if stdev == 0 else _checks.positive(stdev, "stdev", "pass stdev=0.0 or 0.1")
    width = _checks.output_width(predict_fn, x)
    target = _checks.targets(target, len(x), width)
    if samples_per_chunk is not None:
        samples_per_chunk = check.positive_int(samples_per_chunk, "samples_per_chunk",
                                               "pass None to size it automatically")
    chunk = prog.chunk_size(samples, x.size, samples_per_chunk)
    fn, args = prog.split(predict_fn)
    out = _expected_gradients(fn, args, prog.link_of(probabilities, link, width), x,
                              background, target, jax.random.key(seed),
                              jnp.int32(check.positive_int(row_offset, "row_offset",
                                                           "pass row_offset=0", minimum=0)),
                              jnp.float32(stdev), samples, chunk)
    attributions, output, reference = (np.asarray(a) for a in out)
    if not return_gap:
        return attributions
    gap = attributions.reshape(len(x), -1).sum(axis=1) - (output - reference)
    return attributions, Gap(output, reference, gap.astype(np.float32),
                             relative_gap(gap, output, reference),
                             np.full(len(x), samples, np.int32))


gradient_shap = expected_gradients
