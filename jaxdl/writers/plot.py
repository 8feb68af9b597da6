"""Training curves of one or more runs, drawn from their ``metrics.jsonl``.

One subplot per metric (loss first), x = epoch, training solid and validation
dashed, one color per run, labelled with the run's folder name. Test lines are
not curves and are left out. A population run (lines with a ``member`` field)
is drawn as a band from the lowest to the highest member per epoch, with the
best member's curve on top: the member the run's ``"best"`` line names (see
:func:`jaxdl.population.best`), else the lowest final ``val_loss``, or highest
final validation accuracy-like metric when there is no loss. A member that
diverged is left out of the band and the y limits from that epoch on, drawn
dotted and marked on the top edge (:mod:`jaxdl.writers.bands`). A loss that
spans more than a factor of 20 gets a log scale. A sweep's test
metrics against its hyper-parameter: :func:`plot_sweep` (``jaxdl plot`` writes
``<output>_sweep.png`` too when a run is a sweep).

    jaxdl plot runs/a runs/b --output curves.png        # (wired in cli.py)

Drawing uses ``matplotlib.figure.Figure`` directly, never pyplot: the Agg
canvas renders the PNG without a display, and a user's notebook or GUI backend
is left exactly as it was (no ``matplotlib.use``, no global figure registry).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdl import errors
from jaxdl.writers import bands
from jaxdl.writers.bands import best_member, curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RunLog", "best_member", "figure_runs", "main_plot", "plot_runs", "plot_sweep",
           "read_run"]

_SPLITS = ("train", "val")
_RECORD_KEYS = ("step", "epoch", "split", "member")
_FORMATS = (".png", ".svg", ".pdf")
_DPI = 120
# A loss subplot whose values span more than this factor is drawn on a log scale (as the
# sweep plot's axis for a hyper-parameter).
_LOG_SPAN = 20.0

# (split, member or None) -> metric -> epoch -> value
Series = dict[tuple[str, int | None], dict[str, dict[int, float]]]


@dataclass
class RunLog:
    """The train/val curves of one workdir, as read from its metrics.jsonl."""

    name: str
    series: Series = field(default_factory=dict)
    best: int | None = None  # a population's best member, from its "best" line
    tests: list[dict[str, Any]] = field(default_factory=list)  # a population's test lines

    @property
    def members(self) -> list[int]:
        """Population member ids, sorted (empty for a single run)."""
        return sorted({m for _, m in self.series if m is not None})

    @property
    def metrics(self) -> list[str]:
        """Metric names in order of first appearance."""
        return list(dict.fromkeys(k for values in self.series.values() for k in values))


def _contents(folder: Path) -> str:
    """What an error message says about a folder that is not a run."""
    if not folder.exists():
        return f"{str(folder)!r}, which does not exist"
    if not folder.is_dir():
        return f"{str(folder)!r}, which is a file"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return f"{str(folder)!r}, an empty folder"
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} entries)" if len(names) > 12 else "")
    return f"{str(folder)!r}, which holds [{shown}] but no metrics.jsonl"


def _number(value: Any) -> float | None:
    """A metric value (metrics.jsonl spells NaN/inf as strings) as a float, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def read_run(workdir: str | Path) -> RunLog:
    """Reads the train and val lines of ``workdir/metrics.jsonl``.

    A resumed run may have rewritten epochs; the last line for an epoch wins.
    An unfinished last line (a run writing right now) is skipped.

    Raises:
      InputError: naming ``WORKDIR`` when the file is missing, empty, malformed,
        or has no train/val lines.
    """
    workdir = Path(workdir)
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        raise errors.input_error(
            "WORKDIR", "a run folder holding metrics.jsonl (written by `jaxdl train`)",
            _contents(workdir), "pass the --workdir of a training run; metrics.jsonl appears "
            "when its first epoch ends.")
    text = path.read_text()
    lines = text.splitlines()
    run = RunLog(workdir.resolve().name or str(workdir))
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            split, epoch = record["split"], int(record["epoch"])
            member = record.get("member")
            member = None if member is None else int(member)
        except (ValueError, TypeError, KeyError) as exc:
            if number == len(lines) and not text.endswith("\n"):
                break  # the run is writing this line right now
            raise errors.input_error(
                "WORKDIR", "metrics.jsonl lines of JSON objects with 'split' and 'epoch'",
                f"line {number} of {path}: {line[:80]!r} ({exc})",
                "remove or fix that line, or pass another run folder.") from exc
        if split == "best" and member is not None:
            run.best = member
        if split == "test" and member is not None:
            run.tests.append(record)
        if split not in _SPLITS:
            continue  # the test line is one point, not a curve
        series = run.series.setdefault((split, member), {})
        for key, value in record.items():
            value = _number(value)
            if key not in _RECORD_KEYS and value is not None:
                series.setdefault(key, {})[epoch] = value
    if not run.series:
        raise errors.input_error(
            "WORKDIR", "metrics.jsonl with train or val lines",
            f"{path} with {'no lines' if not text.strip() else 'no train or val lines'}",
            "wait until the run's first epoch ends, or pass another run folder.")
    return run


