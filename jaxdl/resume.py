"""What a fit saves and restores to go on exactly where it stopped, and what it does
when a step goes non-finite (raise, or roll back to the last checkpoint)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxdl import errors
from jaxdl.callbacks import Callback
from jaxdl.state import TrainState


def first_bad(record: dict[str, np.ndarray], rows: int, handled: set[int]
               ) -> dict[str, Any] | None:
    """The earliest non-finite step of a dispatch not handled yet, with what went bad."""
    best = None
    for i in range(rows):
        step = int(record["min_step"][i])
        if record["count"][i] > 0 and step not in handled and (best is None or
                                                                step < best["step"]):
            best = {"step": step, "loss": record["loss"][i] > 0,
                    "grads": np.flatnonzero(record["grads"][i] > 0).tolist()}
    return best


def nonfinite_error(bad: dict[str, Any], state: TrainState) -> errors.NonFiniteError:
    names = [jax.tree_util.keystr(path) for path, _ in
             jax.tree_util.tree_flatten_with_path(state.params)[0]]
    parts = ["the loss"] if bad["loss"] else []
    if bad["grads"]:
        parts.append("the gradients of " + ", ".join(names[i] for i in bad["grads"][:8]))
    return errors.NonFiniteError(
        f"training step {bad['step']} was non-finite: {' and '.join(parts)}. The update "
        "was not applied and no checkpoint was written after it (the last good one is "
        "intact). Fix: lower the learning rate, clip gradients (clip_norm), check the inputs "
        "with jdl.data.clean, or set nan_policy='skip' or 'rollback'.")


def rollback(checkpointing: Any, state: TrainState, acc: Any, callbacks: Sequence[Callback],
              identity: dict[str, Any], run: Run, bad_step: int) -> tuple[TrainState, Any]:
    if checkpointing is None:
        raise errors.input_error("nan_policy", "checkpointing for 'rollback' (it reloads the "
                                 "last good checkpoint)", "no checkpoint directory",
                                 "pass checkpoint_dir=..., or use nan_policy='skip'")
    checkpointing.checkpointer.wait()
    if not checkpointing.checkpointer.steps:
        raise errors.NonFiniteError(f"training step {bad_step} was non-finite and there is no "
                                    "checkpoint to roll back to yet. Fix: checkpoint more often "
                                    "(every_steps) or use nan_policy='skip'.")
    warnings.warn(f"step {bad_step} was non-finite: rolling back to checkpoint "
                  f"{checkpointing.checkpointer.steps[-1]} and skipping its update",
                  stacklevel=3)
    return resume(checkpointing, state, acc, callbacks, identity, run)


@dataclasses.dataclass
class Run:
    """Where a fit stands: what a checkpoint's ``position`` and ``history`` record."""

    origin: int
    epoch: int
    first: int
    history: dict[str, list[float]]
    finished: bool = False
    # A population's members stopped by nan_policy="raise": member (str) -> step.
    diverged: dict[str, int] = dataclasses.field(default_factory=dict)


def save(checkpointing: Any, step: int, state: TrainState, acc: Any,
          callbacks: Sequence[Callback], identity: dict[str, Any], run: Run) -> None:
    from jaxdl import checkpoint

    tree = {"state": checkpoint.storable(state), "acc": acc}
    extra = {str(i): cb.checkpoint_arrays() for i, cb in enumerate(callbacks)}
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra:
        tree["callbacks"] = extra
    meta = {**checkpointing.meta, **identity,
            "position": {"epoch": run.epoch, "step_in_epoch": run.first, "step": step},
            "origin_epoch": run.origin, "finished": run.finished, "history": run.history,
            "diverged": run.diverged, "callbacks": [cb.state_dict() for cb in callbacks]}
    metrics = ({k: _best_of(v[-1], checkpointing.checkpointer.best_mode)
                for k, v in run.history.items()} if run.history else None)
    checkpointing.checkpointer.save(step, tree, meta, metrics)


def _best_of(value: float | list[float], mode: str) -> float:
    """A population's value for keeping the best checkpoint: its best member's."""
    if not isinstance(value, list):
        return value
    finite = [v for v in value if np.isfinite(v)]
    if not finite:
        return float("nan")
    return min(finite) if mode == "min" else max(finite)


def resume(checkpointing: Any, state: TrainState, acc: Any, callbacks: Sequence[Callback],
            identity: dict[str, Any], run: Run) -> tuple[TrainState, Any]:
    from jaxdl import checkpoint

    target = {"state": checkpoint.storable(state), "acc": acc}
    extra = {str(i): cb.checkpoint_template(state) for i, cb in enumerate(callbacks)}
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra:
        target["callbacks"] = extra
    found = checkpointing.checkpointer.restore(target)  # only its structure and shardings
    if found is None:
        return state, acc
    tree, meta, step = found
    changed = {k: (meta.get(k), v) for k, v in identity.items() if meta.get(k) != v}
    if changed:
        raise errors.input_error(
            "checkpoint", f"a checkpoint of this run's data and settings (step {step} under "
            f"{checkpointing.checkpointer.directory})",
            "different " + ", ".join(f"{k} (saved {a}, now {b})" for k, (a, b) in
                                     changed.items()),
            "run with the settings the checkpoint was made with, or use a new directory")
    for i, cb in enumerate(callbacks):
        cb.load_state_dict(meta["callbacks"][i] if i < len(meta["callbacks"]) else {},
                           tree.get("callbacks", {}).get(str(i)))
    run.origin, run.finished = meta["origin_epoch"], meta["finished"]
    run.epoch, run.first = meta["position"]["epoch"], meta["position"]["step_in_epoch"]
    run.history = {k: list(v) for k, v in meta["history"].items()}
    run.diverged = dict(meta.get("diverged", {}))
    return checkpoint.unstorable(tree["state"]), tree["acc"]
