"""The persistent compilation cache's folder as other processes leave it."""

import pytest
from jax._src import lru_cache

from jaxdl.cli import compilation_cache


def test_a_cache_with_entries_of_an_unbounded_writer_stays_writable(tmp_path):
    """An entry written without a size limit has no access-time file; JAX's bounded cache
    then fails at every write until the entry gets one."""
    lru_cache.LRUCache(str(tmp_path), max_size=-1).put("old", b"x" * 10)
    bounded = lru_cache.LRUCache(str(tmp_path), max_size=10**6)
    with pytest.raises(FileNotFoundError):
        bounded.put("new", b"y" * 10)
    assert compilation_cache.backfill_access_times(tmp_path) == 1
    bounded.put("new", b"y" * 10)
    assert bounded.get("new") == b"y" * 10 and bounded.get("old") == b"x" * 10
    assert compilation_cache.backfill_access_times(tmp_path) == 0
