"""pytest-friendly checks for your own training code, built on chex and the kit's drivers.

    from jaxdl import testing

    testing.assert_deterministic(trainer, x, y, epochs=2)
    testing.assert_overfits_one_batch(trainer, x[:16], y[:16])
    testing.assert_no_recompile(trainer, x, y)
    testing.assert_resume_equivalent(trainer, x, y, epochs=4, split_at=2, directory=tmp_path)

Each raises ``AssertionError`` with what differed; the kit's own tests use them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chex
import jax
import numpy as np

from jaxdl.state import TrainState
from jaxdl.trainer import Trainer


def _params(state: TrainState) -> Any:
    return jax.device_get(state.params)


def assert_trees_identical(a: Any, b: Any, what: str = "trees") -> None:
    """Bit-for-bit equality of two pytrees, naming the first leaf that differs."""
    chex.assert_trees_all_equal_structs(a, b)
    for (path, x), (_, y) in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                                 jax.tree_util.tree_flatten_with_path(b)[0], strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
            diff = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) \
                if x.shape == y.shape else "shape"
            raise AssertionError(f"{what} differ at {jax.tree_util.keystr(path)} "
                                 f"(max abs difference {diff})")


def assert_deterministic(trainer: Trainer, x: Any, y: Any, *, epochs: int = 2,
                         batch_size: int = 32, seed: int = 0, **fit_kwargs: Any) -> None:
    """Two runs from the same seed end with identical parameters."""
    runs = []
    for _ in range(2):
        state = trainer.init(jax.random.key(seed), np.asarray(x)[:1])
        state, _ = trainer.fit(state, x, y, epochs=epochs, batch_size=batch_size, seed=seed,
                               verbose=0, **fit_kwargs)
        runs.append(_params(state))
    assert_trees_identical(*runs, what="parameters of two runs with the same seed")


def assert_overfits_one_batch(trainer: Trainer, x: Any, y: Any, *, steps: int = 200,
                              max_final_fraction: float = 0.1, seed: int = 0) -> None:
    """Training on one small batch drives its loss below ``max_final_fraction`` of the start.

    The classic smoke test of a model + loss + optimizer: if it cannot memorize
    a batch, something is wired wrong.
    """
    state = trainer.init(jax.random.key(seed), np.asarray(x)[:1])
    start = trainer.evaluate(state, x, y, batch_size=len(x))["loss"]
    state, _ = trainer.fit(state, x, y, epochs=steps, batch_size=len(x), verbose=0,
                           shuffle=False)
    end = trainer.evaluate(state, x, y, batch_size=len(x))["loss"]
    if not end <= max_final_fraction * start:
        raise AssertionError(f"one batch was not overfit: loss {start:.4g} -> {end:.4g} after "
                             f"{steps} steps (wanted <= {max_final_fraction:.0%} of the start)")


@contextlib.contextmanager
def no_recompile(trainer: Trainer, program: str = "block") -> Iterator[None]:
    """Fails if the trainer's ``program`` ("block" or "evaluate") is traced (compiled)
    again inside the block."""
    before = trainer.programs.traces[program]
    yield
    after = trainer.programs.traces[program]
    if after != before:
        raise AssertionError(f"the {program} program compiled {after - before} more "
                             "time(s): an argument's shape, dtype or sharding changed")


def assert_no_recompile(trainer: Trainer, x: Any, y: Any, *, epochs: int = 2,
                        batch_size: int = 32, **fit_kwargs: Any) -> None:
    """A second ``fit`` with the same shapes (another seed, another state) compiles nothing."""
    state = trainer.init(jax.random.key(0), np.asarray(x)[:1])
    trainer.fit(state, x, y, epochs=epochs, batch_size=batch_size, verbose=0, **fit_kwargs)
    with no_recompile(trainer, "block"), no_recompile(trainer, "evaluate"):
        other = trainer.init(jax.random.key(1), np.asarray(x)[:1])
        trainer.fit(other, x, y, epochs=epochs, batch_size=batch_size, seed=1, verbose=0,
                    **fit_kwargs)


def assert_resume_equivalent(trainer: Trainer, x: Any, y: Any, *, epochs: int, split_at: int,
                             directory: str | Path, batch_size: int = 32,
                             make_callbacks: Callable[[], list] = list,
                             **fit_kwargs: Any) -> None:
    """Training ``epochs`` straight equals training ``split_at``, checkpointing, restoring in
    a fresh fit and training the rest: identical parameters and history."""
    from jaxdl import checkpoint

    state = trainer.init(jax.random.key(0), np.asarray(x)[:1])
    whole, whole_history = trainer.fit(state, x, y, epochs=epochs, batch_size=batch_size,
                                       verbose=0, callbacks=make_callbacks(), **fit_kwargs)
    for stop in (split_at, epochs):
        with checkpoint.Checkpointer(directory) as ckpt:
            resumed, history = trainer.fit(
                state, x, y, epochs=stop, batch_size=batch_size, verbose=0,
                callbacks=make_callbacks(), checkpointing=checkpoint.Checkpointing(ckpt),
                **fit_kwargs)
    assert_trees_identical(_params(resumed), _params(whole),
                           what="parameters of the resumed and the uninterrupted run")
    if history != whole_history:
        raise AssertionError(f"histories differ: resumed {history} vs {whole_history}")
