"""The end of a run: the test evaluation, the perf line, a population's best member,
and the figures — written to metrics.jsonl, TensorBoard, the plot and the console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np


def _population_summary(config: ml_collections.ConfigDict, jsonl: Any, state: Any,
                        history: dict[str, Any], results: dict[str, Any], validated: bool,
                        step: int, epoch: int, quiet: bool) -> list[tuple[int, dict[str, float]]]:
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
    stop = config.early_stopping
    restored = stop.enabled and stop.restore_best
    best = population.best(state, history, metric=metric, judge="best" if restored else "last")
    jsonl.write({"step": step, "epoch": epoch, "split": "best", "member": best.index,
                 "metric": metric, "value": best.value, "hparams": best.hparams,
                 **{f"test_{k}": v for k, v in tests[best.index][1].items()}})
    if not quiet:
        settings = ", ".join(f"{k}={v:.4g}" for k, v in best.hparams.items())
        print(f"best member {best.index}{f' ({settings})' if settings else ''}: {metric} "
              f"{best.value:.4f} · test " + writers.format_logs(tests[best.index][1]),
              flush=True)
    return tests


def _perf_record(config: ml_collections.ConfigDict, trainer: Any, state: Any, fitted: Any,
                 data: Any, cache: Any, seed: Any) -> dict[str, Any]:
    """Throughput, FLOPs and MFU of the fit, and the compilation cache's hits."""
    import jax

    from jaxdl.train import perf

    sample_x, sample_y = data.sample()
    batch = {"x": jax.ShapeDtypeStruct((config.batch_size, *sample_x.shape[1:]), sample_x.dtype),
             "y": jax.ShapeDtypeStruct((config.batch_size, *sample_y.shape[1:]), sample_y.dtype),
             "mask": jax.ShapeDtypeStruct((config.batch_size,), np.float32)}
    flops = trainer.programs_for(state, seed).flops_per_step(state, batch)
    record = perf.report(fitted.stats.as_dict(), flops,
                         perf.peak_flops(override=config.peak_flops))
    record.update({f"compilation_cache_{k}": v for k, v in cache.counts().items()})
    return record


# The settings a single run's hparams dashboard shows (those the config has), as dotted keys.
HPARAMS = ("model.name", "model.features", "model.activation", "model.dropout_rate", "loss",
           "optimizer.name", "optimizer.learning_rate", "optimizer.schedule",
           "optimizer.weight_decay", "batch_size", "epochs", "seed", "data.name", "precision")


def run_hparams(config: ml_collections.ConfigDict, state: Any
                ) -> dict[str, Any] | list[dict[str, Any]]:
    """What TensorBoard's hparams dashboard compares: a single run's main settings
    (:data:`HPARAMS`), or per population member its swept values and its seed."""
    from jaxdl import population
    from jaxdl.experiment import build
    from jaxdl.experiment.config import flatten

    if not config.population.size:
        flat = flatten(config)
        return {key: flat[key] for key in HPARAMS if key in flat}
    swept = population.hparams(state)
    seeds = build.population(config)["seeds"]
    return [{**{k: float(v[i]) for k, v in swept.items()}, "seed": seed}
            for i, seed in enumerate(seeds)]


def _tensorboard(config: ml_collections.ConfigDict, tensorboard: Any, state: Any, step: int,
                 record: dict[str, Any], tests: list[tuple[int | None, dict[str, float]]]
                 ) -> None:
    """The test metrics (each member's), the perf figures and the hparams sessions, whose
    metrics are those test metrics."""
    for member, values in tests:
        tensorboard.write({"step": step, "split": "test", **values,
                           **({} if member is None else {"member": member})})
    tensorboard.write({"step": step, "split": "perf", **record})  # non-numbers are skipped
    tensorboard.write_hparams(run_hparams(config, state), list(tests[0][1]), step)
    tensorboard.close()


def report_results(config: ml_collections.ConfigDict, workdir: Path, trainer: Any,
                   fitted: Any, data: Any, recorders: Any, cache: Any, seed: Any,
                   validated: bool, quiet: bool) -> dict[str, Any]:
    """Evaluates the fitted state on the test split and records everything; returns the
    test metrics."""
    import jax

    from jaxdl import writers
    from jaxdl.train.fit import host_step

    state, history = fitted
    results = trainer.evaluate(state, data.x_test, data.y_test, batch_size=config.batch_size)
    epochs_run = len(next(iter(history.values()), []))
    step = host_step(state)
    record = _perf_record(config, trainer, state, fitted, data, cache, seed)
    jsonl, tensorboard = recorders.jsonl, recorders.tensorboard
    jsonl.write({"step": step, "epoch": epochs_run, "split": "perf", **record})
    if config.population.size:
        tests = _population_summary(config, jsonl, state, history, results, validated, step,
                                    epochs_run, quiet)
    else:
        jsonl.write({"step": step, "epoch": epochs_run, "split": "test", **results})
        tests = [(None, results)]
    if tensorboard is not None:
        _tensorboard(config, tensorboard, state, step, record, tests)
    if config.plot and jax.process_index() == 0:
        from jaxdl.writers import plot

        plot.plot_runs([workdir], workdir / "curves.png")
    if not quiet:
        print(writers.format_perf(record), flush=True)
        print("test · " + writers.format_logs(results), flush=True)
    return results
