"""The plumbing every attribution program shares: static callables, the state split off a
``functools.partial``, the chosen output of one example, and the default (argmax) targets."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PredictFn = Callable[[jax.Array], jax.Array]
Link = Callable[[jax.Array], jax.Array]

# Inputs held at once by a path or sample method (examples x points x features); more than
# this and the points are walked in chunks, inside the same program.
MAX_PATH_ELEMENTS = 1 << 22


def softmax(outputs: jax.Array) -> jax.Array:
    return jax.nn.softmax(outputs, axis=-1)


class _ById:
    """Hashes an unhashable callable by identity, so it can be a static jit argument."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __hash__(self) -> int:
        return id(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ById) and other.fn is self.fn


def static(fn: Callable) -> Callable:
    """``fn`` itself when hashable, else a wrapper hashed by identity (a jit static arg)."""
    try:
        hash(fn)
    except TypeError:
        return _ById(fn)
    return fn


def split(predict_fn: PredictFn) -> tuple[Callable, tuple]:
    """``(fn, args)`` with ``predict_fn(x) == fn(*args, x)``; array ``args`` stay traced.

    ``functools.partial(fn, state)`` is split so the state is an argument of the compiled
    program, not a constant baked into it: no weights in the program text, and a new
    state (or a new partial of the same ``fn``) does not recompile.
    """
    if (isinstance(predict_fn, functools.partial) and not predict_fn.keywords
            and predict_fn.args and all(isinstance(leaf, jax.Array | np.ndarray)
                                        for leaf in jax.tree.leaves(predict_fn.args))):
        return static(predict_fn.func), predict_fn.args
    return static(predict_fn), ()


def link_of(probabilities: bool, link: Link | None, width: int) -> Link | None:
    """The function explained on top of the outputs: None (logits) or a static link."""
    if not probabilities:
        return None
    if link is not None:
        return static(link)
    return jax.nn.sigmoid if width == 1 else softmax


def scalar_fn(fn: Callable, args: tuple, link: Link | None) -> Callable:
    """``f(x_i [...], t_i []) -> scalar``: output ``t_i`` (or the only one) of one example."""

    def f(xi, ti):
        out = fn(*args, xi[None])
        out = (out if link is None else link(out)).reshape(-1)
        return out[0] if out.size == 1 else out[ti]

    return f


def chosen(fn: Callable, args: tuple, link: Link | None, x: jax.Array, target: jax.Array
           ) -> jax.Array:
    """The explained value of each example, float32 [B]: one batched forward pass."""
    out = fn(*args, x)
    out = (out if link is None else link(out)).reshape(x.shape[0], -1)
    return jnp.take_along_axis(out, jnp.minimum(target, out.shape[1] - 1)[:, None], 1)[:, 0]


def default_targets(fn: Callable, args: tuple, link: Link | None, x: jax.Array,
                    target: jax.Array | None) -> jax.Array:
    """``target`` when given, else each example's argmax output (0 for one output)."""
    if target is not None:
        return target
    out = fn(*args, x)
    out = (out if link is None else link(out)).reshape(x.shape[0], -1)
    return jnp.argmax(out, axis=-1).astype(jnp.int32)


def example_grad(fn: Callable, args: tuple, link: Link | None) -> Callable:
    """``g(x_i [...], t_i []) -> [...]``: the gradient of one example's chosen output."""
    return jax.grad(scalar_fn(fn, args, link))


def expand(a: jax.Array, ndim: int) -> jax.Array:
    """``a`` [P] as [P, 1, ...] to broadcast against points of ``ndim - 1`` example axes."""
    return a.reshape(a.shape + (1,) * (ndim - 1))


def chunk_size(points: int, example_size: int, given: int | None) -> int:
    """Points per scan step: ``given``, or as many as hold ~4M input values at once."""
    if given is not None:
        return min(points, given)
    return max(1, min(points, MAX_PATH_ELEMENTS // max(1, example_size)))
