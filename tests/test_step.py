"""The pure steps against a hand-written Flax + optax step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdl as jdl
from jaxdl import losses, metrics, step


def _setup(x):
    model = jdl.models.MLP(features=(4, 1))
    params = model.init(jax.random.key(0), x[:1])["params"]
    tx = optax.sgd(0.1)
    state = jdl.TrainState.create(params, tx, jax.random.key(1))
    return model, tx, state


def test_train_step_equals_hand_written(blobs):
    x, y = blobs
    x, y = jnp.asarray(x[:16]), jnp.asarray(y[:16])
    model, tx, state = _setup(x)
    train_step = step.make_train_step(model, losses.get("binary_crossentropy"), tx)
    new_state, stats = jax.jit(train_step)(state, {"x": x, "y": y, "mask": jnp.ones(16)})

    def loss_fn(p):
        logits = model.apply({"params": p}, x)[:, 0]
        return optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32)).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, _ = tx.update(grads, state.opt_state)
    expected = optax.apply_updates(state.params, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new_state.params, expected)
    assert int(new_state.step) == 1
    total, count = stats["loss"]
    np.testing.assert_allclose(total / count, loss, rtol=1e-6)


def test_padding_rows_do_not_change_the_update(blobs):
    x, y = blobs
    model, tx, state = _setup(jnp.asarray(x))
    train_step = jax.jit(step.make_train_step(model, losses.get("binary_crossentropy"), tx,
                                              [metrics.get("accuracy", "binary")]))
    real = {"x": jnp.asarray(x[:10]), "y": jnp.asarray(y[:10]), "mask": jnp.ones(10)}
    padded = {"x": jnp.asarray(np.concatenate([x[:10], x[50:56]])),
              "y": jnp.asarray(np.concatenate([y[:10], 1 - y[50:56]])),
              "mask": jnp.asarray(np.r_[np.ones(10), np.zeros(6)], jnp.float32)}
    a, stats_a = train_step(state, real)
    b, stats_b = train_step(state, padded)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7),
                 a.params, b.params)
    jax.tree.map(np.testing.assert_allclose, stats_a, stats_b)


def test_eval_and_predict_steps(blobs):
    x, y = blobs
    model, _, state = _setup(jnp.asarray(x))
    loss = losses.get("binary_crossentropy")
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.ones(len(x))}
    stats = step.make_eval_step(model, loss)(state, batch)
    probs = step.make_predict_step(model, loss.link)(state, batch["x"])
    expected = -np.mean(y * np.log(probs[:, 0]) + (1 - y) * np.log(1 - probs[:, 0]))
    total, count = stats["loss"]
    np.testing.assert_allclose(total / count, expected, rtol=1e-5)


def test_mode_argument_is_found():
    assert step.mode_argument(jdl.models.MLP()) == "train"
