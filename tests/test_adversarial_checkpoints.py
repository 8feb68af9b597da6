"""Checkpoints against what an unlucky or hostile world does to them, with real files and
real processes: flipped bytes in any kept step, hostile JSON in digests and metas, a
checkpoint folder linked to another run, a full disk, a folder deleted mid-run, SIGTERM and
resume, cadences that would train nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import cli, errors
from jaxdl.checkpoint import Checkpointer, Checkpointing
from jaxdl.cli import compilation_cache

# 40 epochs of 12 steps, a checkpoint every 12 steps: the best val_loss (about epoch 10)
# is then kept beside the latest 3 (the repro: 120 456 468 480).
RUN = ["--config.epochs=40", "--config.checkpoint.every_steps=12",
       "--config.checkpoint.every_epochs=0", "--quiet"]
# Orbax's own log lines (absl) are not ours to check; the kit's warnings are, one by one.
pytestmark = pytest.mark.filterwarnings("ignore:checkpoint .* is unusable:UserWarning")


def _env() -> dict[str, str]:
    cache = Path(os.environ.get("JAXDL_TEST_CACHE_DIR", Path.home() / ".cache" / "jaxdl" /
                                "xla-tests")) / "cli"
    return {**os.environ, compilation_cache.ENV_VAR: str(cache)}


def _train_command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxdl", "train", "--workdir", str(workdir), *RUN, *extra]


def _train(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_train_command(workdir, *extra), env=_env(), capture_output=True,
                          text=True, timeout=300)


def _steps(workdir: Path) -> list[int]:
    """Committed steps on disk (names that are only digits)."""
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def _lines(workdir: Path) -> list[str]:
    """metrics.jsonl without the perf line (timings differ from run to run)."""
    return [line for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if '"split": "perf"' not in line]


def _meta_file(workdir: Path, step: int) -> Path:
    return workdir / "checkpoints" / str(step) / "meta" / "metadata"


def _edit_meta(workdir: Path, step: int, edit) -> None:
    path = _meta_file(workdir, step)
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _arrays(step_dir: Path) -> list[np.ndarray]:
    """A step's arrays as plain Orbax reads them (no digest)."""
    import orbax.checkpoint as ocp

    with warnings.catch_warnings(), ocp.PyTreeCheckpointer() as reader:
        warnings.simplefilter("ignore")  # "Sharding info not provided": it reads the file's
        return [np.asarray(a) for a in jax.tree.leaves(reader.restore(
            (step_dir / "state").absolute()))]


def _flip_a_byte(step_dir: Path) -> None:
    """Flips one bit of the step's array data where Orbax still reads the arrays, only with
    other values: the damage only a digest can see (a flip in a header or an index would be a
    read error instead). Found by trying, the largest data file first."""
    before = _arrays(step_dir)
    files = sorted(step_dir.glob("state/ocdbt.process_*/d/*"), key=lambda p: -p.stat().st_size)
    for victim in files:
        data = victim.read_bytes()
        for eighth in (4, 5, 6, 7, 3, 2, 1):
            flipped = bytearray(data)
            flipped[len(data) * eighth // 8] ^= 0x01
            victim.write_bytes(bytes(flipped))
            try:
                after = _arrays(step_dir)
            except Exception:  # not silent: try elsewhere
                after = before
            if any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after,
                                                                              strict=True)):
                return
            victim.write_bytes(data)
    raise AssertionError(f"no bit of {step_dir} flips silently")


def _drop(workdir: Path, step: int) -> None:
    """Removes a step as if it had never been written."""
    shutil.rmtree(workdir / "checkpoints" / str(step))
    (workdir / "checkpoints" / f"{step}.digest.json").unlink(missing_ok=True)


