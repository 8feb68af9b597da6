"""The checkpoint checksum: what its docstring promises, against numpy, on any layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.checkpoint import integrity


def numpy_checksum(leaf) -> list[int]:
    """[sum w, sum (2 i + 1) w] mod 2^32 over the leaf's 32-bit words w, row-major i."""
    a = np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key) else leaf)
    if a.dtype == np.bool_:
        words = a.astype(np.uint64)
    elif a.dtype.itemsize < 4:
        words = a.view({2: np.uint16, 1: np.uint8}[a.dtype.itemsize]).astype(np.uint64)
    else:
        words = a.view(np.uint32).astype(np.uint64)
    words = words.reshape(-1)
    weights = 2 * np.arange(words.size, dtype=np.uint64) + 1
    mod = np.uint64(2**32)
    return [int(words.sum() % mod), int(((words * weights) % mod).sum() % mod)]


CASES = [((3, 5, 7), np.float32), ((10,), np.int32), ((), np.float32), ((4, 3), np.float16),
         ((2, 3, 4), np.bool_), ((70000,), np.uint8), ((300, 700), np.float32),
         ((2, 3, 4, 5, 6), np.int8), ((8, 16), jnp.bfloat16)]


def _leaf(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype is np.bool_:
        return jnp.asarray(rng.random(shape) > 0.5)
    return jnp.asarray((rng.normal(size=shape) * 100).astype(np.float32)).astype(dtype)


@pytest.mark.parametrize("shape, dtype", CASES)
def test_checksums_equal_the_numpy_definition(shape, dtype):
    leaf = _leaf(shape, dtype, seed=0)
    assert np.asarray(integrity.checksums(leaf)).tolist() == numpy_checksum(leaf)


def test_the_cpu_dot_form_equals_the_elementwise_form_bit_for_bit():
    words = jax.lax.bitcast_convert_type(
        jnp.asarray(np.random.default_rng(1).normal(size=(64, 33, 5)), jnp.float32),
        jnp.uint32)
    by_dots = jax.jit(integrity._weighted_by_dots)(words)
    by_elements = jax.jit(integrity._weighted_by_elements)(words)
    assert [int(v) for v in by_dots] == [int(v) for v in by_elements]


def test_a_sharded_leaf_and_a_prng_key_have_their_single_device_checksums():
    mesh = jax.make_mesh((8,), ("data",))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(64, 24)), jnp.float32)
    sharded = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data", None)))
    assert np.array_equal(integrity.checksums(sharded), integrity.checksums(x))
    key = jax.random.key(3)
    assert np.asarray(integrity.checksums(key)).tolist() == numpy_checksum(key)


def test_one_flipped_bit_changes_the_weighted_sum():
    x = np.random.default_rng(4).normal(size=(128, 9)).astype(np.float32)
    flipped = x.copy().view(np.uint32)
    flipped[77, 3] ^= 1 << 13
    a = np.asarray(integrity.checksums(jnp.asarray(x)))
    b = np.asarray(integrity.checksums(jnp.asarray(flipped.view(np.float32))))
    assert a[1] != b[1]


@pytest.mark.parametrize("shape, dtype", CASES + [((3, 0), np.float32), ((1,), np.float32)])
def test_the_host_checksums_of_a_cpu_array_equal_the_device_ones(shape, dtype):
    tree = {"leaf": _leaf(shape, dtype, seed=5), "key": jax.random.key(7)}
    assert integrity.on_host(tree)
    assert integrity.host_checksums(tree) == integrity.fetch_checksums(integrity.checksums(tree))


def test_a_sharded_tree_is_not_checked_on_the_host():
    mesh = jax.make_mesh((8,), ("data",))
    sharded = jax.device_put(jnp.zeros((16, 2)), jax.NamedSharding(mesh, jax.P("data")))
    assert not integrity.on_host({"a": sharded}) and integrity.on_host({"a": jnp.zeros(3)})
