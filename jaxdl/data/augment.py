"""Jittable augmentations, applied on device inside the training step.

An augmentation is ``aug(key, x, y) -> (x, y)`` on a whole batch. Each example
gets its own key (``jax.random.split(key, B)``, then ``vmap``), so example
``i``'s randomness depends on the key and its index only, not on the other
examples (JAX's default partitionable Threefry also makes ``split(key, B)[i]``
independent of ``B``). Pass one (or a :func:`compose` of several) to
``jdl.Trainer(..., augment=...)``; the step derives the key from
``fold_in(state.rng, state.step)``.

    aug = compose(random_crop(padding=1), gaussian_noise(0.05))
    x, y = jax.jit(aug)(key, x, y)      # x: float [B, H, W, C], y: [B, ...]

Arguments are checked when the augmentation is made; shapes and dtypes when it
is traced (before anything compiles).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import errors

Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _number(value: Any, argument: str, expected: str, ok: Callable[[float], bool],
            fix: str) -> float:
    """``value`` as a float if it is a real number (not a bool) with ``ok(value)``."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and ok(float(value))):
        raise errors.input_error(argument, expected, repr(value), fix)
    return float(value)


def _batch(x: jax.Array, y: jax.Array, name: str, *, images: bool = False,
           float_x: bool = False) -> None:
    """Trace-time checks of a batch; raises the kit's errors, not AssertionError."""
    if images and x.ndim != 4:
        raise errors.input_error("x", f"images [B, H, W, C] for {name}",
                                 f"inputs of shape {tuple(x.shape)}",
                                 "use gaussian_noise/feature_dropout for tabular data, or "
                                 "reshape the inputs to [n, H, W, C]")
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise errors.input_error("y", f"labels [B, ...] with the batch size of x for {name}",
                                 f"x of shape {tuple(x.shape)} and y of shape "
                                 f"{tuple(y.shape)}", "pass one label per example")
    if float_x and not jnp.issubdtype(x.dtype, jnp.floating):
        raise errors.input_error("x", f"float inputs for {name}", f"inputs of dtype {x.dtype}",
                                 "cast them first, e.g. x.astype('float32') / 255")


def _per_example(op: Callable[[jax.Array, jax.Array], jax.Array], name: str, *,
                 images: bool = False, float_x: bool = False) -> Augment:
    """Lifts ``op(key, example) -> example`` to a batch augmentation that keeps y."""

    def aug(key: jax.Array, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        _batch(x, y, name, images=images, float_x=float_x)
        return jax.vmap(op)(jax.random.split(key, x.shape[0]), x), y

    return aug


def gaussian_noise(stddev: float) -> Augment:
    """Adds N(0, stddev^2) noise to every input value of a float batch x [B, ...]."""
    stddev = _number(stddev, "stddev", "a float >= 0", lambda s: s >= 0,
                     "pass e.g. stddev=0.05")
    return _per_example(lambda k, x: x + stddev * jax.random.normal(k, x.shape, x.dtype),
                        "gaussian_noise", float_x=True)


def feature_dropout(rate: float) -> Augment:
    """Zeroes each input value of x [B, ...] with probability ``rate`` (no rescaling).

    Meant for tabular features; dtype and shape are kept.
    """
    rate = _number(rate, "rate", "a float in [0, 1)", lambda r: 0 <= r < 1,
                   "pass e.g. rate=0.1")
    return _per_example(lambda k, x: jnp.where(jax.random.bernoulli(k, rate, x.shape),
                                               jnp.zeros_like(x), x), "feature_dropout")


def random_flip(horizontal: bool = True, vertical: bool = False) -> Augment:
    """Flips images [B, H, W, C] left-right and/or up-down, each with probability 1/2.

    Not for digits or text: a mirrored digit is another digit.
    """
    horizontal, vertical = bool(horizontal), bool(vertical)

    def op(key, image):
        kh, kv = jax.random.split(key)
        if horizontal:
            image = jnp.where(jax.random.bernoulli(kh), image[:, ::-1], image)
        if vertical:
            image = jnp.where(jax.random.bernoulli(kv), image[::-1], image)
        return image

    return _per_example(op, "random_flip", images=True)


def random_crop(padding: int, mode: str = "constant") -> Augment:
    """Pads images [B, H, W, C] by ``padding`` pixels and crops H x W back at a random offset.

    A random shift of up to ``padding`` pixels in each direction; ``mode`` is
    ``jnp.pad``'s: "constant" (zeros) or "edge" (repeat the border).
    """
    integer = isinstance(padding, numbers.Integral) and not isinstance(padding, bool)
    if not (integer and padding >= 0):
        raise errors.input_error("padding", "an integer >= 0", repr(padding),
                                 "pass e.g. padding=2")
    if mode not in ("constant", "edge"):
        raise errors.input_error("mode", "'constant' or 'edge'", repr(mode),
                                 "pass mode='constant'")
    pad = int(padding)

    def op(key, image):
        padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
        top, left = jax.random.randint(key, (2,), 0, 2 * pad + 1)
        return jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)

    return _per_example(op, "random_crop", images=True)


def mixup(alpha: float) -> Augment:
    """Mixes each example with a partner from the batch: ``lam * a + (1 - lam) * b``.

    Example ``i`` is paired with example ``perm[i]`` of a random permutation of the
    batch, and ``lam_i ~ Beta(alpha, alpha)`` mixes both x [B, ...] and y [B, ...].
    Labels are therefore mixed too, so they must be float: one-hot for
    categorical_crossentropy, or 0/1 floats for binary_crossentropy.
    """
    alpha = _number(alpha, "alpha", "a float > 0", lambda a: a > 0, "pass e.g. alpha=0.2")

    def aug(key, x, y):
        _batch(x, y, "mixup", float_x=True)
        if not jnp.issubdtype(y.dtype, jnp.floating):
            raise errors.input_error("y", "float labels for mixup (one-hot or 0/1 floats)",
                                     f"labels of dtype {y.dtype}",
                                     "one-hot encode the labels and use "
                                     "categorical_crossentropy, or y.astype('float32')")
        k_lam, k_perm = jax.random.split(key)
        keys = jax.random.split(k_lam, x.shape[0])
        lam = jax.vmap(lambda k: jax.random.beta(k, alpha, alpha, (), x.dtype))(keys)
        partner = jax.random.permutation(k_perm, x.shape[0])

        def mix(a):
            weight = lam.reshape((-1,) + (1,) * (a.ndim - 1)).astype(a.dtype)
            return weight * a + (1 - weight) * a[partner]

        return mix(x), mix(y)

    return aug


def compose(*augments: Augment) -> Augment:
    """Applies ``augments`` in order, each with its own key from ``split(key, n)``."""
    for i, a in enumerate(augments):
        if not callable(a):
            raise errors.type_error(f"augments[{i}]", "an augmentation aug(key, x, y)",
                                    errors.describe(a),
                                    "pass factories' results, e.g. compose(random_flip())")

    def aug(key, x, y):
        for k, a in zip(jax.random.split(key, len(augments)), augments, strict=True):
            x, y = a(k, x, y)
        return x, y

    return aug
