"""The grain pipeline over records: the in-memory path's batches, resumable, per host."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl.data import arrays
from jaxdl.data.pipeline import Pipeline, block_plan
from jaxdl.data.records import open_records, write_records
from jaxdl.errors import InputError, InputTypeError

N = 37


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(N, 3)).astype(np.float32), "y": np.arange(N, dtype=np.int32)}


@pytest.fixture(scope="module")
def records(data, tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("rec") / "train", data, chunk_rows=10)


def make(records, batch_size=8, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return Pipeline(records, batch_size, **kw)


def in_memory(data, seed, epoch, batch_size, first, num_steps, shuffle=True):
    """What the in-memory driver gathers for a block (the fit driver's idx)."""
    idx = arrays.block_indices(arrays.epoch_order(seed, epoch, N, shuffle), batch_size, first,
                               num_steps)
    mask = np.stack([np.asarray(arrays.row_mask(N, batch_size, first + s))
                     for s in range(num_steps)])
    return {"x": data["x"][idx], "y": data["y"][idx], "mask": mask}


@pytest.mark.parametrize("batch_size", [1, 5, 8, 37, 40])
def test_every_example_once_per_epoch_padding_masked(records, data, batch_size):
    with make(records, batch_size, seed=1) as pipe:
        spe = pipe.steps_per_epoch
        assert spe == -(-N // batch_size)
        out = pipe.batches(0, 0, spe)
    real = out["y"][out["mask"] == 1]
    assert sorted(real.tolist()) == list(range(N))
    assert out["mask"].sum() == N and out["mask"].dtype == np.float32
    # Padding rows are real rows (finite inputs), just masked out.
    assert np.isin(out["y"][out["mask"] == 0], data["y"]).all()


@pytest.mark.parametrize("first, num_steps", [(0, 1), (0, 5), (2, 3), (3, 4), (4, 1)])
def test_batches_equal_the_in_memory_path(records, data, first, num_steps):
    with make(records, 8, seed=7, num_threads=2, prefetch=3) as pipe:
        for epoch in (0, 3):
            got = pipe.batches(epoch, first, num_steps)
            want = in_memory(data, 7, epoch, 8, first, num_steps)
            assert got.keys() == want.keys()
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    idx, mask = block_plan(7, 3, N, 8, first, num_steps)
    np.testing.assert_array_equal(idx, arrays.block_indices(arrays.epoch_order(7, 3, N), 8,
                                                            first, num_steps))
    np.testing.assert_array_equal(mask, want["mask"])


def test_order_from_seed_epochs_differ_shuffle_off(records, data):
    a = make(records, seed=0).batches(0, 0, 5)["y"]
    assert np.array_equal(a, make(records, seed=0, num_threads=0).batches(0, 0, 5)["y"])
    assert not np.array_equal(a, make(records, seed=0).batches(1, 0, 5)["y"])
    assert not np.array_equal(a, make(records, seed=1).batches(0, 0, 5)["y"])
    plain = make(records, shuffle=False).batches(2, 0, 5)
    np.testing.assert_array_equal(plain["y"].ravel()[:N], np.arange(N))


def test_sequential_calls_continue_across_epochs_and_jumps_restart(records, data):
    with make(records, 8, seed=2) as pipe:
        for epoch in range(3):
            for first in (0, 2, 4):  # ragged: the block at 4 has one real step, one padding
                got = pipe.batches(epoch, first, 2)
                np.testing.assert_array_equal(got["x"], in_memory(data, 2, epoch, 8, first, 2)["x"])
        assert pipe.position == {"epoch": 3, "step": 0}
        got = pipe.batches(1, 2, 2)  # back in time: a new read-ahead from there
        np.testing.assert_array_equal(got["y"], in_memory(data, 2, 1, 8, 2, 2)["y"])


def test_resume_mid_epoch_gives_the_uninterrupted_batches(records):
    with make(records, 8, seed=5) as pipe:
        uninterrupted = [next(pipe) for _ in range(13)]  # 5 steps per epoch: into epoch 2
        assert pipe.position == {"epoch": 2, "step": 3}
    with make(records, 8, seed=5) as first:
        for _ in range(7):
            next(first)
        state = first.get_state()
    assert state == {"epoch": 1, "step": 2, "seed": 5, "batch_size": 8, "num_examples": N,
                     "shuffle": True}
    with make(records, 8, seed=5) as resumed:
        resumed.set_state(state)
        rest = [next(resumed) for _ in range(6)]
    for a, b in zip(uninterrupted[7:], rest, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    with make(records, 8, seed=5) as pipe:
        epoch1 = list(pipe.iter_epoch(1, start_step=2))
    assert len(epoch1) == 3
    np.testing.assert_array_equal(epoch1[0]["y"], uninterrupted[7]["y"])


def test_set_state_from_other_settings_is_refused(records):
    pipe = make(records, 8, seed=5)
    with pytest.raises(InputError, match=r"seed=4 \(this pipeline: 5\)"):
        pipe.set_state({"epoch": 0, "step": 1, "seed": 4, "batch_size": 8})
    with pytest.raises(InputError, match="first_step"):
        pipe.set_state({"epoch": 0, "step": 5})
    with pytest.raises(InputTypeError, match="get_state"):
        pipe.set_state((0, 1))


@pytest.mark.parametrize("count", [1, 2, 4])
def test_per_host_slices_cover_every_global_batch_once(records, count):
    whole = make(records, 8, seed=3).batches(1, 0, 5)
    parts = []
    for index in range(count):
        with make(records, 8, seed=3, process_index=index, process_count=count) as pipe:
            assert pipe.rows == slice(index * 8 // count, (index + 1) * 8 // count)
            assert pipe.local_batch_size == 8 // count
            parts.append(pipe.batches(1, 0, 5))
    for k in whole:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts], axis=1), whole[k])
    explicit = make(records, 8, seed=3, rows=slice(2, 6)).batches(1, 0, 5)
    np.testing.assert_array_equal(explicit["y"], whole["y"][:, 2:6])


def test_block_stacks_epochs_like_the_driver(records, data):
    with make(records, 8, seed=9) as pipe:
        out = pipe.block([4], 0, 5, num_epochs=3)
    assert out["x"].shape == (3, 5, 8, 3) and out["mask"].shape == (3, 5, 8)
    np.testing.assert_array_equal(out["y"][0], in_memory(data, 9, 4, 8, 0, 5)["y"])
    assert out["mask"][1:].sum() == 0
    np.testing.assert_array_equal(out["y"][1:], 0)  # the driver's filler: row 0


def test_worker_processes_give_the_same_batches(records, data):
    with make(records, 8, seed=4, num_workers=1, prefetch=1) as pipe:
        got = [pipe.batches(e, 0, 5) for e in range(2)]
    for e, block in enumerate(got):
        np.testing.assert_array_equal(block["x"], in_memory(data, 4, e, 8, 0, 5)["x"])


def test_fields_subset_and_pickled_records(records):
    import pickle

    again = pickle.loads(pickle.dumps(records))
    assert again.directory == records.directory and len(again) == N
    out = make(again, 8, fields=["y"]).batches(0, 0, 1)
    assert set(out) == {"y", "mask"}


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 6, "process_count": 4}, "divisible by the process count 4"),
    ({"process_index": 2, "process_count": 2}, "process_index"),
    ({"fields": ["z"]}, "did you mean|known field"),
    ({"rows": slice(8, 9)}, "rows"),
    ({"num_threads": -1}, "num_threads"),
])
def test_bad_settings_are_input_errors(records, kwargs, match):
    batch_size = kwargs.pop("batch_size", 8)
    with pytest.raises(InputError, match=match):
        make(records, batch_size, **kwargs)


