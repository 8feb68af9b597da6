"""Transformer: a decoder-only language model (causal attention, pre-norm, RoPE)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models import checks

# Logical axis names of the parameters -> the kit's mesh axes (data, fsdp, tensor):
# Megatron-style tensor parallelism over heads and the MLP's hidden units, FSDP over the
# model width. Pass as Trainer(..., logical_rules=LOGICAL_RULES).
LOGICAL_RULES = (("vocab", "tensor"), ("embed", "fsdp"), ("heads", "tensor"), ("kv", None),
                 ("mlp", "tensor"), ("positions", None))


def _param(init: Any, names: tuple[str | None, ...]) -> Any:
    return nn.with_logical_partitioning(init, names)


def _norm(kind: str, dtype: Any, param_dtype: Any, name: str) -> nn.Module:
    scale = _param(nn.initializers.ones, ("embed",))
    if kind == "rmsnorm":
        return nn.RMSNorm(dtype=dtype, param_dtype=param_dtype, scale_init=scale, name=name)
    return nn.LayerNorm(dtype=dtype, param_dtype=param_dtype, scale_init=scale,
                        bias_init=_param(nn.initializers.zeros, ("embed",)), name=name)


def rope(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding of x [B, T, H, D] at integer positions [T] (D even)."""
    half = x.shape[-1] // 2
    freqs = 1.0 / (10_000 ** (jnp.arange(half, dtype=jnp.float32) / half))
    angles = positions[:, None].astype(jnp.float32) * freqs[None, :]        # [T, D/2]
    sin, cos = jnp.sin(angles)[None, :, None, :], jnp.cos(angles)[None, :, None, :]
    a, b = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1).astype(x.dtype)


class Block(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + MLP(norm(x))."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    positions: str = "rope"
    norm: str = "layernorm"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        batch, length, width = x.shape
        heads, head_dim = self.num_heads, width // self.num_heads
        dense = nn.initializers.lecun_normal()
        norm = lambda name: _norm(self.norm, self.dtype, self.param_dtype, name)
        h = norm("attention_norm")(x)
        qkv = nn.DenseGeneral((3, heads, head_dim), dtype=self.dtype,
                              param_dtype=self.param_dtype, use_bias=False,
                              kernel_init=_param(dense, ("embed", None, "heads", "kv")),
                              name="qkv")(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                  # [B, T, H, D]
        if self.positions == "rope":
            where = jnp.arange(length)
            q, k = rope(q, where), rope(k, where)
        attended = jax.nn.dot_product_attention(q, k, v, is_causal=True)    # [B, T, H, D]
        out = nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype,
                              param_dtype=self.param_dtype, use_bias=False,
                              kernel_init=_param(dense, ("heads", "kv", "embed")),
                              name="attention_out")(attended)
        x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(out)
        h = norm("mlp_norm")(x)
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=_param(dense, ("embed", "mlp")),
                     bias_init=_param(nn.initializers.zeros, ("mlp",)), name="mlp_in")(h)
        h = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=_param(dense, ("mlp", "embed")),
                     bias_init=_param(nn.initializers.zeros, ("embed",)),
                     name="mlp_out")(nn.gelu(h))
        return x + nn.Dropout(self.dropout_rate, deterministic=not train)(h)


