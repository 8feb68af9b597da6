"""On-device augmentations: statistics, exact crops, per-example keys, mixup, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data import augment

KEY = jax.random.key(0)
IMAGES = jnp.asarray(np.random.default_rng(0).normal(size=(16, 5, 5, 2)), jnp.float32)
LABELS = jnp.arange(16) % 3

ALL = {"gaussian_noise": augment.gaussian_noise(0.5),
       "feature_dropout": augment.feature_dropout(0.3),
       "random_flip": augment.random_flip(vertical=True),
       "random_crop": augment.random_crop(1, mode="edge")}


@pytest.mark.parametrize("name", sorted(ALL))
def test_shapes_dtypes_and_per_example_keys(name):
    aug = ALL[name]
    out, y = jax.jit(aug)(KEY, IMAGES, LABELS)
    assert out.shape == IMAGES.shape and out.dtype == IMAGES.dtype
    np.testing.assert_array_equal(y, LABELS)  # labels pass through untouched
    again, _ = aug(KEY, IMAGES, LABELS)  # eager equals jitted, and a fixed key repeats
    np.testing.assert_allclose(again, out, rtol=1e-6, atol=1e-6)
    # Example i depends on the key and i only: change the other examples, and the
    # batch size, and its output stays the same.
    other = IMAGES.at[4:].set(7.0)
    half, _ = aug(KEY, other[:8], LABELS[:8])
    np.testing.assert_allclose(half[:4], out[:4], rtol=1e-6, atol=1e-6)
    changed, _ = aug(jax.random.key(1), IMAGES, LABELS)
    assert not np.array_equal(changed, out)


def test_gaussian_noise_has_the_requested_std():
    x = jnp.zeros((4000, 8))
    out, _ = augment.gaussian_noise(0.3)(KEY, x, jnp.zeros(4000))
    noise = np.asarray(out)
    assert noise.std() == pytest.approx(0.3, rel=0.03)
    assert abs(noise.mean()) < 0.01


def test_feature_dropout_rate():
    x = jnp.ones((2000, 10))
    out, _ = augment.feature_dropout(0.25)(KEY, x, jnp.zeros(2000))
    dropped = np.asarray(out) == 0
    assert dropped.mean() == pytest.approx(0.25, abs=0.02)
    assert set(np.unique(np.asarray(out))) == {0.0, 1.0}  # zeroed or kept, never rescaled


@pytest.mark.parametrize("mode", ["constant", "edge"])
def test_random_crop_is_an_exact_shifted_window(mode):
    out, _ = augment.random_crop(2, mode=mode)(KEY, IMAGES, LABELS)
    padded = np.pad(np.asarray(IMAGES), ((0, 0), (2, 2), (2, 2), (0, 0)), mode=mode)
    shifts = set()
    for i in range(len(IMAGES)):
        windows = [(t, c) for t in range(5) for c in range(5)
                   if np.array_equal(padded[i, t:t + 5, c:c + 5], out[i])]
        assert windows, f"example {i} is not a window of its padded image"
        shifts.add(windows[0])
    assert len(shifts) > 1
    same, _ = augment.random_crop(0)(KEY, IMAGES, LABELS)
    np.testing.assert_array_equal(same, IMAGES)


def test_random_flip_flips_or_keeps_each_image():
    images = np.random.default_rng(1).normal(size=(32, 4, 4, 1)).astype(np.float32)
    out, _ = augment.random_flip()(KEY, jnp.asarray(images), jnp.zeros(32))
    flipped = (np.asarray(out) == images[:, :, ::-1]).all(axis=(1, 2, 3))
    kept = (np.asarray(out) == images).all(axis=(1, 2, 3))
    assert (flipped | kept).all() and 0 < flipped.sum() < 32
    down, _ = augment.random_flip(horizontal=False, vertical=True)(KEY, jnp.asarray(images),
                                                                   jnp.zeros(32))
    flipped = (np.asarray(down) == images[:, ::-1]).all(axis=(1, 2, 3))
    assert (flipped | (np.asarray(down) == images).all(axis=(1, 2, 3))).all()
    assert 0 < flipped.sum() < 32
    with pytest.raises(ValueError, match=r"argument 'x': expected images \[B, H, W, C\]"):
        augment.random_flip()(KEY, jnp.zeros((3, 4)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"argument 'x': expected images \[B, H, W, C\]"):
        augment.random_crop(1)(KEY, jnp.zeros((3, 4, 4)), jnp.zeros(3))


def test_compose_splits_the_key_per_augmentation():
    noise, drop = augment.gaussian_noise(1.0), augment.feature_dropout(0.5)
    x = jnp.ones((8, 3))
    out, _ = jax.jit(augment.compose(noise, drop))(KEY, x, x)
    k_noise, k_drop = jax.random.split(KEY)
    expected, _ = drop(k_drop, *noise(k_noise, x, x))
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(augment.compose()(KEY, x, x)[0], x)


@pytest.mark.parametrize("label_shape", [(2,), ()])
def test_mixup_is_a_convex_combination_with_one_lambda(label_shape):
    n = 12
    x = jnp.eye(n)  # x_i = e_i, so row i of the output reveals lam_i and its partner
    y = (jax.nn.one_hot(jnp.arange(n) % 2, 2) if label_shape
         else (jnp.arange(n) % 2).astype(jnp.float32))
    mx, my = jax.jit(augment.mixup(0.4))(KEY, x, y)
    mx, my, x, y = map(np.asarray, (mx, my, x, y))
    partners = []
    for i in range(n):
        rest = np.delete(mx[i], i)
        partner = i if np.allclose(rest, 0) else int(np.delete(np.arange(n), i)[rest.argmax()])
        lam = mx[i, i] if partner != i else 1.0
        assert 0 <= lam <= 1
        np.testing.assert_allclose(mx[i], lam * x[i] + (1 - lam) * x[partner], atol=1e-6)
        np.testing.assert_allclose(my[i], lam * y[i] + (1 - lam) * y[partner], atol=1e-6)
        partners.append(partner)
    assert sorted(partners) == list(range(n))  # a permutation of the batch
    with pytest.raises(ValueError, match="float labels for mixup.*categorical_crossentropy"):
        augment.mixup(0.4)(KEY, x, jnp.arange(n))


@pytest.mark.parametrize("factory,kwargs", [
    (augment.gaussian_noise, dict(stddev=-1.0)), (augment.gaussian_noise, dict(stddev="1")),
    (augment.feature_dropout, dict(rate=1.0)), (augment.feature_dropout, dict(rate=None)),
    (augment.random_crop, dict(padding=-1)), (augment.random_crop, dict(padding=1.5)),
    (augment.random_crop, dict(padding=True)), (augment.random_crop, dict(padding=1, mode="x")),
    (augment.mixup, dict(alpha=0.0)),
])
def test_bad_arguments_are_named(factory, kwargs):
    with pytest.raises(ValueError, match=f"argument '{list(kwargs)[-1]}'"):
        factory(**kwargs)


def test_bad_batches_are_named_at_trace_time():
    with pytest.raises(TypeError, match=r"argument 'augments\[1\]'"):
        augment.compose(augment.gaussian_noise(0.1), "flip")
    with pytest.raises(ValueError, match="argument 'x': expected float inputs for gaussian_noise"):
        augment.gaussian_noise(0.1)(KEY, jnp.ones((4, 2), jnp.int32), jnp.zeros(4))
    with pytest.raises(ValueError, match="argument 'y': expected labels .* batch size of x"):
        augment.mixup(0.2)(KEY, jnp.ones((4, 2)), jnp.zeros(3))
