"""MLP: a stack of Dense layers, the reference workflow's network."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models import checks

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "softplus": nn.softplus,
    "linear": lambda x: x,
}


def activation_fn(activation: str | Callable[[jax.Array], jax.Array]) -> Callable:
    """Resolves an activation name (see :data:`ACTIVATIONS`) or passes a callable through."""
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        from jaxdl import errors  # only the error helpers: models stay free of training code

        raise errors.unknown_name("activation", "activation", activation, list(ACTIVATIONS))
    return ACTIVATIONS[activation]


class MLP(nn.Module):
    """Dense layers with an activation between them; the last layer outputs logits.

    Inputs of shape [B, ...] are flattened to [B, features_in].

    Attributes:
      features: widths of the layers; the last one is the output width
        (e.g. ``(10, 10, 1)`` for a binary classifier).
      activation: name in :data:`ACTIVATIONS` or a callable, applied after every
        hidden layer (never after the output layer).
      dropout_rate: dropout after each hidden activation, active when ``train=True``.

    Example::

        model = MLP(features=(10, 10, 1))
        variables = model.init(jax.random.key(0), jnp.ones((1, 30)))
        logits = model.apply(variables, x)        # [B, 1]
    """

    features: Sequence[int] = (10, 10, 1)
    activation: str | Callable[[jax.Array], jax.Array] = "relu"
    dropout_rate: float = 0.0
    dtype: jnp.dtype | None = None

    def __post_init__(self):
        checks.widths(self.features, "features")
        checks.rate(self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = activation_fn(self.activation)
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.features):
            x = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x)
            if i < len(self.features) - 1:
                x = act(x)
                if self.dropout_rate:
                    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return x
