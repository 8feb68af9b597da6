"""Early stopping, LR on plateau and the NaN policy, run through the real fit driver."""

import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import optim


class Recorder(jdl.Callback):
    def __init__(self):
        self.logs, self.states = [], []

    def on_epoch_end(self, epoch, logs, state):
        self.logs.append(logs)
        self.states.append(jax.device_get(state.params))
        return state


def test_early_stopping_stops_and_restores_the_best_epoch(binary_trainer, blobs):
    x, y = blobs
    # Validation labels flipped: val_loss rises as training improves, so the best is epoch 1.
    rec = Recorder()
    stop = jdl.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    state = binary_trainer.init(jax.random.key(0), x[:1])
    state, history = binary_trainer.fit(state, x[:80], y[:80], epochs=30, batch_size=16,
                                        validation_data=(x[80:], 1 - y[80:]),
                                        callbacks=[stop, rec], verbose=0)
    best = int(np.argmin(history["val_loss"]))
    assert len(history["loss"]) == best + 3 < 30  # patience 2 after the best epoch
    assert stop.stopped_epoch == best + 2
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), rec.states[best])


def test_reduce_lr_on_plateau_lowers_the_scale_without_recompiling(binary_trainer, blobs):
    x, y = blobs
    plateau = jdl.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    state = binary_trainer.init(jax.random.key(0), x[:1])
    state, history = binary_trainer.fit(state, x[:80], y[:80], epochs=6, batch_size=16,
                                        validation_data=(x[80:], 1 - y[80:]),
                                        callbacks=[plateau], verbose=0)
    assert plateau.history, "val_loss rose every epoch: the LR must have been reduced"
    assert float(optim.lr_scale(state.opt_state)) == pytest.approx(plateau.history[-1][1])
    assert plateau.history[-1][1] <= 0.5


def test_terminate_on_nan_returns_the_last_finite_state(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), optimizer="sgd",
                          learning_rate=1e30, loss="binary_crossentropy")
    nan_policy = jdl.TerminateOnNaN()
    state = trainer.init(jax.random.key(0), x[:1])
    with pytest.warns(UserWarning, match="non-finite"):
        state, history = trainer.fit(state, x * 1e10, y, epochs=5, batch_size=16,
                                     callbacks=[nan_policy], verbose=0)
    assert len(history["loss"]) < 5 and not np.isfinite(history["loss"][-1])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state.params)))


def test_missing_monitor_warns(binary_trainer, blobs):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    with pytest.warns(UserWarning, match="'val_loss' is not in the logs"):
        binary_trainer.fit(state, x, y, epochs=1, batch_size=16,
                           callbacks=[jdl.EarlyStopping()], verbose=0)
