"""Optimizers and schedules against optax directly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import optim

PARAMS = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
GRADS = {"dense": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.full(2, -0.25)}}


def _one_update(tx):
    updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
    return updates


@pytest.mark.parametrize("name,reference", [
    ("adam", optax.adam(0.1)), ("sgd", optax.sgd(0.1)), ("rmsprop", optax.rmsprop(0.1)),
    ("momentum", optax.sgd(0.1, momentum=0.9)),
])
def test_names_build_the_optax_alias(name, reference):
    got, want = _one_update(optim.make_optimizer(name, 0.1)), _one_update(reference)
    jax.tree.map(np.testing.assert_allclose, got, want)


def test_weight_decay_with_adam_is_adamw_on_kernels_only():
    got = _one_update(optim.make_optimizer("adam", 0.1, weight_decay=0.01))
    want = _one_update(optax.adamw(0.1, weight_decay=0.01, mask=optim.kernel_mask))
    jax.tree.map(np.testing.assert_allclose, got, want)
    plain = _one_update(optax.adam(0.1))
    np.testing.assert_allclose(got["dense"]["bias"], plain["dense"]["bias"])


def test_l2_equals_penalty_in_the_loss():
    l2 = 0.3
    got = _one_update(optim.make_optimizer("sgd", 1.0, l2=l2))
    penalty = jax.grad(lambda p: 0.5 * l2 * jnp.sum(p["dense"]["kernel"] ** 2))(PARAMS)
    want = jax.tree.map(lambda g, q: -(g + q), GRADS, penalty)
    jax.tree.map(np.testing.assert_allclose, got, want)


def test_clip_norm_clips_before_the_optimizer():
    got = _one_update(optim.make_optimizer("sgd", 1.0, clip_norm=0.1))
    norm = optax.tree.norm(got)
    assert float(norm) == pytest.approx(0.1, rel=1e-5)


def test_schedules_match_optax():
    cosine = optim.make_schedule("warmup_cosine", 0.1, warmup_steps=10, total_steps=100)
    want = optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 100)
    for step in (0, 5, 10, 50, 99):
        assert float(cosine(step)) == pytest.approx(float(want(step)))
    step_schedule = optim.make_schedule("step", 0.1, decay_steps=10, decay_rate=0.5)
    assert [float(step_schedule(s)) for s in (0, 9, 10, 25)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.025])
    assert optim.make_schedule("constant", 0.1) == 0.1


def test_lr_scale_is_data_in_the_state():
    tx = optim.with_lr_scale(optax.sgd(1.0))
    state = tx.init(PARAMS)
    assert float(optim.lr_scale(state)) == 1.0
    state = optim.set_lr_scale(state, 0.25)
    updates, _ = tx.update(GRADS, state, PARAMS)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.125)


@pytest.mark.parametrize("kwargs,match", [
    (dict(optimizer="adamm"), "did you mean 'adam'"),
    (dict(optimizer="adam", learning_rate=0.0), "argument 'learning_rate'"),
    (dict(optimizer="adam", weight_decay=-1.0), "argument 'weight_decay'"),
    (dict(optimizer=3), "argument 'optimizer'"),
    (dict(optimizer="sgd", betas=3), "argument 'optimizer options'"),
])
def test_bad_optimizer_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        optim.make_optimizer(**kwargs)


def test_cosine_needs_total_steps():
    with pytest.raises(ValueError, match="argument 'total_steps'"):
        optim.make_schedule("cosine", 0.1)
