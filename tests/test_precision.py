"""Mixed precision: bfloat16 compute, float32 parameters, optimizer state and loss."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl as jdl
from jaxdl import losses, metrics, precision, step

BCE = losses.get("binary_crossentropy")


def _batch(x, y, n=32):
    return {"x": jnp.asarray(x[:n]), "y": jnp.asarray(y[:n]), "mask": jnp.ones(n, jnp.float32)}


def _state(model, tx, x):
    params = model.init(jax.random.key(0), jnp.asarray(x[:1]))["params"]
    return jdl.TrainState.create(params, tx, jax.random.key(1))


@functools.cache
def _train(precision_name: str, k: int = 1):
    model, tx = jdl.models.MLP(features=(16, 1)), optax.adam(0.05)
    train = step.make_train_step(model, BCE, tx, [metrics.get("accuracy", "binary")],
                                 precision=precision_name, grad_accum_steps=k)
    return model, tx, train


def _dtypes(tree):
    return {str(a.dtype) for a in jax.tree.leaves(tree)}


def _dot_dtypes(fn, *args):
    """The operand dtypes of every dot_general in ``fn``'s jaxpr (nested jaxprs included)."""
    found = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.update(str(v.aval.dtype) for v in eqn.invars)
            for param in eqn.params.values():
                for inner in param if isinstance(param, list | tuple) else (param,):
                    inner = getattr(inner, "jaxpr", inner)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_bfloat16_keeps_float32_state_and_tracks_the_float32_loss(blobs):
    x, y = blobs
    model, tx, mixed = _train("bfloat16")
    _, _, full = _train("float32")
    state = _state(model, tx, x)
    batch = _batch(x, y)
    _, stats_full = jax.jit(full)(state, batch)
    mixed = jax.jit(mixed)
    new, stats = mixed(state, batch)
    np.testing.assert_allclose(stats["loss"][0], stats_full["loss"][0], rtol=2e-2)
    losses_seen = [float(stats["loss"][0])]
    for _ in range(5):
        new, stats = mixed(new, batch)
        losses_seen.append(float(stats["loss"][0]))
    assert losses_seen[-1] < 0.8 * losses_seen[0]
    assert _dtypes(new.params) == {"float32"}
    assert _dtypes(new.opt_state) <= {"float32", "int32"}
    assert _dtypes(stats) == {"float32"}


def test_bfloat16_step_computes_its_dots_in_bfloat16(blobs):
    x, y = blobs
    model, tx, mixed = _train("bfloat16")
    _, _, full = _train("float32")
    state, batch = _state(model, tx, x), _batch(x, y)
    assert _dot_dtypes(mixed, state, batch) == {"bfloat16"}
    assert _dot_dtypes(full, state, batch) == {"float32"}
    assert _dot_dtypes(_train("bfloat16", 2)[2], state, batch) == {"bfloat16"}  # in the scan


def test_eval_and_predict_compute_alike_and_return_float32(blobs):
    x, y = blobs
    model, tx, _ = _train("bfloat16")
    state, batch = _state(model, tx, x), _batch(x, y)
    evaluate = step.make_eval_step(model, BCE, precision="bfloat16")
    predict = step.make_predict_step(model, BCE.link, precision="bfloat16")
    assert _dot_dtypes(evaluate, state, batch) == {"bfloat16"}
    assert _dot_dtypes(predict, state, batch["x"]) == {"bfloat16"}
    probs = jax.jit(predict)(state, batch["x"])
    assert probs.dtype == jnp.float32
    expected = step.make_predict_step(model, BCE.link)(state, batch["x"])
    np.testing.assert_allclose(probs, expected, atol=2e-2)
    total, count = jax.jit(evaluate)(state, batch)["loss"]
    assert total.dtype == jnp.float32 and float(count) == 32


def test_bfloat16_with_accumulation_equals_bfloat16_without(blobs):
    x, y = blobs
    model, tx, whole = _train("bfloat16")
    state, batch = _state(model, tx, x), _batch(x, y)
    a, stats_a = jax.jit(whole)(state, batch)
    b, stats_b = jax.jit(_train("bfloat16", 4)[2])(state, batch)
    np.testing.assert_allclose(stats_a["loss"], stats_b["loss"], rtol=1e-3)
    # Micro-batch gradients round in bfloat16 differently from the batch's: within 1% of
    # Adam's update size (the learning rate, 0.05).
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=0, atol=5e-4),
                 a.params, b.params)


class _Tokens(nn.Module):
    """Integer token ids [B, T] -> one logit; nn.Embed refuses non-integer inputs."""

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        h = nn.Embed(11, 8)(tokens).mean(axis=1)
        h = nn.BatchNorm(use_running_average=not train)(h)
        return nn.Dense(1)(h)


def test_integer_inputs_and_model_state_are_not_cast():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(8, 5)), jnp.int32)
    model, tx = _Tokens(), optax.sgd(0.1)
    variables = model.init(jax.random.key(0), tokens)
    state = jdl.TrainState.create(variables["params"], tx, jax.random.key(1),
                                  {"batch_stats": variables["batch_stats"]})
    batch = {"x": tokens, "y": jnp.arange(8) % 2, "mask": jnp.ones(8)}
    new, stats = jax.jit(step.make_train_step(model, BCE, tx, precision="bfloat16"))(state, batch)
    assert _dtypes(new.params) == {"float32"}
    assert _dtypes(new.model_state) == {"float32"}
    assert np.isfinite(float(stats["loss"][0]))


def test_cast_floating_leaves_only():
    tree = {"w": jnp.ones(2), "ids": jnp.arange(2), "flag": jnp.array([True])}
    cast = precision.cast_floating(tree, jnp.bfloat16)
    assert (cast["w"].dtype, cast["ids"].dtype, cast["flag"].dtype) == (
        jnp.bfloat16, jnp.int32, jnp.bool_)


@pytest.mark.parametrize("bad, message", [
    ("float16", r"argument 'precision': expected 'float32' or 'bfloat16', got 'float16'\. "
                r"Fix: use precision='bfloat16'"),
    ("bf16", r"argument 'precision': expected one of the known precision names")])
def test_unknown_precision_is_refused(bad, message):
    with pytest.raises(jdl.errors.InputError, match=message):
        step.make_train_step(jdl.models.MLP(), BCE, optax.sgd(0.1), precision=bad)


def test_trainer_fits_in_bfloat16(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                          learning_rate=0.05, metrics=["accuracy"], precision="bfloat16")
    state = trainer.init(jax.random.key(0), x[:1])
    state, history = trainer.fit(state, x, y, epochs=5, batch_size=32, verbose=0)
    assert history["loss"][-1] < history["loss"][0]
    assert _dtypes(state.params) == {"float32"}
    assert trainer.predict(state, x).dtype == np.float32
    assert trainer.evaluate(state, x, y)["accuracy"] > 0.8
