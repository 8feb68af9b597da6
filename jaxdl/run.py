"""``train_and_evaluate(config, workdir)``: one experiment from a config, end to end.

The CLI calls this; a script can too. It loads and cleans the data, builds the
model, optimizer and Trainer from the config, fits with validation, evaluates
on the test split, and leaves in ``workdir``:

    config.json     the resolved config
    metrics.jsonl   {"step", "epoch", "split": "train"|"val"|"test", <metric>: float} per line;
                    the last line is the test evaluation
    checkpoints/    the final TrainState (Orbax) with the normalization statistics

``predict_from_workdir`` rebuilds the same model from ``config.json`` and the
checkpoint to predict on new inputs (``jaxdl predict``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ml_collections
import numpy as np

from jaxdl import config as config_lib
from jaxdl import errors


def _model(config: ml_collections.ConfigDict):
    from jaxdl import models

    kwargs = {k: (tuple(v) if isinstance(v, list) else v)
              for k, v in config.model.to_dict().items() if k != "name"}
    return models.get(config.model.name, **kwargs)


def _optimizer(config: ml_collections.ConfigDict, total_steps: int):
    from jaxdl import optim

    opt = config.optimizer
    schedule = optim.make_schedule(
        opt.get("schedule", "constant"), opt.learning_rate, total_steps=total_steps,
        warmup_steps=opt.get("warmup_steps", 0), decay_steps=opt.get("decay_steps", None),
        decay_rate=opt.get("decay_rate", 0.1))
    return optim.make_optimizer(opt.name, schedule, weight_decay=opt.get("weight_decay", 0.0),
                                l2=opt.get("l2", 0.0), clip_norm=opt.get("clip_norm", None) or None)


def build_trainer(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """The Trainer an experiment config describes (model, loss, metrics, optimizer)."""
    from jaxdl.trainer import Trainer

    total_steps = max(1, config.epochs * steps_per_epoch)
    return Trainer(_model(config), loss=config.loss, metrics=list(config.metrics),
                   optimizer=_optimizer(config, total_steps))


def _callbacks(config: ml_collections.ConfigDict) -> list:
    from jaxdl import callbacks

    out = []
    stop = config.get("early_stopping")
    if stop is not None and stop.get("enabled", False):
        out.append(callbacks.EarlyStopping(monitor=stop.monitor, patience=stop.patience,
                                           restore_best_weights=stop.get("restore_best", True)))
    plateau = config.get("reduce_lr")
    if plateau is not None and plateau.get("enabled", False):
        out.append(callbacks.ReduceLROnPlateau(monitor=plateau.monitor, factor=plateau.factor,
                                               patience=plateau.patience))
    if config.get("nan_policy", "stop") == "stop":
        out.append(callbacks.TerminateOnNaN(restore_last_good=False))
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       quiet: bool = False) -> dict[str, float]:
    """Trains the experiment ``config`` into ``workdir``; returns the test metrics."""
    import jax

    from jaxdl import checkpoint, writers
    from jaxdl.data import arrays, datasets, transforms

    workdir = Path(workdir)
    if (workdir / "metrics.jsonl").exists():
        raise errors.input_error("--workdir", "a new or empty directory",
                                 f"{workdir}, which already holds a run (metrics.jsonl)",
                                 "pass a new --workdir (resuming a run is not supported yet)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config_lib.config_to_dict(config),
                                                    indent=2) + "\n")
    data_cfg = config.data
    data = datasets.load(data_cfg.name, seed=config.seed,
                         val_fraction=data_cfg.get("val_fraction", 0.15),
                         test_fraction=data_cfg.get("test_fraction", 0.2),
                         standardize=data_cfg.get("standardize", True))
    x_train, y_train = data.x_train, data.y_train
    if data_cfg.get("clean", True):
        x_train, y_train, report = transforms.clean(x_train, y_train)
        if not quiet and report["rows_out"] != report["rows_in"]:
            print(f"clean: {report}", file=sys.stderr)
    steps_per_epoch = arrays.steps_per_epoch(len(x_train), config.batch_size)
    trainer = build_trainer(config, steps_per_epoch)
    state = trainer.init(jax.random.key(config.seed), x_train[:1])

    jsonl = writers.JsonlWriter(workdir / "metrics.jsonl")
    callbacks = [*_callbacks(config), jsonl]
    if not quiet:
        callbacks.append(writers.ConsoleLogger())
    validation = (data.x_val, data.y_val) if len(data.x_val) else None
    state, history = trainer.fit(
        state, x_train, y_train, epochs=config.epochs, batch_size=config.batch_size,
        validation_data=validation, shuffle=config.get("shuffle", True), seed=config.seed,
        callbacks=callbacks, steps_per_dispatch=config.get("steps_per_dispatch", "auto"),
        verbose=0)
    results = trainer.evaluate(state, data.x_test, data.y_test, batch_size=config.batch_size)
    epochs_run = len(next(iter(history.values()), []))
    jsonl.write({"step": int(state.step), "epoch": epochs_run, "split": "test", **results})
    meta = {"epoch": epochs_run, "seed": config.seed, "num_features": list(x_train.shape[1:]),
            "input_dtype": str(x_train.dtype),
            "scaler": data.scaler.to_dict() if data.scaler is not None else None}
    checkpoint.save(workdir / "checkpoints", state, meta, keep=1)
    if not quiet:
        print("test · " + writers.format_logs(results), flush=True)
    return results


def _read_inputs(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError:  # a header row
        return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, skiprows=1)


def predict_from_workdir(workdir: str | Path, input_path: str | Path,
                         output_path: str | Path | None = None,
                         batch_size: int | None = None) -> np.ndarray:
    """Predicts with a trained run on raw (unnormalized) inputs from a .csv/.npy file.

    The run's normalization statistics are applied first, as in training.
    Writes CSV (or .npy) to ``output_path``, or CSV to stdout when it is None.
    """

    from jaxdl import checkpoint
    from jaxdl.data import transforms

    workdir, input_path = Path(workdir), Path(input_path)
    config_file = workdir / "config.json"
    if not config_file.exists():
        raise errors.input_error("--workdir", "a directory written by `jaxdl train` "
                                 "(with config.json)", str(workdir),
                                 "pass the --workdir of a finished training run")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    trainer = build_trainer(config, steps_per_epoch=1)
    x = _read_inputs(input_path)
    step, meta = checkpoint.read_meta(workdir / "checkpoints")
    sample = np.zeros((1, *meta["num_features"]), meta.get("input_dtype", "float32"))
    target = trainer.abstract_state(sample)
    state, meta = checkpoint.restore(workdir / "checkpoints", target, step)
    if tuple(x.shape[1:]) != tuple(meta["num_features"]):
        raise errors.input_error("--input", f"rows of {meta['num_features']} features (what "
                                 "the run was trained on)", f"rows of shape {x.shape[1:]} "
                                 f"in {input_path}", "pass raw inputs with the training columns")
    if meta.get("scaler"):
        x = np.asarray(transforms.scaler_from_dict(meta["scaler"])(x))
    predictions = trainer.predict(state, x, batch_size=batch_size or config.batch_size)
    flat = predictions.reshape(len(predictions), -1)
    if output_path is None:
        np.savetxt(sys.stdout, flat, delimiter=",", fmt="%.8g")
    elif Path(output_path).suffix == ".npy":
        np.save(output_path, predictions)
    else:
        np.savetxt(output_path, flat, delimiter=",", fmt="%.8g")
    return predictions

