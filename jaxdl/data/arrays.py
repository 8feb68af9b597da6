"""Batch plans for in-memory arrays: order from (seed, epoch), padding and masks.

A plan is index arrays, not data: ``idx [steps, batch]`` into the dataset and
``mask [steps, batch]`` (1 for real rows, 0 for the padding of the last partial
batch). The data stays on device for the whole run and each step gathers its
rows, so no example is dropped and no batch is copied on the host.

The order of epoch ``e`` depends only on ``(seed, e)`` — not on devices,
processes, or where a run was resumed.
"""

from __future__ import annotations

import math

import numpy as np


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Number of batches in one pass, the last one possibly partial."""
    return math.ceil(num_examples / batch_size)


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Example order of one epoch, int32 [num_examples]; a permutation from (seed, epoch)."""
    if not shuffle:
        return np.arange(num_examples, dtype=np.int32)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch])
    return rng.permutation(num_examples).astype(np.int32)


def pad_batches(order: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``order`` into batches, padding the last one.

    Returns:
      ``(idx, mask)``: int32 and float32 arrays of shape [ceil(n / batch_size), batch_size];
      padding rows point at example ``order[0]`` (any valid row) with mask 0.
    """
    n = len(order)
    steps = steps_per_epoch(n, batch_size)
    idx = np.full(steps * batch_size, order[0] if n else 0, dtype=np.int32)
    idx[:n] = order
    mask = np.zeros(steps * batch_size, dtype=np.float32)
    mask[:n] = 1.0
    return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def epoch_plan(
    num_examples: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``pad_batches(epoch_order(...))``: the batches of one epoch, [steps, batch_size] each."""
    return pad_batches(epoch_order(num_examples, seed, epoch, shuffle), batch_size)
