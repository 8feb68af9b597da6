"""Attributions: completeness, agreement with per-example jax.grad, one program per batch,
permutation importance, and `explain_workdir` end to end on a tiny run."""

import csv
import functools

import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import experiment as run
from jaxdl import explain
from jaxdl.experiment import config as config_lib
from jaxdl.experiment import explain_run as explain_report


def _linear(w, b):
    return lambda x: x @ w + b


def test_integrated_gradients_is_exact_on_a_linear_model():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 1)).astype(np.float32)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    baseline = rng.normal(size=(6,)).astype(np.float32)
    attributions = explain.integrated_gradients(_linear(w, 0.5), x, baseline, steps=8)
    np.testing.assert_allclose(attributions, w[:, 0] * (x - baseline), rtol=1e-5, atol=1e-6)
    # Completeness, and saliency of a linear model is its weight row for every example.
    np.testing.assert_allclose(attributions.sum(axis=1), ((x - baseline) @ w)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(explain.saliency(_linear(w, 0.5), x), np.tile(w[:, 0], (4, 1)))


def test_integrated_gradients_completeness_on_a_nonlinear_mlp(tanh_mlp):
    predict_fn, x = tanh_mlp
    baseline = np.full(x.shape[1:], 0.3, np.float32)
    outputs, reference = np.asarray(predict_fn(x)), np.asarray(predict_fn(baseline[None]))[0]
    target = np.argmax(outputs, axis=1)
    gap = outputs[np.arange(len(x)), target] - reference[target]
    attributions = explain.integrated_gradients(predict_fn, x, baseline)  # argmax targets
    np.testing.assert_allclose(attributions.sum(axis=1), gap, rtol=1e-2, atol=1e-3)
    # The same, chunked into a scan over path points, and for a chosen class.
    chunked = explain.integrated_gradients(predict_fn, x, baseline, target=target,
                                           points_per_chunk=7)
    np.testing.assert_allclose(chunked, attributions, rtol=1e-4, atol=1e-6)
    other = explain.integrated_gradients(predict_fn, x, baseline, target=0)
    np.testing.assert_allclose(other.sum(axis=1), outputs[:, 0] - reference[0], rtol=1e-2,
                               atol=1e-3)


def test_integrated_gradients_of_probabilities():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 1)).astype(np.float32)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    attributions = explain.integrated_gradients(_linear(w, 0.2), x, probabilities=True,
                                                link=jax.nn.sigmoid)
    expected = jax.nn.sigmoid(x @ w + 0.2)[:, 0] - jax.nn.sigmoid(0.2)
    np.testing.assert_allclose(attributions.sum(axis=1), expected, rtol=1e-3, atol=1e-5)


def test_saliency_equals_per_example_grad(tanh_mlp):
    predict_fn, x = tanh_mlp
    x = x[:3]
    target = np.array([2, 0, 1])
    batched = explain.saliency(predict_fn, x, target)
    argmax = explain.saliency(predict_fn, x)
    probs = explain.saliency(predict_fn, x, target, probabilities=True)
    for i in range(3):
        logit = lambda xi, t: predict_fn(xi[None])[0, t]
        np.testing.assert_allclose(batched[i], jax.grad(logit)(x[i], target[i]), rtol=1e-5,
                                   atol=1e-7)
        predicted = int(np.argmax(predict_fn(x[i:i + 1])[0]))
        np.testing.assert_allclose(argmax[i], jax.grad(logit)(x[i], predicted), rtol=1e-5,
                                   atol=1e-7)
        prob = lambda xi, t: jax.nn.softmax(predict_fn(xi[None])[0])[t]
        np.testing.assert_allclose(probs[i], jax.grad(prob)(x[i], target[i]), rtol=1e-5,
                                   atol=1e-7)


def test_a_batch_of_32_is_one_program_and_a_new_state_does_not_recompile():
    model = jdl.models.MLP(features=(8, 3), activation="gelu")
    x = np.asarray(jax.random.normal(jax.random.key(2), (32, 6)))
    variables = model.init(jax.random.key(0), x[:1])
    calls = []

    def apply(variables, x):
        calls.append(x.shape)  # one entry per trace, never per example
        return model.apply(variables, x)

    first = explain.saliency(functools.partial(apply, variables), x)
    assert first.shape == (32, 6)
    traces = len(calls)
    assert traces <= 3  # shape check, argmax, grad: not 32 of anything
    shifted = jax.tree.map(lambda p: p + 0.1, variables)
    second = explain.saliency(functools.partial(apply, shifted), x)
    assert len(calls) == traces + 1  # only the host-side shape check traced again
    assert not np.allclose(first, second)
    predicted = np.argmax(model.apply(shifted, x), axis=1)
    logit = lambda xi, t: model.apply(shifted, xi[None])[0, t]
    for i in (0, 17, 31):
        np.testing.assert_allclose(second[i], jax.grad(logit)(x[i], predicted[i]), rtol=1e-5,
                                   atol=1e-7)


