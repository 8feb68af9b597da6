"""``train_and_evaluate(config, workdir)``: one experiment from a config, end to end.

The CLI calls this; a script can too. It loads the data, builds the Trainer from
the config (:mod:`jaxdl.experiment.build`), fits with validation, evaluates on
the test split, and leaves in ``workdir``:

    config.json     the config as given, once the run is built (a run that fails before
                    binds nothing)
    metrics.jsonl   {"step", "epoch", "split": "train"|"val"|"perf"|"test", <metric>: float}
                    per line; the last line is the test evaluation
    tensorboard/    event files (config.writers includes "tensorboard")
    metrics.csv     one row per epoch (config.writers includes "csv")
    curves.png      train/val curves (config.plot)
    profile/        a jax.profiler trace (config.profile.steps)
    checkpoints/    Orbax checkpoints: TrainState, data position, history, normalization

Run again on the same workdir, it resumes from the newest good checkpoint and
ends bit-identical to an uninterrupted run; a finished run is left as it is.
SIGTERM/SIGINT checkpoint and exit 128+signal. One run at a time: the workdir is
locked while it trains (:mod:`jaxdl.experiment.lock`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxdl import errors
from jaxdl.experiment import build, lock
from jaxdl.experiment import config as config_lib
from jaxdl.experiment import data as data_lib
from jaxdl.experiment import workdir as workdir_lib
from jaxdl.experiment.results import report_results
from jaxdl.experiment.settings import complete, config_errors

WRITERS = ("jsonl", "tensorboard", "csv")


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


def _check_sizes(config: ml_collections.ConfigDict) -> None:
    for key in ("batch_size", "epochs"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (key == "batch_size"):
            raise errors.input_error(f"--config.{key}", f"an integer >= {int(key == 'batch_size')}",
                                     repr(value), f"pass e.g. --config.{key}="
                                     f"{32 if key == 'batch_size' else 10}")


@dataclasses.dataclass(frozen=True)
class Recorders:
    """The callbacks that record a run; ``jsonl`` is always there (resume and plot read it)."""

    jsonl: Any
    tensorboard: Any
    callbacks: list


def _recorders(config: ml_collections.ConfigDict, workdir: Path, quiet: bool) -> Recorders:
    from jaxdl import writers
    from jaxdl.writers import profile

    for name in config.writers:
        if name not in WRITERS:
            raise errors.unknown_name("config.writers", "writer", name, list(WRITERS))
    jsonl = writers.JsonlWriter(workdir / "metrics.jsonl")
    tensorboard = (writers.TensorBoardWriter(workdir / "tensorboard")
                   if "tensorboard" in config.writers else None)
    out = [jsonl, *([tensorboard] if tensorboard else [])]
    if "csv" in config.writers:
        out.append(writers.CsvWriter(workdir / "metrics.csv"))
    window = profile.parse_steps(config.profile.steps)
    if window:
        out.append(profile.Profiler(workdir / "profile", *window))
    if not quiet:
        out.append(writers.ConsoleLogger())
    return Recorders(jsonl, tensorboard, out)


def _print_preflight(config: ml_collections.ConfigDict, trainer: Any, data: Any,
                     members: dict[str, Any] | None) -> None:
    """Placement, per-device bytes and the compiled step's memory, before allocating."""
    from jaxdl.parallel.report import preflight

    sample_x, sample_y = data.sample()
    data_bytes = 0 if data.streamed else (data.train_bytes() + data.x_val.nbytes
                                          + data.y_val.nbytes)
    report = preflight(trainer, sample_x, config.batch_size, sample_y=sample_y,
                       data_bytes=data_bytes, population=members and members["size"],
                       hparams=list(members["hparams"]) if members else ())
    print(report.render(), file=sys.stderr)


def _init(config: ml_collections.ConfigDict, trainer: Any, sample_x: np.ndarray,
          members: dict[str, Any] | None) -> Any:
    import jax

    if members is None:
        return trainer.init(jax.random.key(config.seed), sample_x)
    with config_errors(config, "population"):
        return trainer.init(config.seed, sample_x, population=members["size"],
                            hparams=members["hparams"], seeds=members["seeds"])


def _checkpointer(config: ml_collections.ConfigDict, workdir: Path, validated: bool):
    from jaxdl import checkpoint

    ckpt = config.checkpoint
    with config_errors(config, "checkpoint"):
        return checkpoint.Checkpointer(
            workdir / "checkpoints", keep=ckpt.keep,
            best_metric=(ckpt.best_metric or None) if validated else None,
            async_save=ckpt.async_save, root=workdir, verify=ckpt.verify)


