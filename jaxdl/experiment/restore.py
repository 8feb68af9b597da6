"""A trained run loaded back from its workdir, and the inference commands on it:
predict, evaluate and sample rebuild the model from ``config.json`` and restore the
newest good checkpoint."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl import errors
from jaxdl.experiment import build
from jaxdl.experiment import data as data_lib
from jaxdl.experiment.settings import config_errors
from jaxdl.experiment.workdir import read_inputs, saved_config


def _newest_meta(ckpt: Any) -> dict[str, Any] | None:
    for step in reversed(ckpt.steps):
        with contextlib.suppress(Exception):  # unreadable: restore() sets it aside
            return ckpt.read_meta(step)
    return None


def restore_from_workdir(workdir: str | Path):
    """(config, trainer, state, meta) of the newest good checkpoint of a finished or
    running run; ``config`` completed from the defaults."""
    import jax

    from jaxdl import checkpoint
    from jaxdl.data import arrays

    workdir = Path(workdir)
    config = saved_config(workdir)
    members = build.population(config)
    with checkpoint.Checkpointer(workdir / "checkpoints", keep=1000) as ckpt:
        meta = _newest_meta(ckpt)
        if meta is None and not ckpt.steps:
            raise errors.input_error("--workdir", f"a checkpoint under {ckpt.directory}",
                                     "none", "train first: jaxdl train --workdir DIR")
        # The run's own steps per epoch: its schedule (warm-up, decay) is rebuilt as trained.
        steps_per_epoch = 1
        if meta and meta.get("num_examples") and meta.get("batch_size"):
            steps_per_epoch = arrays.steps_per_epoch(meta["num_examples"], meta["batch_size"])
        trainer = build.trainer(config, steps_per_epoch=steps_per_epoch)
        shape = meta["num_features"] if meta else [1]
        dtype = meta.get("input_dtype", "float32") if meta else "float32"
        abstract = trainer.abstract_state(
            np.zeros((1, *shape), dtype), population=members and members["size"],
            hparams=list(members["hparams"]) if members else ())
        target = jax.eval_shape(lambda s: {"state": checkpoint.storable(s)}, abstract)
        tree, meta, _ = ckpt.restore(target, partial=True)
    return config, trainer, checkpoint.unstorable(tree["state"]), meta


def _write_predictions(predictions: np.ndarray, output_path: str | Path | None) -> None:
    flat = predictions.reshape(len(predictions), -1)
    if output_path is None:
        np.savetxt(sys.stdout, flat, delimiter=",", fmt="%.8g")
    elif Path(output_path).suffix == ".npy":
        np.save(output_path, predictions)
    else:
        np.savetxt(output_path, flat, delimiter=",", fmt="%.8g")


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
    from jaxdl.data import transforms

    config, trainer, state, meta = restore_from_workdir(workdir)
    input_path = Path(input_path)
    x = read_inputs(input_path)
    if tuple(x.shape[1:]) != tuple(meta["num_features"]):
        raise errors.input_error("--input", f"rows of {meta['num_features']} features (what "
                                 "the run was trained on)", f"rows of shape {x.shape[1:]} "
                                 f"in {input_path}", "pass raw inputs with the training columns")
    if meta.get("scaler"):
        x = np.asarray(transforms.scaler_from_dict(meta["scaler"])(x))
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
