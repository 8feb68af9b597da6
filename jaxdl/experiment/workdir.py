"""A run's workdir: its saved config (and whether a new config may resume it), and the
input files the inference commands read."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np

from jaxdl import errors
from jaxdl.data.validate import nonfinite_rows
from jaxdl.experiment import config as config_lib
from jaxdl.experiment.settings import complete

# Keys a resumed run may change: outputs only, and the topology (a checkpoint restores
# onto another mesh).
RESUMABLE_CHANGES = {"checkpoint.resume", "writers", "plot", "profile.steps", "peak_flops",
                     "mesh.population", "mesh.data", "mesh.fsdp", "mesh.tensor", "strategy",
                     "sharding.data_placement"}


def _as_saved(value):
    """A config value as config.json holds it (tuples as lists, ...), as JSON text."""
    return json.dumps(config_lib.config_to_dict(ml_collections.ConfigDict({"v": value}))["v"])


def changed_keys(before: ml_collections.ConfigDict, now: ml_collections.ConfigDict
                 ) -> list[str]:
    """Keys whose values differ between a saved config and ``now``, except those a resume
    may change; a key added to the kit after the run was saved is unchanged at its default."""
    from jaxdl.experiment.default_config import get_config

    saved, current = config_lib.flatten(before), config_lib.flatten(now)
    defaults = config_lib.flatten(get_config())
    return sorted(k for k in set(saved) | set(current) if k not in RESUMABLE_CHANGES and
                  json.dumps(saved.get(k)) != _as_saved(current.get(k)) and not (
                      k not in saved and k in defaults
                      and _as_saved(defaults[k]) == _as_saved(current.get(k))))


def prepare(workdir: Path, config: ml_collections.ConfigDict, resume: bool) -> bool:
    """Checks the workdir against the config, saves the config; returns whether a run is
    there to resume."""
    saved_config = workdir / "config.json"
    existing = workdir.is_dir() and any(workdir.iterdir())
    if existing and not resume:
        raise errors.input_error(
            "--workdir", "an empty directory (checkpoint.resume=false refuses to resume)",
            f"{workdir}, which holds {sorted(p.name for p in workdir.iterdir())}",
            "pass a new --workdir, or drop --config.checkpoint.resume=false to resume")
    if existing and saved_config.exists():
        before = ml_collections.ConfigDict(json.loads(saved_config.read_text()))
        changed = changed_keys(before, config)
        if changed:
            saved, now = config_lib.flatten(before), config_lib.flatten(config)
            raise errors.input_error(
                "--config", f"the config of the run in {workdir} (to resume it)",
                "changes to " + ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})"
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


def saved_config(workdir: Path) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with, completed from the defaults."""
    config_file = workdir / "config.json"
    if not config_file.exists():
        raise errors.input_error("--workdir", "a directory written by `jaxdl train` "
                                 "(with config.json)", str(workdir),
                                 "pass the --workdir of a training run")
    return complete(ml_collections.ConfigDict(json.loads(config_file.read_text())))


def read_inputs(path: Path) -> np.ndarray:
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