def _finished(workdir: Path) -> dict[str, Any] | None:
    """The recorded test metrics of a finished run in ``workdir`` (said on stderr), or None.

    Running a finished run again changes nothing: its metrics.jsonl (the real perf line,
    the test line) is the record of the run that trained.
    """
    import jax

    found = workdir_lib.finished_results(workdir)
    if found is None:
        return None
    results, position = found
    if jax.process_index() == 0:  # one console, the first process's
        print(f"jaxdl: the run in {workdir} is finished (step {position['step']}, epoch "
              f"{position['epoch']}): nothing to do. Its results are in metrics.jsonl; to "
              "train longer, use a new --workdir.", file=sys.stderr)
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       quiet: bool = False) -> dict[str, float]:
    """Trains the experiment ``config`` into ``workdir`` (resuming it); returns test metrics.

    The workdir is locked for the whole run (:mod:`jaxdl.experiment.lock`): a second run on
    it is refused, naming this one. A finished run is not run again.

    Raises:
      InputError: for a config, workdir or data that cannot run; nothing is saved then.
    """
    import jax

    workdir, given, config = Path(workdir), config, complete(config)
    config_lib.check_types(config)
    _check_sizes(config)
    with lock.exclusive(workdir, "--workdir", jax.process_index()):
        resuming = workdir_lib.check(workdir, given, config.checkpoint.resume)
        finished = _finished(workdir) if resuming else None
        if finished is not None:
            return finished
        return _train(config, given, workdir, resuming, quiet)


def _train(config: ml_collections.ConfigDict, given: ml_collections.ConfigDict,
           workdir: Path, resuming: bool, quiet: bool) -> dict[str, float]:
    """:func:`train_and_evaluate` once it holds the workdir; config.json is written only
    when every part of the run is built (until then a failure binds nothing)."""
    import jax

    from jaxdl import checkpoint
    from jaxdl.data import arrays
    from jaxdl.train import perf

    cache = perf.CacheCounter()
    data = data_lib.load(config, quiet)
    sample_x, _ = data.sample()
    trainer = build.trainer(config, arrays.steps_per_epoch(len(data.x_train), config.batch_size))
    members = build.population(config)
    if trainer.placement is not None and not quiet and jax.process_index() == 0:
        _print_preflight(config, trainer, data, members)
    state = _init(config, trainer, sample_x, members)
    recorders = _recorders(config, workdir, quiet)
    callbacks = [*build.callbacks(config), *recorders.callbacks]
    validation = (data.x_val, data.y_val) if len(data.x_val) else None
    meta = {"config": config_lib.config_to_dict(given),
            "num_features": list(sample_x.shape[1:]), "input_dtype": str(sample_x.dtype),
            "scaler": data.scaler.to_dict() if data.scaler is not None else None}
    checkpointer = _checkpointer(config, workdir, validation is not None)
    seed = config.seed if members is None else members["data_seed"]
    with checkpointer, preemption_signals() as stop_requested, contextlib.ExitStack() as stack:
        if recorders.tensorboard is not None:  # a preempted or stopped fit skips on_train_end
            stack.callback(recorders.tensorboard.close)
        with config_errors(config, "checkpoint"):
            checkpointing = checkpoint.Checkpointing(
                checkpointer, every_epochs=config.checkpoint.every_epochs,
                every_steps=config.checkpoint.every_steps, meta=meta,
                stop_requested=stop_requested)
        if jax.process_index() == 0:  # every part is built: the run is bound to its config
            workdir_lib.save_config(workdir, given)
        if resuming and checkpointer.steps and not quiet:
            print(f"resuming from {workdir / 'checkpoints'} (steps {checkpointer.steps})",
                  file=sys.stderr)
        with config_errors(config):
            fitted = trainer.fit(
                state, data.x_train, data.y_train, epochs=config.epochs,
                batch_size=config.batch_size, validation_data=validation,
                shuffle=config.shuffle, seed=seed, callbacks=callbacks, verbose=0,
                steps_per_dispatch=config.steps_per_dispatch, checkpointing=checkpointing,
                log_norms=config.log_norms, class_weight=build.class_weight(config))
    return report_results(config, workdir, trainer, fitted, data, recorders, cache, seed,
                          validation is not None, quiet)