def _unique_names(runs: list[RunLog], paths: list[Path]) -> None:
    """Two runs called ``seed0`` in different folders get their full paths as names."""
    names = [r.name for r in runs]
    for run, path in zip(runs, paths, strict=True):
        if names.count(run.name) > 1:
            run.name = str(path)


def _metrics(runs: list[RunLog], metrics: Sequence[str] | None) -> list[str]:
    known = list(dict.fromkeys(k for run in runs for k in run.metrics))
    if metrics is None:
        return sorted(known, key=lambda k: k != "loss")  # stable: loss first, then as logged
    if isinstance(metrics, str):
        metrics = [metrics]
    # "val_loss" names the same subplot as "loss": val curves are drawn with their metric.
    metrics = list(dict.fromkeys(m[4:] if m.startswith("val_") and m not in known else m
                                 for m in metrics))
    unknown = [m for m in metrics if m not in known]
    if unknown or not metrics:
        raise errors.input_error(
            "metrics", f"names logged by these runs: {known}", repr(list(metrics)),
            "pass some of those names (e.g. --metrics loss,accuracy), or leave it out for all.")
    return list(metrics)


def _scale(ax: Any, metric: str, shown: list[np.ndarray]) -> None:
    """Y limits from the values that count (a diverged member's are drawn, not counted:
    matplotlib's own limits would take in every line), with its 5% margins; a log scale
    for a positive loss over more than :data:`_LOG_SPAN`, so that the last epochs' small
    differences stay visible next to the first epochs' values."""
    values = np.concatenate([np.ravel(v) for v in shown]) if shown else np.array([])
    values = values[np.isfinite(values)]
    if not values.size:
        return  # nothing finite to show: matplotlib's defaults
    lo, hi = float(values.min()), float(values.max())
    log = metric == "loss" and lo > 0 and hi / lo > _LOG_SPAN
    if log:
        ax.set_yscale("log")
        lo, hi = math.log10(lo), math.log10(hi)
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
    lo, hi = lo - pad, hi + pad
    ax.set_ylim(*((10 ** lo, 10 ** hi) if log else (lo, hi)))


def figure_runs(workdirs: Sequence[str | Path] | str | Path,
                metrics: Sequence[str] | None = None) -> Figure:
    """Draws the curves of ``workdirs`` into a new figure (nothing is saved or shown).

    Args:
      workdirs: run folders, each holding a metrics.jsonl.
      metrics: names to plot (training names; ``val_`` curves come with them),
        default all, loss first.

    Returns:
      A ``matplotlib.figure.Figure`` with one axes per metric; each run adds a
      ``"<run> train"`` (solid) and a ``"<run> val"`` (dashed) line, or for a
      population a band per split, the best member's lines and a marker per
      diverged member.

    Raises:
      InputError: naming ``WORKDIR`` or ``metrics``.
      JaxdlError: when matplotlib is not installed.
    """
    # Imported here: matplotlib costs most of a second, and only plotting needs it.
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # an optional dependency: say how to get it, no traceback
        raise errors.JaxdlError("plotting needs the 'matplotlib' package, which is not "
                                "installed. Fix: pip install 'jaxdl[plot]' (or pip install "
                                "matplotlib).") from exc

    paths = [Path(workdirs)] if isinstance(workdirs, str | Path) else [Path(w) for w in workdirs]
    if not paths:
        raise errors.input_error("WORKDIR", "at least one run folder", "none",
                                 "pass the --workdir of one or more training runs.")
    runs = [read_run(p) for p in paths]
    _unique_names(runs, paths)
    names = _metrics(runs, metrics)

    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(5.0 * cols, 3.6 * rows), dpi=_DPI)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(names):]:
        fig.delaxes(ax)  # the unused cells of the last row
    styles = {"train": "-", "val": "--"}
    for ax, metric in zip(axes, names, strict=False):
        shown: list[np.ndarray] = []
        for i, run in enumerate(runs):
            color = f"C{i % 10}"
            for split in _SPLITS:
                single = run.series.get((split, None), {}).get(metric)
                if single:
                    ax.plot(*curve(single), styles[split], color=color,
                            label=f"{run.name} {split}")
                    shown.append(curve(single)[1])
            if run.members:
                shown += bands.draw(ax, run, metric, color, styles)
        _scale(ax, metric, shown)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")  # the same runs in every subplot: one legend is enough
    fig.tight_layout()
    return fig