def test_bad_positions_and_sources(records, tmp_path):
    pipe = make(records, 8)
    with pytest.raises(InputError, match=r"first_step': expected a step of the epoch, in \[0, 5\)"):
        pipe.batches(0, 5, 1)
    with pytest.raises(InputError, match="epoch"):
        pipe.batches(-1, 0, 1)
    with pytest.raises(InputTypeError, match="open_records"):
        Pipeline({"x": np.zeros((3, 1))}, 2)
    with pytest.raises(InputError, match="no such folder"):
        Pipeline(open_records(tmp_path / "missing"), 2)


def test_blocks_feed_the_mesh_like_placement_feed(records, data):
    """What the host-fed driver would send: the same global arrays as Placement.feed."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxdl.parallel.placement import BATCH_AXES, Placement

    placement = Placement({"data": 2, "fsdp": -1}, data="host")
    with Pipeline(records, 16, seed=3, rows=placement.local_rows(16)) as pipe:
        local = pipe.block([1, 2], 0, 3)
    idx = np.stack([arrays.block_indices(arrays.epoch_order(3, e, N), 16, 0, 3) for e in (1, 2)])
    want = placement.feed({"x": data["x"], "y": data["y"]}, idx, 16)
    sharding = NamedSharding(placement.mesh, PartitionSpec(None, None, BATCH_AXES))
    for k in ("x", "y"):
        got = jax.make_array_from_process_local_data(sharding, local[k],
                                                     (*idx.shape, *data[k].shape[1:]))
        assert got.sharding == want[k].sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want[k]))
