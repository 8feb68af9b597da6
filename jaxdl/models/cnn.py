"""CNN: a small convolutional classifier for little images (digits, CIFAR-sized inputs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models import checks
from jaxdl.models.mlp import activation_fn

POOLS: dict[str | None, Callable | None] = {"max": nn.max_pool, "avg": nn.avg_pool, None: None}


def as_images(x: jax.Array, input_shape: Sequence[int] | None) -> jax.Array:
    """Inputs [B, H, W, C]: flat rows reshaped to ``input_shape``, [B, H, W] given a channel."""
    if input_shape is not None:
        x = x.reshape(x.shape[0], *input_shape)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        from jaxdl import errors  # only the error helpers: models stay free of training code

        raise errors.input_error("x", "images [B, H, W, C] or [B, H, W] (or flat rows with "
                                 "input_shape set)", f"inputs of shape {x.shape}",
                                 "pass images, or set the model's input_shape=(H, W, C)")
    return x


class CNN(nn.Module):
    """Conv blocks (conv -> activation -> 2x2 pool), then dense layers, then logits.

    Inputs: images [B, H, W, C] or [B, H, W], or flat rows [B, H*W*C] with
    ``input_shape=(H, W, C)`` (e.g. scikit-learn's digits as 64 columns). Outputs:
    float32 logits [B, num_outputs].

    Attributes:
      features: output channels of the conv blocks, e.g. ``(32, 64)``.
      kernel_size: square kernel size (``"SAME"`` padding).
      dense: widths of the hidden dense layers after the convolutions.
      num_outputs: logits per example (classes; 1 for a binary classifier).
      pooling: "max" or "avg": a 2x2 pool (stride 2) after each block while the image is
        at least 2x2 (8x8 digits: 8 -> 4 -> 2); None keeps the resolution.
      dropout_rate: dropout before each dense layer, active with ``train=True``.
      activation: a name in :data:`jaxdl.models.mlp.ACTIVATIONS` or a callable.
      input_shape: per-example image shape for flat inputs, or None.
      dtype: the computation dtype (e.g. ``jnp.bfloat16``); None: the inputs'.
      param_dtype: the parameters' dtype (float32).

    Example::

        model = CNN(features=(32, 64), dense=(128,), num_outputs=10)
        variables = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
        logits = model.apply(variables, images)          # [B, 10]
    """

    features: Sequence[int] = (32, 64)
    kernel_size: int = 3
    dense: Sequence[int] = (128,)
    num_outputs: int = 10
    pooling: str | None = "max"
    dropout_rate: float = 0.0
    activation: str | Callable[[jax.Array], jax.Array] = "relu"
    input_shape: Sequence[int] | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        checks.widths(self.features, "features", allow_empty=True)
        checks.widths(self.dense, "dense", allow_empty=True)
        checks.positive(self.kernel_size, "kernel_size")
        checks.positive(self.num_outputs, "num_outputs")
        checks.rate(self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = activation_fn(self.activation)
        if self.pooling not in POOLS:
            from jaxdl import errors

            raise errors.input_error("pooling", '"max", "avg" or None', repr(self.pooling),
                                     'pass pooling="max" (the default), "avg" or None')
        pool = POOLS[self.pooling]
        x = as_images(x, self.input_shape)
        k = (self.kernel_size, self.kernel_size)
        for i, width in enumerate(self.features):
            x = nn.Conv(width, k, padding="SAME", dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"conv_{i}")(x)
            x = act(x)
            # Stop halving at 1x1: a deeper stack on tiny images still builds.
            if pool is not None and min(x.shape[1:3]) >= 2:
                x = pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.dense):
            if self.dropout_rate:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                             name=f"dense_{i}")(x))
        if self.dropout_rate:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="logits")(x)
        return x.astype(jnp.float32)
