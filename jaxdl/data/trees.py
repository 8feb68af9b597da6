"""Pytrees of examples: inputs and labels that are dicts, tuples or lists of arrays.

``x`` and ``y`` may be one array [n, ...] or any nesting of dicts, tuples and lists
whose leaves are arrays with a common leading example axis (a two-input model's
``{"image": [n, 8, 8, 1], "meta": [n, 3]}``). Everything that touches a batch maps
over its leaves with ``jax.tree.map``; this module holds the few host-side helpers
that need to know what a tree of examples is.

    x = {"image": np.zeros((10, 8, 8, 1)), "meta": np.zeros((10, 3))}
    rows(x)                         # 10
    spec(x, 4)                      # {"image": ShapeDtypeStruct((4, 8, 8, 1)), ...}
    shapes(x)                       # {"image": [8, 8, 1], "meta": [3]}  (JSON-able)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | jax.Array)


def is_tree(value: Any) -> bool:
    """Whether ``value`` is a container of example arrays rather than one array-like.

    A dict always is; a tuple or list is when one of its items is an array or a container
    of arrays (a list of lists of numbers stays one array, as numpy reads it).
    """
    if isinstance(value, Mapping):
        return True
    if isinstance(value, tuple | list):
        return any(_is_array(v) or is_tree(v) for v in value)
    return False


def _leaf(value: Any) -> bool:
    return not is_tree(value)


def map_with_path(fn: Callable[[str, Any], Any], tree: Any, path: str = "") -> Any:
    """``fn(path, leaf)`` over a tree of examples (paths as ``['meta']`` / ``[0]``), rebuilt
    with plain dicts, tuples and lists; a non-tree is one leaf at path ``""``."""
    if isinstance(tree, Mapping):
        return {k: map_with_path(fn, v, f"{path}[{k!r}]") for k, v in tree.items()}
    if is_tree(tree):
        items = [map_with_path(fn, v, f"{path}[{i}]") for i, v in enumerate(tree)]
        if hasattr(tree, "_fields"):  # a NamedTuple keeps its type
            return type(tree)(*items)
        return type(tree)(items)
    return fn(path, tree)


def leaves(tree: Any) -> list[Any]:
    """The arrays of a tree of examples (``[tree]`` for one array-like)."""
    return jax.tree.leaves(tree, is_leaf=_leaf)


def rows(tree: Any) -> int:
    """The number of examples: the leading dimension of the first leaf."""
    return int(np.shape(leaves(tree)[0])[0])


def take(tree: Any, index: Any) -> Any:
    """Rows ``index`` (a slice or index array) of every leaf."""
    return jax.tree.map(lambda a: np.asarray(a)[index] if isinstance(a, list) else a[index], tree,
                        is_leaf=_leaf)


def spec(tree: Any, batch: int | tuple[int, ...] = 1) -> Any:
    """``ShapeDtypeStruct`` per leaf with leading axes ``batch`` in place of ``n``."""
    lead = (batch,) if isinstance(batch, int) else tuple(batch)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((*lead, *np.shape(a)[1:]),
                                                       getattr(a, "dtype", np.float32)), tree,
                        is_leaf=_leaf)


def shapes(tree: Any) -> Any:
    """Per-example shapes, JSON-able: ``list(x.shape[1:])`` for one array, else that per leaf
    in the tree's structure (tuples become lists, as JSON has them)."""
    if not is_tree(tree):
        return list(np.shape(tree)[1:])
    return _json(jax.tree.map(lambda a: list(np.shape(a)[1:]), tree, is_leaf=_leaf))


def dtypes(tree: Any) -> Any:
    """Per-leaf dtype names, JSON-able, in the structure :func:`shapes` uses."""
    if not is_tree(tree):
        return str(tree.dtype)
    return _json(jax.tree.map(lambda a: str(a.dtype), tree, is_leaf=_leaf))


def _json(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _json(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return [_json(v) for v in tree]
    if isinstance(tree, list) and not all(isinstance(v, int) for v in tree):
        return [_json(v) for v in tree]
    return tree


def is_shape(value: Any) -> bool:
    """Whether a :func:`shapes` entry is one leaf's shape (a list of ints)."""
    return isinstance(value, list) and all(isinstance(n, int) and not isinstance(n, bool)
                                           for n in value)


def zeros(shape_tree: Any, dtype_tree: Any = "float32") -> Any:
    """One zero example [1, ...] per leaf of a :func:`shapes` tree (the sample a fresh process
    rebuilds a state from); ``dtype_tree``: :func:`dtypes`' tree or one name."""
    if is_shape(shape_tree):
        return np.zeros((1, *shape_tree), dtype_tree if isinstance(dtype_tree, str)
                        else "float32")
    if isinstance(shape_tree, Mapping):
        return {k: zeros(v, dtype_tree[k] if isinstance(dtype_tree, Mapping) else dtype_tree)
                for k, v in shape_tree.items()}
    return [zeros(v, dtype_tree[i] if isinstance(dtype_tree, list) else dtype_tree)
            for i, v in enumerate(shape_tree)]