class Transformer(nn.Module):
    """A decoder-only language model: tokens int [B, T] -> next-token logits float32 [B, T, V].

    Causal self-attention (``jax.nn.dot_product_attention``), pre-norm blocks
    (``norm="layernorm"`` or ``"rmsnorm"``) with a GELU MLP, dropout in training, rotary
    (``positions="rope"``) or learned (``"learned"``) positions. The output projection is
    untied from the token embedding: its own ("embed", "vocab") kernel and bias, so
    the two can shard differently and a small model's logits are not tied to its input
    table. Every parameter carries Flax logical axis names (``vocab``, ``embed``,
    ``heads``, ``kv``, ``mlp``, ``positions``), so :data:`LOGICAL_RULES` (or your own)
    shards it over a mesh. ``remat=True`` recomputes each block's activations in the
    backward pass (less memory, same result).

    Any length T <= max_len works with the same parameters (generation calls it on a
    growing prefix): position t's logits depend on tokens 0..t only.

    Attributes:
      vocab_size: tokens (256 for the byte-level corpus).
      num_layers, num_heads, embed_dim, mlp_dim: the size (embed_dim divisible by heads;
        with RoPE the head size embed_dim / num_heads must be even).
      max_len: the longest sequence (the learned position table's size; RoPE itself has
        no limit but the kit's sampler keeps to max_len).
      dropout_rate: dropout on the residual branches and embeddings.
      positions: "rope" or "learned".
      norm: "layernorm" or "rmsnorm".
      remat: rematerialize each block.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); param_dtype: parameters' (float32).
        The logits come back float32 either way.

    Example::

        model = Transformer(vocab_size=256, num_layers=4, num_heads=4, embed_dim=256,
                            mlp_dim=1024, max_len=128)
        variables = model.init(jax.random.key(0), jnp.zeros((1, 128), jnp.int32))
        logits = model.apply(variables, tokens)            # [B, T, 256] float32
    """

    vocab_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    embed_dim: int = 256
    mlp_dim: int = 1024
    max_len: int = 128
    dropout_rate: float = 0.0
    positions: str = "rope"
    norm: str = "layernorm"
    remat: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for argument in ("vocab_size", "num_layers", "num_heads", "embed_dim", "mlp_dim",
                         "max_len"):
            checks.positive(getattr(self, argument), argument)
        checks.rate(self.dropout_rate)
        super().__post_init__()

    def _check(self, tokens: jax.Array) -> None:
        from jaxdl import errors  # only the error helpers: models stay free of training code

        if self.positions not in ("rope", "learned"):
            raise errors.unknown_name("positions", "position encoding", self.positions,
                                      ["rope", "learned"])
        if self.norm not in ("layernorm", "rmsnorm"):
            raise errors.unknown_name("norm", "normalization", self.norm,
                                      ["layernorm", "rmsnorm"])
        if self.embed_dim % self.num_heads:
            raise errors.input_error("embed_dim", f"a multiple of num_heads={self.num_heads}",
                                     str(self.embed_dim), "pick embed_dim = heads x head size")
        if self.positions == "rope" and (self.embed_dim // self.num_heads) % 2:
            raise errors.input_error("embed_dim", "an even head size embed_dim / num_heads "
                                     "for rotary positions",
                                     f"{self.embed_dim} / {self.num_heads} = "
                                     f"{self.embed_dim // self.num_heads}",
                                     "pick an even head size, or positions='learned'")
        if tokens.ndim != 2:
            raise errors.input_error("x", "integer tokens [B, T]",
                                     f"inputs of shape {tokens.shape}",
                                     "pass a [batch, length] array of token ids")
        if self.positions == "learned" and tokens.shape[1] > self.max_len:
            raise errors.input_error("x", f"sequences of at most max_len={self.max_len} "
                                     "tokens (learned positions)",
                                     f"length {tokens.shape[1]}",
                                     "raise max_len, use positions='rope', or feed the last "
                                     "max_len tokens")

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        self._check(tokens)
        tokens = tokens.astype(jnp.int32)
        x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                     param_dtype=self.param_dtype,
                     embedding_init=_param(nn.initializers.normal(0.02), ("vocab", "embed")),
                     name="embed")(tokens)
        if self.positions == "learned":
            table = self.param("position_embedding", _param(nn.initializers.normal(0.02),
                                                            ("positions", "embed")),
                               (self.max_len, self.embed_dim), self.param_dtype)
            x = x + table[None, : tokens.shape[1]].astype(x.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        # static_argnums=(2,): `train` picks Python branches (dropout), so it stays static.
        block = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
        for i in range(self.num_layers):
            x = block(self.num_heads, self.mlp_dim, self.dropout_rate, self.positions,
                      self.norm, self.dtype, self.param_dtype, name=f"block_{i}")(x, train)
        x = _norm(self.norm, self.dtype, self.param_dtype, "final_norm")(x)
        logits = nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.param_dtype,
                          kernel_init=_param(nn.initializers.lecun_normal(),
                                             ("embed", "vocab")),
                          bias_init=_param(nn.initializers.zeros, ("vocab",)),
                          name="logits")(x)
        return logits.astype(jnp.float32)
