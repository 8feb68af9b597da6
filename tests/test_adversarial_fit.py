"""The fit driver against what a hostile or careless user can do: checkpoint histories from a
lost timeline, settings that would train nothing or nonsense, degenerate models."""

import numpy as np
import pytest

import jaxdl as jdl
from jaxdl.checkpoint import Checkpointer, Checkpointing, saved_history


def test_every_checkpoint_holds_the_history_of_its_own_position(binary_trainer, blobs,
                                                                  tmp_path):
    # An async save serializes its meta after fit() goes on: the history it records must
    # still be the one at its step, not epochs appended since (a resume would replay them).
    x, y = blobs
    state = binary_trainer.init(0, x[:1])
    with Checkpointer(tmp_path, keep=1000, async_save=True) as ckpt:
        binary_trainer.fit(state, x, y, epochs=12, batch_size=16, verbose=0,
                           validation_data=(x[:20], y[:20]),
                           checkpointing=Checkpointing(ckpt, every_steps=3, every_epochs=0))
        ckpt.wait()
        assert len(ckpt.steps) > 20
        for step in ckpt.steps:
            epochs_done = ckpt.read_meta(step)["position"]["epoch"]
            history = saved_history(ckpt, step)
            assert {k: len(v) for k, v in history.items()} == {
                k: epochs_done for k in history}, step


def test_a_save_records_the_history_as_it_was_when_called(tmp_path):
    # Orbax serializes the JSON meta in its commit thread, after the arrays: a history
    # appended right after save() returned must not leak into that checkpoint (before the
    # fix, 3 of these 10 checkpoints held epochs their position had not reached).
    from jaxdl.checkpoint.resume import FitCheckpoints, Position

    trainer = jdl.Trainer(jdl.models.MLP(features=(1024, 1024, 1)), loss="binary_crossentropy")
    state = trainer.init(0, np.zeros((1, 64), np.float32))  # 4 MB: the arrays take a while
    position = Position(origin=0, epoch=1, first=0, history={"loss": [0.5]})
    with Checkpointer(tmp_path, keep=100, async_save=True) as ckpt:
        saver = FitCheckpoints(Checkpointing(ckpt), [], {"seed": 0})
        for step in range(1, 11):
            saver.save(step, state, {}, position)
            position.history["loss"].append(0.25)  # the fit goes on before the commit
            position.epoch += 1
        ckpt.wait()
        saved = {step: (ckpt.read_meta(step), saved_history(ckpt, step)) for step in ckpt.steps}
    assert len(saved) == 10
    for step, (meta, history) in saved.items():
        assert len(history["loss"]) == meta["position"]["epoch"] == step, step


@pytest.mark.parametrize("override, argument", [
    ("--config.model.dropout_rate=1.5", "--config.model.dropout_rate"),
    ("--config.model.features=(10, 0, 1)", "--config.model.features"),
    ("--config.model.features=()", "--config.model.features"),
    ("--config.epochs=1000000000000000000000", "--config.epochs"),
])
def test_the_command_refuses_settings_that_train_nothing(capsys, tmp_path, override, argument):
    from jaxdl import cli

    code = cli.main(["train", "--workdir", str(tmp_path / "run"), "--quiet", override])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert f"argument '{argument}'" in err.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained


@pytest.mark.parametrize("kwargs", [{"shuffle": "no"}, {"shuffle": 1}, {"epochs": 10**21}])
def test_fit_refuses_settings_that_would_train_nonsense(binary_trainer, blobs, kwargs):
    x, y = blobs
    state = binary_trainer.init(0, x[:1])
    with pytest.raises(jdl.InputError, match=f"argument '{next(iter(kwargs))}'"):
        binary_trainer.fit(state, x, y, verbose=0, **kwargs)


def test_models_refuse_widths_and_rates_that_build_nothing():
    for make in (lambda: jdl.models.MLP(features=(8, 0, 1)),
                 lambda: jdl.models.CNN(dense=(0,)), lambda: jdl.models.CNN(dropout_rate=-0.1),
                 lambda: jdl.models.ResNet(widths=(16, 0, 64)),
                 lambda: jdl.models.Transformer(dropout_rate=1.0),
                 lambda: jdl.models.Transformer(num_heads=0)):
        with pytest.raises(jdl.InputError, match="expected"):
            make()
    jdl.models.MLP(features=[np.int64(4), 1], dropout_rate=0.5)  # numpy ints and lists are fine
