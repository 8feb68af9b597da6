"""Gradient accumulation: k micro-batches in one step give the whole batch's update."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl as jdl
from jaxdl import losses, metrics, step
from jaxdl.data import augment as augment_lib

BCE = losses.get("binary_crossentropy")
TOL = dict(rtol=2e-5, atol=2e-6)


def _close(a, b, **tol):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **(tol or TOL)), a, b)


def _batch(x, y, real, size=16):
    """Rows [0, real) of (x, y), padded to ``size`` rows with other rows masked out."""
    return {"x": jnp.asarray(x[:size]), "y": jnp.asarray(y[:size]),
            "mask": jnp.asarray(np.arange(size) < real, jnp.float32)}


def _state(model, tx, x):
    params = model.init(jax.random.key(0), jnp.asarray(x[:1]))["params"]
    return jdl.TrainState.create(params, tx, jax.random.key(1))


@functools.cache
def _steps(k: int, nan_policy: str = "none"):
    model = jdl.models.MLP(features=(8, 1))
    tx = optax.adam(0.05)
    train = step.make_train_step(model, BCE, tx, [metrics.get("accuracy", "binary")],
                                 nan_policy=nan_policy, grad_accum_steps=k)
    return model, tx, jax.jit(train)


@pytest.mark.parametrize("real", [16, 10, 2])  # 10, 2: micro-batches of unequal real counts
def test_accumulated_step_equals_the_whole_batch_step(blobs, real):
    x, y = blobs
    model, tx, whole = _steps(1)
    _, _, accumulated = _steps(4)
    state = _state(model, tx, x)
    batch = _batch(x, y, real)
    a, stats_a = whole(state, batch)
    b, stats_b = accumulated(state, batch)
    _close(a.params, b.params)
    _close(a.opt_state, b.opt_state)
    _close(stats_a, stats_b)
    assert int(b.step) == 1


def test_accumulated_steps_equal_a_hand_written_optax_loop(blobs):
    x, y = blobs
    model, tx, accumulated = _steps(4)
    state = _state(model, tx, x)
    params, opt_state = state.params, tx.init(state.params)

    def loss_fn(p, xb, yb, mb):
        logits = model.apply({"params": p}, xb)[:, 0]
        per_example = optax.sigmoid_binary_cross_entropy(logits, yb.astype(jnp.float32))
        return jnp.sum(per_example * mb) / jnp.sum(mb)

    for i, real in enumerate([16, 16, 7]):
        batch = _batch(x[16 * i:], y[16 * i:], real)
        state, stats = accumulated(state, batch)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch["x"], batch["y"],
                                                  batch["mask"])
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        total, count = stats["loss"]
        np.testing.assert_allclose(total / count, loss, rtol=1e-5)
        assert float(count) == real
    _close(state.params, params)


def test_accumulation_checks_its_arguments(blobs):
    x, y = blobs
    model, tx, accumulated = _steps(4)
    with pytest.raises(jdl.errors.InputError, match=r"argument 'batch_size': expected a batch "
                       r"divisible by grad_accum_steps=4 .*got 18\. Fix: .*e\.g\. 16 or 20"):
        accumulated(_state(model, tx, x), _batch(x, y, 18, size=18))
    for bad in (0, 2.0, True):
        with pytest.raises(jdl.errors.InputError, match="argument 'grad_accum_steps'"):
            step.make_train_step(model, BCE, tx, grad_accum_steps=bad)


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(1)(nn.relu(x))


def test_batch_statistics_are_threaded_through_the_micro_batches(blobs):
    """BatchNorm sees micro-batch statistics, and its running averages are updated once per
    micro-batch, in order; the gradients are the sum of the micro-batches' gradients."""
    x, y = blobs
    model, tx = _BatchNormNet(), optax.sgd(0.1)
    variables = model.init(jax.random.key(0), jnp.asarray(x[:2]))
    state = jdl.TrainState.create(variables["params"], tx, jax.random.key(1),
                                  {"batch_stats": variables["batch_stats"]})
    batch = _batch(x, y, 12)
    new, _ = jax.jit(step.make_train_step(model, BCE, tx, grad_accum_steps=2))(state, batch)

    model_state, grads = state.model_state, None
    for xb, yb, mb in zip(*step.split_micro_batches((batch["x"], batch["y"], batch["mask"]), 2),
                          strict=True):
        def loss_fn(p, xb=xb, yb=yb, mb=mb, model_state=model_state):
            out, upd = model.apply({"params": p, **model_state}, xb, train=True,
                                   mutable=["batch_stats"])
            per_example = optax.sigmoid_binary_cross_entropy(out[:, 0], yb.astype(jnp.float32))
            return jnp.sum(per_example * mb) / 12.0, upd

        (_, model_state), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    expected = optax.apply_updates(state.params, tx.update(grads, tx.init(state.params))[0])
    _close(new.params, expected)
    _close(new.model_state, dict(model_state))


