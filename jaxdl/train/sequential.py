"""Populations trained one member after another, where that is faster than ``vmap``.

XLA:CPU runs the batched convolutions that ``vmap`` makes of a population's
convolutions far slower than the members' own (an 8-member digits CNN: 13.7 s
against 3.2 s for eight single fits). ``population_mode="sequential"`` keeps the
population program but calls it on one member at a time: the program compiled for a
member axis of size 1 is reused for every member (their hyper-parameters are data
in the optimizer state), so member i still equals its single run and every
per-member promise (early stopping, the NaN policy, checkpoints, ``best``) holds,
because the driver sees the same [N] state and outputs as with ``vmap``.
Members that stopped are not run at all.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxdl import errors

MODES = ("auto", "vmap", "sequential")


def check_mode(mode: Any) -> str:
    """``population_mode`` if known, else the kit's error naming the modes."""
    if mode not in MODES:
        raise errors.unknown_name("population_mode", "population mode", mode, list(MODES))
    return mode


def choose(mode: str, loop_friendly: bool) -> str:
    """"vmap" or "sequential": "auto" runs members one by one where the model is slow in a
    rolled loop on this backend (convolutions on CPU), the same test as steps_per_dispatch."""
    if mode != "auto":
        return mode
    return "vmap" if loop_friendly else "sequential"


@jax.jit
def _take(tree: Any, member: jax.Array) -> Any:
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, member, 1), tree)


def _put(tree: Any, part: Any, member: jax.Array) -> Any:
    return jax.tree.map(lambda a, p: jax.lax.dynamic_update_slice_in_dim(a, p, member, 0),
                        tree, part)


_put_jit = jax.jit(_put, donate_argnums=0)


@jax.jit
def _stack(parts: list[Any]) -> Any:
    """Members' block outputs [E, 1, ...] -> [E, N, ...] (the vmapped block's layout)."""
    return jax.tree.map(lambda *leaves: jax.numpy.concatenate(leaves, axis=1), *parts)


class MemberBlocks:
    """A population's training block, run member by member on [1, ...] slices.

    ``block``: the population's compiled block; ``member_data``: whether ``idx`` has a
    member axis (each member its own data order, [E, S, N, B]).
    """

    def __init__(self, block: Any, member_data: bool):
        self.block, self.member_data = block, member_data

    def __call__(self, *, state: Any, acc: Any, idx: Any, active: Any, trained: np.ndarray,
                 **arguments: Any) -> tuple[Any, Any, Any]:
        """Like ``block(**arguments)``; ``trained``: host bool [N], the members to run
        (the others keep their state and report zeros, as frozen members do)."""
        del active  # each member gets its own one-element mask
        outputs: list[Any] = []
        for member in np.flatnonzero(trained) if trained.any() else [0]:
            index = np.int32(member)
            member_idx = idx[:, :, member:member + 1] if self.member_data else idx
            part, part_acc, out = self.block(
                state=_take(state, index), acc=_take(acc, index), idx=member_idx,
                active=np.ones(1, bool), **arguments)
            if trained[member]:  # (with nothing left to train: shapes only, state kept)
                state, acc = _put_jit(state, part, index), _put_jit(acc, part_acc, index)
            outputs.append((int(member), out))
        zeros = jax.tree.map(jax.numpy.zeros_like, outputs[0][1])
        done = dict(outputs) if trained.any() else {}
        return state, acc, _stack([done.get(m, zeros) for m in range(len(trained))])
