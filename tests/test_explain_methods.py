"""The attribution methods against independent references written here in plain JAX or
numpy (per-example ``jax.grad`` loops, explicit windows, quadrature), and completeness
where a method has it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import explain


@pytest.fixture(scope="module")
def relu_mlp():
    """A random 1-output ReLU MLP (kinks: integrated gradients converge slowly)."""
    model = jdl.models.MLP(features=(32, 32, 1), activation="relu")
    x = 2.0 * jax.random.normal(jax.random.key(3), (16, 8))
    variables = model.init(jax.random.key(2), x[:1])
    return functools.partial(model.apply, variables), np.asarray(x)


def _logit(predict_fn):
    return lambda xi, t: predict_fn(xi[None])[0, t]


@functools.cache
def _path_grads(predict_fn):
    return jax.jit(jax.vmap(jax.grad(_logit(predict_fn)), in_axes=(0, None)))


def _reference_ig(predict_fn, xi, bi, t, points=513):
    """Integrated gradients of one example: jax.grad at every path point, np.trapezoid."""
    alphas = np.linspace(0.0, 1.0, points, dtype=np.float32)
    path = bi[None] + alphas[:, None] * (xi - bi)[None]
    grads = np.asarray(_path_grads(predict_fn)(jnp.asarray(path, jnp.float32), t))
    return (xi - bi) * np.trapezoid(grads, alphas, axis=0)


def test_gradient_x_input_is_x_times_the_per_example_gradient(tanh_mlp):
    predict_fn, x = tanh_mlp
    target = np.arange(len(x)) % 3
    got = explain.gradient_x_input(predict_fn, x, target)
    want = np.stack([x[i] * np.asarray(jax.grad(_logit(predict_fn))(x[i], target[i]))
                     for i in range(len(x))])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # A linear model without bias: complete exactly, f(x) - f(0) = x @ w.
    w = np.random.default_rng(0).normal(size=(5, 1)).astype(np.float32)
    e = explain.attribute("gradient_x_input", lambda x: x @ w, x)
    np.testing.assert_allclose(e.attributions, x * w[:, 0], rtol=1e-6)
    np.testing.assert_allclose(e.attributions.sum(axis=1), (x @ w)[:, 0], rtol=1e-5)
    assert np.abs(e.gap).max() < 1e-5 and (e.reference == 0).all()


def test_integrated_gradients_match_a_quadrature_reference(tanh_mlp):
    predict_fn, x = tanh_mlp
    baseline = np.full(5, -0.2, np.float32)
    attributions, gap = explain.integrated_gradients(predict_fn, x, baseline, steps=128,
                                                     target=2, return_gap=True)
    want = np.stack([_reference_ig(predict_fn, x[i], baseline, 2) for i in range(len(x))])
    np.testing.assert_allclose(attributions, want, rtol=1e-3, atol=1e-4)
    outputs = np.asarray(predict_fn(x))[:, 2]
    reference = float(np.asarray(predict_fn(baseline[None]))[0, 2])
    np.testing.assert_allclose(gap.gap, attributions.sum(axis=1) - (outputs - reference),
                               atol=1e-5)
    np.testing.assert_allclose(gap.output, outputs, rtol=1e-6)
    assert np.abs(gap.relative).max() < 1e-3 and (gap.steps == 128).all()


def test_steps_auto_grows_until_every_row_meets_the_tolerance(relu_mlp):
    predict_fn, x = relu_mlp
    _, fixed = explain.integrated_gradients(predict_fn, x, steps=32, return_gap=True)
    assert (fixed.relative > 0.002).any()  # 32 steps miss somewhere on this ReLU net
    attributions, gap = explain.integrated_gradients(predict_fn, x, steps="auto",
                                                     tolerance=0.002, return_gap=True)
    delta = np.asarray(predict_fn(x))[:, 0] - float(np.asarray(predict_fn(np.zeros((1, 8))))[0, 0])
    independent = np.abs(attributions.sum(axis=1) - delta) / np.abs(delta)
    assert independent.max() < 0.0025 and gap.relative.max() <= 0.002
    assert set(gap.steps) <= {32, 64, 128, 256, 512, 1024} and gap.steps.max() > 32
    # Each row keeps the result at its own step count: equal to a fixed-steps call.
    row = int(np.argmax(gap.steps))
    again = explain.integrated_gradients(predict_fn, x[row:row + 1], steps=int(gap.steps[row]))
    np.testing.assert_allclose(attributions[row], again[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(jdl.InputError, match="argument 'steps'.*'auto'"):
        explain.integrated_gradients(predict_fn, x, steps="many")


def test_expected_gradients_are_exact_on_a_linear_model():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 1)).astype(np.float32)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    background = rng.normal(size=(4, 6)).astype(np.float32)
    attributions, gap = explain.expected_gradients(lambda x: x @ w + 0.3, x, background,
                                                   samples=8, return_gap=True)
    np.testing.assert_allclose(attributions, w[:, 0] * (x - background.mean(axis=0)),
                               rtol=1e-4, atol=1e-5)
    assert np.abs(gap.gap).max() < 1e-4


def test_expected_gradients_average_integrated_gradients_over_the_background(tanh_mlp):
    predict_fn, x = tanh_mlp
    x = x[:3]
    background = np.asarray(jax.random.normal(jax.random.key(7), (4, 5)))
    got, gap = explain.expected_gradients(predict_fn, x, background, samples=4096, target=1,
                                          return_gap=True)
    want = np.stack([np.mean([_reference_ig(predict_fn, x[i], b, 1, points=129)
                              for b in background], axis=0) for i in range(3)])
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())
    # Completeness in expectation: f(x) - mean f(background).
    delta = np.asarray(predict_fn(x))[:, 1] - np.asarray(predict_fn(background))[:, 1].mean()
    np.testing.assert_allclose(got.sum(axis=1), delta, atol=0.02 * np.abs(delta).max())
    np.testing.assert_allclose(gap.reference, np.asarray(predict_fn(background))[:, 1].mean(),
                               rtol=1e-5)
    # Row 2 explained alone, at its index: the same draws, the same attributions.
    alone = explain.expected_gradients(predict_fn, x[2:], background, samples=4096, target=1,
                                       row_offset=2)
    np.testing.assert_allclose(alone[0], got[2], rtol=1e-4, atol=1e-6)
    # GradientSHAP's input noise on a linear model only adds zero-mean noise.
    w = np.ones((5, 1), np.float32)
    noisy = explain.gradient_shap(lambda x: x @ w, x, background, samples=4096, stdev=0.1)
    np.testing.assert_allclose(noisy, x - background.mean(axis=0), atol=0.02)
    chunked = explain.gradient_shap(lambda x: x @ w, x[1:], background, samples=4096,
                                    stdev=0.1, samples_per_chunk=100, row_offset=1)
    np.testing.assert_allclose(chunked, noisy[1:], rtol=1e-4, atol=1e-5)


def test_smoothgrad_replays_its_noise_through_the_inner_method(tanh_mlp):
    predict_fn, x = tanh_mlp
    x = x[:2]
    keys = jax.random.split(jax.random.key(5), 4)  # the documented draws, row by row
    noisy = [x + 0.2 * np.stack([np.asarray(jax.random.normal(jax.random.fold_in(k, i), (5,)))
                                 for i in range(2)]) for k in keys]
    target = np.argmax(np.asarray(predict_fn(x)), axis=1)  # chosen once, at the clean input
    grads = np.stack([[np.asarray(jax.grad(_logit(predict_fn))(n[i], target[i]))
                       for i in range(2)] for n in noisy])
    got = explain.smoothgrad(predict_fn, x, samples=4, stdev=0.2, seed=5)
    np.testing.assert_allclose(got, grads.mean(axis=0), rtol=1e-4, atol=1e-6)
    vargrad = explain.smoothgrad(predict_fn, x, samples=4, stdev=0.2, seed=5, kind="vargrad")
    np.testing.assert_allclose(vargrad, grads.var(axis=0), rtol=1e-3, atol=1e-7)
    igs = np.stack([[_reference_ig(predict_fn, n[i], np.zeros(5), target[i], points=33)
                     for i in range(2)] for n in noisy])
    smooth_ig = explain.smoothgrad(predict_fn, x, samples=4, stdev=0.2, seed=5,
                                   method="integrated_gradients", steps=32)
    np.testing.assert_allclose(smooth_ig, igs.mean(axis=0), rtol=1e-3, atol=1e-5)
    # On f = sum(a x^2): E[grad at x + noise] = 2 a x, E[grad^2] = 4 a^2 (x^2 + stdev^2).
    a = np.array([1.0, -2.0, 0.5], np.float32)
    xq = np.array([[0.3, -0.1, 1.0]], np.float32)
    quadratic = lambda x: (a * x ** 2).sum(axis=1, keepdims=True)
    sq = explain.smoothgrad(quadratic, xq, samples=4000, stdev=0.5, kind="smoothgrad_sq")
    np.testing.assert_allclose(sq[0], 4 * a ** 2 * (xq[0] ** 2 + 0.25), rtol=0.1)
    # A row's noise depends on the seed and its index only, not on its batch.
    second = explain.smoothgrad(predict_fn, x[1:], samples=4, stdev=0.2, seed=5, row_offset=1)
    np.testing.assert_allclose(second[0], got[1], rtol=1e-5, atol=1e-7)
    with pytest.raises(jdl.InputError, match="argument 'method'"):
        explain.smoothgrad(predict_fn, x, method="occlusion")


def _reference_occlusion(f, image, window, stride, fill):
    """Captum-style occlusion of one [H, W, C] image with explicit numpy windows."""
    h, w, _ = image.shape
    total, count = np.zeros_like(image), np.zeros_like(image)
    full = f(image)
    rows = sorted(set(range(0, h - window + 1, stride)) | {h - window})
    cols = sorted(set(range(0, w - window + 1, stride)) | {w - window})
    for r in rows:
        for c in cols:
            occluded = image.copy()
            occluded[r:r + window, c:c + window, :] = fill
            total[r:r + window, c:c + window, :] += full - f(occluded)
            count[r:r + window, c:c + window, :] += 1
    return total / count


def test_occlusion_matches_explicit_windows():
    rng = np.random.default_rng(6)
    images = rng.uniform(size=(3, 7, 7, 2)).astype(np.float32)
    kernel = rng.normal(size=(7 * 7 * 2, 4)).astype(np.float32)
    predict_fn = lambda x: jnp.tanh(x.reshape(len(x), -1) @ kernel) ** 2
    got = explain.occlusion(predict_fn, images, window=3, stride=2, baseline=0.5, target=3)
    one = lambda image: float(np.asarray(predict_fn(image[None]))[0, 3])
    want = np.stack([_reference_occlusion(one, im, 3, 2, 0.5) for im in images])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    chunked = explain.occlusion(predict_fn, images, window=3, stride=2, baseline=0.5,
                                target=3, windows_per_chunk=4)
    np.testing.assert_allclose(chunked, got, rtol=1e-5, atol=1e-7)
    # A table with window 1: f(x) - f(x with feature j at the baseline), exactly.
    w = rng.normal(size=(4, 1)).astype(np.float32)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    table = explain.occlusion(lambda x: x @ w, x, window=1, baseline=0.0)
    np.testing.assert_allclose(table, x * w[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(jdl.InputError, match="argument 'window'"):
        explain.occlusion(predict_fn, images, window=9)


def test_attribute_records_targets_outputs_and_gaps(tanh_mlp):
    predict_fn, x = tanh_mlp
    e = explain.attribute("integrated_gradients", predict_fn, x, probabilities=True,
                          steps=64)
    probabilities = np.asarray(jax.nn.softmax(predict_fn(x)))
    np.testing.assert_array_equal(e.target, probabilities.argmax(axis=1))
    np.testing.assert_allclose(e.output, probabilities.max(axis=1), rtol=1e-6)
    at_zero = np.asarray(jax.nn.softmax(predict_fn(np.zeros((1, 5)))))[0, e.target]
    np.testing.assert_allclose(e.reference, at_zero, rtol=1e-6)
    np.testing.assert_allclose(e.gap, e.attributions.sum(axis=1) - (e.output - at_zero),
                               atol=1e-6)
    plain = explain.attribute("saliency", predict_fn, x, target=np.arange(len(x)) % 3)
    assert plain.gap is None and (plain.target == np.arange(len(x)) % 3).all()
    with pytest.raises(jdl.InputError, match="argument 'method'.*occlusion"):
        explain.attribute("lime", predict_fn, x)
