"""Checkpoints: an Orbax manager with digests, and what a fit saves to resume exactly.

- :mod:`jaxdl.checkpoint.manager`: ``Checkpointer`` (Orbax, digests, fallback to the
  newest good checkpoint) and ``Checkpointing`` (a fit's cadence);
- :mod:`jaxdl.checkpoint.integrity`: what a checkpoint should hold, and checksums;
- :mod:`jaxdl.checkpoint.resume`: what a fit saves and restores to go on exactly
  (``saved_history``: the history a step vouches for);
- :mod:`jaxdl.checkpoint.history_log`: the fit's history, appended beside the steps;
- :mod:`jaxdl.checkpoint.disk`, ``digests``, ``schema``, ``cadence``, ``failures``: the
  checks before a step is trusted, the digest files, the meta's schema, when to save, and
  what a failed save leaves.

Names are resolved lazily: the manager imports Orbax (about a second), which a fit
without checkpoints never needs.
"""

from __future__ import annotations

from jaxdl import _lazy

_EXPORTS = {
    "Checkpointer": "jaxdl.checkpoint.manager",
    "Checkpointing": "jaxdl.checkpoint.manager",
    "check_inside": "jaxdl.checkpoint.disk",
    "saved_history": "jaxdl.checkpoint.resume",
    "storable": "jaxdl.checkpoint.targets",
    "unstorable": "jaxdl.checkpoint.targets",
    "checksums": "jaxdl.checkpoint.integrity",
    "digest": "jaxdl.checkpoint.integrity",
    "fetch_checksums": "jaxdl.checkpoint.integrity",
    "structure": "jaxdl.checkpoint.integrity",
    "structure_mismatch": "jaxdl.checkpoint.integrity",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy.exports(__name__, _EXPORTS)
