"""A fit's history lives in an append-only log beside the steps (checkpoints/history.jsonl):
a save writes what is new, not the whole history again; a checkpoint's meta vouches for the
log's first bytes, so an edited, cut or linked log is caught and a lost timeline is dropped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdl import errors
from jaxdl.checkpoint import Checkpointer, Checkpointing, saved_history
from jaxdl.checkpoint.integrity import meta_checksum

pytestmark = pytest.mark.filterwarnings("ignore:checkpoint .* is unusable:UserWarning")
FIT = {"batch_size": 25, "verbose": 0}  # 4 steps per epoch of blobs


def _fit(trainer, data, directory: Path, epochs: int, keep: int = 100, **kwargs):
    x, y = data
    with Checkpointer(directory, keep=keep) as ckpt:
        return trainer.fit(trainer.init(0, x[:1]), x, y, epochs=epochs,
                           validation_data=(x[:20], y[:20]), checkpointing=Checkpointing(ckpt),
                           **FIT, **kwargs)


def _meta_bytes(directory: Path, step: int) -> int:
    """What a step writes beside its arrays (whose compressed size varies with the values):
    the meta item, Orbax's step metadata and the digest."""
    files = [directory / str(step) / "meta" / "metadata",
             directory / str(step) / "_CHECKPOINT_METADATA", directory / f"{step}.digest.json"]
    return sum(p.stat().st_size for p in files)


@pytest.fixture(scope="module")
def whole(binary_trainer, blobs, tmp_path_factory):
    """An uninterrupted 10-epoch fit with a checkpoint each epoch: (folder, result)."""
    directory = tmp_path_factory.mktemp("whole") / "checkpoints"
    return directory, _fit(binary_trainer, blobs, directory, epochs=10)


def _same_fit(result, expected) -> None:
    assert result.history == expected.history
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(expected.state.params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_save_writes_what_is_new_not_the_whole_history(binary_trainer, blobs, tmp_path):
    # Before the log, each meta held the whole history: the bytes of a save grew with the
    # epochs done (quadratic in all); now what a step writes is the same size throughout.
    directory = tmp_path / "checkpoints"
    result = _fit(binary_trainer, blobs, directory, epochs=40)
    with Checkpointer(directory) as ckpt:
        steps = ckpt.steps
    assert len(steps) == 40
    sizes = [_meta_bytes(directory, s) for s in steps]
    assert max(sizes) - min(sizes) < 64, sizes  # digits of the numbers, not epochs of them
    lines = (directory / "history.jsonl").read_bytes().splitlines()
    assert len(lines) == 40 and max(map(len, lines)) < 2 * min(map(len, lines))
    with Checkpointer(directory) as ckpt:
        assert saved_history(ckpt, steps[-1]) == result.history
        assert saved_history(ckpt, steps[4]) == {k: v[:5] for k, v in result.history.items()}


def test_a_resume_drops_the_lines_of_a_lost_timeline(binary_trainer, blobs, tmp_path, whole):
    # Killed after the log had epochs 5-6 appended but before their steps were committed:
    # the resume goes on from epoch 4 and its own epochs 5-6 replace the lost ones.
    directory = tmp_path / "checkpoints"
    _fit(binary_trainer, blobs, directory, epochs=6)
    with Checkpointer(directory) as ckpt:
        lost = ckpt.steps[-2:]
    for step in lost:
        shutil.rmtree(directory / str(step))
        (directory / f"{step}.digest.json").unlink()
    log = directory / "history.jsonl"
    stale = log.read_bytes().splitlines()[4:]
    log.write_bytes(log.read_bytes() + b'{"loss":[1e9]}\n')  # and a line nothing vouches for
    resumed = _fit(binary_trainer, blobs, directory, epochs=10)
    _same_fit(resumed, whole[1])
    assert log.read_bytes() == (whole[0] / "history.jsonl").read_bytes()
    assert len(log.read_bytes().splitlines()) == 10 and b"1e9" not in log.read_bytes()
    assert stale == log.read_bytes().splitlines()[4:6]  # the same epochs, trained again


def test_an_edited_log_sets_aside_the_checkpoints_it_no_longer_matches(binary_trainer, blobs,
                                                                       tmp_path, whole):
    run = tmp_path / "checkpoints"
    shutil.copytree(whole[0], run)
    for step in (36, 40):  # an unfinished run: its last two checkpoints dropped
        shutil.rmtree(run / str(step))
        (run / f"{step}.digest.json").unlink()
    log = run / "history.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[6] = lines[6].replace(b'"loss":[0.', b'"loss":[1.')  # epoch 7's loss, edited
    log.write_bytes(b"".join(lines))
    with pytest.warns(UserWarning, match=r"checkpoint 32 .* unusable \(its history log .* "
                      r"does not match its meta") as caught:
        resumed = _fit(binary_trainer, blobs, run, epochs=10)
    assert sum("unusable" in str(w.message) for w in caught) == 2  # steps 32 and 28
    _same_fit(resumed, whole[1])  # resumed from epoch 6, the last the log still vouches for
    assert sorted(int(p.name.split(".")[0]) for p in run.iterdir()
                  if ".corrupt-" in p.name and p.is_dir()) == [28, 32]

    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join([lines[0].replace(b"0.", b"9.", 1), *lines[1:]]))
    with pytest.raises(errors.CheckpointError, match=r"no usable checkpoint under .*history "
                       r"log .*does not match its meta"):
        _fit(binary_trainer, blobs, run, epochs=12)


