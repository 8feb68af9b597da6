"""A trained run loaded back from its workdir, and the inference commands on it:
predict, evaluate and sample rebuild the model from ``config.json`` and restore the
newest good checkpoint — of a finished run, or of one still training (read from a
private copy then, so that a reader never renames what the writer is committing)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl.data.validate import nonfinite_rows
from jaxdl.experiment import build, input_scale, lock
from jaxdl.experiment import data as data_lib
from jaxdl.experiment.settings import config_errors
from jaxdl.experiment.workdir import newest_meta, read_inputs, saved_config


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # Orbax never rewrites a committed file: a link is a copy
    except OSError:
        shutil.copy2(source, target)


def _snapshot(checkpoints: Path, into: Path) -> None:
    """The committed steps of a live run and their digests, linked into ``into``.

    A step the writer deletes meanwhile (it keeps only the newest) is left out.
    """
    for entry in sorted(checkpoints.iterdir()) if checkpoints.is_dir() else []:
        step = entry.name.split(".")[0]
        try:
            if entry.name.isdigit() and entry.is_dir():
                shutil.copytree(entry, into / entry.name, copy_function=_link_or_copy)
            elif step.isdigit() and entry.name == f"{step}.digest.json":
                _link_or_copy(str(entry), str(into / entry.name))
        except (OSError, shutil.Error):
            shutil.rmtree(into / entry.name, ignore_errors=True)


@contextlib.contextmanager
def _checkpoints(workdir: Path) -> Iterator[Path]:
    """The checkpoints folder to restore from, safe from and for a live writer.

    No writer: the run's own, with the workdir's lock held shared (a writer waits), so a
    checkpoint found unusable is set aside there as usual. A writer training: a private
    copy, so that nothing it is committing or deleting is ever renamed by a reader (and a
    step it deletes meanwhile is still whole here).
    """
    from jaxdl import checkpoint

    checkpoint.check_inside(workdir / "checkpoints", workdir)
    with lock.shared(workdir) as writer:
        if writer is None:
            yield workdir / "checkpoints"
            return
    try:
        folder = Path(tempfile.mkdtemp(prefix=".jaxdl-read-", dir=workdir))
    except OSError:  # links need the same file system; else copies, elsewhere
        folder = Path(tempfile.mkdtemp(prefix="jaxdl-read-"))
    try:
        _snapshot(workdir / "checkpoints", folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_model_source(config: Any, workdir: Path) -> None:
    """A run's own model class (``model.name = "pkg.mod:Class"``) is imported from the
    environment, never from inside the workdir: a workdir is data, not code to run."""
    from jaxdl.models import by_path

    name = config.model.name
    if not by_path.is_path(name):
        return
    where = by_path.origin(name)
    if where is not None and where.is_relative_to(workdir.resolve()):
        raise errors.input_error("--workdir", "a run whose model module is installed or on "
                                 "PYTHONPATH", f"{workdir}, whose model {name!r} would be "
                                 f"imported from inside it ({where})",
                                 "install the module, or put its folder on PYTHONPATH "
                                 "outside the workdir")


def load(workdir: str | Path) -> tuple[Any, Any]:
    """``(trainer, state)`` of a ``jaxdl train`` run: its config's model, loss, metrics and
    optimizer, and the newest good checkpoint's state (``jdl.load``)."""
    _, trainer, state, _ = restore_from_workdir(workdir)
    return trainer, state


def restore_from_workdir(workdir: str | Path):
    """(config, trainer, state, meta) of the newest good checkpoint of a finished or
    running run; ``config`` completed from the defaults.

    Reading a run that is training is allowed: its checkpoints are then read from a copy
    (see :func:`_checkpoints`), never renamed under it.
    """
    import jax

    from jaxdl import checkpoint
    from jaxdl.data import arrays

    workdir = Path(workdir)
    config = saved_config(workdir)
    _check_model_source(config, workdir)
    members = build.population(config)
    with _checkpoints(workdir) as folder, checkpoint.Checkpointer(
            folder, keep=1000, verify=config.checkpoint.verify) as ckpt:
        meta = newest_meta(ckpt)
        if meta is None and not ckpt.steps:
            raise errors.input_error("--workdir", f"a checkpoint under {workdir / 'checkpoints'}",
                                     "none", "train first: jaxdl train --workdir DIR")
        # The run's own steps per epoch: its schedule (warm-up, decay) is rebuilt as trained.
        steps_per_epoch = 1
        if meta and meta.get("num_examples") and meta.get("batch_size"):
            steps_per_epoch = arrays.steps_per_epoch(meta["num_examples"], meta["batch_size"])
        trainer = build.trainer(config, steps_per_epoch=steps_per_epoch)
        shape = meta.get("num_features", [1]) if meta else [1]
        dtype = meta.get("input_dtype", "float32") if meta else "float32"
        abstract = trainer.abstract_state(
            np.zeros((1, *shape), dtype), population=members and members["size"],
            hparams=list(members["hparams"]) if members else ())
        target = jax.eval_shape(lambda s: {"state": checkpoint.storable(s)}, abstract)
        tree, meta, _ = ckpt.restore(target, partial=True)
    return config, trainer, checkpoint.unstorable(tree["state"]), meta


