"""Dispatch policy on a CNN: "auto" vs per-step vs fused-epoch dispatch, steady state.

XLA:CPU compiles convolutions inside a rolled loop without its fast kernels,
so fusing a CNN's steps into one ``lax.scan`` can be much slower than one
dispatch per step. ``steps_per_dispatch="auto"`` must pick the faster one;
this prints one JSON line with the three timings and ``auto_over_per_step``
(target: <= 1.0 within noise).

    python benchmarks/cnn_dispatch.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import flax.linen as nn
import jax
import numpy as np

import jaxdl as jdl


class SmallCNN(nn.Module):
    """Two 3x3 convolutions and a dense head, for 8x8x1 digit images."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[..., None] / 16.0).astype(np.float32), d.target.astype(np.int32)


def _time_fit(trainer, state, x, y, epochs, spd, repeats):
    trainer.fit(state, x, y, epochs=1, batch_size=32, verbose=0, steps_per_dispatch=spd)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out, _ = trainer.fit(state, x, y, epochs=epochs, batch_size=32, verbose=0,
                             steps_per_dispatch=spd)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x, y = _digits()
    trainer = jdl.Trainer(SmallCNN(), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
    state = trainer.init(jax.random.key(0), x[:1])
    steps = args.epochs * -(-len(x) // 32)
    us = {}
    for name, spd in (("auto", "auto"), ("per_step", 1), ("fused_epoch", "epoch")):
        us[name] = _time_fit(trainer, state, x, y, args.epochs, spd, args.repeats) / steps * 1e6
    print(json.dumps({
        "benchmark": "cnn_dispatch", "backend": jax.default_backend(), "jax": jax.__version__,
        "cpus": os.cpu_count(), "steps": steps,
        "auto_chose_per_step": not trainer.programs.loop_friendly(state, x),
        **{f"{k}_us_per_step": round(v, 1) for k, v in us.items()},
        "auto_over_per_step": round(us["auto"] / us["per_step"], 3),
        "fused_epoch_over_per_step": round(us["fused_epoch"] / us["per_step"], 3),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
