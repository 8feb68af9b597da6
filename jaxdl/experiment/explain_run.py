"""``jaxdl explain``: attributions of a trained run's predictions, as CSV, JSON and a plot.

The attribution methods themselves are pure functions in :mod:`jaxdl.explain`; this
module restores a run (a population's chosen member), prepares its inputs like ``jaxdl
predict`` does, settles what is explained (target class, logit or probability, baseline)
and writes the report (:mod:`jaxdl.experiment.explain_output`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check
from jaxdl.experiment.explain_output import plot_attributions, write_csv, write_report
from jaxdl.explain import METHODS, Explanation

__all__ = ["explain_workdir", "feature_names", "plot_attributions", "write_csv"]

TARGETS = ("predicted", "true", "all")
BASELINES = ("zeros", "median", "train")
BACKGROUND_ROWS = 100  # expected gradients' default background: this many training rows


def feature_names(dataset: str | None, num_features: int) -> list[str]:
    """The bundled data set's column names when they fit, else ``feature_0 ...``."""
    from jaxdl.data.datasets import FEATURE_NAMES

    names = FEATURE_NAMES.get(dataset or "", ())
    if len(names) == num_features:
        return list(names)
    return [f"feature_{i}" for i in range(num_features)]


def _read(path: Path, argument: str, shape: list[int], what: str) -> np.ndarray:
    """Rows of a .csv/.npy as float32 [N, *shape]; flat rows (CSV pixels) are reshaped."""
    from jaxdl.experiment import workdir as workdir_lib

    if not path.is_file():
        raise errors.input_error(argument, "an existing .csv or .npy file",
                                 f"{str(path)!r}, which does not exist",
                                 f"pass the path of a file of {what}")
    try:
        x = np.asarray(workdir_lib.read_inputs(path)).astype(np.float32)  # finite, >= 1 row
    except errors.InputError as e:  # its text names --input; this file may be another's
        raise e.renamed(argument) from None
    size = int(np.prod(shape))
    if tuple(x.shape[1:]) != tuple(shape) and int(np.prod(x.shape[1:])) == size:
        x = x.reshape(len(x), *shape)  # e.g. CSV rows of an image's flat pixels
    if tuple(x.shape[1:]) != tuple(shape):
        raise errors.input_error(argument, f"rows of {list(shape)} numeric features (what the "
                                 f"run was trained on; or {size} flat values per row)",
                                 f"rows of shape {x.shape[1:]} in {path}",
                                 "pass raw inputs with the training columns")
    return x


def _read_run_inputs(input_path: Path, num_features: list[int]) -> np.ndarray:
    return _read(input_path, "--input", num_features, "raw features")


def _best_member(workdir: Path) -> int | None:
    """The member ``jaxdl train`` named best (``population.best``, in metrics.jsonl)."""
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    best = [json.loads(line) for line in lines if '"best"' in line]
    best = [b for b in best if b.get("split") == "best"]
    return int(best[-1]["member"]) if best else None


def _member(workdir: Path, state: Any, member: int | None) -> tuple[Any, dict[str, Any]]:
    from jaxdl import population

    if population.size(state) is None:
        if member is not None:
            raise errors.input_error("--member", "a population run (population.size > 0)",
                                     f"member {member} of a single-model run", "drop --member")
        return state, {"member": None}
    chosen, how = member, "given"
    if chosen is None:
        chosen, how = _best_member(workdir), "best (population.best, from metrics.jsonl)"
        if chosen is None:
            chosen, how = 0, "0 (the run recorded no best member)"
    try:
        return population.member(state, chosen), {"member": chosen, "member_choice": how}
    except errors.InputError as e:
        raise (e.renamed("--member") if e.argument == "index" else e) from None


def _labels(labels_path: Path, n: int, width: int) -> np.ndarray:
    path = Path(labels_path)
    try:
        y = (np.load(path, allow_pickle=False) if path.suffix == ".npy" else
             np.loadtxt(path, delimiter=",", ndmin=1)).astype(np.float64).reshape(-1)
    except (OSError, ValueError, TypeError) as e:
        # numpy's own text for a pickled .npy would suggest loading it unsafely
        why = "not a plain numeric .npy file" if path.suffix == ".npy" else \
            errors.first_sentence(e)
        raise errors.input_error("--labels", "a .csv or .npy of class indices, one per input "
                                 "row", f"{path.name} ({why})",
                                 "save them with np.savetxt(path, y, fmt='%d')") from None
    if len(y) != n or not np.all(y == np.round(y)) or y.min() < 0 or y.max() >= max(width, 2):
        raise errors.input_error("--labels", f"{n} class indices in [0, {max(width, 2) - 1}], "
                                 "one per input row", f"{len(y)} values from {y.min():g} to "
                                 f"{y.max():g}", "pass the rows' integer labels")
    return y.astype(np.int32)


