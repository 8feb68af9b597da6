"""A population's curves in a plot: who diverged, the band of the others, the best member.

One member whose loss explodes (a learning rate of 1e3 in a sweep) would stretch a
min-max band, and the y axis with it, over ten decades and flatten every other
member into a line at the bottom. So a member counts as *diverged* from the
first epoch at which its loss (train or val) is not finite or is more than
:data:`SPIKE` times the members' lower median loss at that epoch (of two
members, the lower one); from there on it is left out of the band and of the
axis limits, drawn thin and dotted (off the axes where it is off the scale),
and marked with a ``x`` on the top edge at that epoch, labelled ``"<run> member
<i> diverged (epoch <e>)"``. The band, labelled ``"<run> <split> (members <n>,
<k> diverged)"``, is the per-epoch min..max of the members' finite values
before they diverged.

    draw(ax, run, "loss", "C0", {"train": "-", "val": "--"})   # from plot.figure_runs
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jaxdl.writers.plot import RunLog

# A loss this many times the members' median at the same epoch is off the scale: a
# hundredfold is more than seeds or a sweep's sensible settings spread a population's losses.
SPIKE = 100.0
_SPLITS = ("train", "val")


def _final(curve: dict[int, float] | None) -> float:
    """The value at the last epoch; NaN when missing or non-finite (never the best)."""
    if not curve:
        return math.nan
    value = curve[max(curve)]
    return value if math.isfinite(value) else math.nan


def best_member(run: RunLog) -> int | None:
    """The member with the lowest final ``val_loss``; without val loss, the highest final
    val accuracy-like metric; without validation, the lowest final training loss."""
    members = run.members
    if not members:
        return None
    if run.best is not None:
        return run.best
    from jaxdl import metrics  # only here: drawing needs no jax otherwise
    for split in ("val", "train"):
        logged = dict.fromkeys(k for m in members for k in run.series.get((split, m), {}))
        candidates = [k for k in logged if k == "loss"] + [
            k for k in logged if metrics.mode(k) == "max"]
        for metric in candidates:
            finals = np.array([_final(run.series.get((split, m), {}).get(metric))
                               for m in members])
            if np.isnan(finals).all():
                continue  # every member diverged on this one: ask the next metric
            sign = 1.0 if metric == "loss" else -1.0  # accuracy-like: higher is better
            return members[int(np.nanargmin(sign * finals))]
    return members[0]


def _lower_median(grid: np.ndarray) -> np.ndarray:
    """Per column, the lower median of the finite values (NaN where there are none): of
    two members the lower one, so that one exploding member cannot move it."""
    finite = np.isfinite(grid)
    ordered = np.sort(np.where(finite, grid, np.nan), axis=0)  # NaN sort last
    count = finite.sum(axis=0)
    middle = ordered[np.maximum(count - 1, 0) // 2, np.arange(grid.shape[1])]
    return np.where(count > 0, middle, np.nan)


def diverged(run: RunLog) -> dict[int, int]:
    """Member -> the first epoch it diverged at (see the module's docstring); judged on
    ``loss``, or on every metric's finiteness when the run logs no loss."""
    members, found = run.members, {}
    for split in _SPLITS:
        for name in ["loss"] if "loss" in run.metrics else run.metrics:
            curves = [run.series.get((split, m), {}).get(name, {}) for m in members]
            epochs = sorted({e for c in curves for e in c})
            if not epochs:
                continue
            grid = np.array([[c.get(e, math.nan) for e in epochs] for c in curves],
                            np.float64)
            logged = np.array([[e in c for e in epochs] for c in curves])
            bad = logged & ~np.isfinite(grid)  # NaN or inf logged; a missing epoch is not
            if name == "loss":
                median = _lower_median(grid)
                with np.errstate(invalid="ignore"):  # NaN compares False: not a spike
                    bad |= (median > 0) & (grid > SPIKE * median)
            for member, row in zip(members, bad, strict=True):
                if row.any():
                    epoch = epochs[int(np.argmax(row))]
                    found[member] = min(epoch, found.get(member, epoch))
    return found


def _kept(curve: dict[int, float], since: int | None) -> dict[int, float]:
    """A member's finite values before it diverged (all of them if it did not)."""
    return {e: v for e, v in curve.items() if math.isfinite(v) and (since is None or e < since)}


def band(run: RunLog, split: str, metric: str, gone: dict[int, int]
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs and the per-epoch min/max of the members' values before they diverged."""
    curves = [_kept(run.series.get((split, m), {}).get(metric, {}), gone.get(m))
              for m in run.members]
    epochs = np.array(sorted({e for c in curves for e in c}))
    grid = np.array([[c.get(e, math.nan) for e in epochs] for c in curves], np.float64)
    if not epochs.size:
        return epochs, epochs.astype(np.float64), epochs.astype(np.float64)
    return epochs, np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)


def curve(values: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of one curve; inf as NaN (a gap), which would wreck the y-range."""
    epochs = np.array(sorted(values))
    ys = np.array([values[e] for e in epochs], dtype=np.float64)
    return epochs, np.where(np.isfinite(ys), ys, np.nan)


def draw(ax: Any, run: RunLog, metric: str, color: str, styles: dict[str, str]
         ) -> list[np.ndarray]:
    """Draws a population's band, best member and diverged members into ``ax``; returns
    the values the y axis must show (the band and the best member's curve)."""
    best, gone = best_member(run), diverged(run)
    shown: list[np.ndarray] = []
    for split in _SPLITS:
        epochs, lo, hi = band(run, split, metric, gone)
        if not len(epochs):
            continue
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.2 if split == "train" else 0.1,
                        linestyle=styles[split], linewidth=0.6,
                        label=f"{run.name} {split} (members {len(run.members)}"
                        + (f", {len(gone)} diverged)" if gone else ")"))
        shown += [lo, hi]
        top = run.series.get((split, best), {}).get(metric)
        if top:
            kept = _kept(top, gone.get(best))
            ax.plot(*curve(top), styles[split], color=color, linewidth=2.2,
                    label=f"{run.name} {split} (best: member {best})",
                    scalex=False, scaley=not gone.get(best))  # its sane part is in `shown`
            shown.append(np.array(list(kept.values()), np.float64))
        for member in sorted(gone):  # off the scale: drawn, but not scaled to
            values = run.series.get((split, member), {}).get(metric)
            if values:
                ax.plot(*curve(values), ":", color=color, linewidth=0.8, alpha=0.7,
                        scalex=False, scaley=False, label="_diverged")
    for member, epoch in sorted(gone.items()):
        # On the top edge (x in data, y in axes coordinates): visible whatever the limits.
        ax.plot([epoch], [1.0], "x", color=color, markersize=8, clip_on=False,
                transform=ax.get_xaxis_transform(), scalex=False, scaley=False,
                label=f"{run.name} member {member} diverged (epoch {epoch})")
    return shown
