"""Pipeline benchmark: how fast the grain pipeline over on-disk records delivers batches.

Writes two record sets to a temporary folder first:
- "digits": the digits training split, x float32 [n, 64], y int32 [n] (260 bytes/example),
  batch 32, one block per epoch (the driver's "auto" dispatch for a small set);
- "charlm": next-byte windows of the text corpus's train split, x and y int32 [n, 128]
  (1 KiB/example), batch 64, blocks of 64 steps.

For each, it reads whole epochs through `jaxdl.data.Pipeline` in several settings
(threads read-ahead, no read-ahead, grain worker processes) and through the in-memory
gather the array path uses (`x[idx]` on arrays in RAM, the same idx), with nothing
consuming the batches: the numbers are the rate the pipeline can feed, to be compared
with the model's consumption rate (the target is 5x headroom). Files are read from the
page cache (just written), not from a cold disk. A second pass puts a consumer between
the blocks that is exactly as fast as an unassisted read (a sleep, releasing the GIL as
waiting on a device does) and reports `stall_fraction_at_equal_rate`: the share of the
time the caller still waits for data (about 0.5 when reading is not overlapped at all,
near 0 when read-ahead hides it).

It prints exactly one JSON line on stdout; progress goes to stderr.

Run it (about a minute on 2 CPU cores; `--quick` for a smoke run):
    .venv/bin/python benchmarks/pipeline.py [--repeats 3] [--quick]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jaxdl.data import arrays, datasets, text  # noqa: E402
from jaxdl.data.pipeline import Pipeline  # noqa: E402
from jaxdl.data.records import open_records, write_records  # noqa: E402

SEED = 0
SETTINGS = {  # name -> Pipeline keyword arguments
    "threads2_prefetch2": dict(num_threads=2, prefetch=2),
    "threads1_prefetch4": dict(num_threads=1, prefetch=4),
    "no_readahead": dict(num_threads=0, prefetch=0),
    "workers2_prefetch2": dict(num_threads=0, prefetch=2, num_workers=2),
}
CHOSEN = "threads2_prefetch2"  # Pipeline's defaults


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def bytes_per_example(records):
    return int(sum(np.dtype(s.dtype).itemsize * int(np.prod(s.shape))
                   for s in records.fields.values()))


def time_pipeline(records, batch_size, num_steps, epochs, options, consume_s=0.0):
    """Reads the dispatch grid of `epochs` epochs (the first block untimed: start-up).

    Between blocks the caller "computes" for `consume_s` seconds (a sleep, which releases
    the GIL as waiting on a device does), so read-ahead can overlap it.

    Returns:
      (wall seconds, seconds spent inside `batches`, start-up seconds, blocks timed).
    """
    started = time.perf_counter()
    with Pipeline(records, batch_size, seed=SEED, process_index=0, process_count=1,
                  **options) as pipe:
        grid = [(e, f) for e in range(epochs) for f in range(0, pipe.steps_per_epoch, num_steps)]
        pipe.batches(*grid[0], num_steps)
        startup = time.perf_counter() - started
        waiting, started = 0.0, time.perf_counter()
        for epoch, first in grid[1:]:
            asked = time.perf_counter()
            pipe.batches(epoch, first, num_steps)
            waiting += time.perf_counter() - asked
            if consume_s:
                time.sleep(consume_s)
        return time.perf_counter() - started, waiting, startup, len(grid) - 1


def time_in_memory(data, batch_size, num_steps, epochs):
    """The array path's host gather: the same idx into arrays in RAM (same blocks timed)."""
    n = len(next(iter(data.values())))
    spe = arrays.steps_per_epoch(n, batch_size)
    grid = [(e, f) for e in range(epochs) for f in range(0, spe, num_steps)]
    started, order = time.perf_counter(), (None, None)
    for epoch, first in grid[1:]:
        if order[0] != epoch:  # once per epoch, as the fit driver draws it
            order = (epoch, arrays.epoch_order(SEED, epoch, n))
        idx = arrays.block_indices(order[1], batch_size, first, num_steps)
        {k: v[idx] for k, v in data.items()}
    return time.perf_counter() - started


def measure(name, records, batch_size, num_steps, epochs, repeats):
    n = len(records)
    per = bytes_per_example(records)
    in_ram = {k: np.array(v) for k, v in records.arrays.items()}
    result = {"examples": n, "bytes_per_example": per, "batch_size": batch_size,
              "steps_per_block": num_steps, "epochs": epochs}
    blocks = None
    seconds = statistics.median(time_in_memory(in_ram, batch_size, num_steps, epochs)
                                for _ in range(repeats))
    for setting, options in SETTINGS.items():
        runs = [time_pipeline(records, batch_size, num_steps, epochs, options)
                for _ in range(repeats)]
        blocks = runs[0][3]
        examples = blocks * num_steps * batch_size  # padded rows are read too
        wall = statistics.median(r[0] for r in runs)
        result[setting] = {"examples_per_s": round(examples / wall),
                           "bytes_per_s": round(examples * per / wall),
                           "startup_s": round(statistics.median(r[2] for r in runs), 3)}
        if setting == "no_readahead":
            read_s = wall / blocks
        log(f"{name} {setting}: {result[setting]}")
    result["in_memory_gather"] = {"examples_per_s": round(examples / seconds),
                                  "bytes_per_s": round(examples * per / seconds)}
    log(f"{name} in-memory: {result['in_memory_gather']}")
    # Overlap: a consumer as fast as an unassisted read; the share of its time the
    # caller still waits for data (0: reading fully hidden; ~0.5: not overlapped at all).
    for setting, options in SETTINGS.items():
        runs = [time_pipeline(records, batch_size, num_steps, epochs, options, read_s)
                for _ in range(repeats)]
        result[setting]["stall_fraction_at_equal_rate"] = round(
            statistics.median(r[1] / r[0] for r in runs), 3)
    result["blocks_timed"] = blocks
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        data = datasets.load("digits", seed=SEED)
        digits = write_records(Path(tmp) / "digits", {"x": data.x_train, "y": data.y_train})
        corpus = text.load_corpus("train", max_bytes=1_000_000 if args.quick else None)
        x, y = text.windows(corpus, 128)
        charlm = write_records(Path(tmp) / "charlm", {"x": x, "y": y})
        del x, y
        charlm = open_records(charlm.directory)
        log(f"records: {digits}; {charlm}")
        out = {
            "benchmark": "pipeline", "cpus": os.cpu_count(), "chosen": CHOSEN,
            "digits": measure("digits", digits, 32, arrays.steps_per_epoch(len(digits), 32),
                              3 if args.quick else 30, repeats),
            "charlm": measure("charlm", charlm, 64, 32 if args.quick else 128, 2, repeats),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
