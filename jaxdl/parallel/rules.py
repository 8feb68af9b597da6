"""Partition rules as data: (parameter-path pattern -> PartitionSpec), FSDP by default.

Rules are an ordered list of ``(regex, spec)``; the first pattern that matches
a parameter's path (``jax.tree_util.keystr``, e.g. ``['dense_0']['kernel']``)
gives its spec. Parameters no rule matches are sharded FSDP-style: their
largest dimension divisible by the ``fsdp`` axis is split over it; small ones
(under ``min_fsdp_bytes``) stay replicated. Flax logical axis names
(``nn.with_logical_partitioning``) map to mesh axes through
``logical_rules``. A rule that matches nothing is reported, never ignored.

Optimizer state follows its parameters by structure: given the optimizer,
``optax.tree_map_params`` finds every params-shaped tree in its state (adam's
``mu``/``nu``, momentum's ``trace``, ...), and each leaf there takes its parameter's
spec; the rest (counts, injected hyper-parameters, scalars, and leaves of another
shape such as adafactor's factored rows) is replicated. Without the optimizer, a
leaf whose path ends with a parameter's path takes that parameter's spec.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxdl import errors

Rule = tuple[str, PartitionSpec | Sequence[Any]]


def fsdp_spec(shape: Sequence[int], fsdp_size: int, itemsize: int = 4,
              min_bytes: int = 4096) -> PartitionSpec:
    """Shards the largest dimension divisible by ``fsdp_size``; replicates small arrays."""
    if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) * itemsize < min_bytes:
        return PartitionSpec()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def _as_spec(spec: Any) -> PartitionSpec:
    return spec if isinstance(spec, PartitionSpec) else PartitionSpec(*spec)


def partition_specs(params: Any, mesh: jax.sharding.Mesh, rules: Sequence[Rule] = (),
                    logical_rules: Sequence[tuple[str, str | None]] = (),
                    min_fsdp_bytes: int = 4096) -> tuple[Any, list[str]]:
    """PartitionSpecs for a params tree (abstract or concrete), and unused-rule warnings.

    Returns:
      ``(specs, unused)``: a tree of PartitionSpec like ``params``, and the patterns of
      ``rules`` that matched no parameter.
    """
    import flax.linen as nn

    compiled = [(re.compile(pattern), _as_spec(spec), pattern) for pattern, spec in rules]
    used: set[str] = set()
    fsdp = mesh.shape.get("fsdp", 1)

    def spec_for(path, leaf):
        if isinstance(leaf, nn.LogicallyPartitioned):
            return nn.logical_to_mesh_axes(leaf.names, logical_rules)
        name = jax.tree_util.keystr(path)
        for regex, spec, pattern in compiled:
            if regex.search(name):
                used.add(pattern)
                if len(spec) > len(leaf.shape):
                    raise errors.input_error(
                        "sharding.rules", f"a spec of at most {len(leaf.shape)} axes for "
                        f"{name} {tuple(leaf.shape)}", f"{spec} from rule {pattern!r}",
                        "give one mesh axis (or None) per dimension")
                return spec
        return fsdp_spec(leaf.shape, fsdp, np.dtype(leaf.dtype).itemsize, min_fsdp_bytes)

    specs = jax.tree_util.tree_map_with_path(
        spec_for, params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    unused = [pattern for _, _, pattern in compiled if pattern not in used]
    return specs, unused


def state_shardings(state: Any, param_specs: Any, mesh: jax.sharding.Mesh,
                    default: PartitionSpec | None = None,
                    tx: optax.GradientTransformation | None = None) -> Any:
    """NamedShardings for a whole TrainState: params by their specs, optimizer state
    following its parameters, everything else by ``default`` (replicated; a
    population's leaves split over their member axis).

    Args:
      state: a TrainState, abstract (``jax.eval_shape``) or concrete.
      param_specs: a PartitionSpec per parameter (:func:`partition_specs`).
      mesh: the mesh of the shardings.
      default: the spec of every leaf that does not follow a parameter.
      tx: the optimizer whose state ``state.opt_state`` is: its params-shaped trees are
        found by structure (``optax.tree_map_params``). None, or an optimizer whose
        ``init`` cannot run on optax's placeholder (it reads the params' shapes): by
        path suffix.
    """
    replicated = NamedSharding(mesh, PartitionSpec() if default is None else default)
    if tx is not None:
        opt_shardings = _optimizer_shardings(tx, state, param_specs, mesh, replicated)
        if opt_shardings is not None:
            params = jax.tree.map(lambda _, spec: NamedSharding(mesh, spec), state.params,
                                  param_specs)
            everything = jax.tree.map(lambda _: replicated, state)
            return everything.replace(params=params, opt_state=opt_shardings)
    return _suffix_shardings(state, param_specs, mesh, replicated)


def _optimizer_shardings(tx: optax.GradientTransformation, state: Any, param_specs: Any,
                         mesh: jax.sharding.Mesh, replicated: NamedSharding) -> Any:
    """The optimizer state's shardings by structure, or None when optax cannot map it."""

    def follow(leaf, spec, param):
        if isinstance(leaf, optax.MaskedNode):
            return leaf  # a parameter optax.masked leaves out: no array, nothing to place
        # A params-shaped tree can hold other shapes (adafactor's factored rows).
        return NamedSharding(mesh, spec) if leaf.shape == param.shape else replicated

    try:
        return optax.tree_map_params(
            tx, follow, state.opt_state, param_specs, state.params,
            transform_non_params=lambda _: replicated,
            is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    except Exception:  # a user's init may reject optax's placeholder params in any way
        return None  # the caller falls back to the path rule


def _suffix_shardings(state: Any, param_specs: Any, mesh: jax.sharding.Mesh,
                      replicated: NamedSharding) -> Any:
    """Every leaf whose path ends with a parameter's path gets that parameter's spec."""
    by_suffix = {jax.tree_util.keystr(path): spec for path, spec in
                 jax.tree_util.tree_flatten_with_path(
                     param_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]}

    def sharding(path, leaf):
        name = jax.tree_util.keystr(path)
        for suffix, spec in by_suffix.items():
            if name.endswith(suffix) and len(spec) <= len(getattr(leaf, "shape", ())):
                return NamedSharding(mesh, spec)
        return replicated

    return jax.tree_util.tree_map_with_path(sharding, state)
