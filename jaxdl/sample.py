"""Text from a trained language model: autoregressive sampling in one compiled loop.

Works with any model that maps tokens ``[B, T]`` (int32) to next-token logits
``[B, T, V]`` — e.g. :class:`jaxdl.models.Transformer` on the byte-level corpus
(:mod:`jaxdl.data.text`, V = 256). The whole generation is one ``jax.jit``-ed
``lax.fori_loop`` over positions (a fixed window of ``context`` tokens, so one
compile serves every prompt length); each position re-reads the window, which
is what a model without a KV cache costs.

    tokens = jdl.sample.generate(trainer, state, b"def ", num_tokens=200,
                                 temperature=0.8, seed=0)
    print(jdl.sample.decode(tokens))

``jaxdl sample --workdir DIR --prompt "def " --length 200`` does the same from a run.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors


def encode(text: str | bytes) -> np.ndarray:
    """UTF-8 bytes of ``text`` as int32 tokens [n] (the byte-level vocabulary)."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, np.uint8).astype(np.int32)


def decode(tokens: Any) -> str:
    """Byte tokens back to text (invalid UTF-8 sequences become U+FFFD)."""
    return bytes(np.asarray(tokens, np.uint8).tolist()).decode("utf-8", errors="replace")


@functools.partial(jax.jit, static_argnames=("apply", "num_tokens", "context", "top_k"))
def _generate(apply, params_state, window, start, key, temperature, *, num_tokens, context,
              top_k):
    """``window`` int32 [>= context]: the prompt at [0, start), then zeros."""

    def body(i, carry):
        window, key = carry
        position = start + i
        # The model sees `context` tokens ending at `position` (from the start while the
        # text is shorter: a causal model ignores the unfilled zeros after it).
        begin = jnp.maximum(position - context, 0)
        view = jax.lax.dynamic_slice(window, (begin,), (context,))
        logits = apply(params_state, view[None])[0, position - begin - 1].astype(jnp.float32)
        key, draw = jax.random.split(key)
        if top_k:
            cutoff = jax.lax.top_k(logits, top_k)[0][-1]
            logits = jnp.where(logits < cutoff, -jnp.inf, logits)
        greedy = jnp.argmax(logits)
        sampled = jax.random.categorical(draw, logits / jnp.maximum(temperature, 1e-6))
        token = jnp.where(temperature > 0, sampled, greedy).astype(window.dtype)
        return window.at[position].set(token), key

    window, _ = jax.lax.fori_loop(0, num_tokens, body, (window, key))
    return window


def generate(trainer: Any, state: Any, prompt: str | bytes | np.ndarray, *, num_tokens: int = 200,
             temperature: float = 1.0, top_k: int = 0, seed: int = 0,
             context: int | None = None) -> np.ndarray:
    """Continues ``prompt`` by ``num_tokens`` sampled tokens.

    Args:
      trainer: the :class:`jaxdl.Trainer` whose model maps [B, T] tokens to [B, T, V] logits.
      state: its trained single-model TrainState.
      prompt: text (encoded as UTF-8 bytes) or int tokens [n], n >= 1.
      num_tokens: tokens to generate.
      temperature: softmax temperature; 0 is greedy (argmax).
      top_k: sample among the k most likely tokens only (0: all).
      seed: the sampling seed.
      context: the window the model sees (default: its ``max_len`` attribute, else 128).

    Returns:
      int32 [n + num_tokens]: the prompt followed by the generated tokens.
    """
    from jaxdl import population

    if population.size(state) is not None:
        raise errors.input_error("state", "one model's state", "a population state",
                                 "pick a member: jdl.population.member(state, i)")
    tokens = encode(prompt) if isinstance(prompt, str | bytes) else np.asarray(prompt, np.int32)
    if tokens.ndim != 1 or not len(tokens):
        raise errors.input_error("prompt", "a non-empty text or 1-D token array",
                                 errors.describe(prompt), "pass e.g. prompt='def '")
    for name, value, low in (("num_tokens", num_tokens, 1), ("top_k", top_k, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise errors.input_error(name, f"an integer >= {low}", repr(value),
                                     f"pass e.g. {name}={max(low, 1) * 100 if low else 0}")
    if not temperature >= 0:
        raise errors.input_error("temperature", "a float >= 0 (0: greedy)", repr(temperature),
                                 "pass e.g. temperature=0.8")
    context = context or getattr(trainer.model, "max_len", None) or 128
    total = len(tokens) + num_tokens
    window = np.zeros(max(total, context), np.int32)
    window[: len(tokens)] = tokens
    out = _generate(_runner(trainer.model), {"params": state.params,
                                             "model_state": state.model_state},
                    jnp.asarray(window), len(tokens), jax.random.key(seed),
                    jnp.float32(temperature), num_tokens=num_tokens, context=context,
                    top_k=top_k)
    return np.asarray(out)[:total]


@functools.lru_cache(maxsize=16)
def _runner(model: Any) -> Any:
    """``run(params_state, tokens [1, T]) -> logits [1, T, V]`` in eval mode; one per model,
    so repeated calls reuse the compiled loop."""
    from jaxdl.step import make_apply

    apply = make_apply(model)
    return lambda params_state, tokens: apply(params_state["params"],
                                              params_state["model_state"], tokens, False)[0]
