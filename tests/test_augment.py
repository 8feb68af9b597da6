"""On-device augmentations: statistics, exact crops, determinism, mixup."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data import augment

KEY = jax.random.key(0)


def test_gaussian_noise_has_the_requested_std():
    x = jnp.zeros((4000, 8))
    out, _ = jax.jit(augment.gaussian_noise(0.3))(KEY, x, jnp.zeros(4000))
    assert float(out.std()) == pytest.approx(0.3, rel=0.03)


def test_feature_dropout_rate():
    x = jnp.ones((2000, 10))
    out, _ = augment.feature_dropout(0.25)(KEY, x, jnp.zeros(2000))
    assert float((out == 0).mean()) == pytest.approx(0.25, abs=0.02)


def test_random_crop_is_an_exact_shifted_window():
    images = jnp.asarray(np.random.default_rng(0).normal(size=(16, 5, 5, 2)), jnp.float32)
    out, _ = jax.jit(augment.random_crop(2))(KEY, images, jnp.zeros(16))
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    shifts = set()
    for i in range(16):
        windows = [(t, c) for t in range(5) for c in range(5)
                   if np.array_equal(padded[i, t:t + 5, c:c + 5], out[i])]
        assert windows, f"example {i} is not a window of its padded image"
        shifts.add(windows[0])
    assert len(shifts) > 1


def test_random_flip_flips_or_keeps_each_image():
    images = jnp.asarray(np.random.default_rng(1).normal(size=(32, 4, 4, 1)), jnp.float32)
    out, _ = augment.random_flip()(KEY, images, jnp.zeros(32))
    flipped = [bool(jnp.array_equal(o, i[:, ::-1])) for o, i in zip(out, images, strict=True)]
    kept = [bool(jnp.array_equal(o, i)) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 32
    with pytest.raises(ValueError, match=r"argument 'x': expected images \[B, H, W, C\]"):
        augment.random_flip()(KEY, jnp.zeros((3, 4)), jnp.zeros(3))


def test_per_example_keys_are_deterministic():
    aug = augment.compose(augment.gaussian_noise(1.0), augment.feature_dropout(0.5))
    x = jnp.ones((8, 3))
    a, _ = aug(KEY, x, x)
    b, _ = aug(KEY, x, x)
    c, _ = aug(jax.random.key(1), x, x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mixup_mixes_inputs_and_labels_with_one_lambda():
    x = jnp.arange(8.0)[:, None] * jnp.ones((8, 3))
    y = jax.nn.one_hot(jnp.arange(8) % 2, 2)
    mx, my = augment.mixup(0.4)(KEY, x, y)
    # x rows are constant and equal to their index, so lam is recoverable from y.
    lam_x = mx[:, 0]
    assert bool(jnp.all((lam_x >= 0) & (lam_x <= 7)))
    np.testing.assert_allclose(my.sum(1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="float labels for mixup"):
        augment.mixup(0.4)(KEY, x, jnp.arange(8))


@pytest.mark.parametrize("factory,kwargs", [
    (augment.gaussian_noise, dict(stddev=-1.0)), (augment.feature_dropout, dict(rate=1.0)),
    (augment.random_crop, dict(padding=-1)), (augment.mixup, dict(alpha=0.0)),
])
def test_bad_arguments_are_named(factory, kwargs):
    with pytest.raises(ValueError, match=f"argument '{next(iter(kwargs))}'"):
        factory(**kwargs)
