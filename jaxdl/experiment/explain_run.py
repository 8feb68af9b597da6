"""``jaxdl explain``: attributions of a trained run's predictions, as CSV and a plot.

The attribution methods themselves are pure functions in :mod:`jaxdl.explain`;
this module restores a run, prepares its inputs like ``jaxdl predict`` does,
and writes the report.
"""

from __future__ import annotations

import csv
import functools
import sys
from pathlib import Path

import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check
from jaxdl.explain import METHODS


def feature_names(dataset: str | None, num_features: int) -> list[str]:
    """The bundled data set's column names when they fit, else ``feature_0 ...``."""
    from jaxdl.data.datasets import FEATURE_NAMES

    names = FEATURE_NAMES.get(dataset or "", ())
    if len(names) == num_features:
        return list(names)
    return [f"feature_{i}" for i in range(num_features)]


def write_csv(attributions: np.ndarray, names: list[str], path: str | Path | None) -> None:
    """One header row of ``names``, then one row per example (flattened attributions)."""
    flat = np.asarray(attributions).reshape(len(attributions), -1)
    handle = sys.stdout if path is None else open(path, "w", newline="")
    try:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows([f"{v:.8g}" for v in row] for row in flat)
    finally:
        if path is not None:
            handle.close()


def plot_attributions(attributions: np.ndarray, names: list[str], path: str | Path,
                      title: str = "attributions", top: int = 20) -> None:
    """Writes a PNG: mean |attribution| per feature (top ``top``) or an image heat map.

    Args:
      attributions: [B, F] for tables (a horizontal bar chart of the ``top`` features by mean
        absolute attribution), or [B, H, W] / [B, H, W, C] for images (a heat map of the first
        example, summed over channels).
      names: F feature names (tables only).
      path: the .png file to write.
      title: the figure's title.
      top: features in the bar chart.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    attributions = np.asarray(attributions, np.float64)
    if attributions.ndim in (3, 4):
        heat = attributions[0] if attributions.ndim == 3 else attributions[0].sum(axis=-1)
        fig = Figure(figsize=(5, 4.5))
        ax = fig.subplots()
        limit = float(np.abs(heat).max()) or 1.0
        image = ax.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit)
        fig.colorbar(image, ax=ax, label="attribution (summed over channels)")
        ax.set_title(f"{title}: example 0")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        importance = np.abs(attributions.reshape(len(attributions), -1)).mean(axis=0)
        order = np.argsort(-importance, kind="stable")[:top][::-1]  # largest at the top
        fig = Figure(figsize=(7, 1.2 + 0.3 * len(order)))
        ax = fig.subplots()
        ax.barh(np.arange(len(order)), importance[order], color="tab:blue")
        ax.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=8)
        ax.set_xlabel("mean |attribution|")
        ax.set_title(f"{title}: top {len(order)} of {len(importance)} features")
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)


def _read_run_inputs(input_path: Path, num_features: list[int]) -> np.ndarray:
    from jaxdl.experiment import workdir as workdir_lib

    if not input_path.is_file():
        raise errors.input_error("--input", "an existing .csv or .npy file",
                                 f"{str(input_path)!r}, which does not exist",
                                 "pass the path of a file of raw features")
    try:
        x = np.asarray(workdir_lib.read_inputs(input_path))
    except (OSError, ValueError) as e:
        raise errors.input_error("--input", "a .csv of numbers or a numeric .npy array",
                                 f"{input_path} ({str(e).strip()[:200]})",
                                 "save the features with numpy.savetxt or numpy.save") from None
    if x.dtype.kind not in "biuf" or tuple(x.shape[1:]) != tuple(num_features):
        raise errors.input_error("--input", f"rows of {list(num_features)} numeric features "
                                 "(what the run was trained on)", f"rows of shape "
                                 f"{x.shape[1:]} and dtype {x.dtype} in {input_path}",
                                 "pass raw inputs with the training columns")
    x = x.astype(np.float32)
    rows = check.nonfinite_rows(x)
    if len(rows):
        raise errors.input_error("--input", "finite values (no NaN or inf)",
                                 f"{len(rows)} row(s) with NaN/inf in {input_path}, first at "
                                 f"row {rows[0]}", "drop or impute those rows first")
    if len(x) == 0:
        raise errors.input_error("--input", "at least one row", f"no rows in {input_path}",
                                 "pass a file with the rows to explain")
    return x


def explain_workdir(workdir: str | Path, input_path: str | Path,
                    output_csv: str | Path | None = None, output_png: str | Path | None = None,
                    method: str = "integrated_gradients", *, steps: int = 64,
                    probabilities: bool = False, batch_size: int = 256) -> np.ndarray:
    """Attributions of a trained run's predictions on raw inputs from a .csv/.npy file.

    The run's normalization is applied first, as ``predict`` does, and attributions are
    taken w.r.t. the normalized inputs (for integrated gradients the baseline is zero
    there: the training mean, for a standardized run). Each row is explained for its
    predicted class (argmax), or the single output of a binary/regression model, on the
    logits unless ``probabilities``.

    Args:
      workdir: a run folder written by ``jaxdl train``.
      input_path: raw features [N, ...] in a .csv (header row allowed) or .npy file.
      output_csv: where to write the CSV (header: the data set's feature names, else
        ``feature_i``; one row per example, flattened); None writes it to stdout.
      output_png: a .png for the plot (tables: mean |attribution| of the top 20 features;
        images: the first example's heat map); None skips it.
      method: a name in :data:`METHODS`.
      steps: integrated-gradients intervals.
      probabilities: explain probabilities (the run's loss link) instead of logits.
      batch_size: examples per program (the last batch is padded, so one compile).

    Returns:
      float32 attributions [N, ...] shaped like the inputs.
    """
    if method not in METHODS:
        raise errors.unknown_name("--method", "explanation method", method, list(METHODS))
    batch_size = check.positive_int(batch_size, "batch_size", "pass batch_size=256")
    if output_png is not None and Path(output_png).suffix.lower() != ".png":
        raise errors.input_error("--output-png", "a path ending in .png", repr(str(output_png)),
                                 "pass e.g. --output-png attributions.png")
    from jaxdl.data import transforms
    from jaxdl.experiment import restore

    config, trainer, state, meta = restore.restore_from_workdir(workdir)
    input_path = Path(input_path)
    x = _read_run_inputs(input_path, meta["num_features"])
    if meta.get("scaler"):
        x = np.asarray(transforms.scaler_from_dict(meta["scaler"])(x))
    predict_fn = functools.partial(trainer.programs.outputs, state)
    options = {"probabilities": probabilities, "link": trainer.loss.link}
    if method == "integrated_gradients":
        options["steps"] = steps
    size = min(batch_size, len(x))
    parts = []
    for start in range(0, len(x), size):
        batch = x[start:start + size]
        padded = np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), axis=0)])
        parts.append(METHODS[method](predict_fn, padded, **options)[:len(batch)])
    attributions = np.concatenate(parts)

    names = feature_names(config.data.name, int(np.prod(x.shape[1:])))
    for path in (output_csv, output_png):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_csv(attributions, names, output_csv)
    if output_png is not None:
        plot_attributions(attributions, names, output_png, title=method.replace("_", " "))
    return attributions