def _aside(workdir: Path) -> list[int]:
    """Steps renamed aside as ``<step>.corrupt-<time>``."""
    return sorted(int(p.name.split(".")[0]) for p in (workdir / "checkpoints").iterdir()
                  if ".corrupt-" in p.name and p.is_dir())


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One finished `jaxdl train` run (async saves, the default); tests damage copies."""
    workdir = tmp_path_factory.mktemp("base") / "run"
    done = _train(workdir)
    assert done.returncode == 0, done.stderr
    return workdir


@pytest.fixture
def run(base, tmp_path) -> Path:
    """A copy of the base run to damage."""
    shutil.copytree(base, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def command(capsys, monkeypatch):
    """Runs ``jaxdl ARGV`` in this process: (exit code, stdout, stderr, warning texts)."""
    monkeypatch.setenv(compilation_cache.ENV_VAR, "off")

    def call(*argv: str) -> tuple[int, str, str, list[str]]:
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err, [str(w.message) for w in caught]

    return call


def _restored_step(workdir: Path) -> tuple[int, list[str]]:
    """The step `jaxdl evaluate/predict` would use, and the kit's warnings on the way."""
    from jaxdl.experiment.restore import restore_from_workdir

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, _, meta = restore_from_workdir(workdir)
    return meta["position"]["step"], [str(w.message) for w in caught
                                      if "checkpoint" in str(w.message)]


def _unusable(texts: list[str], step: int) -> str:
    found = [t for t in texts if t.startswith(f"checkpoint {step} ") and "unusable" in t]
    assert len(found) == 1, texts
    return found[0]


# --- 1. every kept checkpoint keeps its digest ------------------------------------------------


def test_every_kept_checkpoint_keeps_its_digest(base):
    steps = _steps(base)
    assert len(steps) == 4  # the latest 3 and the best
    digests = sorted(int(p.name.split(".")[0]) for p in (base / "checkpoints").iterdir()
                     if p.name.endswith(".digest.json"))
    assert digests == steps  # one per kept step, none for a deleted one


def test_a_flipped_byte_in_any_kept_checkpoint_is_caught(run, tmp_path, command):
    steps = _steps(run)
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    for step in steps[-2:]:
        _flip_a_byte(run / "checkpoints" / str(step))
        _drop(reference, step)
    code, out, err, said = command("evaluate", "--workdir", run)
    assert code == 0, err
    for step in steps[-2:]:
        assert "checksum mismatch" in _unusable(said, step)
    assert _aside(run) == steps[-2:]
    code, expected, err, _ = command("evaluate", "--workdir", reference)
    assert code == 0, err
    assert out == expected  # evaluated on the newest good checkpoint, not on garbage


@pytest.mark.parametrize("hostile", ["null", "[1, 2]", '"text"', "{not json",
                                     '{"format": 2, "arrays": "x", "meta": 5}',
                                     '{"format": 2, "arrays": {"a": [1, 2, 3]}, "meta": ""}'])
def test_a_malformed_digest_makes_its_checkpoint_unusable(run, hostile):
    newest = _steps(run)[-1]
    (run / "checkpoints" / f"{newest}.digest.json").write_text(hostile)
    step, said = _restored_step(run)
    assert step == _steps(run)[-1] < newest
    assert "digest" in _unusable(said, newest)
    assert not any("no digest" in t for t in said)
    assert _aside(run) == [newest]


def test_only_the_newest_checkpoint_may_lack_its_digest(run):
    steps = _steps(run)
    digest = run / "checkpoints" / f"{steps[-1]}.digest.json"
    kept = digest.read_bytes()
    digest.unlink()
    step, said = _restored_step(run)  # the process stopped right after saving it
    assert step == steps[-1]
    assert len(said) == 1 and "has no digest (the process stopped right after saving it)" in (
        said[0])
    digest.write_bytes(kept)
    _flip_a_byte(run / "checkpoints" / str(steps[-1]))  # the newest is damaged, and one
    (run / "checkpoints" / f"{steps[-2]}.digest.json").unlink()  # saved before it lost its digest
    step, said = _restored_step(run)
    assert step == steps[-3]
    assert "checksum mismatch" in _unusable(said, steps[-1])
    assert "no digest" in _unusable(said, steps[-2])
    assert not any("stopped right after saving" in t for t in said)


# --- 2. the best checkpoint survives a restart ------------------------------------------------


def test_an_interrupted_run_keeps_the_checkpoints_of_an_uninterrupted_one(base, tmp_path):
    expected = _steps(base)
    best = expected[0]
    assert best < expected[-3]  # the best is kept for being best, not for being recent
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_train_command(workdir), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (workdir / "checkpoints" / str(best + 24)).exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    done = _train(workdir)
    assert done.returncode == 0, done.stderr
    assert _steps(workdir) == expected
    assert _lines(workdir) == _lines(base)


