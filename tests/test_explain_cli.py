"""`jaxdl explain` from the command line on population, multiclass, CNN and regression
runs (one-epoch `jaxdl train` runs): what was explained is in the CSV and the JSON sidecar,
and the numbers match references computed here in plain JAX."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import cli
from jaxdl.experiment import input_scale


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _train(workdir, *overrides, config=None):
    argv = ["train", "--workdir", workdir, "--quiet", "--config.epochs=1", *overrides]
    assert cli.main([str(a) for a in ([*argv, "--config", config] if config else argv)]) == 0
    return workdir


def _read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array([[float(v) if v else np.nan for v in r] for r in rows[1:]])


def _ig(predict_fn, x, baseline, target, steps=64):
    """Trapezoid integrated gradients by vmap(grad) over every path point of every row."""
    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    weights = jnp.full(steps + 1, 1.0 / steps).at[0].set(0.5 / steps).at[-1].set(0.5 / steps)
    grad = jax.grad(lambda xi, t: predict_fn(xi[None]).reshape(-1)[t])

    def row(xi, t):
        path = baseline + alphas.reshape(-1, *(1,) * xi.ndim) * (xi - baseline)
        return (xi - baseline) * jnp.tensordot(weights, jax.vmap(grad, (0, None))(path, t), 1)

    return np.asarray(jax.vmap(row)(jnp.asarray(x), jnp.asarray(target)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # The CLI turns on its compilation cache: the tests' own (conftest), not the user's.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAXDL_CACHE_DIR", jax.config.jax_compilation_cache_dir)
        yield _runs(tmp_path_factory.mktemp("explain_cli"))


def _runs(root):
    raw = {name: jdl.data.datasets.raw_arrays(name) for name in ("iris", "digits", "diabetes")}
    np.savetxt(root / "iris.csv", raw["iris"][0][::30], delimiter=",")
    np.savetxt(root / "iris_y.csv", raw["iris"][1][::30], fmt="%d")
    np.savetxt(root / "digits.csv", raw["digits"][0][:3] / 16.0, delimiter=",")
    np.save(root / "digits_raw.npy", raw["digits"][0][:3].reshape(3, 8, 8, 1))
    np.savetxt(root / "diabetes.csv", raw["diabetes"][0][:5], delimiter=",")
    return {"root": root, "raw": raw,
            # One population of two multiclass models covers both kinds of run.
            "iris": _train(root / "iris", "--config.data.name=iris",
                           "--config.model.features=(8, 3)",
                           "--config.loss=sparse_categorical_crossentropy",
                           "--config.metrics=('accuracy',)", "--config.population.size=2",
                           "--config.population.hparams={'learning_rate': {'grid': [1e-4, 0.1]}}"),
            "cnn": _train(root / "cnn", "--config.model.features=(4,)",
                          "--config.model.dense=(8,)", "--config.optimizer.warmup_steps=0",
                          "--config.optimizer.schedule=constant",
                          config="experiments/digits_cnn.py"),
            "reg": _train(root / "reg", "--config.model.features=(8, 1)",
                          config="experiments/diabetes_mlp.py")}


def _scaled(workdir, raw):
    _, trainer, state, meta = jdl.experiment.restore_from_workdir(workdir)
    return trainer, state, np.asarray(jdl.data.transforms.scaler_from_dict(meta["scaler"])(raw))


def _error(err):
    """The CLI's one-paragraph error (the last line: library warnings may come first)."""
    last = err.strip().splitlines()[-1]
    assert last.startswith("jaxdl: error: argument '")
    return last


def _best(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"split": "best"' in line][-1]["member"]


def test_a_population_run_explains_its_best_member(runs, capsys):
    root, workdir = runs["root"], runs["iris"]
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input", root / "iris.csv",
                         "--output-csv", root / "pop.csv", "--target", "2")
    assert code == 0, err
    record = json.loads((root / "pop.json").read_text())
    best = _best(workdir)
    assert record["member"]["member"] == best and record["explained"].startswith("the logit")
    header, table = _read(root / "pop.csv")
    assert header[:7] == ["row", "target", "output", "reference", "gap", "relative_gap", "steps"]
    trainer, state, x = _scaled(workdir, runs["raw"]["iris"][0][::30])
    member = jdl.population.member(state, best)
    predict_fn = lambda x: trainer.programs.outputs(member, x)
    want = _ig(predict_fn, x, np.zeros(4, np.float32), np.full(5, 2, np.int32))
    np.testing.assert_allclose(table[:, 7:], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(table[:, 2], np.asarray(predict_fn(x))[:, 2], rtol=1e-5)
    np.testing.assert_allclose(table[:, 4], want.sum(axis=1) - (table[:, 2] - table[:, 3]),
                               atol=1e-4)
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input", root / "iris.csv",
                         "--member", 1 - best, "--output-csv", root / "other.csv",
                         "--method", "saliency")
    assert code == 0, err
    other = jdl.population.member(state, 1 - best)
    target = np.asarray(trainer.programs.outputs(other, x)).argmax(axis=1)
    grads = jax.vmap(jax.grad(lambda xi, t: trainer.programs.outputs(other, xi[None])[0, t]))(
        x, target)
    np.testing.assert_allclose(_read(root / "other.csv")[1][:, 7:], grads, rtol=1e-4,
                               atol=1e-6)
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input", root / "iris.csv",
                         "--member", "5")
    assert code == 2 and "'--member'" in _error(err)


