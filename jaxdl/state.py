"""TrainState: everything that changes during training, as one pytree.

The model and the optimizer are not in the state: they are closed over by the
step functions (see :mod:`jaxdl.step`). Only arrays live here, so the state can
be jitted, vmapped, sharded and checkpointed as it is.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """The training state pytree.

    Attributes:
      step: int32 scalar, the number of optimizer updates applied so far.
      params: the model's ``params`` collection.
      opt_state: the optax optimizer state for ``params``.
      model_state: the model's other mutable collections (e.g. ``{"batch_stats": ...}``);
        ``{}`` for stateless models.
      rng: a typed PRNG key; per-step randomness is ``fold_in(rng, step)``.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    model_state: Any
    rng: jax.Array

    @classmethod
    def create(
        cls,
        params: Any,
        tx: optax.GradientTransformation,
        rng: jax.Array,
        model_state: Any = None,
    ) -> TrainState:
        """Builds a step-0 state; ``tx.init(params)`` gives the optimizer state."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            model_state={} if model_state is None else model_state,
            rng=rng,
        )


@jax.jit
def copied(state: Any) -> Any:
    """``state`` in new buffers, in one dispatch (a leaf-by-leaf copy costs one each):
    what ``Trainer.fit`` trains on, so that the state it donates is not the caller's."""
    return jax.tree.map(jnp.copy, state)
