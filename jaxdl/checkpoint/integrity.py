"""What a checkpoint should hold: each leaf's path, shape, dtype and a checksum of its bytes,
and a checksum of its JSON meta.

The array checksums are computed on device, so that a save does not wait for them and a
restore verifies the bytes it just placed without copying them to the host first.
The structure is host-side (shapes and dtypes only): a restore compares it with the
target before anything is allocated. The meta's checksum is a SHA-256 of its canonical
JSON (:func:`meta_checksum`), the same before Orbax writes it and after it reads it back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _words(leaf: jax.Array) -> jax.Array:
    """The leaf's bytes as uint32 words, same layout (narrower types widened; 8-byte types
    get a trailing axis of 2). No reshape, so it works on arrays of any sharding."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    size = leaf.dtype.itemsize
    if leaf.dtype == jnp.bool_:
        return leaf.astype(jnp.uint32)
    if size == 4:
        return jax.lax.bitcast_convert_type(leaf, jnp.uint32)
    if size < 4:
        narrow = {2: jnp.uint16, 1: jnp.uint8}[size]
        return jax.lax.bitcast_convert_type(leaf, narrow).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(leaf, jnp.uint32)


def _positions(shape: tuple[int, ...]) -> jax.Array:
    """uint32 row-major position of every element of an array of ``shape``."""
    position = jnp.zeros((), jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        position = position + index * jnp.uint32(stride & 0xFFFFFFFF)
        stride *= shape[axis]
    return position


def _weighted_by_elements(words: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of words, sum of position * word), elementwise: fast on accelerators."""
    total = jnp.sum(words, dtype=jnp.uint32)
    return total, jnp.sum(words * _positions(words.shape), dtype=jnp.uint32)


def _weighted_by_dots(words: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The same two sums through integer dot products (XLA's CPU backend runs those
    vectorized, an elementwise product before a reduction it does not: 2x faster there).

    With the flat position ``i = p * C + c`` (``p`` the row-major position over all axes
    but the last, ``C`` its length), ``sum(i * w) = C * sum_p p * rowsum_p + sum_c c *
    colsum_c``; uint32 arithmetic wraps mod 2^32 in both, so the sums are equal bit for bit.
    """
    if words.ndim == 0:
        words = words[None]
    columns = jax.lax.iota(jnp.uint32, words.shape[-1])
    if words.ndim == 1:
        return (jnp.sum(words, dtype=jnp.uint32),
                jnp.dot(words, columns, preferred_element_type=jnp.uint32))
    prefix = words.shape[:-1]
    axes = "abcdefghijklmnopqrstuvwxy"[:len(prefix)]
    by_column = jnp.sum(words, axis=tuple(range(len(prefix))), dtype=jnp.uint32)
    by_row = jnp.einsum(f"{axes}z,{axes}->z", words, _positions(prefix),
                        preferred_element_type=jnp.uint32)
    row_length = jnp.uint32(words.shape[-1] & 0xFFFFFFFF)
    return (jnp.sum(by_column, dtype=jnp.uint32),
            row_length * jnp.sum(by_row, dtype=jnp.uint32)
            + jnp.dot(by_column, columns, preferred_element_type=jnp.uint32))


@jax.jit
def checksums(tree: Any) -> Any:
    """Per leaf, uint32 [2]: the sum of its 32-bit words and their position-weighted sum.

    Any single flipped bit changes the weighted sum (odd weights ``2 * position + 1`` mod
    2^32), and lost or reordered words change one of the two.

    Args:
      tree: a pytree of arrays (any dtype, PRNG keys included, any sharding).

    Returns:
      The same tree with a uint32 [2] array per leaf, still on device: hand it to
      :func:`fetch_checksums` when the numbers are needed.
    """
    weighted = _weighted_by_dots if jax.default_backend() == "cpu" else _weighted_by_elements

    def one(leaf):
        total, by_position = weighted(_words(leaf))
        return jnp.stack([total, total + jnp.uint32(2) * by_position])

    return jax.tree.map(one, tree)


_MOD = 2**32


def _host_words(leaf: jax.Array) -> np.ndarray:
    """:func:`_words` as a numpy view of the leaf's own buffer (a CPU array is not copied):
    [P, C] words, P the row-major positions over all axes but the last."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    a = np.asarray(leaf)
    if a.dtype == np.bool_:
        words = a.view(np.uint8)
    else:
        words = a.view({1: np.uint8, 2: np.uint16}.get(a.dtype.itemsize, np.uint32))
    if words.ndim == 0:
        return words.reshape(1, 1)
    return words.reshape(math.prod(words.shape[:-1]), words.shape[-1])


def _host_checksum(leaf: jax.Array) -> list[int]:
    """One leaf's :func:`checksums` pair on the host, equal bit for bit: the same
    ``C * sum_p p * rowsum_p + sum_c c * colsum_c`` as the CPU device form, in numpy's
    vectorized uint32 reductions over the buffer itself."""
    words = _host_words(leaf)
    by_column = words.sum(axis=0, dtype=np.uint32).astype(np.uint64)
    by_row = words.sum(axis=1, dtype=np.uint32).astype(np.uint64)
    rows = np.arange(len(by_row), dtype=np.uint64)
    columns = np.arange(len(by_column), dtype=np.uint64)
    total = int(by_column.sum() % _MOD)
    by_position = (words.shape[1] * int(((by_row * rows) % _MOD).sum())
                   + int(((by_column * columns) % _MOD).sum())) % _MOD
    return [total, (total + 2 * by_position) % _MOD]


def on_host(tree: Any) -> bool:
    """Whether every leaf lives whole in host memory (one CPU device), where the host
    checksum reads the buffers in place and beats XLA:CPU, which copies a leaf to
    reinterpret its bytes."""
    def whole_on_cpu(leaf):
        devices = getattr(leaf, "sharding", None) and leaf.sharding.device_set
        return bool(devices) and len(devices) == 1 and next(iter(devices)).platform == "cpu"

    return all(whole_on_cpu(leaf) for leaf in jax.tree.leaves(tree))


def host_checksums(tree: Any) -> dict[str, list[int]]:
    """``{path: [sum, weighted sum]}`` as :func:`fetch_checksums` of :func:`checksums`
    gives it, computed on the host (for a tree :func:`on_host`), leaves in parallel
    threads (numpy's reductions release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        sums = list(pool.map(lambda item: _host_checksum(item[1]), leaves))
    return {jax.tree_util.keystr(path): value for (path, _), value in zip(leaves, sums,
                                                                            strict=True)}


def structure(tree: Any) -> dict[str, dict[str, Any]]:
    """JSON-safe ``{path: {"shape", "dtype"}}`` of a pytree (host-side, no device work).

    Args:
      tree: a pytree of arrays or ``jax.ShapeDtypeStruct``.

    Returns:
      Per leaf, keyed by ``jax.tree_util.keystr`` of its path: its shape as a list and
      its dtype's name, e.g. ``{"['w']": {"shape": [3, 2], "dtype": "float32"}}``.
    """
    return {jax.tree_util.keystr(path): {"shape": list(leaf.shape), "dtype": str(leaf.dtype)}
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def fetch_checksums(sums: Any) -> dict[str, list[int]]:
    """``{path: [sum, weighted sum]}`` from the (possibly still computing) :func:`checksums`.

    Args:
      sums: what :func:`checksums` returned; this waits for the device to finish it.

    Returns:
      Per leaf path, its two checksums as Python ints (what ``<step>.digest.json`` holds).
    """
    return {jax.tree_util.keystr(path): [int(v) for v in value]
            for path, value in jax.tree_util.tree_flatten_with_path(jax.device_get(sums))[0]}


def digest(tree: Any) -> dict[str, dict[str, Any]]:
    """JSON-safe ``{path: {"shape", "dtype", "checksum"}}`` of a pytree of arrays.

    Args:
      tree: a pytree of arrays.

    Returns:
      :func:`structure` with each leaf's :func:`fetch_checksums` entry added.

    Example::

        digest({"w": jnp.ones((3, 2))})["['w']"]["checksum"]  # [sum, weighted sum]
    """
    sums = fetch_checksums(checksums(tree))
    return {path: {**entry, "checksum": sums[path]} for path, entry in structure(tree).items()}


def meta_checksum(meta: Any) -> str:
    """SHA-256 (hex) of ``meta``'s canonical JSON: keys sorted, no spaces.

    Orbax writes ``json.dumps(meta)`` and reads it back with ``json.loads``; the round trip
    here makes the checksum of what is saved equal that of what is restored (tuples become
    lists, int keys strings, NaN stays NaN).

    Args:
      meta: a JSON-serializable tree (what ``Checkpointer.save`` is given, or restores).

    Returns:
      64 hex digits.
    """
    canonical = json.dumps(json.loads(json.dumps(meta)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Damaged(ValueError):
    """A checkpoint that fails a check (its bytes, its digest, its meta): never to be used.

    The message says what failed, e.g. "its meta does not match its digest".
    """


def _pairs(entries: dict[str, dict[str, Any]]) -> dict[str, tuple[list[int], str]]:
    """``{path: (shape, dtype)}``: a :func:`structure` in a form that compares with ``!=``."""
    return {path: (entry["shape"], entry["dtype"]) for path, entry in entries.items()}


def structure_mismatch(saved: dict[str, dict[str, Any]], target: Any,
                       partial: bool = False) -> list[str]:
    """Human-readable differences between a saved digest and a target pytree (empty: same).

    Args:
      saved: the :func:`structure` (or :func:`digest`) recorded with a checkpoint.
      target: the pytree to restore into (arrays or ``jax.ShapeDtypeStruct``).
      partial: the target may be a subtree (leaves only in the checkpoint are fine).

    Returns:
      One line per leaf only in the checkpoint, only in the model, or with another
      shape or dtype; an empty list when the two agree.
    """
    want = _pairs(structure(target))
    have = _pairs(saved)
    lines = [] if partial else [f"only in the checkpoint: {k} {have[k][0]} {have[k][1]}"
                                for k in have if k not in want]
    lines += [f"only in the model: {k} {want[k][0]} {want[k][1]}" for k in want if k not in have]
    lines += [f"{k}: checkpoint {have[k][0]} {have[k][1]}, model {want[k][0]} {want[k][1]}"
              for k in want if k in have and have[k] != want[k]]
    return lines
