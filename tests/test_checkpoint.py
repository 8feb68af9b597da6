"""Checkpoints in-process: verification and fallback, bit-exact resume, errors, NaN policies."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors
from jaxdl.checkpoint import Checkpointer, Checkpointing


def _tree(offset=0.0):
    return {"w": jnp.arange(4096, dtype=jnp.float32) + offset,
            "b": {"c": jnp.ones((3, 4), jnp.int32)}}


def _save_steps(directory, steps=(1, 2, 3)):
    with Checkpointer(directory, keep=5) as ckpt:
        for s in steps:
            ckpt.save(s, _tree(s), {"epoch": s})


def _largest_file(path):
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    return max(files, key=os.path.getsize)


def test_round_trip_and_latest(tmp_path):
    _save_steps(tmp_path)
    with Checkpointer(tmp_path) as ckpt:
        tree, meta, step = ckpt.restore(jax.eval_shape(_tree))
    assert step == 3 and meta["epoch"] == 3
    jax.tree.map(np.testing.assert_array_equal, tree, _tree(3))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_latest_checkpoint_falls_back_and_is_kept_aside(tmp_path, damage):
    _save_steps(tmp_path)
    victim = _largest_file(tmp_path / "3" / "state")
    if damage == "flip":
        data = bytearray(open(victim, "rb").read())
        data[len(data) // 2] ^= 0x01
        open(victim, "wb").write(bytes(data))
    elif damage == "truncate":
        os.truncate(victim, os.path.getsize(victim) // 2)
    else:
        os.remove(victim)
    unusable = pytest.warns(UserWarning, match="checkpoint 3 .* unusable")
    with Checkpointer(tmp_path) as ckpt, unusable:
        tree, _, step = ckpt.restore(jax.eval_shape(_tree))
        assert ckpt.steps == [1, 2]
    assert step == 2
    jax.tree.map(np.testing.assert_array_equal, tree, _tree(2))
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith("3.corrupt-") and p.is_dir()]
    assert len(aside) == 1 and (tmp_path / aside[0] / "state").exists()  # kept, not deleted
    with Checkpointer(tmp_path) as ckpt:  # the step can be saved again
        ckpt.save(3, _tree(30), {"epoch": 3})
        ckpt.wait()
        assert ckpt.steps == [1, 2, 3]


def test_no_good_checkpoint_is_an_error_listing_what_was_found(tmp_path):
    _save_steps(tmp_path, steps=(1, 2))
    for step in (1, 2):
        os.remove(_largest_file(tmp_path / str(step) / "state"))
    with Checkpointer(tmp_path) as ckpt, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(errors.CheckpointError, match=r"tried 2: .*, 1: "):
            ckpt.restore(jax.eval_shape(_tree))


def test_a_changed_model_lists_the_differing_leaves_and_renames_nothing(tmp_path):
    _save_steps(tmp_path, steps=(1,))
    target = {"w": jax.ShapeDtypeStruct((2048,), jnp.float32),
              "b": {"c": jax.ShapeDtypeStruct((3, 4), jnp.int32)},
              "extra": jax.ShapeDtypeStruct((2,), jnp.float32)}
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match=r"only in the model: \['extra'\].*\['w'\]: "
                                             r"checkpoint \[4096\] float32, model \[2048\]"):
            ckpt.restore(target)
        assert ckpt.steps == [1]


def test_restore_onto_another_topology(tmp_path):
    mesh = jax.make_mesh((8,), ("data",))
    sharded = jax.device_put(jnp.arange(64.0).reshape(8, 8),
                             jax.NamedSharding(mesh, jax.P("data")))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"w": sharded}, {})
        ckpt.wait()
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        tree, _, _ = ckpt.restore({"w": jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=one)})
        assert tree["w"].sharding == one
        np.testing.assert_array_equal(tree["w"], sharded)
        four = jax.NamedSharding(jax.make_mesh((4,), ("fsdp",), devices=jax.devices()[:4]),
                                 jax.P(None, "fsdp"))
        tree, _, _ = ckpt.restore({"w": jax.ShapeDtypeStruct((8, 8), jnp.float32,
                                                             sharding=four)})
        assert len(tree["w"].addressable_shards) == 4
        np.testing.assert_array_equal(tree["w"], sharded)


def _fit(trainer, x, y, directory, epochs, **kwargs):
    state = trainer.init(jax.random.key(0), x[:1])
    with Checkpointer(directory) as ckpt:
        return trainer.fit(state, x, y, epochs=epochs, batch_size=16, verbose=0,
                           checkpointing=Checkpointing(ckpt, **kwargs))


@pytest.mark.parametrize("cadence", [dict(every_epochs=1), dict(every_epochs=None,
                                                               every_steps=3)])
def test_resume_is_bit_identical(blobs, tmp_path, cadence):
    x, y = blobs
    callbacks = lambda: [jdl.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5)]
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          metrics=["accuracy"], learning_rate=0.05)
    state = trainer.init(jax.random.key(0), x[:1])
    whole, whole_history = trainer.fit(state, x, y, epochs=4, batch_size=16, verbose=0,
                                       callbacks=callbacks(), steps_per_dispatch=2)
    with Checkpointer(tmp_path) as ckpt:
        part, _ = trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0,
                              callbacks=callbacks(), steps_per_dispatch=2,
                              checkpointing=Checkpointing(ckpt, **cadence))
    # Same run, now to 4 epochs: the checkpoint position says 2 are done.
    with Checkpointer(tmp_path) as ckpt:
        ckpt_steps = ckpt.steps
    assert ckpt_steps[-1] == 14
    with Checkpointer(tmp_path) as ckpt:
        resumed, history = trainer.fit(state, x, y, epochs=4, batch_size=16, verbose=0,
                                       callbacks=callbacks(), steps_per_dispatch=2,
                                       checkpointing=Checkpointing(ckpt, **cadence))
    assert int(resumed.step) == 28
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
                 jax.device_get(whole.params))
    assert history == whole_history


def test_checkpoint_dir_resumes_through_the_trainer(binary_trainer, blobs, tmp_path):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    once, _ = binary_trainer.fit(state, x, y, epochs=3, batch_size=16, verbose=0,
                                 checkpoint_dir=str(tmp_path))
    again, history = binary_trainer.fit(state, x, y, epochs=3, batch_size=16, verbose=0,
                                        checkpoint_dir=str(tmp_path))
    assert len(history["loss"]) == 3  # restored, nothing retrained
    jax.tree.map(np.testing.assert_array_equal, once.params, again.params)


@pytest.fixture
def small_disk(tmpfs):
    return tmpfs("512k")


def test_a_failed_background_save_surfaces_with_the_path(small_disk):
    with Checkpointer(small_disk / "ckpt") as ckpt:
        ckpt.save(1, _tree(1), {"epoch": 1})
        ckpt.wait()
        with open(small_disk / "filler", "wb") as f:  # leave almost no space
            f.write(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
                             - 4096))
        with pytest.raises(errors.CheckpointError, match=r"No space left on device|Errno 28"
                           ) as info:
            big = {"w": jnp.ones(1 << 16, jnp.float32), "b": {"c": jnp.ones((3, 4), jnp.int32)}}
            ckpt.save(2, big, {"epoch": 2})
            ckpt.wait()
        assert str(small_disk / "ckpt") in str(info.value)
        os.remove(small_disk / "filler")
    with Checkpointer(small_disk / "ckpt") as ckpt:  # the last good one is intact
        tree, _, step = ckpt.restore(jax.eval_shape(_tree))
    assert step == 1
    jax.tree.map(np.testing.assert_array_equal, tree, _tree(1))


# NaN policies. The custom loss is NaN for examples labelled 7; with shuffle=False and
# batches of 16, example 20 is in step 1 of every epoch.


def _nan_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.normal(size=64).astype(np.float32)
    y[20] = 7.0
    return x, y


def _nan_loss(outputs, labels):
    # sqrt of a negative number where the label is 7: NaN loss and NaN gradients.
    return (outputs[:, 0] - labels) ** 2 + jnp.sqrt(
        jnp.where(labels == 7.0, -1.0 - outputs[:, 0] ** 2, 0.0) + 1e-12)


def test_nan_policy_raise_names_the_step_and_the_gradients():
    x, y = _nan_data()
    trainer = jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss=_nan_loss, nan_policy="raise")
    state = trainer.init(jax.random.key(0), x[:1])
    with pytest.raises(errors.NonFiniteError, match=r"step 1 was non-finite: the loss and the "
                                                    r"gradients of \['dense_0'\]\['bias'\]"):
        trainer.fit(state, x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)


def test_nan_policy_skip_counts_and_skips():
    x, y = _nan_data()
    trainer = jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss=_nan_loss, nan_policy="skip")
    state = trainer.init(jax.random.key(0), x[:1])
    fitted, history = trainer.fit(state, x, y, epochs=3, batch_size=16, shuffle=False,
                                  verbose=0)
    assert history["nonfinite_steps"] == [1.0, 1.0, 1.0]
    assert int(fitted.step) == 12
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(fitted.params))


def test_nan_policy_rollback_reloads_and_ends_like_a_clean_run(blobs, tmp_path, poison_once):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          nan_policy="rollback")
    state = trainer.init(jax.random.key(0), x[:1])
    clean, clean_history = trainer.fit(state, x, y, epochs=5, batch_size=16, verbose=0,
                                       callbacks=[poison_once(-1)])
    with Checkpointer(tmp_path) as ckpt, pytest.warns(UserWarning, match="rolling back"):
        rolled, history = trainer.fit(state, x, y, epochs=5, batch_size=16, verbose=0,
                                      callbacks=[poison_once(2)],
                                      checkpointing=Checkpointing(ckpt, every_epochs=2))
    jax.tree.map(np.testing.assert_array_equal, rolled.params, clean.params)
    assert history["loss"] == clean_history["loss"]


def test_keeps_the_latest_n_plus_the_best(tmp_path):
    losses = {1: 0.9, 2: 0.1, 3: 0.5, 4: 0.4, 5: 0.3}
    with Checkpointer(tmp_path, keep=2, best_metric="val_loss") as ckpt:
        for step, loss in losses.items():
            ckpt.save(step, _tree(step), {"epoch": step}, metrics={"val_loss": loss})
        ckpt.wait()
        assert ckpt.steps == [2, 4, 5]


def test_a_run_checkpointed_on_eight_devices_resumes_on_one(blobs, tmp_path):
    x, y = blobs
    make = lambda mesh: jdl.Trainer(jdl.models.MLP(features=(32, 1)),
                                    loss="binary_crossentropy", mesh=mesh)
    one = make(None)
    state = one.init(jax.random.key(0), x[:1])
    whole, whole_history = one.fit(state, x, y, epochs=4, batch_size=16, verbose=0,
                                   steps_per_dispatch=7)
    eight = make({"data": 8})
    with Checkpointer(tmp_path) as ckpt:
        eight.fit(eight.init(jax.random.key(0), x[:1]), x, y, epochs=2, batch_size=16,
                  verbose=0, steps_per_dispatch=7, checkpointing=Checkpointing(ckpt))
    with Checkpointer(tmp_path) as ckpt:  # the same run, continued on one device
        resumed, history = one.fit(state, x, y, epochs=4, batch_size=16, verbose=0,
                                   steps_per_dispatch=7, checkpointing=Checkpointing(ckpt))
    assert int(resumed.step) == int(whole.step) == 28
    assert len(resumed.params["dense_0"]["kernel"].sharding.device_set) == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(resumed.params), jax.device_get(whole.params))
    np.testing.assert_allclose(history["loss"], whole_history["loss"], rtol=1e-5)


def test_verify_none_trusts_the_bytes_and_full_sets_a_flipped_one_aside(tmp_path):
    _save_steps(tmp_path)
    victim = _largest_file(tmp_path / "3" / "state")
    data = bytearray(open(victim, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(victim, "wb").write(bytes(data))
    with Checkpointer(tmp_path, verify="none") as ckpt:
        tree, _, step = ckpt.restore(jax.eval_shape(_tree))
    # Not verified: step 3 comes back, one word off (what "full" exists to catch).
    assert step == 3 and not np.array_equal(tree["w"], _tree(3)["w"])
    with Checkpointer(tmp_path) as ckpt, pytest.warns(UserWarning, match="checksum mismatch"):
        assert ckpt.restore(jax.eval_shape(_tree))[2] == 2
    with pytest.raises(errors.InputError, match=r"argument 'verify': expected one of "
                                                r"\['full', 'none'\], got 'fast'"):
        Checkpointer(tmp_path, verify="fast")