def test_dropout_draws_one_key_per_micro_batch(blobs):
    x, y = blobs
    model, tx = jdl.models.MLP(features=(16, 1), dropout_rate=0.5), optax.sgd(0.1)
    state = _state(model, tx, x)
    batch = _batch(x, y, 16)
    _, stats = jax.jit(step.make_train_step(model, BCE, tx, grad_accum_steps=2))(state, batch)
    dropout_key = jax.random.split(jax.random.fold_in(state.rng, state.step))[1]
    total = 0.0
    for i, (xb, yb) in enumerate(zip(*step.split_micro_batches((batch["x"], batch["y"]), 2),
                                     strict=True)):
        out = model.apply({"params": state.params}, xb, train=True,
                          rngs={"dropout": jax.random.fold_in(dropout_key, i)})
        total += optax.sigmoid_binary_cross_entropy(out[:, 0], yb.astype(jnp.float32)).sum()
    np.testing.assert_allclose(stats["loss"][0], total, rtol=1e-5)


def test_augmentation_runs_on_the_whole_batch_before_the_split(blobs):
    """Per-example augmentation keys depend on the row in the whole batch, so accumulating
    changes nothing: the augmented step with k micro-batches equals the k=1 step."""
    x, y = blobs
    model, tx = jdl.models.MLP(features=(8, 1)), optax.adam(0.05)
    state = _state(model, tx, x)
    aug = augment_lib.gaussian_noise(0.3)
    a, _ = jax.jit(step.make_train_step(model, BCE, tx, augment=aug))(state, _batch(x, y, 13))
    b, _ = jax.jit(step.make_train_step(model, BCE, tx, augment=aug, grad_accum_steps=4))(
        state, _batch(x, y, 13))
    _close(a.params, b.params)


def test_nan_policy_sees_the_accumulated_step(blobs):
    x, y = blobs
    model, tx, accumulated = _steps(4, "skip")
    _, _, whole = _steps(1, "skip")
    state = _state(model, tx, x)
    a, stats_a = whole(state, _batch(x, y, 16))
    b, stats_b = accumulated(state, _batch(x, y, 16))
    _close(a.params, b.params)
    _close(stats_a, stats_b)
    bad = _batch(np.where(np.arange(len(x))[:, None] == 5, np.nan, x), y, 16)
    c, stats_c = accumulated(state, bad)  # one non-finite row in micro-batch 1
    assert float(stats_c["nonfinite"]["count"]) == 1.0
    assert int(c.step) == 1
    _close(c.params, state.params, rtol=0, atol=0)


def _fit(batch_size=32, **kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    y = (x @ rng.normal(size=8) > 0).astype(np.int32)
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          optimizer="adam", learning_rate=0.05, metrics=["accuracy"], **kwargs)
    state = trainer.init(jax.random.key(0), x[:1])
    return trainer.fit(state, x, y, epochs=1, batch_size=batch_size, verbose=0)


@pytest.mark.parametrize("options", [
    {}, {"mesh": {"data": 8}}, {"mesh": {"data": 8}, "strategy": "shard_map"},
    {"mesh": {"data": 8}, "strategy": "pmap"}], ids=["one_device", "auto", "shard_map", "pmap"])
def test_trainer_accumulates_under_every_strategy(options):
    """k=2 equals k=1 under each strategy, a padded last batch (4 real rows of 32) included."""
    state, history = _fit(grad_accum_steps=2, **options)
    reference, reference_history = _fit(**options)
    _close(jax.device_get(state.params), jax.device_get(reference.params))
    np.testing.assert_allclose(history["loss"], reference_history["loss"], rtol=1e-6)
    np.testing.assert_allclose(history["accuracy"], reference_history["accuracy"])


def test_shard_map_names_the_per_device_batch():
    with pytest.raises(jdl.errors.InputError, match=r"argument 'batch_size': expected a batch "
                       r"whose share on each of the 8 devices .* got 16 \(2 per device\)\. Fix: "
                       r"use a batch_size that is a multiple of 4 x 8 = 32"):
        _fit(batch_size=16, grad_accum_steps=4, mesh={"data": 8}, strategy="shard_map")
