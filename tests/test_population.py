"""Populations: member i of a vmapped population equals the single run it stands for."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors, population
from jaxdl.train import callbacks

LRS = [0.01, 0.05, 0.2]
SEEDS = [3, 4, 5]


def _trainer(**kwargs):
    kwargs.setdefault("learning_rate", 0.05)
    return jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                       metrics=["accuracy"], **kwargs)


def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)))


@pytest.fixture(scope="module")
def trainer():
    return _trainer()


@pytest.fixture(scope="module")
def swept(trainer, blobs):
    """A 3-member learning-rate and weight-decay sweep, 4 epochs, shared batches."""
    x, y = blobs
    state = trainer.init(0, x[:1], hparams={"learning_rate": LRS,
                                            "weight_decay": [0.0, 1e-3, 1e-2]}, seeds=SEEDS)
    return trainer.fit(state, x, y, epochs=4, batch_size=16, validation_data=(x[:30], y[:30]),
                       verbose=0)


def test_member_i_equals_the_single_run_with_its_seed_and_hyperparameters(swept, blobs):
    x, y = blobs
    state, history = swept
    assert population.size(state) == 3 and np.shape(history["val_loss"]) == (4, 3)
    for i, (lr, wd) in enumerate(zip(LRS, [0.0, 1e-3, 1e-2], strict=True)):
        single = _trainer(learning_rate=lr, weight_decay=wd)
        s, h = single.fit(single.init(SEEDS[i], x[:1]), x, y, epochs=4, batch_size=16,
                          validation_data=(x[:30], y[:30]), verbose=0)
        assert _max_diff(s.params, population.member(state, i).params) < 1e-5
        np.testing.assert_allclose(np.asarray(history["val_loss"])[:, i], h["val_loss"],
                                   rtol=1e-5)


def test_hyperparameters_live_in_the_state(swept):
    state, _ = swept
    values = population.hparams(state)
    np.testing.assert_allclose(values["learning_rate"], LRS, rtol=1e-6)
    changed = population.set_hparams(state, {"learning_rate": [1.0, 2.0, 3.0]})
    np.testing.assert_allclose(population.hparams(changed)["learning_rate"], [1, 2, 3])
    with pytest.raises(errors.InputError, match="names of injected hyper-parameters"):
        population.set_hparams(state, {"b1": [0.9] * 3})


def test_evaluate_predict_and_ensemble_are_per_member(trainer, swept, blobs):
    x, y = blobs
    state, _ = swept
    results = trainer.evaluate(state, x, y, batch_size=16)
    assert results["loss"].shape == (3,)
    probs = trainer.predict(state, x, batch_size=16)
    assert probs.shape == (3, 100, 1)
    single = _trainer(learning_rate=LRS[1], weight_decay=1e-3)
    np.testing.assert_allclose(probs[1], single.predict(population.member(state, 1), x),
                               atol=1e-6)
    np.testing.assert_allclose(trainer.predict(state, x, ensemble=True), probs.mean(0),
                               atol=1e-6)
    accuracy = ((probs[:, :, 0] > 0.5) == y).mean(axis=1)
    np.testing.assert_allclose(results["accuracy"], accuracy, atol=1e-6)


def test_best_picks_the_member_with_the_best_epoch(swept):
    state, history = swept
    best = population.best(state, history, metric="val_loss")
    values = np.asarray(history["val_loss"])
    assert best.index == int(np.argmin(values[-1])) and best.value == values[-1].min()
    by_epoch = population.best(state, history, metric="val_loss", judge="best")
    assert by_epoch.index == int(np.argmin(values.min(axis=0)))
    assert by_epoch.value == pytest.approx(values.min())
    stopped = np.array(values)
    stopped[2:, best.index] = np.nan  # a member that stopped after epoch 2 is judged there
    assert population.best(state, {"val_loss": stopped}).value in (
        values[1, best.index], values[-1][np.arange(3) != best.index].min())
    assert best.hparams["learning_rate"] == pytest.approx(LRS[best.index])
    assert _max_diff(best.state.params, population.member(state, best.index).params) == 0
    by_accuracy = population.best(state, history, metric="val_accuracy", judge="best")
    assert by_accuracy.value == pytest.approx(np.asarray(history["val_accuracy"]).max())
    with pytest.raises(errors.InputError, match="a key of the history"):
        population.best(state, history, metric="val_auc")


def test_per_member_data_order_equals_single_runs_with_those_seeds(trainer, blobs):
    x, y = blobs
    state = trainer.init(0, x[:1], population=2, seeds=[7, 8])
    state, _ = trainer.fit(state, x, y, epochs=2, batch_size=32, seed=[11, 12], verbose=0)
    for i, (init_seed, data_seed) in enumerate([(7, 11), (8, 12)]):
        s, _ = trainer.fit(trainer.init(init_seed, x[:1]), x, y, epochs=2, batch_size=32,
                           seed=data_seed, verbose=0)
        assert _max_diff(s.params, population.member(state, i).params) < 1e-5
    with pytest.raises(errors.InputError, match="one data seed per member"):
        trainer.fit(state, x, y, epochs=1, seed=[1, 2, 3], verbose=0)


def test_early_stopping_stops_members_one_by_one(trainer, blobs):
    x, y = blobs
    # A learning rate of ~0 never improves: that member stops after `patience` epochs,
    # the other trains on exactly as it would alone.
    state = trainer.init(0, x[:1], hparams={"learning_rate": [0.05, 1e-12]}, seeds=[1, 2])
    frozen = population.member(state, 1).params
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=1e-6)
    state, history = trainer.fit(state, x, y, epochs=6, batch_size=32, callbacks=[stop],
                                 validation_data=(x[:30], y[:30]), verbose=0)
    losses = np.asarray(history["val_loss"])
    assert losses.shape == (6, 2) and np.isfinite(losses[:, 0]).all()
    stopped = int(stop.stopped_epoch[1])
    assert stopped < 5 and np.isnan(losses[stopped + 1:, 1]).all()
    assert list(stop.stopped_members) == [False, True] and not stop.stop_training
    assert _max_diff(population.member(state, 1).params, frozen) < 1e-9
    single = _trainer(learning_rate=0.05)
    s, _ = single.fit(single.init(1, x[:1]), x, y, epochs=6, batch_size=32,
                      validation_data=(x[:30], y[:30]), verbose=0)
    assert _max_diff(s.params, population.member(state, 0).params) < 1e-5


def _naive_bce(logits, labels):
    # Saturates to log(0) = -inf for confident wrong answers: a big learning rate gets there.
    p = jax.nn.sigmoid(logits[:, 0])
    y = labels.astype(jnp.float32).reshape(p.shape)
    return -(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))


def test_a_diverging_member_does_not_stop_the_others(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss=_naive_bce,
                          optimizer="sgd", nan_policy="raise")
    state = trainer.init(0, x[:1], hparams={"learning_rate": [0.1, 1e4]}, seeds=[1, 2])
    with pytest.warns(UserWarning, match=r"population member 1 .*non-finite"):
        state, history = trainer.fit(state, x, y, epochs=3, batch_size=32, verbose=0)
    assert np.isfinite(np.asarray(history["loss"])[:, 0]).all()
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))
    single = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss=_naive_bce, optimizer="sgd",
                         learning_rate=0.1)
    s, _ = single.fit(single.init(1, x[:1]), x, y, epochs=3, batch_size=32, verbose=0)
    assert _max_diff(s.params, population.member(state, 0).params) < 1e-5
    everyone = trainer.init(0, x[:1], hparams={"learning_rate": [1e4, 1e4]})
    with warnings.catch_warnings(), pytest.raises(errors.NonFiniteError, match="every member"):
        warnings.simplefilter("ignore")
        trainer.fit(everyone, x, y, epochs=3, batch_size=32, verbose=0)


def test_reduce_lr_on_plateau_lowers_single_members(trainer, blobs):
    x, _ = blobs
    state = trainer.init(0, x[:1], population=3)
    plateau = callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    for epoch, values in enumerate([[1.0, 1.0, 1.0], [0.5, 1.0, 0.4], [0.4, 1.0, 0.5]]):
        state = plateau.on_epoch_end(epoch, {"val_loss": np.asarray(values)}, state)
    np.testing.assert_allclose(np.asarray(jdl.optim.lr_scale(state.opt_state)),
                               [1.0, 0.25, 0.5])
    restored = callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    restored.load_state_dict(json.loads(json.dumps(plateau.state_dict())))
    np.testing.assert_array_equal(restored.wait, plateau.wait)


def test_sweep_specs_expand_to_member_values():
    out = population.expand({"learning_rate": {"log_grid": [1e-4, 1e-1]},
                             "weight_decay": {"grid": [0.0, 1e-4]}, "b1": [0.8, 0.85, 0.9, 0.95]},
                            4)
    np.testing.assert_allclose(out["learning_rate"], [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-9)
    assert out["weight_decay"] == [0.0, 1e-4, 0.0, 1e-4]
    drawn = population.expand({"lr": {"log_uniform": [1e-4, 1e-1]}}, 50, seed=1)["lr"]
    assert min(drawn) >= 1e-4 and max(drawn) <= 1e-1 and len(set(drawn)) == 50
    assert drawn == population.expand({"lr": {"log_uniform": [1e-4, 1e-1]}}, 50, seed=1)["lr"]
    with pytest.raises(errors.InputError, match="population.hparams.lr.*4 values"):
        population.expand({"lr": [1e-3, 1e-2]}, 4)
    with pytest.raises(errors.InputError, match="log_uniform"):
        population.expand({"lr": {"log_uniform": [0.0, 1.0]}}, 4)


def test_bad_population_arguments_are_clear(trainer, blobs):
    x, _ = blobs
    with pytest.raises(errors.InputError, match=r"hparams\['learning_rate'\].*3 values"):
        trainer.init(0, x[:1], population=3, hparams={"learning_rate": [0.1, 0.2]})
    with pytest.raises(errors.InputError, match="takes as numbers"):
        trainer.init(0, x[:1], population=2, hparams={"momentum": [0.1, 0.2]})
    with pytest.raises(errors.InputError, match="argument 'population'"):
        trainer.init(0, x[:1], population=0)
    with pytest.raises(errors.InputError, match="ensemble=True"):
        trainer.predict(trainer.init(0, x[:1]), x, ensemble=True)


def test_an_optax_optimizer_with_injected_hyperparameters_can_be_swept(blobs):
    import optax

    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                          optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.1))
    state = trainer.init(0, x[:1], hparams={"learning_rate": [0.05, 0.1]}, seeds=[1, 2])
    state, _ = trainer.fit(state, x, y, epochs=1, batch_size=50, verbose=0)
    single = _trainer(optimizer="sgd", learning_rate=0.1)
    s, _ = single.fit(single.init(2, x[:1]), x, y, epochs=1, batch_size=50, verbose=0)
    assert _max_diff(s.params, population.member(state, 1).params) < 1e-6
    with pytest.raises(errors.InputError, match="injected in the given optax optimizer"):
        trainer.init(0, x[:1], hparams={"momentum": [0.1, 0.2]})


def test_a_population_checkpoint_resumes_where_it_stopped(trainer, blobs, tmp_path):
    x, y = blobs
    start = trainer.init(0, x[:1], hparams={"learning_rate": [0.01, 0.1]})
    full, full_history = trainer.fit(start, x, y, epochs=4, batch_size=32, verbose=0,
                                     validation_data=(x[:30], y[:30]))
    trainer.fit(start, x, y, epochs=2, batch_size=32, verbose=0, checkpoint_dir=tmp_path,
                validation_data=(x[:30], y[:30]))
    resumed, history = trainer.fit(start, x, y, epochs=4, batch_size=32, verbose=0,
                                   checkpoint_dir=tmp_path, validation_data=(x[:30], y[:30]))
    assert _max_diff(full.params, resumed.params) == 0
    # Validation fused into a 4-epoch block vs 1-epoch blocks: the same up to rounding.
    np.testing.assert_allclose(history["val_loss"], full_history["val_loss"], rtol=1e-6)
    np.testing.assert_allclose(population.hparams(resumed)["learning_rate"], [0.01, 0.1])


def test_the_member_axis_is_a_mesh_axis(blobs):
    x, y = blobs
    sharded = _trainer(mesh={"population": 4, "data": 2})
    state = sharded.init(0, x[:1], hparams={"learning_rate": [0.01, 0.03, 0.1, 0.3]})
    kernel = state.params["dense_0"]["kernel"]
    assert kernel.sharding.spec[0] == "population"
    assert {s.data.shape[0] for s in kernel.addressable_shards} == {1}
    state, _ = sharded.fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    plain = _trainer()
    reference = plain.init(0, x[:1], hparams={"learning_rate": [0.01, 0.03, 0.1, 0.3]})
    reference, _ = plain.fit(reference, x, y, epochs=2, batch_size=16, verbose=0)
    assert _max_diff(state.params, reference.params) < 1e-5
    assert state.params["dense_0"]["kernel"].sharding.spec[0] == "population"
    with pytest.raises(errors.InputError, match="divisible by the mesh's population axis"):
        sharded.init(0, x[:1], population=3)


def test_a_population_run_from_the_config(tmp_path):
    from jaxdl import experiment as run
    from jaxdl.experiment.default_config import get_config

    config = get_config()
    config.epochs = 3
    config.population.size = 3
    config.population.hparams = {"learning_rate": {"log_grid": [1e-3, 1e-1]}}
    config.early_stopping.enabled = True
    config.writers = ("jsonl", "csv")
    results = run.train_and_evaluate(config, tmp_path, quiet=True)
    assert results["accuracy"].shape == (3,)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["split"] == "train"]
    assert sorted({r["member"] for r in train}) == [0, 1, 2] and len(train) == 9
    tests = [r for r in lines if r["split"] == "test"]
    assert [r["member"] for r in tests] == [0, 1, 2]
    assert tests[2]["hparams"]["learning_rate"] == pytest.approx(0.1, rel=1e-6)
    best = [r for r in lines if r["split"] == "best"]
    assert len(best) == 1 and best[0]["metric"] == "val_loss"
    assert best[0]["test_accuracy"] == pytest.approx(results["accuracy"][best[0]["member"]])
    assert "member" in (tmp_path / "metrics.csv").read_text().splitlines()[0]
    evaluated = run.evaluate_from_workdir(tmp_path)
    np.testing.assert_allclose(evaluated["accuracy"], results["accuracy"], atol=1e-6)
    raw = np.random.default_rng(0).normal(10.0, 5.0, size=(7, 30)).astype(np.float32)
    np.save(tmp_path / "x.npy", raw)
    mean = run.predict_from_workdir(tmp_path, tmp_path / "x.npy", tmp_path / "p.npy")
    each = [run.predict_from_workdir(tmp_path, tmp_path / "x.npy", tmp_path / "p.npy",
                                     member=i) for i in range(3)]
    assert mean.shape == (7, 1)
    np.testing.assert_allclose(mean, np.mean(each, axis=0), atol=1e-6)
    with pytest.raises(errors.InputError, match="argument '--member'"):
        run.predict_from_workdir(tmp_path, tmp_path / "x.npy", member=5)
    from jaxdl.writers import plot

    assert plot.read_run(tmp_path).best == best[0]["member"]
    assert plot.main_plot([str(tmp_path)], str(tmp_path / "curves.png"), None) == 0
    assert (tmp_path / "curves_sweep.png").stat().st_size > 1000


def test_writers_give_every_member_its_own_record(trainer, blobs, tmp_path):
    import io

    from jaxdl import writers
    from jaxdl import writers as event_writers

    x, y = blobs
    state = trainer.init(0, x[:1], population=2)
    console = io.StringIO()
    trainer.fit(state, x, y, epochs=2, batch_size=50, verbose=0, callbacks=[
        writers.JsonlWriter(tmp_path / "m.jsonl"), event_writers.CsvWriter(tmp_path / "m.csv"),
        event_writers.TensorBoardWriter(tmp_path / "tb"),
        writers.ConsoleLogger(stream=console, live=False)])
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["member"]) for r in lines] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,member,loss") and len(rows) == 5
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["member_0", "member_1"]
    text = console.getvalue()
    assert "2/2 members" in text and "(median " in text
    logs = {"loss": np.array([0.5, np.nan, 0.25])}
    assert writers.format_logs(logs) == "loss 0.2500..0.5000 (median 0.3750)"
