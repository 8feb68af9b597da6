"""Which process writes: only process 0 of a multi-host run touches the files."""

from __future__ import annotations

import jax


def is_process_zero() -> bool:
    """Whether this process writes (always True in a single-process run)."""
    # Asked on first use, not in __init__: a callback may be built before
    # jax.distributed.initialize(), and asking earlier would start the backends too soon.
    return jax.process_index() == 0