def test_bad_arguments_are_named():
    w = np.ones((3, 2), np.float32)
    x = np.ones((4, 3), np.float32)
    with pytest.raises(jdl.InputError, match="argument 'target'.*\\[0, 1\\]"):
        explain.saliency(_linear(w, 0.0), x, target=np.array([0, 1, 2, 0]))
    with pytest.raises(jdl.InputError, match="argument 'target'"):
        explain.saliency(_linear(w, 0.0), x, target=np.zeros(3, int))
    with pytest.raises(jdl.InputError, match="argument 'baseline'"):
        explain.integrated_gradients(_linear(w, 0.0), x, baseline=np.zeros(5))
    with pytest.raises(jdl.InputError, match="argument 'steps'"):
        explain.integrated_gradients(_linear(w, 0.0), x, steps=0)
    with pytest.raises(jdl.InputError, match="argument 'x'.*NaN"):
        explain.saliency(_linear(w, 0.0), np.full((2, 3), np.nan, np.float32))
    with pytest.raises(jdl.InputError, match="argument 'x'.*predict_fn said"):
        explain.saliency(_linear(w, 0.0), np.ones((2, 4), np.float32))


def test_permutation_importance_finds_the_informative_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = 2.0 * x[:, 0] + 0.1 * rng.normal(size=300)
    w = np.linalg.lstsq(x, y, rcond=None)[0]
    neg_mse = lambda x, y: -float(np.mean((x @ w - y) ** 2))
    mean, std = explain.permutation_importance(neg_mse, x, y, n_repeats=4, seed=0)
    assert mean.shape == std.shape == (5,)
    assert np.argmax(mean) == 0 and mean[0] > 100 * np.abs(mean[1:]).max()
    again = explain.permutation_importance(neg_mse, x, y, n_repeats=4, seed=0)
    np.testing.assert_array_equal(again[0], mean)  # permutations depend only on the seed
    with pytest.raises(jdl.InputError, match="argument 'n_repeats'"):
        explain.permutation_importance(neg_mse, x, y, n_repeats=0)


def test_image_attributions_plot_as_a_heat_map(tmp_path):
    attributions = np.random.default_rng(0).normal(size=(2, 8, 8, 3))
    explain_report.plot_attributions(attributions, [], tmp_path / "heat.png")
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("explain_run")
    config = config_lib.load_config(config_lib.default_config_path())
    config.epochs = 2
    run.train_and_evaluate(config, workdir, quiet=True)
    raw = jdl.data.datasets.raw_arrays("breast_cancer")[0][:5]
    np.save(workdir / "rows.npy", raw)
    return workdir, raw


def test_explain_workdir_writes_csv_and_png(tiny_run):
    workdir, raw = tiny_run
    out_csv, out_png = workdir / "out" / "attr.csv", workdir / "out" / "attr.png"
    attributions = explain_report.explain_workdir(workdir, workdir / "rows.npy", out_csv, out_png)
    assert attributions.shape == (5, 30) and np.isfinite(attributions).all()
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(jdl.data.datasets.FEATURE_NAMES["breast_cancer"])
    assert len(rows) == 6 and all(len(r) == 30 for r in rows)
    np.testing.assert_allclose(np.asarray(rows[1:], np.float64), attributions, rtol=1e-6)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Completeness on the run's own logits, in the normalized space it explains. The model
    # is a ReLU net (kinks along the path), so the trapezoid gap shrinks like 1/steps.
    config, trainer, state, meta = run.restore_from_workdir(workdir)
    scaled = np.asarray(jdl.data.transforms.scaler_from_dict(meta["scaler"])(raw))
    logits = np.asarray(trainer.programs.outputs(state, scaled))[:, 0]
    gap = logits - float(trainer.programs.outputs(state, np.zeros((1, 30), np.float32))[0, 0])
    np.testing.assert_allclose(attributions.sum(axis=1), gap, rtol=5e-2, atol=1e-3)
    finer = explain_report.explain_workdir(workdir, workdir / "rows.npy", out_csv, steps=512)
    np.testing.assert_allclose(finer.sum(axis=1), gap, rtol=1e-2, atol=1e-3)


def test_explain_workdir_validates_its_inputs(tiny_run, tmp_path):
    workdir, raw = tiny_run
    with pytest.raises(jdl.InputError, match="--method.*integrated_gradients.*saliency"):
        explain_report.explain_workdir(workdir, workdir / "rows.npy", method="shap")
    np.save(tmp_path / "narrow.npy", raw[:, :29])
    with pytest.raises(jdl.InputError, match="--input.*30"):
        explain_report.explain_workdir(workdir, tmp_path / "narrow.npy")
    bad = raw.copy()
    bad[3, 4] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(jdl.InputError, match="--input.*NaN/inf.*row 3"):
        explain_report.explain_workdir(workdir, tmp_path / "bad.npy")
    with pytest.raises(jdl.InputError, match="--input.*does not exist"):
        explain_report.explain_workdir(workdir, tmp_path / "missing.csv")


def test_explain_workdir_saliency_from_csv_to_stdout(tiny_run, tmp_path, capsys):
    workdir, raw = tiny_run
    np.savetxt(tmp_path / "rows.csv", raw[:2], delimiter=",")
    attributions = explain_report.explain_workdir(workdir, tmp_path / "rows.csv", method="saliency",
                                           batch_size=3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("mean radius,")
    assert attributions.shape == (2, 30)
    assert np.isfinite(attributions).all()
