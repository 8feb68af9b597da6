"""Nothing trusted that was not checked: a workdir used the wrong way, with real processes.

Two `jaxdl train` on one workdir, a holder killed with SIGKILL, a reader beside a live
writer, validation that fails before anything is saved, a path that is not UTF-8, inputs and
outputs that are not what `jaxdl predict` needs, `jaxdl data prepare --out` where nothing can
be written, config files that exit or hold the wrong types, and a finished run run again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from jaxdl import cli
from jaxdl.cli import compilation_cache

# Long enough to be caught running (24 epochs of batch 8), a checkpoint every 2 epochs.
ARGS = ["--config.epochs=24", "--config.batch_size=8", "--config.checkpoint.every_epochs=2",
        "--config.metrics", "('accuracy',)", "--quiet"]
pytestmark = pytest.mark.filterwarnings("ignore:checkpoint .* (is unusable|has no digest)")


def _env(tmp_path_factory):
    return {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "xla-cache")}


def _train(workdir, *extra):
    return [sys.executable, "-m", "jaxdl", "train", "--workdir", str(workdir), *ARGS, *extra]


def _lines(workdir):
    """metrics.jsonl without the perf line (its timings differ from run to run)."""
    return [line for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if '"split": "perf"' not in line]


def _main(capsys, *argv):
    """``jaxdl ARGV`` in this process: (exit code, stderr), warnings recorded too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err, [w for w in caught if not str(w.message).startswith("checkpoint ")]


def _one_paragraph(err, pattern):
    """The error is one `jaxdl: error:` line, last, matching ``pattern``; no traceback."""
    import re

    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("jaxdl: error: "), err
    assert sum(line.startswith("jaxdl: error:") for line in lines) == 1, err
    assert re.search(pattern, lines[-1]), lines[-1]


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv(compilation_cache.ENV_VAR, "off")  # in-process runs: the tests' cache


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uncontended run (it also warms the compilation cache of the processes)."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(_train(workdir), env=_env(tmp_path_factory),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return workdir


