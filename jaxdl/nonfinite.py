"""Non-finite steps: detected inside the step, decided and acted on by the driver.

``nan_policy`` names what a step with a non-finite loss or gradient does:

- "none": apply it;
- "raise": skip it, stop with :class:`~jaxdl.errors.NonFiniteError` naming the step and
  the gradients (a population freezes only the member that diverged);
- "skip": skip it and count it (``nonfinite_steps`` per epoch);
- "rollback": reload the last good checkpoint, then go on without that update.

Detection is a step wrapper (:func:`guard`), checked on device with no host round-trip;
the decision is made on the host once per dispatch from the records it returns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.state import TrainState

NAN_POLICIES = ("none", "raise", "skip", "rollback")

Update = Callable[[TrainState, Any], tuple[TrainState, dict[str, Any]]]


def guard(update: Update) -> Update:
    """Wraps a step's update stage so that a non-finite step changes only ``state.step``.

    Args:
      update: ``update(state, result) -> (new_state, stats)``, where ``result`` is a
        gradient function's ``((loss [] float32, (model_state, stats)), grads)`` (see
        :func:`jaxdl.step.apply_update`).

    Returns:
      The same stage, which keeps ``state`` (with the step advanced) when the loss or a
      gradient is non-finite, and adds ``stats["nonfinite"]``: additive statistics
      ``count`` of such steps [] float32, ``loss`` (how many had a non-finite loss)
      [] float32, ``grads`` (per gradient leaf, in ``jax.tree.leaves`` order, how many
      had a non-finite value) [leaves] float32, and ``min_step`` (the first such step;
      int32 max when none) [] int32. Checked on device: no host round-trip.

    Example::

        update = guard(jaxdl.step.apply_update(tx))
        new_state, stats = update(state, grad_fn(params, model_state, batch, key))
    """

    def guarded(state: TrainState, result: Any) -> tuple[TrainState, dict[str, Any]]:
        (loss, _), grads = result
        new, stats = update(state, result)
        kept, record = _keep_if_finite(state, new, loss, grads)
        return kept, {**stats, "nonfinite": record}

    return guarded


def _keep_if_finite(old: TrainState, new: TrainState, loss: jax.Array, tree: Any
                    ) -> tuple[TrainState, dict[str, jax.Array]]:
    """``new``, or ``old`` with the step advanced when ``loss`` or a leaf of ``tree`` is
    non-finite; and the step's record (see :func:`guard`)."""
    bad_leaves = jnp.stack([~jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(tree)])
    bad = ~jnp.isfinite(loss) | jnp.any(bad_leaves)
    kept = jax.lax.cond(bad, lambda: old.replace(step=new.step), lambda: new)
    record = {"count": bad.astype(jnp.float32),
              "loss": (~jnp.isfinite(loss)).astype(jnp.float32),
              "grads": bad_leaves.astype(jnp.float32),
              "min_step": jnp.where(bad, old.step, jnp.iinfo(jnp.int32).max)}
    return kept, record


def guard_state(step: Any) -> Any:
    """The guard for a step whose gradients are its own (a user's ``train_step``): a step
    whose new parameters, or whose ``loss`` statistic, are non-finite changes only
    ``state.step``; its record names the parameters that went bad (``grads``)."""

    def guarded(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, Any]]:
        new, stats = step(state, batch)
        total, count = stats.get("loss", (jnp.zeros(()), jnp.ones(())))
        kept, record = _keep_if_finite(state, new, total / jnp.maximum(count, 1e-12),
                                       new.params)
        return kept, {**stats, "nonfinite": record}

    return guarded


def check_policy(nan_policy: Any) -> str:
    """``nan_policy`` if it is a known policy, else the kit's error naming the known ones."""
    if nan_policy not in NAN_POLICIES:
        raise errors.unknown_name("nan_policy", "NaN policy", nan_policy, list(NAN_POLICIES))
    return nan_policy


def first_bad(record: dict[str, np.ndarray], rows: int, handled: set[int]
              ) -> dict[str, Any] | None:
    """The earliest non-finite step of a dispatch not handled yet, with what went bad.

    ``record``: the block's per-epoch records (numpy, ``count``/``loss``/``min_step`` [E],
    ``grads`` [E, leaves]); ``rows``: how many epochs of the block are real.
    """
    best = None
    for i in range(rows):
        step = int(record["min_step"][i])
        if record["count"][i] > 0 and step not in handled and (best is None or
                                                                step < best["step"]):
            best = {"step": step, "loss": record["loss"][i] > 0,
                    "grads": np.flatnonzero(record["grads"][i] > 0).tolist()}
    return best


def nonfinite_error(bad: dict[str, Any], params: Any) -> errors.NonFiniteError:
    """The error for ``nan_policy="raise"``: the step, and which gradients went bad."""
    names = [jax.tree_util.keystr(path) for path, _ in
             jax.tree_util.tree_flatten_with_path(params)[0]]
    parts = ["the loss"] if bad["loss"] else []
    if bad["grads"]:
        parts.append("the gradients of " + ", ".join(names[i] for i in bad["grads"][:8]))
    return errors.NonFiniteError(
        f"training step {bad['step']} was non-finite: {' and '.join(parts)}. The update "
        "was not applied and no checkpoint was written after it (the last good one is "
        "intact). Fix: lower the learning rate, clip gradients (clip_norm), check the inputs "
        "with jdl.data.clean, or set nan_policy='skip' or 'rollback'.")


def over_members(record: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A population's records [E, N, ...] as one record over all members (for rollback,
    which restores them all)."""
    return {"count": record["count"].sum(axis=1), "loss": record["loss"].max(axis=1),
            "grads": record["grads"].max(axis=1), "min_step": record["min_step"].min(axis=1)}


def diverged_members(record: dict[str, np.ndarray], rows: int, reported: np.ndarray
                     ) -> dict[int, int]:
    """Members among ``reported`` [N] with a non-finite step in the dispatch's first
    ``rows`` epochs: member -> its first such step (records [E, N, ...])."""
    bad = (record["count"][:rows] > 0).any(axis=0)
    return {int(m): int(record["min_step"][:rows, m].min())
            for m in np.flatnonzero(reported & bad)}


def all_diverged_error(size: int, diverged: dict[int, int]) -> errors.NonFiniteError:
    """The error once every member of a population went non-finite."""
    return errors.NonFiniteError(
        f"every member of the population ({size}) went non-finite (the first at "
        f"step {min(diverged.values())}). Fix: lower the learning rates, clip gradients "
        "(clip_norm), or check the inputs with jdl.data.clean.")


def rollback(checkpointing: Any, bad_step: int, restore: Any) -> Any:
    """``nan_policy="rollback"``: ``restore()`` (the last good checkpoint) after checking
    there is one. ``checkpointing``: the fit's :class:`jaxdl.checkpoint.Checkpointing`."""
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
                  stacklevel=4)
    return restore()
