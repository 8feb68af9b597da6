"""What a long run's checkpoints cost as it goes on: bytes per save and memory per save.

Two figures that must not grow with the run's length:

- **bytes per save**: a fit of a small MLP that checkpoints every epoch for ``--epochs``
  epochs; the bytes each save writes beside its arrays (the meta item, Orbax's step
  metadata, the digest, and the line it appends to ``history.jsonl``) at the first and at
  the last save. Before the history log each meta held the whole history, so this grew
  with the epochs (``meta_history_bytes_at_end``: what the last meta would have held).
- **memory per save**: ``--saves`` saves of a small tree, each mode in a fresh process;
  resident memory growth per save over the last three quarters, for the kit's
  ``Checkpointer``, a plain Orbax ``CheckpointManager`` (its raw-bytes telemetry on, as
  Orbax ships), and the same with that telemetry off (what the kit does:
  ``jaxdl/checkpoint/telemetry.py``). The kit's target: no more than Orbax with the
  telemetry off (``kit_vs_orbax_telemetry_off`` <= 1.25, noise allowed), well under Orbax
  as shipped (``kit_vs_orbax``).

Prints one JSON line on stdout.

    python benchmarks/checkpoint_growth.py [--epochs 200] [--saves 1500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("kit", "orbax", "orbax_telemetry_off")


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def memory_per_save(mode: str, saves: int) -> float:
    """KB of resident memory per save over the last 3/4 of ``saves`` (run in this process)."""
    import gc

    import jax.numpy as jnp

    tree = {"w": jnp.ones((64, 64)), "b": jnp.zeros((64,))}
    directory = tempfile.mkdtemp(prefix="jaxdl-growth-")
    if mode == "kit":
        from jaxdl.checkpoint import Checkpointer

        manager = Checkpointer(directory, keep=3)
        save, wait = (lambda s: manager.save(s, tree, {"step": s})), manager.wait
    else:
        import orbax.checkpoint as ocp

        if mode == "orbax_telemetry_off":
            from jaxdl.checkpoint import telemetry

            telemetry.turn_off_raw_bytes_telemetry()
        manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=3), item_names=("state", "meta"))
        save = (lambda s: manager.save(s, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave({"step": s}))))
        wait = manager.wait_until_finished
    start = saves // 4
    for step in range(1, saves + 1):
        save(step)
        if step == start:
            wait()
            gc.collect()
            before = _resident_mb()
    wait()
    gc.collect()
    return (_resident_mb() - before) * 1e3 / (saves - start)


def bytes_per_save(epochs: int) -> dict[str, int]:
    """Bytes written beside the arrays at the first and the last save of an ``epochs`` fit."""
    import numpy as np

    import jaxdl as jdl
    from jaxdl.checkpoint import Checkpointer, Checkpointing

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                          metrics=["accuracy"])
    directory = Path(tempfile.mkdtemp(prefix="jaxdl-growth-")) / "checkpoints"
    with Checkpointer(directory, keep=epochs) as ckpt:
        _, history = trainer.fit(trainer.init(0, x[:1]), x, y, epochs=epochs, batch_size=32,
                                 verbose=0, validation_data=(x, y),
                                 checkpointing=Checkpointing(ckpt))
        steps = ckpt.steps
    lines = (directory / "history.jsonl").read_bytes().splitlines(keepends=True)

    def written(i: int) -> int:
        step = steps[i]
        files = [directory / str(step) / "meta" / "metadata",
                 directory / str(step) / "_CHECKPOINT_METADATA",
                 directory / f"{step}.digest.json"]
        return sum(p.stat().st_size for p in files) + len(lines[i])

    return {"saves": len(steps), "bytes_first_save": written(0),
            "bytes_last_save": written(-1),
            "meta_history_bytes_at_end": len(json.dumps(history))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--saves", type=int, default=1500)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(memory_per_save(args.mode, args.saves)))
        return
    figures: dict[str, object] = {"bench": "checkpoint_growth", **bytes_per_save(args.epochs)}
    for mode in MODES:
        done = subprocess.run([sys.executable, __file__, "--mode", mode, "--saves",
                               str(args.saves)], capture_output=True, text=True, check=True)
        figures[f"{mode}_kb_per_save"] = round(float(done.stdout.strip().splitlines()[-1]), 1)
    figures["memory_saves"] = args.saves
    for peer in ("orbax", "orbax_telemetry_off"):
        figures[f"kit_vs_{peer}"] = round(figures["kit_kb_per_save"] /
                                          max(figures[f"{peer}_kb_per_save"], 1e-9), 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