# --- 3. a checkpoint's meta is checked --------------------------------------------------------


def test_an_edited_meta_does_not_match_its_digest(run, command):
    steps = _steps(run)
    _edit_meta(run, steps[-1], lambda m: m["scaler"]["mean"].__setitem__(0, 0.0))
    step, said = _restored_step(run)
    assert step == steps[-2]
    assert "meta" in _unusable(said, steps[-1])
    for other in steps[:-1]:  # all of them edited: predict refuses, it never guesses
        _edit_meta(run, other, lambda m: m["scaler"]["mean"].__setitem__(0, 0.0))
    rows = run / "x.csv"
    np.savetxt(rows, np.ones((2, 30)), delimiter=",")
    code, out, err, _ = command("predict", "--workdir", run, "--input", rows)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("jaxdl: error: no usable checkpoint under ")


def _set(path: str, value):
    def edit(meta):
        *parents, key = path.split(".")
        node = meta
        for parent in parents:
            node = node[parent]
        node[key] = value
    return edit


@pytest.mark.parametrize("path, value, named", [
    ("position.epoch", -5, "position"),
    ("position.step", 10**30, "position"),
    ("position.step_in_epoch", "3", "position"),
    ("num_examples", "370", "num_examples"),
    ("batch_size", 0, "batch_size"),
    ("scaler", "standardizer", "scaler"),
    ("scaler.std", [1.0] * 29 + [0.0], "scaler"),
    ("input_dtype", "object", "input_dtype"),
    ("num_features", [0], "num_features"),
    ("history", {"loss": "low"}, "history"),
    ("finished", "yes", "finished"),
    ("callbacks", {"0": {}}, "callbacks"),
    ("diverged", {"a": -1}, "diverged"),
    ("origin_epoch", 41, "origin_epoch"),
    ("structure", [], "structure"),
    ("seed", 1.5, "seed"),
    ("shuffle", 1, "shuffle"),
])
def test_a_meta_that_breaks_the_schema_is_unusable(run, path, value, named):
    # The digest is gone too (as after a kill right after the save): the schema alone decides.
    newest = _steps(run)[-1]
    (run / "checkpoints" / f"{newest}.digest.json").unlink()
    _edit_meta(run, newest, _set(path, value))
    step, said = _restored_step(run)
    assert step == _steps(run)[-1] < newest
    assert named in _unusable(said, newest)


def test_a_resume_never_trusts_a_hostile_position(run, base):
    _drop(run, _steps(run)[-1])  # the newest is now one of an unfinished run
    newest = _steps(run)[-1]
    _edit_meta(run, newest, _set("position.epoch", -5))  # would retrain 45 epochs
    done = _train(run)
    assert done.returncode == 0, done.stderr
    assert f"checkpoint {newest} " in done.stderr and "unusable" in done.stderr
    assert _lines(run) == _lines(base)  # resumed from the one before, bit for bit


