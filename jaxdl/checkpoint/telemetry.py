"""Orbax's raw-bytes telemetry, turned off: it leaks memory on every save and restore.

Around every array write and read, Orbax asks TensorStore for its kvstore byte counters
(``tensorstore.experimental_collect_matching_metrics``) to log a raw throughput and record
``/jax/orbax/*/worker/io/raw/*`` scalars. What those calls return is never freed
(TensorStore 0.1.75 to 0.1.86): a plain Orbax ``CheckpointManager`` grows by about 21 KB
per save, 4 to 5 KB with this telemetry off (``benchmarks/checkpoint_growth.py``), so a run
that checkpoints 2,000 times carried some 35 MB more for a log line. Orbax reads a missing
counter (None) as "skip the raw figures", so the kit hands it None; the logical-bytes
throughput Orbax logs is kept.
"""

from __future__ import annotations


def _no_raw_bytes(direction: object = None) -> None:
    """Orbax's ``get_tensorstore_raw_bytes`` in the kit: no counter (the telemetry skips)."""
    return None


def turn_off_raw_bytes_telemetry() -> None:
    """Makes Orbax skip its raw-bytes telemetry (idempotent; a no-op if Orbax moved it)."""
    try:
        from orbax.checkpoint._src.serialization import tensorstore_utils
    except ImportError:
        return
    if hasattr(tensorstore_utils, "get_tensorstore_raw_bytes"):
        tensorstore_utils.get_tensorstore_raw_bytes = _no_raw_bytes
