"""Populations trained member by member (population_mode="sequential") keep every promise
of the vmapped ones: member i equals its single run, per-member early stopping and NaN
policy, checkpoints and resume."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl.train import sequential

LRS = [0.01, 0.05, 0.2]


def _close(a, b, **kwargs):
    import jax

    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kwargs), a, b)


@pytest.fixture(scope="module")
def trainer():
    return jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                       metrics=["accuracy"], nan_policy="raise")


def _population(trainer, blobs):
    x, _ = blobs
    return trainer.init(0, x[:1], population=3, hparams={"learning_rate": LRS})


@pytest.mark.parametrize("seed", [0, [3, 4, 5]])
def test_sequential_equals_vmap_and_each_member_its_single_run(trainer, blobs, seed):
    x, y = blobs
    kwargs = dict(epochs=3, batch_size=16, verbose=0, validation_data=(x[:30], y[:30]),
                  seed=seed)
    seq, seq_history = trainer.fit(_population(trainer, blobs), x, y,
                                   population_mode="sequential", **kwargs)
    vm, vm_history = trainer.fit(_population(trainer, blobs), x, y, population_mode="vmap",
                                 **kwargs)
    _close(seq.params, vm.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seq_history["val_loss"], vm_history["val_loss"], rtol=1e-5)
    for i, lr in enumerate(LRS):
        single = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                             metrics=["accuracy"], learning_rate=lr)
        data_seed = seed if isinstance(seed, int) else seed[i]
        alone, _ = single.fit(single.init(i, x[:1]), x, y, **{**kwargs, "seed": data_seed})
        _close(jdl.population.member(seq, i).params, alone.params, rtol=1e-5, atol=1e-6)


def _naive_bce(logits, labels):  # log of a sigmoid that saturates: NaN once it blows up
    p = 1 / (1 + np.e ** -logits[:, 0])
    return -(labels * jnp.log(p) + (1 - labels) * jnp.log(1 - p))


def test_sequential_keeps_per_member_early_stopping_and_the_nan_policy(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss=_naive_bce, optimizer="sgd",
                          nan_policy="raise", task="binary")
    diverging = trainer.init(0, x[:1], population=3,
                             hparams={"learning_rate": [0.1, 1e4, 0.3]})
    stop = jdl.EarlyStopping(monitor="val_loss", patience=1)
    kwargs = dict(epochs=12, batch_size=16, verbose=0, validation_data=(x[:30], y[:30]))
    with pytest.warns(UserWarning, match="population member 1"):
        seq, seq_history = trainer.fit(diverging, x, y, population_mode="sequential",
                                       callbacks=[stop], **kwargs)
    stop_vmap = jdl.EarlyStopping(monitor="val_loss", patience=1)
    with pytest.warns(UserWarning, match="population member 1"):
        vm, vm_history = trainer.fit(diverging, x, y, population_mode="vmap",
                                     callbacks=[stop_vmap], **kwargs)
    np.testing.assert_array_equal(stop.stopped_members, stop_vmap.stopped_members)
    np.testing.assert_allclose(seq_history["loss"], vm_history["loss"], rtol=1e-5)
    _close(seq.params, vm.params, rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(seq.params["dense_0"]["kernel"])).all()


def test_sequential_resumes_from_its_checkpoints_exactly(trainer, blobs, tmp_path):
    x, y = blobs
    kwargs = dict(batch_size=16, verbose=0, population_mode="sequential")
    whole, _ = trainer.fit(_population(trainer, blobs), x, y, epochs=4, **kwargs)
    trainer.fit(_population(trainer, blobs), x, y, epochs=2, checkpoint_dir=str(tmp_path),
                **kwargs)
    resumed, history = trainer.fit(_population(trainer, blobs), x, y, epochs=4,
                                   checkpoint_dir=str(tmp_path), **kwargs)
    _close(resumed.params, whole.params, rtol=0, atol=0)
    assert np.shape(history["loss"]) == (4, 3)


def test_auto_runs_members_one_by_one_only_where_vmap_is_slow():
    assert sequential.choose("auto", loop_friendly=False) == "sequential"  # convs on CPU
    assert sequential.choose("auto", loop_friendly=True) == "vmap"
    assert sequential.choose("vmap", loop_friendly=False) == "vmap"
    with pytest.raises(jdl.InputError, match="argument 'population_mode'.*did you mean"):
        sequential.check_mode("sequentail")


def test_a_cnn_population_in_auto_mode_equals_vmap(blobs):
    x = np.random.default_rng(0).normal(size=(40, 4, 4, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    trainer = jdl.Trainer(jdl.models.CNN(features=(4,), dense=(), num_outputs=1),
                          loss="binary_crossentropy")
    make = lambda: trainer.init(0, x[:1], population=2, hparams={"learning_rate": [0.01, 0.1]})
    auto, _ = trainer.fit(make(), x, y, epochs=2, batch_size=16, verbose=0)
    vm, _ = trainer.fit(make(), x, y, epochs=2, batch_size=16, verbose=0,
                        population_mode="vmap")
    _close(auto.params, vm.params, rtol=1e-5, atol=1e-6)
