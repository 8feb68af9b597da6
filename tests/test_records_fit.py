"""Training from on-disk records: the grain pipeline feeds the batches arrays would give."""

import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors


@pytest.fixture(scope="module")
def records(blobs, tmp_path_factory):
    x, y = blobs
    return jdl.data.write_records(tmp_path_factory.mktemp("records") / "train", {"x": x, "y": y})


def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)))


@pytest.mark.parametrize("mesh", [None, {"data": 8}])
def test_fit_from_records_equals_fit_from_arrays(blobs, records, mesh, binary_trainer):
    x, y = blobs
    trainer = binary_trainer if mesh is None else jdl.Trainer(
        jdl.models.MLP(features=(16, 1)), optimizer="adam", learning_rate=0.05,
        loss="binary_crossentropy", metrics=["accuracy"], mesh=mesh)
    start = trainer.init(0, x[:1])
    a, ha = trainer.fit(start, x, y, epochs=3, batch_size=16, validation_data=(x[:30], y[:30]),
                        verbose=0)
    b, hb = trainer.fit(start, records, None, epochs=3, batch_size=16,
                        validation_data=(x[:30], y[:30]), verbose=0)
    assert _max_diff(a.params, b.params) < 1e-6
    np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], rtol=1e-6)
    assert trainer.evaluate(b, records, None) == pytest.approx(trainer.evaluate(b, x, y))


def test_a_records_run_resumes_mid_epoch_on_the_same_batches(blobs, records, binary_trainer,
                                                           tmp_path):
    from jaxdl import checkpoint

    x, y = blobs
    start = binary_trainer.init(0, x[:1])
    whole, _ = binary_trainer.fit(start, records, None, epochs=2, batch_size=16, verbose=0,
                                  steps_per_dispatch=3)
    polls = []

    def preempt_after_two_dispatches():  # a SIGTERM in the middle of the first epoch
        polls.append(1)
        return 15 if len(polls) == 2 else None

    with checkpoint.Checkpointer(tmp_path) as ckpt, pytest.raises(errors.Preempted):
        binary_trainer.fit(start, records, None, epochs=2, batch_size=16, verbose=0,
                           steps_per_dispatch=3, checkpointing=checkpoint.Checkpointing(
                               ckpt, every_steps=3, stop_requested=preempt_after_two_dispatches))
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps == [3, 6]  # 7 steps per epoch: stopped mid-epoch
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        resumed, _ = binary_trainer.fit(start, records, None, epochs=2, batch_size=16,
                                        verbose=0, steps_per_dispatch=3,
                                        checkpointing=checkpoint.Checkpointing(ckpt,
                                                                               every_steps=3))
    assert _max_diff(whole.params, resumed.params) == 0


def test_records_errors_are_clear(blobs, records, binary_trainer):
    x, y = blobs
    state = binary_trainer.init(0, x[:1])
    with pytest.raises(errors.InputError, match="argument 'y': expected None when x is records"):
        binary_trainer.fit(state, records, y, epochs=1, verbose=0)
    with pytest.raises(errors.InputError, match="argument 'validation_split'"):
        binary_trainer.fit(state, records, None, epochs=1, validation_split=0.2, verbose=0)


def test_a_config_run_streams_prepared_records_like_memory(tmp_path):
    from jaxdl import experiment as run
    from jaxdl.data.prepare import prepare_dataset
    from jaxdl.experiment.default_config import get_config

    prepare_dataset("breast_cancer", tmp_path / "records", seed=0)
    results = {}
    for pipeline in ("grain", "memory"):
        config = get_config()
        config.epochs = 3
        config.data.records = str(tmp_path / "records")
        config.data.pipeline = pipeline
        results[pipeline] = run.train_and_evaluate(config, tmp_path / pipeline, quiet=True)
    assert results["grain"] == pytest.approx(results["memory"], rel=1e-6)
    config.data.pipeline = "disk"
    with pytest.raises(errors.InputError, match="--config.data.pipeline"):
        run.train_and_evaluate(config, tmp_path / "bad", quiet=True)


def test_a_run_saved_before_a_config_key_existed_resumes(tmp_path):
    import json

    from jaxdl import experiment as run
    from jaxdl.experiment.default_config import get_config

    config = get_config()
    config.epochs = 2
    run.train_and_evaluate(config, tmp_path, quiet=True)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["population"], saved["precision"]  # as an older kit wrote it
    (tmp_path / "config.json").write_text(json.dumps(saved))
    run.train_and_evaluate(config, tmp_path, quiet=True)
    config.population.size = 2
    with pytest.raises(errors.InputError, match=r"population.size \(0 -> 2\)"):
        run.train_and_evaluate(config, tmp_path, quiet=True)