def plot_runs(workdirs: Sequence[str | Path] | str | Path, output: str | Path,
              metrics: Sequence[str] | None = None) -> Path:
    """Draws the curves of ``workdirs`` (see :func:`figure_runs`) into an image file.

    Args:
      workdirs: run folders, each holding a metrics.jsonl.
      output: a .png (or .svg, .pdf) path; its folder is created if needed.
      metrics: names to plot, default all, loss first.

    Returns:
      The path written.

    Raises:
      InputError: naming ``WORKDIR``, ``metrics`` or ``--output``.

    Example::

        plot_runs(["runs/a", "runs/b"], "runs/curves.png", metrics=["loss", "accuracy"])
    """
    output = Path(output)
    if output.suffix.lower() not in _FORMATS:
        raise errors.input_error("--output", f"an image path ending in one of {list(_FORMATS)}",
                                 repr(str(output)), "pass e.g. --output curves.png")
    fig = figure_runs(workdirs, metrics)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=_DPI)
    return output


def plot_sweep(workdir: str | Path, output: str | Path, hparam: str | None = None,
               metrics: Sequence[str] | None = None) -> Path:
    """Draws a population run's test metrics against a hyper-parameter, one point per member.

    Args:
      workdir: a population run folder (test lines with ``member`` and ``hparams``).
      output: a .png (or .svg, .pdf) path.
      hparam: the hyper-parameter on the x axis (default: the first one); a logarithmic
        axis when its values span more than a factor of 20.
      metrics: test metrics to draw (default: all, loss first).

    Returns:
      The path written; the best member (the run's ``"best"`` line) is circled.
    """
    from matplotlib.figure import Figure

    run = read_run(workdir)
    tests = [t for t in run.tests if t.get("hparams")]
    if not tests:
        raise errors.input_error("WORKDIR", "a population run with hyper-parameters "
                                 "(test lines with 'member' and 'hparams')", str(workdir),
                                 "train with --config.population.size and "
                                 "--config.population.hparams")
    names = list(tests[0]["hparams"])
    hparam = hparam or names[0]
    if hparam not in names:
        raise errors.unknown_name("hparam", "hyper-parameter", hparam, names)
    shown = [k for k in tests[0] if k not in (*_RECORD_KEYS, "hparams")
             and _number(tests[0][k]) is not None]
    shown = list(metrics) if metrics else shown
    xs = np.array([t["hparams"][hparam] for t in tests], np.float64)
    fig = Figure(figsize=(4.2 * len(shown), 3.4), layout="constrained")
    for i, metric in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        ys = np.array([_number(t.get(metric)) or math.nan for t in tests], np.float64)
        order = np.argsort(xs)
        ax.plot(xs[order], ys[order], "o-", markersize=3, color="C0")
        best = [j for j, t in enumerate(tests) if t["member"] == run.best]
        if best:
            ax.plot(xs[best], ys[best], "o", markersize=10, markerfacecolor="none",
                    color="C3", label=f"best (member {run.best})")
            ax.legend(fontsize=8)
        positive = xs[xs > 0]
        if positive.size == xs.size and positive.max() / positive.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(hparam)
        ax.set_title(f"test {metric}")
        ax.grid(alpha=0.3)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=_DPI)
    return output


def main_plot(workdirs: list[str], output: str | None, metrics: list[str] | None) -> int:
    """``jaxdl plot``: writes the curves and prints the path; returns the exit code 0.

    Args:
      workdirs: run folders (the WORKDIR arguments).
      output: the image path; None writes ``curves.png`` in the first workdir.
      metrics: names to plot, None for all.
    """
    if output is None:
        output = str(Path(workdirs[0]) / "curves.png") if workdirs else "curves.png"
    path = plot_runs(workdirs, output, metrics)
    print(path)
    for workdir in workdirs:
        if any(t.get("hparams") for t in read_run(workdir).tests):
            sweep = path.with_name(f"{path.stem}_sweep{path.suffix}") if len(workdirs) == 1 \
                else path.with_name(f"{path.stem}_{Path(workdir).resolve().name}_sweep"
                                    f"{path.suffix}")
            print(plot_sweep(workdir, sweep))
    return 0
