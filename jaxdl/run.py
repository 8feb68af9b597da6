"""``train_and_evaluate(config, workdir)``: one experiment from a config, end to end.

The CLI calls this; a script can too. It loads and cleans the data, builds the
model, optimizer and Trainer from the config, fits with validation, evaluates
on the test split, and leaves in ``workdir``:

    config.json     the resolved config
    metrics.jsonl   {"step", "epoch", "split": "train"|"val"|"perf"|"test", <metric>: float}
                    per line; the last line is the test evaluation
    tensorboard/    event files (config.writers includes "tensorboard")
    metrics.csv     one row per epoch (config.writers includes "csv")
    curves.png      train/val curves (config.plot)
    profile/        a jax.profiler trace (config.profile.steps)
    checkpoints/    Orbax checkpoints: TrainState, data position, history, normalization

Run again on the same workdir, it resumes from the newest good checkpoint and
ends bit-identical to an uninterrupted run. SIGTERM/SIGINT checkpoint and exit
128+signal. ``predict_from_workdir`` / ``evaluate_from_workdir`` rebuild the
model from ``config.json`` and restore the newest good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxdl import config as config_lib
from jaxdl import errors
from jaxdl.data.validate import nonfinite_rows

WRITERS = ("jsonl", "tensorboard", "csv")


# Library arguments -> the config keys that set them, so errors raised while building a run
# from a config name what the user typed (--config.data.name), not a Python parameter.
CONFIG_KEYS = {
    "name": "data.name", "val_fraction": "data.val_fraction",
    "test_fraction": "data.test_fraction", "val_fraction + test_fraction": "data.val_fraction",
    "loss": "loss", "metrics": "metrics", "optimizer": "optimizer.name",
    "optimizer options": "optimizer", "learning_rate": "optimizer.learning_rate",
    "schedule": "optimizer.schedule", "warmup_steps": "optimizer.warmup_steps",
    "decay_steps": "optimizer.decay_steps", "weight_decay": "optimizer.weight_decay",
    "l2": "optimizer.l2", "clip_norm": "optimizer.clip_norm", "model": "model",
    "model.name": "model.name", "activation": "model.activation", "nan_policy": "nan_policy",
    "steps_per_dispatch": "steps_per_dispatch", "batch_size": "batch_size",
    "epochs": "epochs", "keep": "checkpoint.keep", "mesh": "mesh",
    "mesh.data": "mesh.data", "mesh.fsdp": "mesh.fsdp", "mesh.tensor": "mesh.tensor",
    "mesh.population": "mesh.population", "population": "population.size",
    "hparams": "population.hparams", "seeds": "population.seeds",
    "sharding.rules": "sharding.rules", "data placement": "sharding.data_placement",
    "padding": "augment.crop_padding", "stddev": "augment.noise_std",
    "rate": "augment.feature_dropout", "alpha": "augment.mixup_alpha",
    "mode": "augment.crop_mode",
    "precision": "precision", "grad_accum_steps": "grad_accum_steps",
}


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Re-labels the kit's errors raised while building from a config with ``--config.KEY``."""
    try:
        yield
    except errors.InputError as e:
        text = str(e)
        match = re.match(r"argument '([^']+)'", text)
        if match and match.group(1) in CONFIG_KEYS:
            key = CONFIG_KEYS[match.group(1)]
            raise type(e)(f"argument '--config.{key}'" + text[match.end():]) from None
        raise


def _model(config: ml_collections.ConfigDict):
    from jaxdl import models

    kwargs = {k: (tuple(v) if isinstance(v, list) else v)
              for k, v in config.model.to_dict().items() if k != "name"}
    return models.get(config.model.name, **kwargs)


def _optimizer(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, Any]:
    """Trainer keyword arguments for the config's optimizer (by name, so that a population
    can inject its hyper-parameters)."""
    opt = config.optimizer
    warmup = opt.get("warmup_steps", 0)
    if opt.get("schedule", "constant") in ("cosine", "warmup_cosine") and warmup >= total_steps:
        raise errors.input_error(
            "--config.optimizer.warmup_steps",
            f"fewer steps than the run has ({total_steps} = {config.epochs} epochs x "
            f"{total_steps // max(config.epochs, 1)} steps)", repr(warmup),
            "lower --config.optimizer.warmup_steps or raise --config.epochs")
    schedule = dict(name=opt.get("schedule", "constant"), total_steps=total_steps,
                    warmup_steps=opt.get("warmup_steps", 0),
                    decay_steps=opt.get("decay_steps", None), decay_rate=opt.get("decay_rate", 0.1))
    return dict(optimizer=opt.name, learning_rate=opt.learning_rate, schedule=schedule,
                weight_decay=opt.get("weight_decay", 0.0), l2=opt.get("l2", 0.0),
                clip_norm=opt.get("clip_norm", None) or None)