@pytest.mark.parametrize("damage", ["cut", "missing", "directory"])
def test_a_cut_or_missing_log_is_caught(binary_trainer, blobs, tmp_path, whole, damage):
    run = tmp_path / "checkpoints"
    shutil.copytree(whole[0], run)
    log = run / "history.jsonl"
    if damage == "cut":
        log.write_bytes(log.read_bytes()[:-10])  # the newest line half written
    else:
        log.unlink()
        if damage == "directory":
            log.mkdir()
    expected = {"cut": "shorter", "missing": "missing", "directory": "not a regular file"}
    with Checkpointer(run) as ckpt, pytest.raises(errors.CheckpointError,
                                                  match=expected[damage]):
        saved_history(ckpt, 40)
    if damage == "cut":  # only the newest is unusable; the fit goes on from the one before
        resumed = _fit(binary_trainer, blobs, run, epochs=10)
        _same_fit(resumed, whole[1])


def test_a_link_in_place_of_the_log_is_never_followed(binary_trainer, blobs, tmp_path, whole):
    run = tmp_path / "checkpoints"
    shutil.copytree(whole[0], run)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_bytes((run / "history.jsonl").read_bytes())
    (run / "history.jsonl").unlink()
    (run / "history.jsonl").symlink_to(outside)
    with Checkpointer(run) as ckpt, pytest.raises(errors.CheckpointError,
                                                  match="cannot be read"):
        saved_history(ckpt, 40)
    # A new run in a folder whose log is a link: the link is replaced, its target untouched.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "history.jsonl").symlink_to(outside)
    before = outside.read_bytes()
    _fit(binary_trainer, blobs, fresh, epochs=2)
    assert outside.read_bytes() == before
    assert not (fresh / "history.jsonl").is_symlink()
    assert len((fresh / "history.jsonl").read_bytes().splitlines()) == 2


def test_a_checkpoint_written_before_the_log_still_resumes(binary_trainer, blobs, tmp_path,
                                                           whole):
    # The format before the log: the whole history in the meta (its digest covering it).
    run = tmp_path / "checkpoints"
    shutil.copytree(whole[0], run)
    for step in (28, 32, 36, 40):
        shutil.rmtree(run / str(step))
        (run / f"{step}.digest.json").unlink()
    with Checkpointer(run) as ckpt:
        history = saved_history(ckpt, 24)
    meta_file = run / "24" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["history_log"]
    meta["history"] = history
    meta_file.write_text(json.dumps(meta))
    digest = json.loads((run / "24.digest.json").read_text())
    digest["meta"] = meta_checksum(meta)
    (run / "24.digest.json").write_text(json.dumps(digest))
    (run / "history.jsonl").unlink()
    resumed = _fit(binary_trainer, blobs, run, epochs=10)
    _same_fit(resumed, whole[1])
    # The log starts again with the whole history it was given, then one line per save.
    lines = (run / "history.jsonl").read_bytes().splitlines()
    assert len(lines) == 4 and len(json.loads(lines[0])["loss"]) == 7


def test_saves_and_restores_never_ask_tensorstore_for_its_leaking_metrics(tmp_path, monkeypatch):
    # Orbax's raw-bytes telemetry called this twice per array write and read, and each call
    # kept ~10 KB (benchmarks/checkpoint_growth.py: ~100 KB per save, now ~10).
    import jax.numpy as jnp
    import tensorstore

    calls = []
    collect = tensorstore.experimental_collect_matching_metrics
    monkeypatch.setattr(tensorstore, "experimental_collect_matching_metrics",
                        lambda *a, **k: calls.append(a) or collect(*a, **k))
    tree = {"w": jnp.arange(6.0)}
    with Checkpointer(tmp_path / "c", keep=2) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, tree, {"epoch": step})
        ckpt.wait()
        restored, _, step = ckpt.restore(tree)
    assert step == 3 and np.array_equal(restored["w"], tree["w"])
    assert calls == []
