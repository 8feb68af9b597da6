"""The real thing, with processes: SIGKILL at random moments, SIGTERM, resume, bit-exact."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

# A run long enough to be interrupted: 24 epochs of batch 8, a checkpoint every 2 epochs.
ARGS = ["--config.epochs=24", "--config.batch_size=8", "--config.checkpoint.every_epochs=2",
        "--config.metrics", "('accuracy',)", "--quiet"]


def _command(workdir):
    return [sys.executable, "-m", "jaxdl", "train", "--workdir", str(workdir), *ARGS]


def _env(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "xla-cache"
    return {**os.environ, "JAXDL_CACHE_DIR": str(cache)}


def _lines(workdir):
    """metrics.jsonl without the perf line (timings differ from run to run)."""
    return [line for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if '"split": "perf"' not in line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (it also warms the compilation cache for the others)."""
    workdir = tmp_path_factory.mktemp("reference")
    done = subprocess.run(_command(workdir), env=_env(tmp_path_factory), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return _lines(workdir)


def _wait_for_progress(workdir, proc, timeout=120):
    """Until the run has written its first metrics (training is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (workdir / "metrics.jsonl").exists() and _lines(workdir):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_moments_then_resume_is_bit_identical(reference, tmp_path,
                                                                 tmp_path_factory, seed):
    rng = random.Random(seed)
    workdir = tmp_path / "run"
    env = _env(tmp_path_factory)
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(_command(workdir), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if kills < 2 and _wait_for_progress(workdir, proc):
            time.sleep(rng.uniform(0.0, 0.4))  # somewhere in training or in a save
            if proc.poll() is None:
                proc.kill()
                kills += 1
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    assert proc.returncode == 0 and kills >= 1
    assert _lines(workdir) == reference  # every line, the test line digit for digit


def test_sigterm_checkpoints_exits_143_and_resumes(reference, tmp_path, tmp_path_factory):
    workdir = tmp_path / "run"
    env = _env(tmp_path_factory)
    proc = subprocess.Popen(_command(workdir), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert _wait_for_progress(workdir, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 143, err
    assert "stopped by signal 15" in err and "Traceback" not in err
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    last_train = [json.loads(line) for line in _lines(workdir)][-1]["step"]
    assert steps and steps[-1] >= last_train  # the signal's checkpoint covers what was logged
    done = subprocess.run(_command(workdir), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert _lines(workdir) == reference
