"""Checkpoint I/O: the kit's Checkpointer vs raw Orbax vs one ``.npy`` per leaf, same disk.

Builds a ~400 MB TrainState (MLP 4096 -> 4096 -> 4096 -> 1 with Adam: params plus two
moments) and measures, on a temp dir under /tmp (removed afterwards), median of 3:

- save throughput (MB/s, ``save`` call until ``wait`` returns, i.e. committed) and restore
  throughput (MB/s, into an abstract target, digest-verified for the kit) of
  ``jaxdl.checkpoint.Checkpointer``, of a plain async ``orbax.checkpoint.CheckpointManager``
  with ``StandardSave``/``StandardRestore`` (``orbax_raw_*``: the kit's overhead over
  Orbax), and of ``numpy.save``/``numpy.load`` (``allow_pickle=False``), fsynced per file;
- the async save stall: how long ``save(...)`` blocks the training loop (``stall_s``) against
  the save's own duration (``save_total_s``); target ``stall_fraction < 0.05``.

Restores read files just written: with this much RAM they come from the page cache unless
``--evict`` (``posix_fadvise(DONTNEED)`` on every file after it is synced), see the
``page_cache`` field. Prints one JSON line on stdout; progress goes to stderr.

    python benchmarks/checkpoint.py [--repeats 3] [--width 4096] [--evict] [--skip-kit]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

import jaxdl as jdl

MB = 1e6


def log(msg: str) -> None:
    print(f"[checkpoint bench] {msg}", file=sys.stderr, flush=True)


def storable(state):
    """The state with its typed PRNG key as raw key data (what the fit driver saves)."""
    return state.replace(rng=jax.random.key_data(state.rng))


def nbytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def evict(directory: Path) -> None:
    """Drops ``directory``'s (clean) pages from the page cache: fsync, then DONTNEED."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def check_equal(saved, restored, what: str) -> None:
    """Asserts the structure matches and a few leaves (first, largest, last) are equal."""
    a, tree_a = jax.tree.flatten(saved)
    b, tree_b = jax.tree.flatten(restored)
    assert tree_a == tree_b, f"{what}: restored structure differs: {tree_a} vs {tree_b}"
    largest = max(range(len(a)), key=lambda i: a[i].size)
    for i in sorted({0, largest, len(a) - 1}):
        x, y = np.asarray(a[i]), np.asarray(b[i])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: leaf {i} shape/dtype"
        assert np.array_equal(x, y), f"{what}: leaf {i} differs after restore"


# --- the three writers -------------------------------------------------------------------


class KitCkpt:
    """``jaxdl.checkpoint.Checkpointer``, either API (``save(step, tree, meta)`` or
    ``save(tree, meta=..., step=...)``; ``restore`` giving ``(tree, meta[, step])``)."""

    name = "kit"

    def __init__(self, directory: Path):
        from jaxdl.checkpoint import Checkpointer

        self.ckpt = Checkpointer(directory, keep=3)
        self.step_first = self.api_of() == "save(step, tree, meta)"

    @staticmethod
    def api_of() -> str:
        from jaxdl.checkpoint import Checkpointer

        params = list(inspect.signature(Checkpointer.save).parameters)
        return ("save(step, tree, meta)" if params[1:2] == ["step"]
                else "save(tree, meta=..., step=...)")

    def save(self, tree, step: int) -> None:
        meta = {"epoch": step}
        if self.step_first:
            self.ckpt.save(step, tree, meta)
        else:
            self.ckpt.save(tree, meta=meta, step=step)

    def wait(self) -> None:
        self.ckpt.wait()

    def restore(self, abstract):
        out = self.ckpt.restore(abstract)
        assert out is not None, "kit restore found no checkpoint"
        return out[0]

    def close(self) -> None:
        self.ckpt.close()


