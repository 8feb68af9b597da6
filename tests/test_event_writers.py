"""TensorBoard and CSV writers, read back with TensorBoard's own reader and the csv module."""

import csv
import math

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import jaxdl as jdl
from jaxdl.writers import CsvWriter, TensorBoardWriter


def _scalars(logdir, tag):
    """(step, value) of ``tag`` in one run folder (not its sub-folders), as TensorBoard reads it."""
    ea = EventAccumulator(str(logdir))
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _epochs(writer, spe, logs_per_epoch, start_epoch=0):
    """Drives a writer as fit does, without training."""
    writer.on_train_begin(None, {"steps_per_epoch": spe, "epochs": 9,
                                 "step": start_epoch * spe})
    for i, logs in enumerate(logs_per_epoch):
        writer.on_epoch_end(start_epoch + i, logs, None)
    writer.on_train_end(None)


def test_a_fit_reads_back_equal_to_its_history(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          metrics=["accuracy"])
    tb = TensorBoardWriter(tmp_path / "tb")
    table = CsvWriter(tmp_path / "metrics.csv")
    state = trainer.init(jax.random.key(0), x[:1])
    state, history = trainer.fit(state, x[:64], y[:64], epochs=2, batch_size=16,
                                 validation_data=(x[64:], y[64:]), callbacks=[tb, table],
                                 verbose=0)
    tb.write({"step": int(state.step), "epoch": 2, "split": "test", "loss": 0.25})
    tb.write({"step": int(state.step), "split": "perf", "steps_per_s": 123.5,
              "note": "not a number"})
    tb.close()

    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key, values in history.items():
        run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        steps, read = zip(*_scalars(tmp_path / "tb" / run, f"epoch_{name}"), strict=True)
        assert steps == (4, 8)  # 64 examples / batch 16 = 4 steps per epoch
        np.testing.assert_allclose(read, values, rtol=1e-6)  # stored as float32
    assert _scalars(tmp_path / "tb", "test/loss") == [(8, 0.25)]
    assert _scalars(tmp_path / "tb" / "train", "perf/steps_per_s") == [(8, 123.5)]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir() if p.is_dir()) == [
        "train", "validation"]

    rows = _rows(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "4"), ("2", "8")]
    for key, values in history.items():
        assert [float(r[key]) for r in rows] == values  # exact: str(float) round-trips


def test_non_finite_values(tmp_path):
    tb, table = TensorBoardWriter(tmp_path / "tb"), CsvWriter(tmp_path / "m.csv")
    logs = {"loss": math.nan, "val_loss": math.inf, "val_accuracy": -math.inf}
    for writer in (tb, table):
        _epochs(writer, 3, [logs])
    (_, loss), = _scalars(tmp_path / "tb" / "train", "epoch_loss")
    assert math.isnan(loss)
    assert _scalars(tmp_path / "tb" / "validation", "epoch_loss") == [(3, math.inf)]
    assert _scalars(tmp_path / "tb" / "validation", "epoch_accuracy") == [(3, -math.inf)]
    row, = _rows(tmp_path / "m.csv")
    assert (row["loss"], row["val_loss"], row["val_accuracy"]) == ("nan", "inf", "-inf")


def test_csv_columns_stay_stable_when_keys_come_and_go(tmp_path):
    path = tmp_path / "sub" / "m.csv"
    _epochs(CsvWriter(path), 2, [{"loss": 1.0, "val_loss": 2.0},
                                 {"loss": 0.5, "lr": 0.1, "val_loss": 1.5},
                                 {"val_loss": 1.25}])
    rows = _rows(path)
    assert list(rows[0]) == ["epoch", "step", "loss", "val_loss", "lr"]
    assert [list(r.values()) for r in rows] == [["1", "2", "1.0", "2.0", ""],
                                                ["2", "4", "0.5", "1.5", "0.1"],
                                                ["3", "6", "", "1.25", ""]]


