"""Throughput, FLOPs and utilisation of a run, and the compilation cache's hits.

FLOPs per step come from XLA's cost analysis of the lowered training step;
MFU divides achieved FLOP/s by the device's peak (dense bf16 matmul peaks of
known accelerators; pass ``peak_flops`` for anything else, e.g. a CPU).
"""

from __future__ import annotations

import collections
from typing import Any

import jax

# Dense bf16 peak FLOP/s per device (vendor figures, no sparsity).
PEAK_FLOPS: dict[str, float] = {
    "h100": 989e12,
    "h200": 989e12,
    "a100": 312e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
}


def peak_flops(device: Any = None, override: float | None = None) -> float | None:
    """The device's peak FLOP/s, from ``override`` or :data:`PEAK_FLOPS`; None if unknown."""
    if override:
        return float(override)
    kind = (device or jax.devices()[0]).device_kind.lower()
    for name, value in sorted(PEAK_FLOPS.items(), key=lambda item: -len(item[0])):
        if name in kind:
            return value
    return None


def step_flops(train_step: Any, state: Any, batch: Any) -> float | None:
    """FLOPs of one training step from XLA's cost analysis (None if the backend gives none)."""
    try:
        cost = jax.jit(train_step).lower(state, batch).cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def report(fit_perf: dict[str, float], flops: float | None, peak: float | None
           ) -> dict[str, float | None]:
    """The perf record of a run: compile time, steps/s, examples/s, FLOPs, MFU."""
    out: dict[str, float | None] = dict(fit_perf)
    out["flops_per_step"] = flops
    achieved = flops * fit_perf["steps_per_s"] if flops and fit_perf.get("steps_per_s") else None
    out["flops_per_s"] = achieved
    out["mfu"] = achieved / peak if achieved and peak else None
    return out


class CacheCounter:
    """Counts persistent compilation cache hits and misses while alive (jax.monitoring)."""

    _counts: collections.Counter = collections.Counter()
    _registered = False

    def __init__(self):
        if not CacheCounter._registered:
            jax.monitoring.register_event_listener(CacheCounter._listen)
            CacheCounter._registered = True
        self.start = dict(CacheCounter._counts)

    @staticmethod
    def _listen(event: str, **_: Any) -> None:
        if event in ("/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"):
            CacheCounter._counts[event.rsplit("_", 1)[-1]] += 1

    def counts(self) -> dict[str, int]:
        """{"hits": n, "misses": m} since this counter was made."""
        return {k: CacheCounter._counts[k] - self.start.get(k, 0) for k in ("hits", "misses")}
