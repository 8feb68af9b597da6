"""Jittable augmentations, applied on device inside the training step.

An augmentation is ``aug(key, x, y) -> (x, y)`` on a whole batch. Each example
gets its own key (``jax.random.split(key, B)``, then ``vmap``), so example
``i``'s randomness depends on the step and its index, not on the others.
Pass one (or a :func:`compose` of several) to ``jdl.Trainer(..., augment=...)``;
the step derives the key from ``fold_in(state.rng, state.step)``.

    aug = compose(random_crop(padding=1), gaussian_noise(0.05))
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdl import errors

Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _per_example(op: Callable[[jax.Array, jax.Array], jax.Array]) -> Augment:
    def aug(key, x, y):
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(op)(keys, x), y

    return aug


def _images(x: jax.Array, name: str) -> None:
    """Trace-time check that ``x`` is a batch of images [B, H, W, C]."""
    if x.ndim != 4:
        raise errors.input_error("x", f"images [B, H, W, C] for {name}",
                                 f"inputs of shape {tuple(x.shape)}",
                                 "use gaussian_noise/feature_dropout for tabular data, or "
                                 "reshape the inputs to [n, H, W, C]")


def _check(condition: bool, argument: str, expected: str, value, fix: str) -> None:
    if not condition:
        raise errors.input_error(argument, expected, repr(value), fix)


def gaussian_noise(stddev: float) -> Augment:
    """Adds N(0, stddev^2) noise to every input value."""
    _check(stddev >= 0, "stddev", "a float >= 0", stddev, "pass e.g. stddev=0.05")
    return _per_example(lambda k, x: x + stddev * jax.random.normal(k, x.shape, x.dtype))


def feature_dropout(rate: float) -> Augment:
    """Zeroes each input value with probability ``rate`` (tabular data; no rescaling)."""
    _check(0 <= rate < 1, "rate", "a float in [0, 1)", rate, "pass e.g. rate=0.1")
    return _per_example(lambda k, x: jnp.where(jax.random.bernoulli(k, rate, x.shape),
                                               jnp.zeros_like(x), x))


def random_flip(horizontal: bool = True, vertical: bool = False) -> Augment:
    """Flips images [B, H, W, C] left-right and/or up-down, each with probability 1/2.

    Not for digits or text: a mirrored digit is another digit.
    """

    def op(key, image):
        kh, kv = jax.random.split(key)
        if horizontal:
            image = jnp.where(jax.random.bernoulli(kh), image[:, ::-1], image)
        if vertical:
            image = jnp.where(jax.random.bernoulli(kv), image[::-1], image)
        return image

    per_example = _per_example(op)

    def aug(key, x, y):
        _images(x, "random_flip")
        return per_example(key, x, y)

    return aug


def random_crop(padding: int, mode: str = "constant") -> Augment:
    """Pads images [B, H, W, C] by ``padding`` pixels and crops H x W back at a random offset.

    A random shift of up to ``padding`` pixels in each direction; ``mode`` is
    ``jnp.pad``'s ("constant" zeros or "edge").
    """
    _check(isinstance(padding, int) and padding >= 0, "padding", "an integer >= 0", padding,
           "pass e.g. padding=2")
    _check(mode in ("constant", "edge"), "mode", "'constant' or 'edge'", mode,
           "pass mode='constant'")

    def op(key, image):
        height, width, _ = image.shape
        padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=mode)
        top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
        return jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)

    per_example = _per_example(op)

    def aug(key, x, y):
        _images(x, "random_crop")
        return per_example(key, x, y)

    return aug


def mixup(alpha: float) -> Augment:
    """Mixes each example with another of the batch: ``lam * a + (1 - lam) * b``, lam ~ Beta.

    Labels are mixed by the same ``lam``, so they must be float (one-hot for
    categorical_crossentropy, or 0/1 for binary_crossentropy).
    """
    _check(alpha > 0, "alpha", "a float > 0", alpha, "pass e.g. alpha=0.2")

    def aug(key, x, y):
        if not jnp.issubdtype(y.dtype, jnp.floating):
            raise errors.input_error("y", "float labels for mixup (one-hot or 0/1 floats)",
                                     f"labels of dtype {y.dtype}",
                                     "one-hot encode the labels and use "
                                     "categorical_crossentropy, or y.astype('float32')")
        k_lam, k_perm = jax.random.split(key)
        lam = jax.random.beta(k_lam, alpha, alpha, (x.shape[0],), x.dtype)
        partner = jax.random.permutation(k_perm, x.shape[0])
        mix = lambda a: (lam.reshape((-1,) + (1,) * (a.ndim - 1)) * a
                         + (1 - lam.reshape((-1,) + (1,) * (a.ndim - 1))) * a[partner])
        return mix(x), mix(y)

    return aug


def compose(*augments: Augment) -> Augment:
    """Applies ``augments`` in order, each with its own key."""

    def aug(key, x, y):
        for k, a in zip(jax.random.split(key, len(augments)), augments, strict=True):
            x, y = a(k, x, y)
        return x, y

    return aug
