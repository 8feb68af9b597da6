"""A trained state loaded back from its checkpoints, in a fresh process, with no internals.

The newest good checkpoint's meta says what the state looks like: the example
shape and dtype it was trained on and, through its saved structure, whether it is
a population (the step's leading axis) and which hyper-parameters were injected.
That builds the abstract target (``Trainer.abstract_state``), which Orbax restores
into, verified by the checkpoint's digest.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl import errors

_HPARAM = re.compile(r"\.hyperparams\['([^']+)'\]")
# jaxdl.optim.with_lr_scale's multiplier: the kit's, not a swept hyper-parameter.
_LR_SCALE = "step_size"


def checkpoint_folder(directory: str | Path) -> Path:
    """``directory`` itself, or its ``checkpoints/`` when it is a ``jaxdl train`` workdir."""
    path = Path(directory)
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if not path.is_dir():
        raise errors.input_error("directory", "a checkpoint folder or a `jaxdl train` workdir",
                                 f"{path}, which is not a folder",
                                 "pass the checkpoint_dir given to fit, or a --workdir")
    return path


def newest_meta(ckpt: Any) -> dict[str, Any] | None:
    """The meta of the newest checkpoint that can be read (None when none can)."""
    for step in reversed(ckpt.steps):
        with contextlib.suppress(Exception):  # unreadable: restore() sets it aside
            return ckpt.read_meta(step)
    return None


def state_shape(meta: dict[str, Any]) -> tuple[int | None, list[str]]:
    """(population size or None, injected hyper-parameter names) of a saved state."""
    structure = meta.get("structure", {})
    step = structure.get("['state'].step", {"shape": []})
    size = step["shape"][0] if step["shape"] else None
    names = sorted({m.group(1) for path in structure if path.startswith("['state'].opt_state")
                    for m in _HPARAM.finditer(path)} - {_LR_SCALE})
    return size, names


def sample_of(meta: dict[str, Any], sample_x: Any) -> Any:
    """A one-example input like the one the state was trained on (a pytree for a model
    with several inputs: meta holds a tree of shapes, see :func:`jaxdl.data.trees.shapes`)."""
    from jaxdl.data import trees

    if sample_x is not None:
        return trees.take(sample_x, slice(0, 1)) if trees.is_tree(sample_x) else (
            np.asarray(sample_x)[:1])
    if "num_features" not in meta:
        raise errors.input_error("sample_x", "an example of the inputs (this checkpoint does "
                                 "not record their shape)", "None",
                                 "pass trainer.restore(directory, sample_x=x[:1])")
    return trees.zeros(meta["num_features"], meta.get("input_dtype", "float32"))


def restore(trainer: Any, directory: str | Path, sample_x: Any = None
            ) -> tuple[Any, dict[str, Any]]:
    """(state, meta) of the newest good checkpoint under ``directory`` for ``trainer``."""
    import jax

    from jaxdl import checkpoint

    folder = checkpoint_folder(directory)
    with checkpoint.Checkpointer(folder, keep=1000) as ckpt:
        meta = newest_meta(ckpt)
        if meta is None:
            raise errors.input_error("directory", f"a checkpoint under {folder}", "none",
                                     "train first: fit(..., checkpoint_dir=DIR) or "
                                     "jaxdl train --workdir DIR")
        size, names = state_shape(meta)
        abstract = trainer.abstract_state(sample_of(meta, sample_x), population=size,
                                          hparams=names)
        target = jax.eval_shape(lambda s: {"state": checkpoint.storable(s)}, abstract)
        tree, meta, _ = ckpt.restore(target, partial=True)
    return checkpoint.unstorable(tree["state"]), meta
