"""Keys from what users pass as seeds: an int, a PRNG key, a legacy key, one per member."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check


def as_key(rng: Any) -> jax.Array:
    """``rng`` as one typed PRNG key: an int seed, a key, or a legacy ``PRNGKey``."""
    if isinstance(rng, int) and not isinstance(rng, bool):
        return jax.random.key(rng)
    if isinstance(rng, jax.Array) and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        if rng.shape != ():
            raise errors.input_error("rng", "a single PRNG key", f"a key array of shape "
                                     f"{rng.shape}", "pass jax.random.key(seed)")
        return rng
    if isinstance(rng, jax.Array | np.ndarray) and rng.shape == (2,) and rng.dtype == np.uint32:
        return jax.random.wrap_key_data(rng)  # a legacy jax.random.PRNGKey
    raise errors.type_error("rng", "a PRNG key (jax.random.key(seed)) or an int seed",
                            errors.describe(rng), "pass jax.random.key(0)")


def member_keys(rng: Any, size: int | None, hparams: dict[str, Any],
                seeds: Sequence[int] | None) -> tuple[int, jax.Array]:
    """(population size, one key per member [N]) of a population's init.

    The size comes from ``size``, else from the hyper-parameters' or the seeds' count,
    which must all agree. Member i's key: ``key(seeds[i])``, else ``key(rng + i)`` for
    an int ``rng``, else ``split(rng, N)[i]``.
    """
    sizes = {f"hparams[{k!r}]": np.size(v) for k, v in hparams.items()}
    if seeds is not None:
        sizes["seeds"] = len(seeds)
    if size is None:
        size = next(iter(sizes.values()))
    check.positive_int(size, "population", "pass population=8")
    for name, n in sizes.items():
        if n != size:
            raise errors.input_error(name, f"{size} values (one per member)",
                                     f"{n} values", "give every member a value")
    if seeds is not None:
        keys = jax.vmap(jax.random.key)(np.asarray([int(s) for s in seeds], np.uint32))
    elif isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        keys = jax.vmap(jax.random.key)(np.arange(size, dtype=np.uint32) + int(rng))
    else:
        keys = jax.random.split(as_key(rng), size)
    return size, keys
