"""The real entry points on tiny runs: train_and_evaluate, predict_from_workdir, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import experiment as run
from jaxdl.experiment import config as config_lib


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = config_lib.load_config(config_lib.default_config_path())
    config.epochs = 3
    results = run.train_and_evaluate(config, workdir, quiet=True)
    return workdir, config, results


def test_metrics_jsonl_contract(finished_run):
    workdir, config, results = finished_run
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in lines] == [
        ("train", 1), ("val", 1), ("train", 2), ("val", 2), ("train", 3), ("val", 3),
        ("perf", 3), ("test", 3)]
    perf = lines.pop(-2)
    assert perf["steps"] > 0 and perf["steps_per_s"] > 0 and perf["compile_s"] > 0
    assert perf["flops_per_step"] > 0 and perf["mfu"] is None  # no known peak on a CPU
    assert perf["compilation_cache_hits"] + perf["compilation_cache_misses"] > 0
    for record in lines:
        assert set(record) == {"step", "epoch", "split", "loss", *config.metrics}
        assert all(isinstance(record[m], float) for m in ("loss", *config.metrics))
    assert lines[-1]["loss"] == results["loss"]  # full precision, digit for digit
    assert lines[-1]["step"] == 3 * lines[0]["step"]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["epochs"] == 3 and saved["model"]["features"] == [10, 10, 1]


def test_test_line_equals_an_independent_evaluation(finished_run):
    workdir, config, results = finished_run
    data = jdl.data.load("breast_cancer", seed=config.seed)
    raw_x, raw_y = jdl.data.datasets.raw_arrays("breast_cancer")
    _, _, test_rows = jdl.data.datasets.split_indices(raw_y, 0.15, 0.2, config.seed, True)
    csv = workdir / "x_test.csv"
    np.savetxt(csv, raw_x[test_rows], delimiter=",")
    probs = run.predict_from_workdir(workdir, csv, workdir / "probs.npy")
    np.testing.assert_allclose(np.load(workdir / "probs.npy"), probs)
    y = data.y_test
    p = np.clip(probs[:, 0].astype(np.float64), 1e-12, 1 - 1e-12)
    assert results["accuracy"] == pytest.approx(np.mean((p > 0.5) == y), abs=1e-7)
    assert results["loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)),
                                            rel=1e-4)


def _without_perf(text):
    return [line for line in text.splitlines() if '"split": "perf"' not in line]


def test_rerunning_a_finished_workdir_changes_nothing(finished_run):
    workdir, config, results = finished_run
    before = (workdir / "metrics.jsonl").read_text()
    again = run.train_and_evaluate(config, workdir, quiet=True)
    assert again == results
    assert _without_perf((workdir / "metrics.jsonl").read_text()) == _without_perf(before)


def test_a_changed_config_does_not_resume(finished_run):
    workdir, config, _ = finished_run
    changed = config_lib.apply_overrides(config, {"optimizer.learning_rate": "0.1"})
    with pytest.raises(jdl.InputError, match=r"argument '--config'.*optimizer.learning_rate"):
        run.train_and_evaluate(changed, workdir, quiet=True)
    refuse = config_lib.apply_overrides(config, {"checkpoint.resume": "false"})
    with pytest.raises(jdl.InputError, match=r"argument '--workdir'.*resume=false"):
        run.train_and_evaluate(refuse, workdir, quiet=True)


def test_cli_train_then_predict(tmp_path):
    env = {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path / "cache")}
    workdir = tmp_path / "cli"
    train = subprocess.run([sys.executable, "-m", "jaxdl", "train", "--workdir", str(workdir),
                            "--config.epochs=2", "--config.metrics", "('accuracy',)"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert train.returncode == 0, train.stderr
    assert "Epoch 2/2" in train.stdout and "test · loss" in train.stdout
    x, _ = jdl.data.datasets.raw_arrays("breast_cancer")
    np.save(tmp_path / "x.npy", x[:4])
    predict = subprocess.run([sys.executable, "-m", "jaxdl", "predict", "--workdir",
                              str(workdir), "--input", str(tmp_path / "x.npy")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert predict.returncode == 0, predict.stderr
    evaluate = subprocess.run([sys.executable, "-m", "jaxdl", "evaluate", "--workdir",
                               str(workdir)], capture_output=True, text=True, env=env,
                              timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr
    test_line = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    assert json.loads(evaluate.stdout) == {k: v for k, v in test_line.items()
                                           if k not in ("step", "epoch")}
    values = np.loadtxt(predict.stdout.splitlines(), delimiter=",")
    assert values.shape == (4,) and ((values >= 0) & (values <= 1)).all()
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, x[:4, :5])
    bad = subprocess.run([sys.executable, "-m", "jaxdl", "predict", "--workdir", str(workdir),
                          "--input", str(wrong)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "argument '--input'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
