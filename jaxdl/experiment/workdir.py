"""A run's workdir: its saved config (and whether a new config may resume it), whether the
run is finished, and the input files the inference commands read."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxdl import errors
from jaxdl.data.validate import nonfinite_rows
from jaxdl.experiment import config as config_lib
from jaxdl.experiment import lock
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


def checkpoint_steps(workdir: Path) -> list[int]:
    """The committed checkpoint steps under ``workdir/checkpoints`` (names only: nothing is
    opened), oldest first; set-aside and half-written ones excluded."""
    folder = workdir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def check(workdir: Path, config: ml_collections.ConfigDict, resume: bool) -> bool:
    """Checks that ``config`` may run in ``workdir``; returns whether a run is there to resume.

    Only a checkpoint binds a workdir: a config.json without one is of a run that saved
    nothing (it failed before, or was stopped before its first save), so it starts afresh.
    """
    entries = sorted(p.name for p in workdir.iterdir() if not lock.is_lock_file(p)) \
        if workdir.is_dir() else []
    if entries and not resume:
        raise errors.input_error(
            "--workdir", "an empty directory (checkpoint.resume=false refuses to resume)",
            f"{workdir}, which holds {entries}",
            "pass a new --workdir, or drop --config.checkpoint.resume=false to resume")
    saved_config = workdir / "config.json"
    if not checkpoint_steps(workdir) or not saved_config.exists():
        return False
    before = ml_collections.ConfigDict(json.loads(saved_config.read_text()))
    changed = changed_keys(before, config)
    if changed:
        from jaxdl.experiment.default_config import get_config

        # A key the run was saved without (an older kit) ran at its default.
        saved = {**config_lib.flatten(get_config()), **config_lib.flatten(before)}
        now = config_lib.flatten(config)
        raise errors.input_error(
            "--config", f"the config of the run in {workdir} (to resume it)",
            "changes to " + ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})"
                                      for k in changed[:8]),
            "resume with the same config, or pass a new --workdir")
    return True


def save_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Writes ``workdir/config.json`` whole or not at all (a reader may be looking)."""
    path = workdir / "config.json"
    temporary = path.with_name(f".config.json.{os.getpid()}")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(config_lib.config_to_dict(config), indent=2) + "\n")
        os.replace(temporary, path)
    except OSError as e:
        raise lock.unwritable("--workdir", workdir, e) from None


def saved_config(workdir: Path) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with, completed from the defaults."""
    config_file = workdir / "config.json"
    try:
        saved = json.loads(config_file.read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise errors.input_error("--workdir", "a directory written by `jaxdl train` "
                                 "(with config.json)", str(workdir),
                                 "pass the --workdir of a training run")
    return complete(ml_collections.ConfigDict(saved))


def newest_meta(ckpt: Any) -> dict[str, Any] | None:
    """The JSON meta of the newest checkpoint of ``ckpt`` that has readable meta."""
    for step in reversed(ckpt.steps):
        with contextlib.suppress(Exception):  # unreadable: restore() sets it aside
            return ckpt.read_meta(step)
    return None


def _records(path: Path) -> list[dict[str, Any]] | None:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None


def finished_results(workdir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(test metrics, position)`` of a finished run in ``workdir``, as it recorded them;
    None while it has more to do.

    Finished: its newest checkpoint says so, and metrics.jsonl ends with the test line(s)
    the run writes last. A population's metrics are arrays over its members.
    """
    from jaxdl import checkpoint

    if not checkpoint_steps(workdir):
        return None
    with checkpoint.Checkpointer(workdir / "checkpoints", keep=1000, root=workdir) as ckpt:
        meta = newest_meta(ckpt)
    records = _records(workdir / "metrics.jsonl")
    if not meta or not meta.get("finished") or not records:
        return None
    last_epoch = max((i for i, r in enumerate(records) if r.get("split") in ("train", "val")),
                     default=-1)
    tests = [r for r in records[last_epoch + 1:] if r.get("split") == "test"]
    if not tests:
        return None
    names = [k for k in tests[0] if k not in ("step", "epoch", "split", "member", "hparams")]
    if "member" in tests[0]:
        return {k: np.asarray([t[k] for t in tests]) for k in names}, meta["position"]
    return {k: tests[-1][k] for k in names}, meta["position"]


def _load(path: Path) -> np.ndarray:
    """The array in a .npy (no pickle) or a .csv (one optional header row)."""
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.dtype.kind not in "biuf":
            raise ValueError(f"an array of dtype {x.dtype}")
        return x
    with warnings.catch_warnings():  # an empty file: "no data", reported below as no rows
        warnings.simplefilter("ignore", UserWarning)
        try:
            return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except ValueError:  # a header row
            return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, skiprows=1)


def read_inputs(path: Path) -> np.ndarray:
    """Rows of numbers [n >= 1, features...] from a .npy (no pickle) or a .csv (one
    optional header row); finite."""
    try:
        x = _load(path)
    except ValueError as e:
        if path.suffix == ".npy":  # numpy's own text would suggest loading it unsafely
            what, given = ("a .npy file of numbers written by np.save",
                           f"{path.name}, which is not a plain numeric .npy file")
        else:
            what = "a .csv of numbers (one optional header row)"
            given = f"{path.name}: {str(e).splitlines()[0][:120].rstrip('.')}"
        raise errors.input_error("--input", what, given, "keep numeric columns only, e.g. "
                                 "np.save(path, x.astype('float32'))") from None
    if x.ndim < 2:
        raise errors.input_error("--input", "rows of features (an array [rows, features...])",
                                 f"a {x.ndim}-D array of shape {x.shape} in {path.name}",
                                 "save a single row as x.reshape(1, -1)")
    if not len(x):
        raise errors.input_error("--input", "a file with at least one row of features",
                                 f"no rows in {path.name}", "pass the rows to predict on")
    rows = nonfinite_rows(np.asarray(x))
    if len(rows):
        raise errors.input_error("--input", "finite values (no NaN or inf)",
                                 f"{len(rows)} row(s) with NaN/inf, first at row "
                                 f"{rows[0]} of {path.name}",
                                 "drop or fill those rows before predicting")
    return x