def _write_predictions(predictions: np.ndarray, output_path: str | Path | None) -> None:
    flat = predictions.reshape(len(predictions), -1)
    try:
        if output_path is None:
            np.savetxt(sys.stdout, flat, delimiter=",", fmt="%.8g")
        elif Path(output_path).suffix == ".npy":
            np.save(output_path, predictions)
        else:
            np.savetxt(output_path, flat, delimiter=",", fmt="%.8g")
    except OSError as e:  # a read-only folder, a full disk: checked up front where it can be
        raise lock.unwritable_file("--output", Path(output_path or "-"),
                                   f"which cannot be written ({e.strerror or e})") from None


def _normalized(x: np.ndarray, scaler: dict[str, Any] | None, input_path: Path) -> np.ndarray:
    """``x`` through the run's normalization, which must keep every value finite."""
    from jaxdl.data import transforms

    if not scaler:
        return x
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, as the input's
        x = np.asarray(transforms.scaler_from_dict(scaler)(x))
    rows = nonfinite_rows(x)
    if len(rows):
        raise errors.input_error(
            "--input", "values that the run's normalization keeps finite in float32",
            f"{len(rows)} row(s) that overflow once normalized, first at row {rows[0]} of "
            f"{input_path.name}", "pass raw inputs in the units of the training columns")
    return x


def predict_from_workdir(workdir: str | Path, input_path: str | Path,
                         output_path: str | Path | None = None,
                         batch_size: int | None = None, member: int | None = None
                         ) -> np.ndarray:
    """Predicts with a trained run on raw (unnormalized) inputs from a .csv/.npy file.

    The run's normalization statistics are applied first, as in training.
    Writes CSV (or .npy) to ``output_path``, or CSV to stdout when it is None.
    A population run predicts with the mean of its members, or with ``member``.
    """
    from jaxdl import population

    input_path = Path(input_path)
    x = read_inputs(input_path)  # before the restore: a bad file is reported at once
    config, trainer, state, meta = restore_from_workdir(workdir)
    if tuple(x.shape[1:]) != tuple(meta["num_features"]):
        raise errors.input_error("--input", f"rows of {meta['num_features']} features (what "
                                 "the run was trained on)", f"rows of shape {x.shape[1:]} "
                                 f"in {input_path}", "pass raw inputs with the training columns")
    x = _normalized(x, meta.get("scaler"), input_path)
    input_scale.check(x, meta.get("scaler"), config, input_path.name)  # warns on a unit slip
    if member is not None:
        if population.size(state) is None:
            raise errors.input_error("--member", "a population run (population.size > 0)",
                                     f"member {member} of a single-model run",
                                     "drop --member")
        try:
            state = population.member(state, member)
        except errors.InputError as e:
            raise (e.renamed("--member") if e.argument == "index" else e) from None
    predictions = trainer.predict(state, x, batch_size=batch_size or config.batch_size,
                                  ensemble=population.size(state) is not None)
    _write_predictions(predictions, output_path)
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
    # Text runs sample with their training window; a records run of tokens with the model's.
    window = config.data.seq_len if config.data.name == "text" else None
    with config_errors(config):
        tokens = sample.generate(trainer, state, prompt, num_tokens=num_tokens,
                                 temperature=temperature, top_k=top_k, seed=seed, context=window)
    return sample.decode(tokens)


def evaluate_from_workdir(workdir: str | Path, split: str = "test") -> dict[str, Any]:
    """Loss and metrics of the newest good checkpoint on the run's own ``split``."""
    config, trainer, state, _ = restore_from_workdir(workdir)
    x, y = data_lib.load(config).splits[split]
    results = trainer.evaluate(state, x, y, batch_size=config.batch_size)
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in results.items()}
