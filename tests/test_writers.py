"""Console lines, JSONL records, and augmentation wired through the Trainer."""

import io
import json

import jax
import numpy as np

import jaxdl as jdl
from jaxdl.data import augment
from jaxdl.writers import ConsoleLogger, JsonlWriter


def test_console_and_jsonl_writers(binary_trainer, blobs, tmp_path):
    x, y = blobs
    stream = io.StringIO()
    path = tmp_path / "metrics.jsonl"
    state = binary_trainer.init(jax.random.key(0), x[:1])
    _, history = binary_trainer.fit(
        state, x[:80], y[:80], epochs=2, batch_size=16, validation_data=(x[80:], y[80:]),
        callbacks=[ConsoleLogger(stream, live=False), JsonlWriter(path)], verbose=0)
    lines = stream.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"]
    assert f"val_loss {history['val_loss'][1]:.4f}" in lines[1]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["split"], r["epoch"], r["step"]) for r in records] == [
        ("train", 1, 5), ("val", 1, 5), ("train", 2, 10), ("val", 2, 10)]
    assert records[3]["loss"] == history["val_loss"][1]


def test_augmentation_runs_inside_the_step(blobs):
    x, y = blobs
    plain = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy")
    noisy = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                        augment=augment.gaussian_noise(0.5))
    state = plain.init(jax.random.key(0), x[:1])
    a, _ = plain.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    b, _ = noisy.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    c, _ = noisy.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.allclose(a.params["dense_0"]["kernel"], b.params["dense_0"]["kernel"])
    jax.tree.map(np.testing.assert_array_equal, b.params, c.params)  # keys from (rng, step)


def test_dropout_is_active_in_training_only(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(32, 1), dropout_rate=0.5),
                          loss="binary_crossentropy")
    state = trainer.init(jax.random.key(0), x[:1])
    p1 = trainer.predict(state, x)
    np.testing.assert_array_equal(p1, trainer.predict(state, x))  # eval mode: deterministic
    train_step = jax.jit(trainer.programs.train_step)
    batch = {"x": x[:16], "y": y[:16], "mask": np.ones(16, np.float32)}
    outputs = [train_step(state.replace(step=state.step + i), batch)[1] for i in range(2)]
    assert float(outputs[0]["loss"][0]) != float(outputs[1]["loss"][0])