def test_multiclass_rows_record_their_target_and_probability(runs, capsys):
    root, workdir = runs["root"], runs["iris"]
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input", root / "iris.csv",
                         "--output-csv", root / "all.csv", "--output-png", root / "all.png",
                         "--target", "all", "--probabilities", "--steps", "auto",
                         "--tolerance", "0.005")
    assert code == 0, err
    header, table = _read(root / "all.csv")
    assert header[7:] == list(jdl.data.datasets.FEATURE_NAMES["iris"])
    np.testing.assert_array_equal(table[:, 0], np.repeat(np.arange(5), 3))
    np.testing.assert_array_equal(table[:, 1], np.tile(np.arange(3), 5))
    trainer, state, x = _scaled(workdir, runs["raw"]["iris"][0][::30])
    state = jdl.population.member(state, _best(workdir))
    probabilities = np.asarray(jax.nn.softmax(trainer.programs.outputs(state, x)))
    np.testing.assert_allclose(table[:, 2], probabilities.reshape(-1), rtol=1e-5)
    at_mean = np.asarray(jax.nn.softmax(trainer.programs.outputs(state, np.zeros((1, 4)))))[0]
    np.testing.assert_allclose(table[:, 3], np.tile(at_mean, 5), rtol=1e-5)
    gap = table[:, 7:].sum(axis=1) - (table[:, 2] - table[:, 3])
    np.testing.assert_allclose(table[:, 4], gap, atol=1e-6)
    # steps="auto" doubles until a row meets the tolerance; a row that never does (its
    # output barely moves from the baseline's) stops at the cap and is counted and named.
    record = json.loads((root / "all.json").read_text())
    met = table[:, 5] <= 0.005
    assert set(table[met, 6]) <= {32, 64, 128, 256, 512} and (table[~met, 6] == 1024).all()
    assert record["completeness"]["rows_over_tolerance"] == int((~met).sum())
    assert met.sum() >= 12 and ("still miss" in err) == (not met.all())
    assert sorted(record["classes"]) == ["0", "1", "2"] and record["probabilities"]
    assert record["baseline"]["meaning"] == "zeros in standardized space: the training mean"
    assert (root / "all.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input", root / "iris.csv",
                         "--target", "true", "--labels", root / "iris_y.csv",
                         "--output-csv", root / "true.csv")
    assert code == 0, err
    np.testing.assert_array_equal(_read(root / "true.csv")[1][:, 1],
                                  runs["raw"]["iris"][1][::30])
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input", root / "iris.csv",
                         "--target", "3")
    assert code == 2 and "'--target'" in _error(err) and "[0, 2]" in err


def test_a_cnn_run_takes_flat_pixel_rows_and_flags_raw_pixels(runs, capsys):
    root, workdir = runs["root"], runs["cnn"]
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input",
                         root / "digits.csv", "--output-csv", root / "cnn.csv", "--output-png",
                         root / "cnn.png", "--method", "gradient_x_input")
    assert code == 0, err
    header, table = _read(root / "cnn.csv")
    assert header[7] == "pixel_0_0" and table.shape == (3, 7 + 64)
    _, trainer, state, _ = jdl.experiment.restore_from_workdir(workdir)
    x = (runs["raw"]["digits"][0][:3] / 16.0).reshape(3, 8, 8, 1).astype(np.float32)
    logits = np.asarray(trainer.programs.outputs(state, x))
    target = logits.argmax(axis=1)
    np.testing.assert_array_equal(table[:, 1], target)
    grads = jax.vmap(jax.grad(lambda xi, t: trainer.programs.outputs(state, xi[None])[0, t]))(
        x, target)
    np.testing.assert_allclose(table[:, 7:], (x * np.asarray(grads)).reshape(3, 64),
                               rtol=1e-4, atol=1e-6)
    assert (root / "cnn.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.warns(input_scale.InputScaleWarning, match="pixel / 16"):
        code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input",
                             root / "digits_raw.npy", "--output-csv", root / "raw.csv",
                             "--method", "gradient_x_input")
    assert code == 0, err
    with pytest.warns(input_scale.InputScaleWarning, match="argument '--input'.*3 row"):
        code, _, err = _main(capsys, "predict", "--workdir", workdir, "--input",
                             root / "digits_raw.npy")
    assert code == 0, err


def test_a_regression_run_with_a_median_baseline(runs, capsys):
    root, workdir = runs["root"], runs["reg"]
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input",
                         root / "diabetes.csv", "--output-csv", root / "reg.csv",
                         "--baseline", "median", "--steps", "128")
    assert code == 0, err
    header, table = _read(root / "reg.csv")
    record = json.loads((root / "reg.json").read_text())
    assert record["baseline"]["kind"] == "median" and record["explained"] == "the predicted value"
    trainer, state, x = _scaled(workdir, runs["raw"]["diabetes"][0][:5])
    train = jdl.data.datasets.load("diabetes").x_train  # the run's split: seed 0, standardized
    median = np.median(train, axis=0)
    predict_fn = lambda x: trainer.programs.outputs(state, x)
    want = _ig(predict_fn, x, median, np.zeros(5, np.int32), steps=128)
    np.testing.assert_allclose(table[:, 7:], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(table[:, 3], np.asarray(predict_fn(median[None]))[0, 0],
                               rtol=1e-5)
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input",
                         root / "diabetes.csv", "--probabilities")
    assert code == 2 and "'--probabilities'" in _error(err)
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input",
                         root / "diabetes.csv", "--method", "saliency", "--steps", "auto")
    assert code == 2 and "'--steps'" in _error(err)
    code, _, err = _main(capsys, "explain", "--workdir", workdir, "--input",
                         root / "diabetes.csv", "--method", "saliency", "--baseline", "median")
    assert code == 2 and "'--baseline'" in _error(err) and "drop --baseline" in err
