"""Loading a run back: trainer.restore in a fresh process equals the state fit returned —
the best weights when EarlyStopping restored them."""

import json
import subprocess
import sys

import numpy as np

import jaxdl as jdl

SCRIPT = """
import json, sys
import numpy as np
import jaxdl as jdl
x = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int32)
trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                      learning_rate=0.3, metrics=["accuracy"])
state = trainer.restore(sys.argv[1])
np.save(sys.argv[2], np.asarray(state.params["dense_0"]["kernel"]))
print(json.dumps(trainer.evaluate(state, x, y)))
"""


def _data():
    x = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def test_restore_in_a_new_process_gives_the_best_weights_fit_returned(tmp_path):
    x, y = _data()
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          learning_rate=0.3, metrics=["accuracy"])
    stop = jdl.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    state, history = trainer.fit(trainer.init(0, x[:1]), x[:60], y[:60], epochs=60,
                                 batch_size=16, validation_data=(x[60:], y[60:]),
                                 callbacks=[stop], verbose=0, checkpoint_dir=str(tmp_path))
    assert len(history["loss"]) < 60  # it stopped early, after the best epoch
    best = int(np.argmin(history["val_loss"]))
    assert best < len(history["loss"]) - 1
    out = tmp_path / "kernel.npy"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(out), np.asarray(state.params["dense_0"]["kernel"]))
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(loaded["loss"], trainer.evaluate(state, x, y)["loss"], rtol=1e-6)


def test_restore_a_population_and_a_workdir(tmp_path):
    x, y = _data()
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy")
    members = trainer.init(0, x[:1], population=3, hparams={"learning_rate": [0.01, 0.1, 0.3]})
    fitted, _ = trainer.fit(members, x, y, epochs=2, batch_size=16, verbose=0,
                            checkpoint_dir=str(tmp_path / "checkpoints"))
    restored = jdl.Trainer(jdl.models.MLP(features=(8, 1)),
                           loss="binary_crossentropy").restore(tmp_path)  # the workdir
    assert jdl.population.size(restored) == 3
    np.testing.assert_allclose(jdl.population.hparams(restored)["learning_rate"],
                               [0.01, 0.1, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(restored.params["dense_1"]["kernel"]),
                                  np.asarray(fitted.params["dense_1"]["kernel"]))


def test_restore_says_what_is_missing(tmp_path):
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy")
    for directory, match in ((tmp_path / "nothing", "not a folder"), (tmp_path, "none")):
        try:
            trainer.restore(directory)
        except jdl.InputError as e:
            assert e.argument == "directory" and match in str(e)
        else:
            raise AssertionError("no error")