def test_a_resumed_run_replaces_what_came_after_its_checkpoint(tmp_path):
    first = [{"loss": float(i)} for i in range(4)]  # steps 2, 4, 6, 8
    second = [{"loss": 10.0 + i} for i in range(2)]  # resumed at step 4: steps 6, 8 again
    for make in (lambda: TensorBoardWriter(tmp_path / "tb"),
                 lambda: CsvWriter(tmp_path / "m.csv")):
        _epochs(make(), 2, first)
        _epochs(make(), 2, second, start_epoch=2)
    expected = [(2, 0.0), (4, 1.0), (6, 10.0), (8, 11.0)]
    assert _scalars(tmp_path / "tb" / "train", "epoch_loss") == expected
    assert [(int(r["step"]), float(r["loss"])) for r in _rows(tmp_path / "m.csv")] == expected

    _epochs(CsvWriter(tmp_path / "m.csv"), 2, [{"loss": 5.0}])  # a fresh run starts over
    assert [r["loss"] for r in _rows(tmp_path / "m.csv")] == ["5.0"]


def test_population_records_go_to_one_run_per_member(tmp_path):
    tb = TensorBoardWriter(tmp_path / "tb")
    for member in (0, 1):
        tb.write({"step": 5, "epoch": 1, "split": "val", "member": member, "loss": member + 0.5})
        tb.write({"step": 5, "split": "test", "member": member, "loss": member + 0.25})
    tb.close()
    assert _scalars(tmp_path / "tb" / "member_1" / "validation", "epoch_loss") == [(5, 1.5)]
    assert _scalars(tmp_path / "tb" / "member_1", "test/loss") == [(5, 1.25)]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["member_0", "member_1"]


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    tb, table = TensorBoardWriter(tmp_path / "tb"), CsvWriter(tmp_path / "m.csv")
    for writer in (tb, table):
        _epochs(writer, 2, [{"loss": 1.0}])
    tb.write({"step": 2, "split": "test", "loss": 1.0})
    tb.write_hparams({"learning_rate": 0.1}, ["loss"], step=2)
    tb.close()
    assert not list(tmp_path.iterdir())


def test_write_needs_a_step(tmp_path):
    with pytest.raises(ValueError, match="'record'.*integer 'step'"):
        TensorBoardWriter(tmp_path).write({"loss": 1.0})
    with pytest.raises(ValueError, match="'record'.*'split' among.*got 'best'"):
        TensorBoardWriter(tmp_path).write({"step": 1, "split": "best", "loss": 1.0})


def test_a_missing_tensorboardx_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    from jaxdl import errors

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    with pytest.raises(errors.JaxdlError, match=r"Fix: pip install tensorboardX \(or "
                       r"reinstall jaxdl\)") as caught:
        TensorBoardWriter(tmp_path)
    assert "jaxdl[" not in str(caught.value)  # no extra of that name exists


def test_a_full_disk_stops_the_events_not_the_run(tmp_path, monkeypatch):
    from jaxdl.writers import events

    written = []
    real_add = events.EventFile.add

    def add(self, summary, step):
        if len(written) == 2:  # the third event finds the disk full
            raise OSError(28, "No space left on device")
        written.append(step)
        real_add(self, summary, step)

    monkeypatch.setattr(events.EventFile, "add", add)
    tb = TensorBoardWriter(tmp_path / "tb")
    logs = [{"loss": 1.0 / (i + 1), "val_loss": 2.0} for i in range(4)]
    with pytest.warns(RuntimeWarning, match=r"cannot write under .*tb \(\[Errno 28\] No space "
                      r"left on device\); no more TensorBoard events") as caught:
        _epochs(tb, 2, logs)
        tb.write({"step": 8, "split": "test", "loss": 0.5})
        tb.close()
    assert len(caught) == 1  # said once, however many events are dropped after it
    assert _scalars(tmp_path / "tb" / "train", "epoch_loss") == [(2, 1.0)]
    assert _scalars(tmp_path / "tb" / "validation", "epoch_loss") == [(2, 2.0)]

    monkeypatch.setattr(events.EventFile, "add", real_add)
    _epochs(tb, 2, logs[:1], start_epoch=1)  # the next fit (here a resume) writes again
    assert _scalars(tmp_path / "tb" / "train", "epoch_loss") == [(2, 1.0), (4, 1.0)]


def test_write_hparams_needs_mappings(tmp_path):
    tb = TensorBoardWriter(tmp_path / "tb")
    for bad in ("learning_rate", [{"learning_rate": 0.1}, 0.2], []):
        with pytest.raises(ValueError, match="'hparams': expected a mapping name -> value"):
            tb.write_hparams(bad, ["loss"])
    assert not (tmp_path / "tb").exists()