class OrbaxRaw:
    """A plain async ``CheckpointManager`` with ``StandardSave``/``StandardRestore``."""

    name = "orbax_raw"

    def __init__(self, directory: Path):
        options = ocp.CheckpointManagerOptions(max_to_keep=3, create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(directory, options=options)

    def save(self, tree, step: int) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(tree), force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, abstract):
        return self.manager.restore(self.manager.latest_step(),
                                    args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.close()


class NumpyFiles:
    """One ``.npy`` per leaf, ``allow_pickle=False``; every file and the dir fsynced."""

    name = "numpy"

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, tree, step: int) -> None:
        out = self.directory / str(step)
        out.mkdir()
        for i, leaf in enumerate(jax.tree.leaves(tree)):
            with open(out / f"{i}.npy", "wb") as f:
                np.save(f, np.asarray(leaf), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for old in self.directory.iterdir():
            if old.name.isdigit() and int(old.name) < step - 2:
                shutil.rmtree(old)

    def wait(self) -> None:
        pass

    def restore(self, abstract):
        leaves, treedef = jax.tree.flatten(abstract)
        steps = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit()]
        assert steps, "numpy restore found no checkpoint"
        latest = self.directory / str(max(steps))
        loaded = [np.load(latest / f"{i}.npy", allow_pickle=False) for i in range(len(leaves))]
        return jax.tree.unflatten(treedef, loaded)

    def close(self) -> None:
        pass


# --- measurement -------------------------------------------------------------------------


def measure(make, directory: Path, tree, abstract, repeats: int, do_evict: bool):
    """Median save total, save stall and restore seconds over ``repeats``.

    A warm-up save comes first (compiles the kit's digest, starts Orbax's threads). Each
    restore goes through a fresh instance opened on the directory, as a resumed run would
    (its construction is not timed).
    """
    writer = make(directory)
    name = writer.name
    totals, stalls, restores = [], [], []
    try:
        writer.save(tree, 1)
        writer.wait()
        for r in range(repeats):
            start = time.perf_counter()
            writer.save(tree, 2 + r)
            stalls.append(time.perf_counter() - start)
            writer.wait()
            totals.append(time.perf_counter() - start)
            if do_evict:
                evict(directory)
            reader = make(directory)
            try:
                start = time.perf_counter()
                restored = jax.block_until_ready(reader.restore(abstract))
                restores.append(time.perf_counter() - start)
            finally:
                reader.close()
            if r == 0:
                check_equal(tree, restored, name)
            del restored
            log(f"{name} #{r}: save {totals[-1]:.2f}s (stall {stalls[-1]:.3f}s), "
                f"restore {restores[-1]:.2f}s")
    finally:
        writer.close()
    return statistics.median(totals), statistics.median(stalls), statistics.median(restores)