def _targets(spec: Any, n: int, width: int, labels_path: Path | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """(the input row of each explained row, its target or None for the predicted class)."""
    rows = np.arange(n)
    if spec == "predicted":
        return rows, None
    if spec == "all":
        return np.repeat(rows, width), np.tile(np.arange(width, dtype=np.int32), n)
    if spec == "true":
        labels = _labels(labels_path, n, width)
        return rows, labels if width > 1 else np.zeros(n, np.int32)  # one output: that one
    try:
        index = int(spec)
    except (TypeError, ValueError):
        index = -1
    if isinstance(spec, bool) or not 0 <= index < width or str(spec).strip() != str(index):
        raise errors.input_error("--target", f"'predicted', 'true', 'all' or a class index "
                                 f"in [0, {width - 1}] (the model has {width} output(s))",
                                 repr(spec), "pass --target predicted")
    return rows, np.full(n, index, np.int32)


def _model_space(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    from jaxdl.data import transforms

    return np.asarray(transforms.scaler_from_dict(meta["scaler"])(x)) if meta.get("scaler") else x


def _zeros_meaning(meta: dict[str, Any]) -> str:
    kind = (meta.get("scaler") or {}).get("kind")
    if kind == "standardizer":
        return "zeros in standardized space: the training mean"
    if kind == "minmax":
        return "zeros in min-max scaled space (the training minimum for a range from 0)"
    return "zeros (the run applies no normalization; e.g. black pixels)"


def _baseline(spec: str | None, method: str, config: Any, meta: dict[str, Any]
              ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The baseline (background for expected gradients) in the model's input space."""
    from jaxdl.experiment import input_scale

    shape = meta["num_features"]
    many = method == "expected_gradients"
    if method in ("saliency", "gradient_x_input", "smoothgrad"):
        if spec is not None:
            raise errors.input_error("--baseline", "a method that uses a baseline "
                                     "(integrated_gradients, expected_gradients, occlusion)",
                                     f"--baseline {spec} with {method}", "drop --baseline")
        return None, {"kind": "none", "meaning": "none" if method != "gradient_x_input" else
                      "none (the completeness reference is f(0): " + _zeros_meaning(meta) + ")"}
    spec = spec or ("train" if many else "zeros")
    if spec == "zeros":
        return None, {"kind": "zeros", "meaning": _zeros_meaning(meta)}
    if spec in ("median", "train"):
        if spec == "train" and not many:
            raise errors.input_error("--baseline", "zeros, median or a file of one row (train: "
                                     "expected_gradients' background only)", "'train'",
                                     "pass --baseline median")
        sample = input_scale.training_sample(config)
        if sample is None:
            raise errors.input_error("--baseline", f"{spec!r} of a run whose training data "
                                     "can be read", "a run whose data set or records are "
                                     "gone", "pass --baseline zeros or a file of one row")
        if spec == "median":
            return np.median(sample, axis=0)[None], {
                "kind": "median", "meaning": f"the per-feature median of {len(sample)} "
                "training rows, as the model sees them"}
        rows = sample[np.unique(np.linspace(0, len(sample) - 1, min(BACKGROUND_ROWS, len(
            sample))).astype(np.int64))]
        return rows, {"kind": "train", "meaning": f"{len(rows)} training rows, evenly spaced"}
    rows = _model_space(_read(Path(spec), "--baseline", shape, "a reference row"), meta)
    if len(rows) != 1 and not many:
        raise errors.input_error("--baseline", "a file of one row (raw units)",
                                 f"{len(rows)} rows in {spec}", "keep one reference row")
    return rows, {"kind": "file", "path": str(spec), "rows": len(rows),
                  "meaning": "raw reference row(s), normalized like the inputs"}


def _options(method: str, steps: int | str, tolerance: float, max_steps: int, samples: int,
             window: int, stride: int, seed: int, stdev: float | None) -> dict[str, Any]:
    if steps == "auto" and method != "integrated_gradients":
        raise errors.input_error("--steps", "'auto' with --method integrated_gradients only",
                                 f"'auto' with {method}", "pass --steps N")
    return {"integrated_gradients": {"steps": steps, "tolerance": tolerance,
                                     "max_steps": max_steps},
            "expected_gradients": {"samples": samples, "seed": seed, "stdev": stdev or 0.0},
            "smoothgrad": {"samples": samples, "seed": seed, "stdev": stdev or 0.15},
            "occlusion": {"window": window, "stride": stride}}.get(method, {})


def _batched(method: str, predict_fn: Any, x: np.ndarray, target: np.ndarray | None,
             size: int, **kwargs: Any) -> Explanation:
    """``jaxdl.explain.attribute`` over batches of ``size`` rows (the last one padded)."""
    from jaxdl.explain import attribute

    parts = []
    for start in range(0, len(x), size):
        batch = x[start:start + size]
        pad = size - len(batch)
        padded = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
        t = None if target is None else np.concatenate([target[start:start + size],
                                                        np.repeat(target[-1:], pad)])
        offset = {"row_offset": start} if method in ("expected_gradients", "smoothgrad") else {}
        e = attribute(method, predict_fn, padded, t, **kwargs, **offset)
        parts.append([None if a is None else a[:len(batch)] for a in e])
    return Explanation(*(None if p[0] is None else np.concatenate(p) for p in zip(*parts,
                                                                                strict=True)))


def _explained(task: str, probabilities: bool) -> str:
    if task == "regression":
        if probabilities:
            raise errors.input_error("--probabilities", "a classification run", "a regression "
                                     "run (its output is the predicted value)",
                                     "drop --probabilities")
        return "the predicted value"
    what = {"binary": "of the positive class (output 0)", "multiclass": "of the target class"}
    if probabilities:
        return f"the probability {what.get(task, '(the loss link of the output)')}"
    return f"the logit {what.get(task, '(the raw output)')}"


def explain_workdir(workdir: str | Path, input_path: str | Path,
                    output_csv: str | Path | None = None, output_png: str | Path | None = None,
                    method: str = "integrated_gradients", *, steps: int | str = 64,
                    probabilities: bool = False, batch_size: int = 256,
                    target: str | int = "predicted", labels: str | Path | None = None,
                    baseline: str | None = None, member: int | None = None,
                    tolerance: float = 0.01, max_steps: int = 1024, samples: int = 64,
                    window: int = 2, stride: int = 1, seed: int = 0, stdev: float | None = None,
                    output_json: str | Path | None = None, row_columns: bool = False
                    ) -> np.ndarray:
    """Attributions of a trained run's predictions on raw inputs from a .csv/.npy file.

    The run's normalization is applied first, as ``predict`` does, and attributions are
    taken w.r.t. the normalized inputs. A population run explains one member (``member``,
    default the best). Each row is explained for ``target`` on the logits unless
    ``probabilities``; the completeness gap, steps and settings go to the CSV (with
    ``row_columns``) and to the JSON sidecar. See docs/explain.md.

    Args:
      workdir: a run folder written by ``jaxdl train``.
      input_path: raw features [N, ...] in a .csv (header row allowed; image rows as flat
        pixels) or .npy file.
      output_csv: the CSV (header: ``row_columns`` then the feature names, else
        ``feature_i``); None writes it to stdout.
      output_png: a .png: per target class, mean |attribution| of the top 20 features
        (tables) or the mean heat map (images); None skips it.
      method: a name in :data:`jaxdl.explain.METHODS`.
      steps: integrated gradients' intervals, or "auto" (doubling from 32 to
        ``max_steps`` until every row's relative gap is under ``tolerance``).
      probabilities: explain probabilities (the run's loss link) instead of logits.
      batch_size: examples per program (the last batch is padded, so one compile).
      target: "predicted" (argmax), "true" (the ``labels`` file), "all" (one row per class
        and input) or a class index.
      labels: a .csv/.npy of one class index per input row (``target="true"``).
      baseline: "zeros" (the training mean of a standardized run), "median" (of the
        training rows), "train" (expected gradients' background: 100 training rows; its
        default) or a .csv/.npy file of raw reference row(s); None: the method's default.
      member: a population's member (default: the best, as ``jaxdl train`` recorded it).
      tolerance, max_steps: ``steps="auto"``'s.
      samples: expected gradients' / smoothgrad's draws per row.
      window, stride: occlusion's.
      seed: the random draws of expected gradients and smoothgrad.
      stdev: input noise: smoothgrad's (None: 0.15), GradientSHAP's for expected gradients
        (None: 0, none), in the model's (normalized) input units.
      output_json: the sidecar; None: next to ``output_csv`` (``.json``), none on stdout.
      row_columns: lead each CSV row with :data:`ROW_COLUMNS` (the CLI does).

    Returns:
      float32 attributions [R, ...] shaped like the inputs (R = N, or N x classes for
      ``target="all"``).
    """
    settings = _checked(method, batch_size, output_png, target, steps, labels)
    config, trainer, state, meta, x, names = _restored(Path(workdir), Path(input_path),
                                                       member, settings)
    predict_fn = functools.partial(trainer.programs.outputs, state)
    width = int(np.prod(np.asarray(predict_fn(x[:1])).shape[1:]))
    settings["explained"] = _explained(trainer.loss.task, probabilities)
    rows, targets = _targets(target, len(x), width, labels)
    reference, settings["baseline"] = _baseline(baseline, method, config, meta)
    options = _options(method, steps, tolerance, max_steps, samples, window, stride, seed,
                       stdev)
    e = _batched(method, predict_fn, x[rows], targets, min(batch_size, len(rows)),
                 baseline=reference, probabilities=probabilities, link=trainer.loss.link,
                 **options)
    settings.update(workdir=str(workdir), input=str(input_path), input_rows=len(x),
                    options=options,
                    probabilities=probabilities, space="the model's inputs, after the run's "
                    "normalization")
    write_report(e, rows, names, settings, width, tolerance,
                 (output_csv, output_png, output_json, row_columns))
    return e.attributions


def _restored(workdir: Path, input_path: Path, member: int | None, settings: dict[str, Any]
              ) -> tuple[Any, Any, Any, dict[str, Any], np.ndarray, list[str]]:
    """(config, trainer, the member's state, meta, the inputs as the model sees them,
    feature names): the run restored and the input file read, normalized and checked."""
    from jaxdl.experiment import input_scale, restore

    config, trainer, state, meta = restore.restore_from_workdir(workdir)
    if not str(meta.get("input_dtype", "float32")).startswith("float"):
        raise errors.input_error("--workdir", "a run with real-valued inputs (attributions are "
                                 "gradients with respect to the inputs)", f"{workdir}, trained "
                                 f"on {meta.get('input_dtype')} token inputs",
                                 "explain a run of features or images")
    state, settings["member"] = _member(workdir, state, member)
    # The run's normalization, which must keep every value finite (as predict's).
    x = restore._normalized(_read_run_inputs(input_path, meta["num_features"]),
                            meta.get("scaler"), input_path)
    names = feature_names(config.data.name, int(np.prod(x.shape[1:])))
    input_scale.check(x, meta.get("scaler"), config, input_path.name, names=names)
    return config, trainer, state, meta, x, names


def _checked(method: str, batch_size: int, output_png: Any, target: Any, steps: Any,
             labels: Any) -> dict[str, Any]:
    """The arguments checked before the run is restored; the settings record started."""
    if method not in METHODS:
        raise errors.unknown_name("--method", "explanation method", method, list(METHODS))
    check.positive_int(batch_size, "batch_size", "pass batch_size=256")
    if output_png is not None and Path(output_png).suffix.lower() != ".png":
        raise errors.input_error("--output-png", "a path ending in .png", repr(str(output_png)),
                                 "pass e.g. --output-png attributions.png")
    if target not in TARGETS and not str(target).strip().isdigit():
        raise errors.input_error("--target", "'predicted', 'true', 'all' or a class index",
                                 repr(target), "pass --target predicted")
    if target == "true" and labels is None:
        raise errors.input_error("--target", "'true' only with --labels FILE (one class "
                                 "index per input row)", "no --labels",
                                 "pass --labels y.csv, or --target predicted")
    if steps != "auto":
        check.positive_int(steps, "--steps", "pass --steps 64 or --steps auto")
    return {"method": method, "target": str(target), "steps": steps}
