"""What the benchmarks share: stderr progress and the median of repeated timings."""

import statistics
import sys
import time


def log(*args):
    """Progress to stderr: stdout carries only the benchmark's JSON line(s)."""
    print(*args, file=sys.stderr, flush=True)


def timed(fn, repeats):
    """Median wall seconds of ``fn()`` over ``repeats`` calls (compile it before timing)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
