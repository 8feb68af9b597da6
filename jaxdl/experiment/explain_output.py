"""What ``jaxdl explain`` writes: the attributions CSV, its JSON sidecar, and the plot.

Rows explained for different classes are never pooled: the plot and the summaries are
per target class (one bar chart or heat map each).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Leading columns of the CSV with ``row_columns``, one value per explained row.
ROW_COLUMNS = ("row", "target", "output", "reference", "gap", "relative_gap", "steps")
_MAX_PANELS = 10
_COLUMNS = 5  # panels per row of the figure


def _axes(fig: Any, n: int) -> list[Any]:
    rows = -(-n // _COLUMNS)
    axes = fig.subplots(rows, min(n, _COLUMNS), squeeze=False).reshape(-1)
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(int(value)) if isinstance(value, np.integer | int) else f"{float(value):.8g}"


def write_csv(attributions: np.ndarray, names: list[str], path: str | Path | None,
              rows: dict[str, np.ndarray | None] | None = None) -> None:
    """A header row, then one row per explained example (flattened attributions).

    Args:
      attributions: [R, ...] float.
      names: the flat feature names (the header's attribution columns).
      path: the .csv file; None writes to stdout.
      rows: ``{column: [R] values or None (an empty cell)}`` for the leading
        :data:`ROW_COLUMNS` (in that order); None writes the attribution columns only.
    """
    flat = np.asarray(attributions).reshape(len(attributions), -1)
    leading = [c for c in ROW_COLUMNS if rows is not None and c in rows]
    handle = sys.stdout if path is None else open(path, "w", newline="")
    try:
        writer = csv.writer(handle)
        writer.writerow([*leading, *names])
        for i, row in enumerate(flat):
            cells = [_cell(None if rows[c] is None else rows[c][i]) for c in leading]
            writer.writerow([*cells, *(f"{v:.8g}" for v in row)])
    finally:
        if path is not None:
            handle.close()


def class_summaries(attributions: np.ndarray, target: np.ndarray, names: list[str],
                    top: int = 10) -> dict[str, Any]:
    """Per target: the rows explained for it and its top features by mean |attribution|."""
    flat = np.abs(np.asarray(attributions, np.float64).reshape(len(attributions), -1))
    summaries = {}
    for t in np.unique(target):
        mean = flat[target == t].mean(axis=0)
        order = np.argsort(-mean, kind="stable")[:top]
        summaries[str(int(t))] = {"rows": int((target == t).sum()), "top_features": [
            {"feature": names[i], "mean_abs_attribution": float(mean[i])} for i in order]}
    return summaries


def write_json(record: dict[str, Any], path: str | Path) -> None:
    """The sidecar: what was explained (method, target, output, baseline, steps, gaps)."""
    Path(path).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")


def _bars(fig: Any, groups: list[tuple[str, np.ndarray]], names: list[str], title: str,
          top: int) -> None:
    for ax, (label, group) in zip(_axes(fig, len(groups)), groups, strict=True):
        importance = np.abs(group.reshape(len(group), -1)).mean(axis=0)
        order = np.argsort(-importance, kind="stable")[:top][::-1]  # largest at the top
        ax.barh(np.arange(len(order)), importance[order], color="tab:blue")
        ax.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=8)
        ax.set_xlabel("mean |attribution|")
        ax.set_title(f"{label}: top {len(order)} of {len(importance)}", fontsize=9)
    fig.suptitle(title)


def _heat_maps(fig: Any, groups: list[tuple[str, np.ndarray]], title: str) -> None:
    for ax, (label, heat) in zip(_axes(fig, len(groups)), groups, strict=True):
        limit = float(np.abs(heat).max()) or 1.0
        image = ax.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title} (summed over channels)")


def plot_attributions(attributions: np.ndarray, names: list[str], path: str | Path,
                      title: str = "attributions", top: int = 20,
                      target: np.ndarray | None = None) -> None:
    """Writes a PNG: per target class, mean |attribution| (tables) or a heat map (images).

    Args:
      attributions: [R, F] for tables (a horizontal bar chart of the ``top`` features by mean
        absolute attribution), or [R, H, W] / [R, H, W, C] for images (summed over channels).
      names: F feature names (tables only).
      path: the .png file to write.
      title: the figure's title.
      top: features in each bar chart.
      target: [R] the class each row was explained for: one panel per class (at most 10);
        None: one panel of all rows (a table) or of the first example (an image).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    attributions = np.asarray(attributions, np.float64)
    image = attributions.ndim in (3, 4)
    if image and attributions.ndim == 4:
        attributions = attributions.sum(axis=-1)
    if target is None:
        groups = [("example 0", attributions[0])] if image else [("all rows", attributions)]
    else:
        classes = np.unique(target)[:_MAX_PANELS]
        groups = [(f"class {int(t)} ({int((target == t).sum())} rows)",
                   attributions[target == t].mean(axis=0) if image else attributions[target == t])
                  for t in classes]
    columns, lines = min(len(groups), _COLUMNS), -(-len(groups) // _COLUMNS)
    if image:
        fig = Figure(figsize=(1.2 + 3.2 * columns, 0.6 + 3.0 * lines))
        _heat_maps(fig, groups, title)
    else:
        rows = min(top, attributions.reshape(len(attributions), -1).shape[1])
        fig = Figure(figsize=(1.5 + 4.5 * columns, (1.4 + 0.3 * rows) * lines))
        _bars(fig, groups, names, title, top)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)


_EXACTNESS = {
    "integrated_gradients": "converges as steps grow (exact for a linear model)",
    "expected_gradients": "in expectation over the background (Monte-Carlo error)",
    "gradient_x_input": "exact only for a linear model without bias (reference: f(0))",
}


def _record(e: Any, settings: dict[str, Any], tolerance: float, names: list[str],
            width: int) -> dict[str, Any]:
    """The JSON sidecar: what was explained, the steps and the completeness gaps."""
    record = dict(settings)
    if e.steps is not None:
        used, counts = np.unique(e.steps, return_counts=True)
        record["steps_used"] = {str(int(s)): int(c) for s, c in zip(used, counts, strict=True)}
    if e.gap is not None:
        record["completeness"] = {
            "gap": "sum of attributions - (output - reference), per row (CSV column gap)",
            "holds": _EXACTNESS[settings["method"]],
            "max_abs_gap": float(np.abs(e.gap).max()),
            "max_relative_gap": float(e.relative_gap.max()),
            "rows_over_tolerance": int((e.relative_gap > tolerance).sum()),
            "tolerance": tolerance}
    record["classes"] = class_summaries(e.attributions, e.target, names)
    record["model_outputs"] = width
    return record


def write_report(e: Any, rows: np.ndarray, names: list[str], settings: dict[str, Any],
                 width: int, tolerance: float, outputs: tuple) -> None:
    """Writes the CSV (stdout when its path is None), the JSON sidecar and the PNG.

    ``outputs`` is ``(csv, png, json, row_columns)``; the sidecar defaults to the CSV's
    path with ``.json`` (none when the CSV goes to stdout).
    """
    output_csv, output_png, output_json, row_columns = outputs
    if output_json is None and output_csv is not None:
        output_json = Path(output_csv).with_suffix(".json")
    for path in (output_csv, output_png, output_json):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    columns = dict(zip(ROW_COLUMNS, (rows, e.target, e.output, e.reference, e.gap,
                                     e.relative_gap, e.steps), strict=True))
    write_csv(e.attributions, names, output_csv, columns if row_columns else None)
    record = _record(e, settings, tolerance, names, width)
    record["columns"] = [*(ROW_COLUMNS if row_columns else ()), *names]
    if output_json is not None:
        write_json(record, output_json)
    if output_png is not None:
        plot_attributions(e.attributions, names, output_png,
                          title=f"{settings['method'].replace('_', ' ')}: "
                          f"{settings['explained']}", target=e.target if width > 1 else None)
    over = record.get("completeness", {}).get("rows_over_tolerance", 0)
    if settings["method"] == "integrated_gradients" and over and settings["steps"] == "auto":
        print(f"jaxdl: {over} row(s) still miss completeness by over {tolerance:.2%} at "
              f"{settings['options']['max_steps']} steps (raise --max-steps)", file=sys.stderr)