def test_a_checkpoint_folder_linked_to_another_run_is_refused(base, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoints").symlink_to(base / "checkpoints")
    with pytest.raises(errors.CheckpointError, match=r"resolves to .*outside .*other") as info:
        Checkpointer(other / "checkpoints", root=other)
    assert "Fix:" in str(info.value)
    inside = tmp_path / "inside"
    (inside / "real").mkdir(parents=True)
    (inside / "checkpoints").symlink_to(inside / "real")  # a link within the run is fine
    Checkpointer(inside / "checkpoints", root=inside).close()


def test_the_command_refuses_a_checkpoint_folder_linked_to_another_run(base, tmp_path,
                                                                        command):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(base / "config.json", other / "config.json")
    (other / "checkpoints").symlink_to(base / "checkpoints")
    code, _, err, _ = command("evaluate", "--workdir", other)
    assert code == 2 and "outside" in err.strip().splitlines()[-1]


# --- 4. a full disk: what is intact, said once and truly --------------------------------------


@pytest.fixture
def small_disk(tmpfs):
    return tmpfs("160k")


def test_a_full_disk_says_once_what_is_intact(small_disk):
    workdir = small_disk / "run"
    done = _train(workdir)
    assert done.returncode == 2, done.stderr
    # Orbax's own log lines may come after (absl, asyncio at exit): the kit's line is one.
    reported = [line for line in done.stderr.splitlines() if line.startswith("jaxdl: error:")]
    assert len(reported) == 1, done.stderr
    line = reported[0]
    assert line.startswith("jaxdl: error: writing checkpoint "), done.stderr
    assert done.stderr.count("intact") == 1 and line.count("No space left on device") == 1
    failed = int(line.removeprefix("jaxdl: error: writing checkpoint ").split()[0])
    folder = workdir / "checkpoints"
    verifiable = [s for s in _steps(workdir) if (folder / f"{s}.digest.json").exists()]
    assert failed not in verifiable and all(s < failed for s in verifiable)
    said = line.split("intact: ")[1].split(".")[0]
    assert said == (str(verifiable) if verifiable else "none"), line


# --- 5. the checkpoint folder deleted mid-run -------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_a_checkpoint_folder_deleted_mid_run_ends_in_a_clear_error(tmp_path, delay):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_train_command(workdir), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (workdir / "checkpoints" / "48").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(delay)
    while (workdir / "checkpoints").exists():  # Orbax may be writing in it: until it is gone
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    reported = [line for line in err.splitlines() if line.startswith("jaxdl: error:")]
    assert len(reported) == 1, err
    line = reported[0]
    assert line.startswith("jaxdl: error: the checkpoint directory "), err
    assert str(workdir / "checkpoints") in line and "deleted" in line and "Fix:" in line


# --- 6. cadences and retention that would train nothing ---------------------------------------


@pytest.mark.parametrize("kwargs, argument", [
    (dict(every_steps=-5), "every_steps"), (dict(every_epochs=-1), "every_epochs"),
    (dict(every_steps=2.5), "every_steps"), (dict(every_epochs="1"), "every_epochs"),
    (dict(every_steps=True), "every_steps"),
])
def test_a_cadence_that_is_not_a_count_is_refused(tmp_path, kwargs, argument):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(errors.InputError, match=rf"argument '{argument}': expected an "
                                                    r"integer >= 0 \(0: off\), got .*Fix: "):
            Checkpointing(ckpt, **kwargs)
        assert Checkpointing(ckpt, every_steps=0, every_epochs=None).every_steps is None


@pytest.mark.parametrize("keep", [0, -1, "3", 2.5, True, None])
def test_a_keep_that_is_not_a_positive_count_is_refused(tmp_path, keep):
    with pytest.raises(errors.InputError, match=r"argument 'keep': expected an integer >= 1"):
        Checkpointer(tmp_path, keep=keep)


def test_the_command_refuses_a_negative_cadence(tmp_path, command):
    code, _, err, _ = command("train", "--workdir", tmp_path / "w",
                              "--config.checkpoint.every_steps=-5", "--config.epochs=1",
                              "--quiet")
    assert code == 2 and "Traceback" not in err
    assert "every_steps" in err.strip().splitlines()[-1]


def test_the_meta_of_a_saved_checkpoint_is_covered_by_its_digest(tmp_path):
    tree = {"w": jnp.arange(3.0)}
    with Checkpointer(tmp_path, async_save=True) as ckpt:
        ckpt.save(1, tree, {"epoch": 1, "note": [1.5, float("nan")]})
        ckpt.wait()
        assert ckpt.read_meta(1)["epoch"] == 1  # NaN and all: the digest matches
        digest = json.loads((tmp_path / "1.digest.json").read_text())
        assert set(digest) == {"format", "arrays", "meta"}
        meta_file = tmp_path / "1" / "meta" / "metadata"
        meta_file.write_text(meta_file.read_text().replace('"epoch": 1', '"epoch": 2'))
        with pytest.raises(errors.CheckpointError, match="meta"):
            ckpt.read_meta(1)
        with pytest.raises(errors.CheckpointError, match=r"no usable checkpoint .*tried 1: "):
            ckpt.restore(jax.eval_shape(lambda: tree))
