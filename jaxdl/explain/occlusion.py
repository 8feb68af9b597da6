"""Occlusion (Zeiler & Fergus 2014; captum's ``Occlusion``): how much the chosen output
drops when a sliding window of the input is replaced by a baseline value.

Each element's attribution is the mean drop over the windows that cover it. The windows
are fixed host side (every element covered: a last window is added flush with the far
edge where the stride would miss it); the masked copies are evaluated in chunks of
windows by a scan inside one program.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.explain import _checks
from jaxdl.explain import _program as prog
from jaxdl.explain._program import Link, PredictFn


def _sizes(value: Any, shape: tuple[int, ...], argument: str) -> tuple[int, ...]:
    """One size per example axis: an int covers every axis but an image's channels, a
    tuple the leading axes; the rest are whole (window) or 1 (stride)."""
    spatial = len(shape) - 1 if len(shape) == 3 else len(shape)  # [H, W, C]: channels whole
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = (int(value),) * spatial
    try:
        sizes = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        sizes = ()
    rest = shape[len(sizes):] if argument == "window" else (1,) * (len(shape) - len(sizes))
    sizes = sizes + tuple(rest)
    if len(sizes) != len(shape) or not all(1 <= v <= (s if argument == "window" else v)
                                           for v, s in zip(sizes, shape, strict=True)):
        within = " (a window within it)" if argument == "window" else ""
        raise errors.input_error(argument, f"an int >= 1 or one per leading axis of the "
                                 f"examples' shape {shape}{within}", repr(value),
                                 f"pass e.g. {argument}=2 for [8, 8, 1] images"
                                 + (", 1 for tables" if argument == "window" else ""))
    return sizes


def windows(shape: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]
            ) -> np.ndarray:
    """Masks float32 [P, *shape] of every window position (1 inside the window)."""
    starts = []
    for size, w, s in zip(shape, window, stride, strict=True):
        axis = list(range(0, size - w + 1, s))
        if axis[-1] != size - w:
            axis.append(size - w)
        starts.append(axis)
    masks = []
    for corner in itertools.product(*starts):
        mask = np.zeros(shape, np.float32)
        mask[tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))] = 1.0
        masks.append(mask)
    return np.stack(masks)


@functools.partial(jax.jit, static_argnames=("fn", "link", "chunk"))
def _occlusion(fn, args, link, x, baseline, target, masks, chunk):
    target = prog.default_targets(fn, args, link, x, target)
    full = prog.chosen(fn, args, link, x, target)
    num_chunks = -(-masks.shape[0] // chunk)
    pad = num_chunks * chunk - masks.shape[0]  # padded masks are all zero: they add nothing
    masks = jnp.pad(masks, ((0, pad),) + ((0, 0),) * (masks.ndim - 1))
    masks = masks.reshape(num_chunks, chunk, *masks.shape[1:])

    def body(total, m):  # m [chunk, ...]: chunk windows over the whole batch at once
        occluded = jnp.where(m[None] > 0, baseline[:, None], x[:, None])  # [B, chunk, ...]
        flat = occluded.reshape(-1, *x.shape[1:])
        drop = full[:, None] - prog.chosen(fn, args, link, flat, jnp.repeat(target, chunk)
                                           ).reshape(x.shape[0], chunk)
        return total + jnp.tensordot(drop, m, axes=1), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), masks)
    return total / jnp.maximum(masks.sum(axis=(0, 1)), 1.0)


def occlusion(predict_fn: PredictFn, x: Any, window: Any = 2, stride: Any = 1,
              baseline: Any = 0.0, target: Any = None, *, probabilities: bool = False,
              link: Link | None = None, windows_per_chunk: int | None = None) -> np.ndarray:
    """Mean drop of the chosen output when windows covering each element are occluded.

    Args:
      predict_fn, target, probabilities, link: as in :func:`jaxdl.explain.saliency`.
      x: inputs [B, ...], finite: images [B, H, W, C] (the window spans the channels) or
        tables [B, F].
      window: the window's extent: an int for every spatial axis, or one per leading axis.
      stride: the step between windows (an int or one per leading axis).
      baseline: the value put in the window: a scalar, one example [...] or one per
        example [B, ...] (0.0: the training mean after standardization; black pixels).
      windows_per_chunk: windows evaluated at once (None: about 4M input values).

    Returns:
      float32 numpy array [B, ...] shaped like ``x``. With ``window=1`` on a table,
      ``attributions[i, f] = f(x_i) - f(x_i with feature f set to the baseline)``.

    Example::

        heat = occlusion(predict_fn, images[:4], window=(3, 3), stride=1)   # [4, 8, 8, 1]
    """
    x = _checks.inputs(x)
    shape = x.shape[1:]
    masks = windows(shape, _sizes(window, shape, "window"), _sizes(stride, shape, "stride"))
    width = _checks.output_width(predict_fn, x)
    target = _checks.targets(target, len(x), width)
    baseline = _checks.baseline(baseline, x)
    chunk = prog.chunk_size(len(masks), x.size, windows_per_chunk)
    fn, args = prog.split(predict_fn)
    out = _occlusion(fn, args, prog.link_of(probabilities, link, width), x, baseline, target,
                     masks, chunk)
    return np.asarray(out)
