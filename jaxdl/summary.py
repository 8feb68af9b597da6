"""``jaxdl summary --config FILE``: the model's parameters, without training.

Shapes come from ``jax.eval_shape`` of the init: nothing is allocated, so a
model far larger than this machine's memory can be inspected.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np


def parameter_table(params: Any) -> list[dict[str, Any]]:
    """One row per parameter: path, shape, dtype, count, bytes (abstract or concrete leaves)."""
    rows = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        count = math.prod(leaf.shape)
        rows.append({"path": jax.tree_util.keystr(path), "shape": tuple(leaf.shape),
                     "dtype": str(leaf.dtype), "count": count,
                     "bytes": count * np.dtype(leaf.dtype).itemsize})
    return rows


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def summarize(config: ml_collections.ConfigDict) -> str:
    """The parameter table of an experiment config's model, as text."""
    from jaxdl import run
    from jaxdl.data import datasets

    x, _ = datasets.raw_arrays(config.data.name)
    images = x.reshape(len(x), 8, 8, 1) if config.data.get("images", False) else x
    trainer = run.build_trainer(config, steps_per_epoch=1)
    abstract = trainer.abstract_state(np.zeros((1, *images.shape[1:]), np.float32))
    rows = parameter_table(abstract.params)
    opt_bytes = sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
                    for leaf in jax.tree.leaves(abstract.opt_state))
    width = max(len(r["path"]) for r in rows)
    lines = [f"model {config.model.name} on {config.data.name} (inputs {images.shape[1:]}), "
             f"{jax.device_count()} device(s)",
             f"{'parameter':<{width}}  {'shape':<14} {'dtype':<8} {'count':>10} {'bytes':>10}"]
    for r in rows:
        lines.append(f"{r['path']:<{width}}  {str(r['shape']):<14} {r['dtype']:<8} "
                     f"{r['count']:>10,} {_human(r['bytes']):>10}")
    total = sum(r["bytes"] for r in rows)
    lines.append(f"total: {sum(r['count'] for r in rows):,} parameters, {_human(total)}; "
                 f"optimizer state {_human(opt_bytes)}; per device (replicated): "
                 f"{_human(total + opt_bytes)}")
    return "\n".join(lines)
