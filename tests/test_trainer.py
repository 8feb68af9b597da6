"""The Trainer end to end: exactness, determinism, fusion equivalence, callbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl as jdl
from jaxdl.data import arrays
from jaxdl.train import plan


def _allclose(a, b, **kw):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)


@pytest.fixture(scope="module")
def trained(binary_trainer, blobs):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    state, history = binary_trainer.fit(state, x[:80], y[:80], epochs=3, batch_size=16,
                                        validation_data=(x[80:], y[80:]), verbose=0)
    return state, history


def test_history_is_keras_shaped(trained):
    _, history = trained
    assert list(history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 3 and all(isinstance(f, float) for f in v) for v in history.values())
    assert history["loss"][-1] < history["loss"][0]


def test_evaluate_is_exact_over_a_partial_last_batch(binary_trainer, trained, blobs):
    state, _ = trained
    x, y = blobs
    results = binary_trainer.evaluate(state, x, y, batch_size=32)  # 100 = 3 * 32 + 4
    logits = np.asarray(binary_trainer.model.apply({"params": state.params}, x))[:, 0]
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert results["loss"] == pytest.approx(loss, rel=1e-5)
    assert results["accuracy"] == pytest.approx(np.mean((logits > 0) == y), abs=1e-7)


def test_predict_returns_probabilities_for_every_example(binary_trainer, trained, blobs):
    state, _ = trained
    x, _ = blobs
    probs = binary_trainer.predict(state, x, batch_size=32)
    logits = binary_trainer.model.apply({"params": state.params}, x)
    assert probs.shape == (100, 1)
    np.testing.assert_allclose(probs, jax.nn.sigmoid(logits), rtol=1e-5, atol=1e-7)


def test_same_seed_gives_identical_params(binary_trainer, blobs):
    x, y = blobs
    runs = []
    for _ in range(2):
        state = binary_trainer.init(jax.random.key(3), x[:1])
        state, _ = binary_trainer.fit(state, x, y, epochs=2, batch_size=16, seed=5, verbose=0)
        runs.append(jax.device_get(state.params))
    jax.tree.map(np.testing.assert_array_equal, *runs)


def test_fused_dispatch_equals_per_step_dispatch(binary_trainer, blobs):
    x, y = blobs
    init = binary_trainer.init(jax.random.key(1), x[:1])
    results = {}
    for spd in ("auto", 1, 3, "epoch", 14):  # 14 steps = 2 epochs of 7 per dispatch
        state, history = binary_trainer.fit(init, x, y, epochs=3, batch_size=16, verbose=0,
                                            steps_per_dispatch=spd)
        results[spd] = (state.params, history)
        assert int(state.step) == 21
    for spd, (params, history) in results.items():
        _allclose(params, results[1][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(history["loss"], results[1][1]["loss"], rtol=1e-5), spd


def test_fit_matches_a_plain_optax_loop(blobs):
    """Same order, same padding: jaxdl's fit is a plain loop, numerically."""
    x, y = blobs
    model = jdl.models.MLP(features=(16, 1))
    trainer = jdl.Trainer(model, optimizer=optax.sgd(0.1), loss="binary_crossentropy")
    state = trainer.init(jax.random.key(0), x[:1])
    params, tx = state.params, optax.sgd(0.1)
    opt_state = tx.init(params)
    fitted, _ = trainer.fit(state, x, y, epochs=2, batch_size=32, seed=7, verbose=0)

    @jax.jit
    def plain_step(params, opt_state, xb, yb, mb):
        def loss_fn(p):
            logits = model.apply({"params": p}, xb)[:, 0]
            losses = optax.sigmoid_binary_cross_entropy(logits, yb.astype(jnp.float32))
            return jnp.sum(losses * mb) / jnp.sum(mb)
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for epoch in range(2):
        order = arrays.epoch_order(7, epoch, len(x))
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            pad = 32 - len(idx)
            xb = np.concatenate([x[idx], np.repeat(x[:1], pad, 0)])
            yb = np.concatenate([y[idx], np.repeat(y[:1], pad, 0)])
            mb = np.r_[np.ones(len(idx)), np.zeros(pad)].astype(np.float32)
            params, opt_state = plain_step(params, opt_state, xb, yb, mb)
    _allclose(fitted.params, params, rtol=1e-5, atol=1e-6)


def test_second_fit_does_not_recompile(binary_trainer, blobs):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    binary_trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    before = binary_trainer.programs.traces["block"]
    with jax.log_compiles(False):
        binary_trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0, seed=9)
    assert binary_trainer.programs.traces["block"] == before


def test_validation_split_holds_out_the_tail(binary_trainer, blobs):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    state, history = binary_trainer.fit(state, x, y, epochs=1, batch_size=16,
                                        validation_split=0.2, verbose=0)
    tail = binary_trainer.evaluate(state, x[80:], y[80:])
    assert history["val_loss"][0] == pytest.approx(tail["loss"], rel=1e-6)


def test_fit_keeps_the_callers_state_valid(binary_trainer, blobs):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    binary_trainer.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    assert int(state.step) == 0 and np.isfinite(np.asarray(state.params["dense_0"]["kernel"])).all()


def test_dispatch_shape_policy():
    assert plan.dispatch_shape(7, 10, "auto", every_epoch=False, loop_friendly=True) == (10, 7)
    assert plan.dispatch_shape(7, 10, "auto", every_epoch=True, loop_friendly=True) == (1, 7)
    assert plan.dispatch_shape(7, 10, "auto", every_epoch=False, loop_friendly=False) == (1, 1)
    assert plan.dispatch_shape(7, 10, 3, every_epoch=False, loop_friendly=True) == (1, 3)
    assert plan.dispatch_shape(7, 10, 21, every_epoch=False, loop_friendly=True) == (3, 7)
    assert plan.dispatch_shape(5000, 2, "auto", every_epoch=False, loop_friendly=True) == (1, 1667)


def test_auto_dispatches_a_cnn_per_step_on_cpu():
    """XLA:CPU runs convolutions in rolled loops ~15x slower (benchmarks/cnn_dispatch.py):
    "auto" must fall back to per-step dispatch there, and give the same result."""
    import flax.linen as nn

    class TinyCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    trainer = jdl.Trainer(TinyCNN(), loss="sparse_categorical_crossentropy")
    state = trainer.init(jax.random.key(0), x[:1])
    assert not trainer.programs.loop_friendly(state, x)
    auto, _ = trainer.fit(state, x, y, epochs=2, batch_size=8, verbose=0)
    per_step, _ = trainer.fit(state, x, y, epochs=2, batch_size=8, verbose=0,
                              steps_per_dispatch=1)
    jax.tree.map(np.testing.assert_array_equal, auto.params, per_step.params)
    assert trainer.programs.traces["block"] == 1  # both ran the same 1x1 block
