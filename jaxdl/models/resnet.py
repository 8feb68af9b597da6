"""ResNet: a small residual network with batch normalization, for little images."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models import checks
from jaxdl.models.cnn import as_images


class BasicBlock(nn.Module):
    """conv3x3-BN-relu-conv3x3-BN plus the (projected) input, then relu."""

    width: int
    strides: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype)
        s = (self.strides, self.strides)
        y = nn.relu(norm()(conv(self.width, (3, 3), s, padding="SAME")(x)))
        # Zero-initialized last scale: each block starts as the identity (Goyal et al.).
        y = norm(scale_init=nn.initializers.zeros)(conv(self.width, (3, 3), padding="SAME")(y))
        if x.shape != y.shape:
            x = norm()(conv(self.width, (1, 1), s, name="projection")(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A ResNet of basic blocks with BatchNorm; global average pooling, then logits.

    The BatchNorm running statistics live in the ``batch_stats`` collection: the kit keeps
    them in ``TrainState.model_state``, updates them in training steps (batch statistics)
    and uses them in evaluation and prediction (``train=False``).

    Inputs: images [B, H, W, C] or [B, H, W], or flat rows with ``input_shape``.
    Outputs: float32 logits [B, num_outputs].

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(2, 2, 2)``.
      widths: channels per stage.
      strides: the first block's stride in each stage, e.g. ``(1, 2, 2)``; None: 1 for the
        first stage and 2 after it while the image is at least 2x2 (8x8 -> 4x4 -> 2x2).
      stem_width: channels of the first 3x3 convolution.
      num_outputs: logits per example.
      input_shape: per-example image shape for flat inputs, or None.
      dtype, param_dtype: computation and parameter dtypes.

    Note: a padded last batch (mask 0 rows, copies of a real row) enters the batch
    statistics of that step; use a batch size that divides the training set, or accept
    the tiny bias of one step per epoch.

    Example::

        model = ResNet(stage_sizes=(2, 2, 2), widths=(16, 32, 64), num_outputs=10)
        variables = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
        logits = model.apply(variables, images)          # eval mode: running statistics
    """

    stage_sizes: Sequence[int] = (2, 2, 2)
    widths: Sequence[int] = (16, 32, 64)
    strides: Sequence[int] | None = None
    stem_width: int = 16
    num_outputs: int = 10
    input_shape: Sequence[int] | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        checks.widths(self.stage_sizes, "stage_sizes")
        checks.widths(self.widths, "widths")
        checks.positive(self.stem_width, "stem_width")
        checks.positive(self.num_outputs, "num_outputs")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for argument, given in (("widths", self.widths), ("strides", self.strides)):
            if given is not None and len(given) != len(self.stage_sizes):
                from jaxdl import errors

                raise errors.input_error(argument, f"one value per stage "
                                         f"({len(self.stage_sizes)}, as in stage_sizes)",
                                         repr(tuple(given)),
                                         f"give stage_sizes and {argument} the same length")
        x = as_images(x, self.input_shape)
        x = nn.Conv(self.stem_width, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype, param_dtype=self.param_dtype,
                                 name="stem_norm")(x))
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for block in range(blocks):
                if block:
                    strides = 1
                elif self.strides is not None:
                    strides = self.strides[stage]
                else:  # stop halving at 1x1: deeper stacks still build on tiny images
                    strides = 2 if stage > 0 and min(x.shape[1:3]) >= 2 else 1
                x = BasicBlock(width, strides, self.dtype, self.param_dtype,
                               name=f"stage{stage}_block{block}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="logits")(x)
        return x.astype(jnp.float32)