def digest_seconds(tree, repeats: int) -> float | None:
    """Median time of the kit's per-leaf checksum alone (part of its save stall), if exposed."""
    import jaxdl.checkpoint as kit_module

    digest = getattr(kit_module, "digest", None)
    if digest is None:
        return None
    digest(tree)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        digest(tree)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=4096,
                        help="input features and hidden width (4096: ~400 MB state)")
    parser.add_argument("--evict", action="store_true",
                        help="posix_fadvise(DONTNEED) the files before each restore")
    parser.add_argument("--skip-kit", action="store_true",
                        help="measure raw Orbax and numpy only (as when the kit has no "
                             "Checkpointer)")
    args = parser.parse_args()

    width = args.width
    model = jdl.models.MLP(features=(width, width, 1))
    trainer = jdl.Trainer(model, loss="mse", optimizer="adam")
    sample = np.zeros((1, width), np.float32)
    state = trainer.init(jax.random.key(0), sample)
    tree = jax.block_until_ready(storable(state))
    abstract = jax.eval_shape(storable, trainer.abstract_state(sample))
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                              sharding=one), abstract)
    size = nbytes(tree)
    log(f"state: {len(jax.tree.leaves(tree))} leaves, {size / MB:.0f} MB")

    try:
        import jaxdl.checkpoint as kit_module

        kit_available = hasattr(kit_module, "Checkpointer") and not args.skip_kit
    except ImportError:
        kit_available = False

    results = {}
    kit_api = kit_digest = None
    root = Path(tempfile.mkdtemp(prefix="jaxdl-ckpt-bench-", dir="/tmp"))
    try:
        makers = [("numpy", NumpyFiles), ("orbax_raw", OrbaxRaw)]
        if kit_available:
            makers.insert(0, ("kit", KitCkpt))
            kit_api = KitCkpt.api_of()
        for name, make in makers:
            directory = root / name
            results[name] = measure(make, directory, tree, abstract, args.repeats, args.evict)
            shutil.rmtree(directory, ignore_errors=True)
        if kit_available:
            kit_digest = digest_seconds(tree, args.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def mb_s(seconds: float) -> float:
        return round(size / MB / seconds, 1)

    out = {
        "benchmark": "checkpoint",
        "state_mb": round(size / MB, 1),
        "leaves": len(jax.tree.leaves(tree)),
        "model": f"MLP({width}, {width}, 1) on {width} inputs, adam",
        "kit_class_used": kit_available,
        "kit_api": kit_api,
        "repeats": args.repeats,
        "statistic": "median",
    }
    out |= dict.fromkeys(["kit_save_mb_s", "kit_restore_mb_s", "kit_save_s", "kit_restore_s",
                          "kit_digest_s"])
    if kit_available:
        total, stall, restore = results["kit"]
        out |= {"kit_save_mb_s": mb_s(total), "kit_restore_mb_s": mb_s(restore),
                "kit_save_s": round(total, 3), "kit_restore_s": round(restore, 3),
                "kit_digest_s": None if kit_digest is None else round(kit_digest, 3),
                "kit_digest_note": "time of jaxdl.checkpoint.digest(state) alone: on save it "
                                   "is dispatched after Orbax's copy and fetched by a "
                                   "background thread (not in the stall); restore runs it "
                                   "to verify the bytes"}
    total, stall_raw, restore = results["orbax_raw"]
    out |= {"orbax_raw_save_mb_s": mb_s(total), "orbax_raw_restore_mb_s": mb_s(restore),
            "orbax_raw_save_s": round(total, 3), "orbax_raw_restore_s": round(restore, 3),
            "orbax_raw_stall_s": round(stall_raw, 3)}
    np_total, _, np_restore = results["numpy"]
    out |= {"numpy_save_mb_s": mb_s(np_total), "numpy_load_mb_s": mb_s(np_restore),
            "numpy_save_s": round(np_total, 3), "numpy_load_s": round(np_restore, 3),
            "numpy_sync": "fsync per .npy file + fsync of the step dir, inside the timing"}
    stalled = "kit" if kit_available else "orbax_raw"
    total, stall, _ = results[stalled]
    out |= {
        "kit_over_numpy_save": (round(results["kit"][0] / np_total, 2)
                                if kit_available else None),
        "kit_over_orbax_raw_save": (round(results["kit"][0] / results["orbax_raw"][0], 2)
                                    if kit_available else None),
        "kit_over_orbax_raw_restore": (round(results["kit"][2] / results["orbax_raw"][2], 2)
                                       if kit_available else None),
        "stall_of": stalled,
        "stall_s": round(stall, 4),
        "save_total_s": round(total, 3),
        "stall_fraction": round(stall / total, 4),
        "targets_met": {"stall_fraction_lt_0.05": bool(stall / total < 0.05)},
        "page_cache": ("evicted with posix_fadvise(DONTNEED) before each restore (a VM disk "
                       "may still be cached by the host)" if args.evict
                       else "warm: restores (fresh instance per restore) read files just "
                            "written, still in the page cache (RAM >> state), so restore "
                            "MB/s is not disk-bound; --evict for cold reads"),
        "tree": "TrainState with rng as raw key data (as the fit driver saves it)",
        "disk": "/tmp",
        "jax": jax.__version__,
        "orbax_checkpoint": ocp.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