STRATEGIES = ("auto", "shard_map", "pmap")


def mesh_spec(config: ml_collections.ConfigDict) -> dict[str, int] | None:
    """The config's mesh sizes, or None for a single device (every axis 1)."""
    mesh = config.get("mesh")
    if mesh is None:
        return None
    sizes = {axis: mesh.get(axis, 1) for axis in ("population", "data", "fsdp", "tensor")}
    return None if all(v == 1 for v in sizes.values()) else sizes


def build_trainer(config: ml_collections.ConfigDict, steps_per_epoch: int | None):
    """The Trainer an experiment config describes (model, loss, metrics, optimizer, mesh).

    ``steps_per_epoch`` sizes the learning-rate schedule; None when it is not known
    (inspecting a config without its data): any length past the warm-up will do, since
    the schedule shapes no array.
    """
    from jaxdl.trainer import Trainer

    if steps_per_epoch is None:
        warmup = config.get("optimizer", {}).get("warmup_steps", 0) or 0
        steps_per_epoch = warmup // max(config.epochs, 1) + 1
    strategy = config.get("strategy", "auto")
    if strategy not in STRATEGIES:
        raise errors.unknown_name("--config.strategy", "strategy", strategy, list(STRATEGIES))
    total_steps = max(1, config.epochs * steps_per_epoch)
    sharding = config.get("sharding", ml_collections.ConfigDict())
    rules = [tuple(rule) for rule in sharding.get("rules", ())]
    logical_rules = [tuple(rule) for rule in sharding.get("logical_rules", ())]
    spec = mesh_spec(config)
    with config_errors():
        mesh = None
        if spec is not None:
            from jaxdl.parallel import make_mesh

            mesh = make_mesh(spec)
    return Trainer(_model(config), loss=config.loss, metrics=list(config.metrics),
                   **_optimizer(config, total_steps),
                   nan_policy=config.get("nan_policy", "raise"), mesh=mesh, rules=rules,
                   logical_rules=logical_rules, strategy=strategy,
                   data_placement=sharding.get("data_placement", "auto"),
                   precision=config.get("precision", "float32"),
                   grad_accum_steps=config.get("grad_accum_steps", 1),
                   augment=_augment(config))


def _augment(config: ml_collections.ConfigDict):
    """The on-device augmentation the config's ``augment`` group asks for, or None."""
    from jaxdl.data import augment

    spec = config.get("augment")
    if spec is None:
        return None
    parts = []
    with config_errors():
        if spec.get("crop_padding", 0):
            parts.append(augment.random_crop(spec.crop_padding, spec.get("crop_mode",
                                                                         "constant")))
        if spec.get("flip", False):
            parts.append(augment.random_flip())
        if spec.get("noise_std", 0.0):
            parts.append(augment.gaussian_noise(spec.noise_std))
        if spec.get("feature_dropout", 0.0):
            parts.append(augment.feature_dropout(spec.feature_dropout))
        if spec.get("mixup_alpha", 0.0):
            parts.append(augment.mixup(spec.mixup_alpha))
    return augment.compose(*parts) if parts else None


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
    return out


# config.data.pipeline="auto" streams training records larger than this from disk (grain);
# smaller ones are read into memory and gathered on device.
PIPELINE_AUTO_BYTES = 2 * 2**30
PIPELINES = ("auto", "memory", "grain")


@dataclasses.dataclass
class RunData:
    """The splits of a run: arrays, except a streamed training set (then ``x_train`` is
    :class:`jaxdl.data.records.Records` and ``y_train`` None)."""

    x_train: Any
    y_train: Any
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    scaler: Any = None

    @property
    def splits(self) -> dict[str, tuple[Any, Any]]:
        return {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}