def _wait_until(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _training(workdir):
    """Once the run holds its lock and has logged an epoch."""
    return (workdir / "metrics.jsonl").exists() and bool(_lines(workdir))


# --- 1. one writer per workdir ------------------------------------------------------------------


def test_a_second_train_is_refused_naming_the_first(reference, tmp_path, tmp_path_factory):
    env = _env(tmp_path_factory)
    workdir = tmp_path / "run"
    first = subprocess.Popen(_train(workdir), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_until(lambda: _training(workdir), first)
        first.send_signal(signal.SIGSTOP)  # it holds the workdir while the second starts
        second = subprocess.run(_train(workdir), env=env, capture_output=True, text=True,
                                timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    _one_paragraph(second.stderr, rf"'--workdir'.*pid {first.pid}\b.*jaxdl train")
    assert _lines(workdir) == _lines(reference)  # undisturbed, digit for digit


def test_a_killed_holder_leaves_nothing_stuck(reference, tmp_path, tmp_path_factory):
    env = _env(tmp_path_factory)
    workdir = tmp_path / "run"
    first = subprocess.Popen(_train(workdir), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    assert _wait_until(lambda: (workdir / "checkpoints").is_dir() and any(
        p.name.isdigit() for p in (workdir / "checkpoints").iterdir()), first)
    first.kill()
    first.wait(timeout=60)
    again = subprocess.run(_train(workdir), env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert _lines(workdir) == _lines(reference)


def test_data_prepare_on_a_folder_in_use_exits_2(tmp_path, capsys):
    from jaxdl.experiment import lock

    out = tmp_path / "iris"
    with lock.exclusive(out, "--out"):
        code, err, _ = _main(capsys, "data", "prepare", "--dataset", "iris", "--out", out)
    assert code == 2
    _one_paragraph(err, rf"'--out'.*pid {os.getpid()}\b")
    assert not (out / "train").exists()
    code, err, _ = _main(capsys, "data", "prepare", "--dataset", "iris", "--out", out)
    assert code == 0, err  # released


def test_readers_never_set_aside_a_live_writers_checkpoints(reference, tmp_path, capsys):
    from jaxdl.experiment import lock

    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    checkpoints = workdir / "checkpoints"
    newest = max((p for p in checkpoints.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    files = [p for p in (newest / "state").rglob("*") if p.is_file()]
    max(files, key=lambda p: p.stat().st_size).unlink()  # as a reader may see it mid-commit
    before = sorted(p.name for p in checkpoints.iterdir())
    with lock.exclusive(workdir, "--workdir"):  # a live writer
        code, err, _ = _main(capsys, "evaluate", "--workdir", workdir)
        assert code == 0, err  # the previous good checkpoint, read from a private copy
        assert sorted(p.name for p in checkpoints.iterdir()) == before
    assert sorted(p.name for p in workdir.iterdir()) == sorted(p.name for p in reference.iterdir())
    code, err, _ = _main(capsys, "evaluate", "--workdir", workdir)  # no writer: set aside
    assert code == 0, err
    assert any(".corrupt-" in p.name for p in checkpoints.iterdir())


# --- 2. a failed validation does not bind the workdir -------------------------------------------


def test_a_failed_validation_leaves_the_workdir_fresh(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, err, _ = _main(capsys, "train", "--workdir", workdir, "--config.epochs=1",
                         "--config.checkpoint.keep=0", "--quiet")
    assert code == 2
    _one_paragraph(err, r"'--config\.checkpoint\.keep'")
    assert not (workdir / "config.json").exists()
    code, err, _ = _main(capsys, "train", "--workdir", workdir, "--config.epochs=1", "--quiet")
    assert code == 0, err


def test_a_config_json_without_a_checkpoint_does_not_bind(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"epochs": 7, "batch_size": 4}))
    code, err, _ = _main(capsys, "train", "--workdir", workdir, "--config.epochs=1", "--quiet")
    assert code == 0, err
    assert json.loads((workdir / "config.json").read_text())["epochs"] == 1


# --- 3. a path that is not UTF-8 -----------------------------------------------------------------


def test_a_non_utf8_workdir_is_refused_before_anything_is_written(tmp_path, capsys):
    workdir = os.fsdecode(os.fsencode(tmp_path) + b"/x\xff")
    code, err, _ = _main(capsys, "train", "--workdir", workdir, "--config.epochs=1", "--quiet")
    assert code == 2
    _one_paragraph(err, r"'--workdir'.*UTF-8")
    assert list(tmp_path.iterdir()) == []


# --- 4. what `jaxdl predict` reads and writes ----------------------------------------------------


def _inputs(tmp_path):
    np.save(tmp_path / "zero_rows.npy", np.zeros((0, 30), np.float32))
    np.save(tmp_path / "one_d.npy", np.zeros(30, np.float32))
    np.save(tmp_path / "huge.npy", np.full((2, 30), 1e38, np.float32))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(",".join(f"c{i}" for i in range(30)) + "\n")
    np.savetxt(tmp_path / "ok.csv", np.zeros((2, 30)), delimiter=",")
    (tmp_path / "a_folder.csv").mkdir()


@pytest.mark.parametrize("argv, pattern", [
    (["--input", "empty.csv"], r"'--input': expected .*at least one row.*got no rows"),
    (["--input", "header.csv"], r"'--input': expected .*at least one row.*got no rows"),
    (["--input", "zero_rows.npy"], r"'--input': expected .*at least one row.*got no rows"),
    (["--input", "one_d.npy"], r"'--input': expected rows of features .*got a 1-D array"),
    (["--input", "huge.npy"], r"'--input': expected values .*normalization.*overflow"),
    (["--input", "ok.csv", "--output", "a_folder.csv"], r"'--output': .*is a directory"),
    (["--input", "ok.csv", "--output", "missing/p.csv"], r"'--output': .*does not exist"),
])
def test_predict_refuses_unusable_inputs_and_outputs(reference, tmp_path, capsys, monkeypatch,
                                                     argv, pattern):
    _inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, err, caught = _main(capsys, "predict", "--workdir", reference, *argv)
    assert code == 2, err
    _one_paragraph(err, pattern)
    assert not caught, [str(w.message) for w in caught]  # no numpy warning on the way


# --- 5. `jaxdl data prepare --out` where nothing can be written ---------------------------------


def test_data_prepare_under_a_file_exits_2(tmp_path, capsys):
    from jaxdl.data import prepare
    from jaxdl.errors import InputError

    (tmp_path / "a_file").write_text("x")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "sub"):
        code, err, _ = _main(capsys, "data", "prepare", "--dataset", "iris", "--out", out)
        assert code == 2, err
        _one_paragraph(err, r"'--out': expected a folder that can be created and written")
        with pytest.raises(InputError, match=r"argument 'out': expected a folder that can be "
                           r"created and written, got .*\(Not a directory\)"):
            prepare.prepare("iris", out)  # the Python API too


def _read_only(folder):
    """Makes ``folder`` read-only even for root (immutable); False where that is impossible."""
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True) \
        if shutil.which("chattr") else None
    return done is not None and done.returncode == 0


def test_data_prepare_on_a_read_only_location_exits_2(tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir()
    if not _read_only(folder):
        pytest.skip("no chattr +i here (mode 0o500 does not stop root)")
    try:
        for out in (folder, folder / "sub"):
            code, err, _ = _main(capsys, "data", "prepare", "--dataset", "iris", "--out", out)
            assert code == 2, err
            _one_paragraph(err, r"'--out': expected a folder that can be created and written")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


# --- 6. and 7. config files -----------------------------------------------------------------------


def _config_file(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("import sys\n\nimport ml_collections\n\n\n" + body)
    return path


@pytest.mark.parametrize("body, pattern", [
    ("def get_config():\n    sys.exit(0)\n", r"sys\.exit\(0\).*exit0\.py, line 7"),
    ("sys.exit(3)\n", r"sys\.exit\(3\).*exit0\.py, line 6"),
])
def test_a_config_that_exits_is_a_config_error(tmp_path, capsys, body, pattern):
    config = _config_file(tmp_path, "exit0.py", body)
    code, err, _ = _main(capsys, "train", "--config", config, "--workdir", tmp_path / "w")
    assert code == 2
    _one_paragraph(err, r"'--config'.*" + pattern)
    assert not (tmp_path / "w").exists()


def test_a_directory_given_as_config(tmp_path, capsys):
    (tmp_path / "x.py").mkdir()
    code, err, _ = _main(capsys, "train", "--config", tmp_path / "x.py")
    assert code == 2
    _one_paragraph(err, r"'--config'.*x\.py', a directory")


def test_a_config_of_one_key_trains(tmp_path, capsys):
    config = _config_file(tmp_path, "short.py", "def get_config():\n"
                          "    return ml_collections.ConfigDict({'epochs': 2})\n")
    code, err, _ = _main(capsys, "train", "--config", config, "--workdir", tmp_path / "w",
                         "--config.batch_size=64", "--quiet")  # a key the file leaves out
    assert code == 0, err
    lines = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("entries, pattern", [
    ("'checkpoint': {'keep': None}", r"checkpoint\.keep as an int .*got None"),
    ("'checkpoint': {'every_epochs': 'x'}", r"checkpoint\.every_epochs as an int .*got 'x'"),
    ("'optimizer': 'adam'", r"optimizer as a group .*got 'adam'"),
    ("'checkpoint': None", r"checkpoint as a group .*got None"),
    ("'writers': 'jsonl'", r"writers as a tuple or list .*got 'jsonl'"),
    ("'peak_flops': 'x'", r"peak_flops as a number .*got 'x'"),
    ("'plot': 'yes'", r"plot as True or False .*got 'yes'"),
    ("'profile': {'steps': 5}", r"profile\.steps as a string .*got 5"),
    ("'model': {'features': (10, 1)}", r"model as a group with a 'name'"),
])
def test_a_config_value_of_the_wrong_type_is_named(tmp_path, capsys, entries, pattern):
    config = _config_file(tmp_path, "typo.py", "def get_config():\n    return "
                          f"ml_collections.ConfigDict({{'epochs': 1, {entries}}})\n")
    code, err, _ = _main(capsys, "train", "--config", config, "--workdir", tmp_path / "w",
                         "--quiet")
    assert code == 2
    _one_paragraph(err, r"argument '--config': expected " + pattern + r".* in .*typo\.py")
    assert not (tmp_path / "w").exists()


# --- 8. a finished run, run again --------------------------------------------------------------


def test_rerunning_a_finished_run_changes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ("train", "--workdir", workdir, "--config.epochs=2", "--quiet")
    code, err, _ = _main(capsys, *argv)
    assert code == 0, err
    before = (workdir / "metrics.jsonl").read_bytes()
    code, err, _ = _main(capsys, *argv)
    assert code == 0, err
    assert "is finished" in err
    assert (workdir / "metrics.jsonl").read_bytes() == before
    epochs = [json.loads(line)["epoch"] for line in before.decode().splitlines()]
    assert epochs == [1, 1, 2, 2, 2, 2]
