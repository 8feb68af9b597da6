"""Orbax wiring: save the TrainState and its JSON metadata, restore into an abstract target.

A checkpoint is ``DIR/checkpoints/<step>/`` written by an
``orbax.checkpoint.CheckpointManager`` with two items: ``state`` (the TrainState
pytree in Orbax's array format; the PRNG key stored as its raw key data) and
``meta`` (JSON: data position, normalization statistics, config). No pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from jaxdl import errors
from jaxdl.state import TrainState


def _manager(directory: Path, keep: int | None = None):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(directory.absolute(), options=options,
                                 item_names=("state", "meta"))


def _storable(state: TrainState) -> TrainState:
    return state.replace(rng=jax.random.key_data(state.rng))


def save(directory: str | Path, state: TrainState, meta: dict[str, Any],
         keep: int | None = None) -> int:
    """Saves ``state`` and ``meta`` as step ``state.step`` and waits for the commit.

    Returns:
      the step saved.
    """
    import orbax.checkpoint as ocp

    step = int(jax.device_get(state.step))
    with _manager(Path(directory), keep) as manager:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_storable(state)),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()
    return step


def restore(directory: str | Path, target: TrainState, step: int | None = None
            ) -> tuple[TrainState, dict[str, Any]]:
    """Restores (state, meta) from ``step`` (default: the latest) into the shape of ``target``.

    ``target`` may be abstract (``jax.eval_shape`` of the init): nothing is
    allocated before the checkpoint's structure is known to match.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory)
    with _manager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise errors.input_error("workdir", f"a checkpoint under {directory}",
                                     "no checkpoint", "train first: jaxdl train --workdir DIR")
        abstract = jax.eval_shape(_storable, target)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    state = restored["state"]
    return state.replace(rng=jax.random.wrap_key_data(state.rng)), dict(restored["meta"])


def read_meta(directory: str | Path, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """(step, meta) of ``step`` (default: the latest), without reading any array."""
    import orbax.checkpoint as ocp

    directory = Path(directory)
    with _manager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise errors.input_error("workdir", f"a checkpoint under {directory}",
                                     "no checkpoint", "train first: jaxdl train --workdir DIR")
        restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return step, dict(restored["meta"])
