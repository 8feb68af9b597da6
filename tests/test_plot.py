"""Curves from metrics.jsonl: subplots, lines, population bands, PNG output, errors."""

import json
import struct

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from jaxdl.writers import plot


def _workdir(root, name, records):
    folder = root / name
    folder.mkdir()
    text = "".join(json.dumps(r) + "\n" for r in records)
    (folder / "metrics.jsonl").write_text(text)
    return folder


def _single(root, name, scale):
    records = []
    for epoch in (1, 2, 3):
        step = 4 * epoch
        records.append({"step": step, "epoch": epoch, "split": "train",
                        "loss": scale / epoch, "accuracy": 1 - scale / (2 * epoch)})
        records.append({"step": step, "epoch": epoch, "split": "val",
                        "loss": scale / epoch + 0.1, "accuracy": 0.9 - scale / (2 * epoch)})
    records.append({"step": 12, "epoch": 3, "split": "test", "loss": 99.0, "accuracy": 0.0})
    return _workdir(root, name, records)


def test_two_runs_overlaid(tmp_path):
    a, b = _single(tmp_path, "run_a", 1.0), _single(tmp_path, "run_b", 0.5)
    out = plot.plot_runs([a, b], tmp_path / "out" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (2 * 5 * 120, 1 * 36 * 12)  # 2 metrics side by side, dpi 120
    assert len(data) > 20_000

    fig = plot.figure_runs([a, b])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    loss = fig.axes[0]
    assert [line.get_label() for line in loss.get_lines()] == [
        "run_a train", "run_a val", "run_b train", "run_b val"]
    assert [line.get_linestyle() for line in loss.get_lines()] == ["-", "--", "-", "--"]
    np.testing.assert_allclose(loss.get_lines()[1].get_ydata(), [1.1, 0.6, 1 / 3 + 0.1])
    np.testing.assert_array_equal(loss.get_lines()[0].get_xdata(), [1, 2, 3])  # no test point
    assert loss.get_legend() is not None


def test_metric_selection(tmp_path, capsys):
    a = _single(tmp_path, "run_a", 1.0)
    with (a / "metrics.jsonl").open("a") as f:
        f.write('{"step": 16, "epoch": 4, "split": "tr')  # a run writing this line right now
    fig = plot.figure_runs(a, metrics=["val_accuracy"])  # the val_ name picks its subplot
    assert [ax.get_title() for ax in fig.axes] == ["accuracy"]
    assert plot.main_plot([str(a)], None, ["loss"]) == 0
    assert capsys.readouterr().out.strip() == str(a / "curves.png")
    with pytest.raises(ValueError, match="'metrics'.*'loss', 'accuracy'"):
        plot.figure_runs(a, metrics=["f1"])


def test_population_band_and_best_member(tmp_path):
    finals = {0: 0.9, 1: 0.3, 2: 0.6}  # member 1 ends with the lowest val loss
    records = []
    for member, final in finals.items():
        for epoch in (1, 2, 3, 4):
            loss = final + (4 - epoch) * 0.2 * (member + 1)
            records += [{"step": epoch, "epoch": epoch, "split": s, "member": member,
                         "loss": loss + (0.05 if s == "val" else 0)} for s in ("train", "val")]
    pop = _workdir(tmp_path, "sweep", records)
    run = plot.read_run(pop)
    assert run.members == [0, 1, 2] and plot.best_member(run) == 1

    ax, = plot.figure_runs([pop]).axes
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert [b.get_label() for b in bands] == ["sweep train (members 3)", "sweep val (members 3)"]
    ys = bands[1].get_paths()[0].vertices[:, 1]
    val = np.array([[r["loss"] for r in records if r["member"] == m and r["split"] == "val"]
                    for m in finals])
    np.testing.assert_allclose([ys.min(), ys.max()], [val.min(), val.max()])
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["sweep train (best: member 1)",
                                                    "sweep val (best: member 1)"]
    np.testing.assert_allclose(lines[1].get_ydata(), val[1])
    assert lines[1].get_linewidth() > 2


def test_best_member_by_accuracy_when_no_val_loss(tmp_path):
    records = [{"step": 1, "epoch": 1, "split": s, "member": m, **metrics}
               for m, acc in enumerate([0.7, 0.95, float("nan")])
               for s, metrics in (("train", {"loss": 1.0 - m * 0.1}), ("val", {"accuracy": acc}))]
    records[-1]["accuracy"] = "nan"  # as metrics.jsonl spells it
    assert plot.best_member(plot.read_run(_workdir(tmp_path, "p", records))) == 1


def test_folders_that_are_not_runs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"'WORKDIR'.*holds \[config.json\] but no metrics"):
        plot.plot_runs([other], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'WORKDIR'.*an empty folder"):
        plot.plot_runs([empty], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'WORKDIR'.*does not exist"):
        plot.plot_runs([tmp_path / "missing"], tmp_path / "x.png")
    (empty / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="'WORKDIR'.*no lines"):
        plot.plot_runs([empty], tmp_path / "x.png")
    (empty / "metrics.jsonl").write_text('{"split": "train", "epoch": 1, "loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match="'WORKDIR'.*line 2"):
        plot.plot_runs([empty], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'--output'"):
        plot.plot_runs([empty], tmp_path / "x.jpeg")
    assert not (tmp_path / "x.png").exists()


def test_a_diverged_member_neither_stretches_the_band_nor_the_axes(tmp_path):
    # Members 0 and 1 train; member 2's loss explodes from the first epoch but stays finite
    # (Adam at a learning rate of 1e3); member 3 trains, then goes NaN at epoch 3.
    healthy = {0: [0.69, 0.2, 0.05, 0.03], 1: [0.6, 0.3, 0.1, 0.02], 3: [0.65, 0.25, "nan", "nan"]}
    losses = {**healthy, 2: [1.3e10, 1.1e9, 3.8e8, 37.0]}
    accuracy = {0: 0.9, 1: 0.8, 2: 0.0, 3: 0.85}
    records = [{"step": e, "epoch": e, "split": s, "member": m, "loss": loss[e - 1],
                "accuracy": accuracy[m] if loss[e - 1] != "nan" else "nan"}
               for m, loss in sorted(losses.items()) for e in (1, 2, 3, 4)
               for s in ("train", "val")]
    pop = _workdir(tmp_path, "pop", records)
    run = plot.read_run(pop)
    assert plot.bands.diverged(run) == {2: 1, 3: 3}
    assert plot.best_member(run) == 1

    loss_ax, acc_ax = plot.figure_runs([pop]).axes
    kept = [v for m, c in healthy.items() for v in c if v != "nan"]
    bands = [c for c in loss_ax.collections if isinstance(c, PolyCollection)]
    assert [b.get_label() for b in bands] == ["pop train (members 4, 2 diverged)",
                                              "pop val (members 4, 2 diverged)"]
    ys = bands[1].get_paths()[0].vertices[:, 1]
    np.testing.assert_allclose([ys.min(), ys.max()], [min(kept), max(kept)])
    assert loss_ax.get_yscale() == "log"  # 0.02 .. 0.69: a factor of 34
    low, high = loss_ax.get_ylim()
    assert min(kept) / 2 < low < min(kept) and max(kept) < high < 2 * max(kept)
    low, high = acc_ax.get_ylim()
    assert acc_ax.get_yscale() == "linear" and 0.7 < low < 0.8 and 0.9 < high < 1.0

    marks = {line.get_label(): line for line in loss_ax.get_lines()
             if "diverged" in line.get_label() and not line.get_label().startswith("_")}
    assert sorted(marks) == ["pop member 2 diverged (epoch 1)",
                             "pop member 3 diverged (epoch 3)"]
    for line, epoch in zip(marks.values(), (1, 3), strict=True):
        assert list(line.get_xdata()) == [epoch] and list(line.get_ydata()) == [1.0]
        assert line.get_transform() == loss_ax.get_xaxis_transform()  # on the top edge
    dotted = [line for line in loss_ax.get_lines() if line.get_label() == "_diverged"]
    assert len(dotted) == 4 and all(line.get_linestyle() == ":" for line in dotted)
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert "pop member 2 diverged (epoch 1)" in legend and "_diverged" not in legend


def test_a_member_slightly_worse_than_the_others_is_not_diverged(tmp_path):
    records = [{"step": 1, "epoch": 1, "split": "train", "member": m, "loss": loss}
               for m, loss in enumerate([0.1, 0.12, 5.0])]  # 5.0: 42x the others' median
    run = plot.read_run(_workdir(tmp_path, "p", records))
    assert plot.bands.diverged(run) == {}
    ax, = plot.figure_runs(tmp_path / "p").axes
    assert ax.get_ylim()[1] > 5.0
    pair = [{"step": 1, "epoch": 1, "split": "val", "member": m, "loss": loss}
            for m, loss in enumerate([0.3, 1e6])]  # of two, the lower is the reference
    assert plot.bands.diverged(plot.read_run(_workdir(tmp_path, "pair", pair))) == {1: 1}