def _load_records(config: ml_collections.ConfigDict) -> RunData:
    from jaxdl.data import open_records, transforms

    data_cfg = config.data
    folder = Path(data_cfg.records)
    splits = {}
    for split in ("train", "val", "test"):
        if not (folder / split).exists() and split != "train":
            splits[split] = None
            continue
        try:
            splits[split] = open_records(folder / split)
        except errors.InputError as e:
            raise errors.input_error("--config.data.records", "a folder written by `jaxdl data "
                                     "prepare --out DIR` (DIR/train, DIR/val, DIR/test)",
                                     f"{folder}: {errors.first_sentence(e)}",
                                     "run `jaxdl data prepare` first") from None
    train = splits["train"]
    pipeline = data_cfg.get("pipeline", "auto")
    if pipeline not in PIPELINES:
        raise errors.unknown_name("--config.data.pipeline", "data pipeline", pipeline,
                                  list(PIPELINES))
    size = sum(a.nbytes for a in train.arrays.values())
    stream = pipeline == "grain" or (pipeline == "auto" and size > PIPELINE_AUTO_BYTES)
    if stream:
        x_train, y_train = train, None
    else:
        x_train, y_train = np.asarray(train.arrays["x"]), np.asarray(train.arrays["y"])

    def in_memory(records):
        if records is None:
            return (np.zeros((0, *train.fields["x"].shape), train.fields["x"].dtype),
                    np.zeros((0, *train.fields["y"].shape), train.fields["y"].dtype))
        return np.asarray(records.arrays["x"]), np.asarray(records.arrays["y"])

    scaler = train.info.get("scaler")
    return RunData(x_train, y_train, *in_memory(splits["val"]), *in_memory(splits["test"]),
                   transforms.scaler_from_dict(scaler) if scaler else None)


