"""What Orbax writes and restores into: a state's storable form (its typed PRNG key as raw
key data) and restore targets placed on this process's devices."""

from __future__ import annotations

from typing import Any

import jax

from jaxdl.state import TrainState


def storable(state: TrainState) -> TrainState:
    """The state with its PRNG key as raw key data (what Orbax writes)."""
    return state.replace(rng=jax.random.key_data(state.rng))


def unstorable(state: TrainState) -> TrainState:
    """Inverse of :func:`storable`."""
    return state.replace(rng=jax.random.wrap_key_data(state.rng))


def placed(target: Any) -> Any:
    """Abstract leaves with a concrete sharding, so Orbax restores onto *this* topology.

    Arrays and ``ShapeDtypeStruct`` leaves keep their sharding; others get device 0.
    """
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def place(leaf):
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            sharding = default
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree.map(place, target)