def _load_text(config: ml_collections.ConfigDict) -> RunData:
    """Next-byte windows of the standard library's source (:mod:`jaxdl.data.text`)."""
    from jaxdl.data import text

    data_cfg = config.data
    seq_len = data_cfg.get("seq_len", 128)
    splits = []
    for split in ("train", "val", "test"):
        corpus = text.load_corpus(split)
        cap = data_cfg.get("max_bytes" if split == "train" else "eval_bytes", 0)
        stride = (data_cfg.get("stride", 0) or None) if split == "train" else None
        if cap:  # that many bytes of windows, spread evenly over every file of the split
            count = max(1, cap // seq_len)
            stride = max(seq_len, (len(corpus) - 1 - seq_len) // count)
            splits += list(text.windows(corpus, seq_len, stride, count=min(
                count, text.num_windows(len(corpus), seq_len, stride))))
        else:
            splits += list(text.windows(corpus, seq_len, stride))
    return RunData(*splits)


def _load_data(config: ml_collections.ConfigDict, quiet: bool = True):
    from jaxdl.data import datasets, transforms

    data_cfg = config.data
    if data_cfg.get("records", ""):
        data = _load_records(config)
        return data, data.x_train, data.y_train
    if data_cfg.name == "text":
        data = _load_text(config)
        return data, data.x_train, data.y_train
    data = datasets.load(data_cfg.name, seed=config.seed,
                         val_fraction=data_cfg.get("val_fraction", 0.15),
                         test_fraction=data_cfg.get("test_fraction", 0.2),
                         standardize=data_cfg.get("standardize", True),
                         images=data_cfg.get("images", False))
    x_train, y_train = data.x_train, data.y_train
    if data_cfg.get("clean", True):
        x_train, y_train, report = transforms.clean(x_train, y_train)
        if not quiet and report["rows_out"] != report["rows_in"]:
            print(f"clean: {report}", file=sys.stderr)
    return data, x_train, y_train


@contextlib.contextmanager
def preemption_signals() -> Iterator[Any]:
    """While active, SIGTERM/SIGINT are recorded instead of killing the process.

    Yields a function returning the first signal received (or None); the fit
    driver polls it after each dispatch, checkpoints and stops. Off the main
    thread (where Python cannot install handlers) nothing is installed.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _prepare_workdir(workdir: Path, config: ml_collections.ConfigDict) -> bool:
    """Checks the workdir against the config; returns whether a run is there to resume."""
    saved_config = workdir / "config.json"
    ckpt = config.get("checkpoint", ml_collections.ConfigDict())
    resume = ckpt.get("resume", True)
    existing = workdir.is_dir() and any(workdir.iterdir())
    if existing and not resume:
        raise errors.input_error(
            "--workdir", "an empty directory (checkpoint.resume=false refuses to resume)",
            f"{workdir}, which holds {sorted(p.name for p in workdir.iterdir())}",
            "pass a new --workdir, or drop --config.checkpoint.resume=false to resume")
    if existing and saved_config.exists():
        before = config_lib.flatten(ml_collections.ConfigDict(json.loads(
            saved_config.read_text())))
        now = config_lib.flatten(config)
        # Output-only keys, and the topology: a checkpoint restores onto another mesh.
        ignore = {"checkpoint.resume", "writers", "plot", "profile.steps", "peak_flops",
                  "mesh.population", "mesh.data", "mesh.fsdp", "mesh.tensor", "strategy",
                  "sharding.data_placement"}
        as_saved = lambda v: json.dumps(config_lib.config_to_dict(
            ml_collections.ConfigDict({"v": v}))["v"])
        # A key added to the kit after the run was saved is unchanged at its default.
        from jaxdl.default_config import get_config

        defaults = config_lib.flatten(get_config())
        changed = sorted(k for k in set(before) | set(now) if k not in ignore and
                         json.dumps(before.get(k)) != as_saved(now.get(k)) and not (
                             k not in before and k in defaults
                             and as_saved(defaults[k]) == as_saved(now.get(k))))
        if changed:
            raise errors.input_error(
                "--config", f"the config of the run in {workdir} (to resume it)",
                "changes to " + ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})"
                                          for k in changed[:8]),
                "resume with the same config, or pass a new --workdir")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        saved_config.write_text(json.dumps(config_lib.config_to_dict(config), indent=2) + "\n")
    except OSError as e:
        raise errors.input_error("--workdir", "a folder that can be created and written",
                                 f"{workdir} ({e.strerror or type(e).__name__})",
                                 "pick a writable location, e.g. --workdir ./runs/a") from None
    return existing


def population_settings(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """``init`` and ``fit`` arguments of the config's population, or None for one model."""
    from jaxdl import population

    spec = config.get("population")
    size = spec.get("size", 0) if spec is not None else 0
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.input_error("--config.population.size", "an integer >= 0 (0: one model)",
                                 repr(size), "pass e.g. --config.population.size=32")
    if not size:
        return None
    hparams = spec.get("hparams", {})
    hparams = hparams.to_dict() if hasattr(hparams, "to_dict") else dict(hparams or {})
    seeds = list(spec.get("seeds", ()) or ())
    if seeds and len(seeds) != size:
        raise errors.input_error("--config.population.seeds", f"{size} seeds (population.size)",
                                 f"{len(seeds)} seeds", "give one seed per member, or none "
                                 "(then member i uses seed + i)")
    seeds = [int(s) for s in seeds] or [config.seed + i for i in range(size)]
    order = spec.get("data_order", "shared")
    if order not in ("shared", "member"):
        raise errors.unknown_name("--config.population.data_order", "data order", order,
                                  ["shared", "member"])
    return {"size": size, "seeds": seeds,
            "hparams": population.expand(hparams, size, seed=config.seed),
            "data_seed": config.seed if order == "shared" else seeds}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       quiet: bool = False) -> dict[str, float]:
    """Trains the experiment ``config`` into ``workdir`` (resuming it); returns test metrics."""
    import jax

    from jaxdl import checkpoint, event_writers, loop, perf, profiling, writers
    from jaxdl.data import arrays

    cache = perf.CacheCounter()
    workdir = Path(workdir)
    for key in ("batch_size", "epochs"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (key == "batch_size"):
            raise errors.input_error(f"--config.{key}", f"an integer >= {int(key == 'batch_size')}",
                                     repr(value), f"pass e.g. --config.{key}="
                                     f"{32 if key == 'batch_size' else 10}")
    with config_errors():
        data, x_train, y_train = _load_data(config, quiet)
        sample_x, sample_y = (x_train[np.arange(1)]["x"], x_train[np.arange(1)]["y"]) \
            if y_train is None else (x_train[:1], y_train[:1])
        steps_per_epoch = arrays.steps_per_epoch(len(x_train), config.batch_size)
        trainer = build_trainer(config, steps_per_epoch)
    resuming = _prepare_workdir(workdir, config)
    if trainer.placement is not None and not quiet and jax.process_index() == 0:
        # Placement, per-device bytes and the compiled step's memory, before allocating.
        from jaxdl.parallel.report import preflight

        train_bytes = (sum(a.nbytes for a in x_train.arrays.values()) if y_train is None
                       else x_train.nbytes + y_train.nbytes)
        members = population_settings(config)
        report = preflight(trainer, sample_x, config.batch_size, sample_y=sample_y,
                           data_bytes=0 if y_train is None else train_bytes + data.x_val.nbytes
                           + data.y_val.nbytes, population=members and members["size"],
                           hparams=list(members["hparams"]) if members else ())
        print(report.render(), file=sys.stderr)
    members = population_settings(config)
    if members is None:
        state = trainer.init(jax.random.key(config.seed), sample_x)
    else:
        with config_errors():
            state = trainer.init(config.seed, sample_x, population=members["size"],
                                 hparams=members["hparams"], seeds=members["seeds"])

    jsonl = writers.JsonlWriter(workdir / "metrics.jsonl")  # always: resume and plot read it
    names = tuple(config.get("writers", ("jsonl",)))
    for name in names:
        if name not in WRITERS:
            raise errors.unknown_name("config.writers", "writer", name, list(WRITERS))
    tensorboard = (event_writers.TensorBoardWriter(workdir / "tensorboard")
                   if "tensorboard" in names else None)
    callbacks = [*_callbacks(config), jsonl, *([tensorboard] if tensorboard else []),
                 *([event_writers.CsvWriter(workdir / "metrics.csv")] if "csv" in names
                   else [])]
    window = profiling.parse_steps(config.get("profile", {}).get("steps", ""))
    if window:
        callbacks.append(profiling.Profiler(workdir / "profile", *window))
    if not quiet:
        callbacks.append(writers.ConsoleLogger())
    ckpt_cfg = config.get("checkpoint", ml_collections.ConfigDict())
    meta = {"config": config_lib.config_to_dict(config),
            "num_features": list(sample_x.shape[1:]), "input_dtype": str(sample_x.dtype),
            "scaler": data.scaler.to_dict() if data.scaler is not None else None}
    validation = (data.x_val, data.y_val) if len(data.x_val) else None
    checkpointer = checkpoint.Checkpointer(
        workdir / "checkpoints", keep=ckpt_cfg.get("keep", 3),
        best_metric=(ckpt_cfg.get("best_metric") or None) if validation else None,
        async_save=ckpt_cfg.get("async_save", True))
    with checkpointer, preemption_signals() as stop_requested, contextlib.ExitStack() as stack:
        if tensorboard is not None:  # a preempted or stopped fit skips on_train_end
            stack.callback(tensorboard.close)
        if resuming and checkpointer.steps and not quiet:
            print(f"resuming from {workdir / 'checkpoints'} (steps {checkpointer.steps})",
                  file=sys.stderr)
        checkpointing = checkpoint.Checkpointing(
            checkpointer, every_epochs=ckpt_cfg.get("every_epochs", 0) or None,
            every_steps=ckpt_cfg.get("every_steps", 0) or None, meta=meta,
            stop_requested=stop_requested)
        with config_errors():
            state, history = trainer.fit(
                state, x_train, y_train, epochs=config.epochs, batch_size=config.batch_size,
                validation_data=validation, shuffle=config.get("shuffle", True),
                seed=config.seed if members is None else members["data_seed"],
                callbacks=callbacks, verbose=0,
                steps_per_dispatch=config.get("steps_per_dispatch", "auto"),
                checkpointing=checkpointing)
    results = trainer.evaluate(state, data.x_test, data.y_test, batch_size=config.batch_size)
    epochs_run = len(next(iter(history.values()), []))
    step = loop.host_step(state)
    batch = {"x": jax.ShapeDtypeStruct((config.batch_size, *sample_x.shape[1:]), sample_x.dtype),
             "y": jax.ShapeDtypeStruct((config.batch_size, *sample_y.shape[1:]), sample_y.dtype),
             "mask": jax.ShapeDtypeStruct((config.batch_size,), np.float32)}
    programs = trainer.programs_for(state, config.seed if members is None
                                    else members["data_seed"])
    record = perf.report(programs.last_perf, programs.flops_per_step(state, batch),
                         perf.peak_flops(override=config.get("peak_flops", 0.0)))
    record.update({f"compilation_cache_{k}": v for k, v in cache.counts().items()})
    jsonl.write({"step": step, "epoch": epochs_run, "split": "perf", **record})
    if members is None:
        jsonl.write({"step": step, "epoch": epochs_run, "split": "test", **results})
        tests = [(None, results)]
    else:
        tests = _population_summary(config, jsonl, state, history, results,
                                    validation is not None,
                                    step, epochs_run, quiet)
    if tensorboard is not None:
        for member, values in tests:
            tensorboard.write({"step": step, "split": "test", **values,
                               **({} if member is None else {"member": member})})
        tensorboard.write({"step": step, **{f"perf/{k}": v for k, v in record.items()
                                            if isinstance(v, int | float)}})
        tensorboard.close()
    if config.get("plot", False) and jax.process_index() == 0:
        from jaxdl import plot

        plot.plot_runs([workdir], workdir / "curves.png")
    if not quiet:
        print(writers.format_perf(record), flush=True)
        print("test · " + writers.format_logs(results), flush=True)
    return results


def _population_summary(config: ml_collections.ConfigDict, jsonl: Any, state: Any,
                        history: dict[str, Any],
                        results: dict[str, Any], validated: bool, step: int, epoch: int,
                        quiet: bool) -> list[tuple[int, dict[str, float]]]:
    """One test line per member (with its hyper-parameters), then the best member's line."""
    from jaxdl import population, writers

    hparams = population.hparams(state)
    tests = []
    for i in range(population.size(state)):
        values = {k: float(v[i]) for k, v in results.items()}
        tests.append((i, values))
        jsonl.write({"step": step, "epoch": epoch, "split": "test", "member": i, **values,
                     "hparams": {k: float(v[i]) for k, v in hparams.items()}})
    metric = "val_loss" if validated else "loss"
    stop = config.get("early_stopping", {})
    restored = stop.get("enabled", False) and stop.get("restore_best", True)
    best = population.best(state, history, metric=metric, judge="best" if restored else "last")
    line = {"step": step, "epoch": epoch, "split": "best", "member": best.index,
            "metric": metric, "value": best.value, "hparams": best.hparams,
            **{f"test_{k}": v for k, v in tests[best.index][1].items()}}
    jsonl.write(line)
    if not quiet:
        settings = ", ".join(f"{k}={v:.4g}" for k, v in best.hparams.items())
        print(f"best member {best.index}{f' ({settings})' if settings else ''}: {metric} "
              f"{best.value:.4f} · test " + writers.format_logs(tests[best.index][1]),
              flush=True)
    return tests


def _read_inputs(path: Path) -> np.ndarray:
    """Numbers from a .npy (no pickle) or a .csv (one optional header row); finite."""
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
            if x.dtype.kind not in "biuf":
                raise ValueError(f"an array of dtype {x.dtype}")
        else:
            try:
                x = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
            except ValueError:  # a header row
                x = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, skiprows=1)
    except ValueError as e:
        if path.suffix == ".npy":  # numpy's own text would suggest loading it unsafely
            what, given = ("a .npy file of numbers written by np.save",
                           f"{path.name}, which is not a plain numeric .npy file")
        else:
            what = "a .csv of numbers (one optional header row)"
            given = f"{path.name}: {str(e).splitlines()[0][:120].rstrip('.')}"
        raise errors.input_error("--input", what, given, "keep numeric columns only, e.g. "
                                 "np.save(path, x.astype('float32'))") from None
    rows = nonfinite_rows(np.asarray(x))
    if len(rows):
        raise errors.input_error("--input", "finite values (no NaN or inf)",
                                 f"{len(rows)} row(s) with NaN/inf, first at row "
                                 f"{rows[0]} of {path.name}",
                                 "drop or fill those rows before predicting")
    return x


def restore_from_workdir(workdir: str | Path):
    """(config, trainer, state, meta) of the newest good checkpoint of a finished or running run."""
    import jax

    from jaxdl import checkpoint

    workdir = Path(workdir)
    config_file = workdir / "config.json"
    if not config_file.exists():
        raise errors.input_error("--workdir", "a directory written by `jaxdl train` "
                                 "(with config.json)", str(workdir),
                                 "pass the --workdir of a training run")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    members = population_settings(config)
    with checkpoint.Checkpointer(workdir / "checkpoints", keep=1000) as ckpt:
        meta = None
        for step in reversed(ckpt.steps):
            with contextlib.suppress(Exception):  # unreadable: restore() sets it aside
                meta = ckpt.read_meta(step)
                break
        if meta is None and not ckpt.steps:
            raise errors.input_error("--workdir", f"a checkpoint under {ckpt.directory}",
                                     "none", "train first: jaxdl train --workdir DIR")
        # The run's own steps per epoch: its schedule (warm-up, decay) is rebuilt as trained.
        steps_per_epoch = 1
        if meta and meta.get("num_examples") and meta.get("batch_size"):
            from jaxdl.data import arrays

            steps_per_epoch = arrays.steps_per_epoch(meta["num_examples"], meta["batch_size"])
        trainer = build_trainer(config, steps_per_epoch=steps_per_epoch)
        shape = meta["num_features"] if meta else [1]
        dtype = meta.get("input_dtype", "float32") if meta else "float32"
        abstract = trainer.abstract_state(
            np.zeros((1, *shape), dtype), population=members and members["size"],
            hparams=list(members["hparams"]) if members else ())
        target = jax.eval_shape(lambda s: {"state": checkpoint.storable(s)}, abstract)
        tree, meta, _ = ckpt.restore(target, partial=True)
    return config, trainer, checkpoint.unstorable(tree["state"]), meta


def predict_from_workdir(workdir: str | Path, input_path: str | Path,
                         output_path: str | Path | None = None,
                         batch_size: int | None = None, member: int | None = None
                         ) -> np.ndarray:
    """Predicts with a trained run on raw (unnormalized) inputs from a .csv/.npy file.

    The run's normalization statistics are applied first, as in training.
    Writes CSV (or .npy) to ``output_path``, or CSV to stdout when it is None.
    A population run predicts with the mean of its members, or with ``member``.
    """
    from jaxdl.data import transforms

    config, trainer, state, meta = restore_from_workdir(workdir)
    input_path = Path(input_path)
    x = _read_inputs(input_path)
    if tuple(x.shape[1:]) != tuple(meta["num_features"]):
        raise errors.input_error("--input", f"rows of {meta['num_features']} features (what "
                                 "the run was trained on)", f"rows of shape {x.shape[1:]} "
                                 f"in {input_path}", "pass raw inputs with the training columns")
    if meta.get("scaler"):
        x = np.asarray(transforms.scaler_from_dict(meta["scaler"])(x))
    from jaxdl import population

    if member is not None:
        if population.size(state) is None:
            raise errors.input_error("--member", "a population run (population.size > 0)",
                                     f"member {member} of a single-model run",
                                     "drop --member")
        try:
            state = population.member(state, member)
        except errors.InputError as e:
            raise errors.InputError(str(e).replace("argument 'index'", "argument '--member'",
                                                   1)) from None
    predictions = trainer.predict(state, x, batch_size=batch_size or config.batch_size,
                                  ensemble=population.size(state) is not None)
    flat = predictions.reshape(len(predictions), -1)
    if output_path is None:
        np.savetxt(sys.stdout, flat, delimiter=",", fmt="%.8g")
    elif Path(output_path).suffix == ".npy":
        np.save(output_path, predictions)
    else:
        np.savetxt(output_path, flat, delimiter=",", fmt="%.8g")
    return predictions


def sample_from_workdir(workdir: str | Path, prompt: str, *, num_tokens: int = 200,
                        temperature: float = 0.8, top_k: int = 0, seed: int = 0,
                        member: int | None = None) -> str:
    """The prompt continued by a run's language model (see :mod:`jaxdl.sample`)."""
    from jaxdl import population, sample

    config, trainer, state, meta = restore_from_workdir(workdir)
    if meta.get("input_dtype", "float32").startswith("float"):
        raise errors.input_error("--workdir", "a language-model run (integer token inputs, "
                                 "e.g. experiments/charlm.py)",
                                 f"{workdir}, trained on {meta.get('input_dtype')} features",
                                 "sample from a run of a token model; use `jaxdl predict` here")
    if population.size(state) is not None:
        if member is None:
            lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
            best = [json.loads(line) for line in lines if '"best"' in line]
            member = best[-1]["member"] if best else 0
        state = population.member(state, member)
    with config_errors():
        tokens = sample.generate(trainer, state, prompt, num_tokens=num_tokens,
                                 temperature=temperature, top_k=top_k, seed=seed,
                                 context=config.data.get("seq_len", None))
    return sample.decode(tokens)


def evaluate_from_workdir(workdir: str | Path, split: str = "test") -> dict[str, float]:
    """Loss and metrics of the newest good checkpoint on the run's own ``split``."""
    config, trainer, state, _ = restore_from_workdir(workdir)
    data, _, _ = _load_data(config)
    x, y = data.splits[split]
    results = trainer.evaluate(state, x, y, batch_size=config.batch_size)
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in results.items()}
