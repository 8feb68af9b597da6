"""The callback contract (jaxdl.train.hooks), through real fits on the tiny ``blobs`` problem.

None means "unchanged"; Keras-style signatures are called with Keras' arguments; a hook's
return is checked on the host and a bad one names the callback and the hook; batch hooks run
once per step (fit then dispatches per step, and says so); LambdaCallback works like Keras'.
"""

import inspect
import warnings

import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl.errors import InputError, InputTypeError
from jaxdl.train import hooks

STEPS = 7  # 100 examples, batch 16


def _fit(trainer, x, y, callbacks, **kwargs):
    state = trainer.init(jax.random.key(0), x[:1])
    kwargs = {"epochs": 2, "batch_size": 16, "verbose": 0, **kwargs}
    return trainer.fit(state, x, y, callbacks=callbacks, **kwargs)


def _assert_same_params(a, b):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a.params),
                 jax.device_get(b.params))


class KeepsState(jdl.Callback):
    """The kit's signatures, returning the state: the plan a callback gets, unchanged."""

    def on_epoch_end(self, epoch, logs, state):
        return state


class ReturnsNone(jdl.Callback):
    def on_train_begin(self, state, context):
        return None

    def on_epoch_end(self, epoch, logs, state):
        return None

    def on_train_end(self, state):
        return None


def test_returning_none_keeps_the_state(binary_trainer, blobs):
    x, y = blobs
    expected, _ = _fit(binary_trainer, x, y, [KeepsState()])
    got, history = _fit(binary_trainer, x, y, [ReturnsNone()])
    _assert_same_params(got, expected)
    assert int(got.step) == 2 * STEPS and len(history["loss"]) == 2


class KerasDefaults(jdl.Callback):
    """Keras' signatures with ``logs=None`` defaults."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("begin", logs))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch", epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("end", logs))


class KerasBare(jdl.Callback):
    """Keras' signatures without defaults, and hooks that take nothing."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self):
        self.calls.append("begin")

    def on_epoch_end(self, epoch, logs):
        self.calls.append(epoch)

    def on_train_end(self):
        self.calls.append("end")


def test_keras_style_hooks_get_the_epochs_and_logs(binary_trainer, blobs):
    x, y = blobs
    defaults, bare = KerasDefaults(), KerasBare()
    state, history = _fit(binary_trainer, x[:80], y[:80], [defaults, bare], epochs=3,
                          validation_data=(x[80:], y[80:]))
    assert defaults.calls[0] == ("begin", {})
    epochs = defaults.calls[1:-1]
    assert [c[1] for c in epochs] == [0, 1, 2]
    for epoch, (_, _, logs) in enumerate(epochs):
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert logs == {k: history[k][epoch] for k in logs}
    assert defaults.calls[-1] == ("end", epochs[-1][2])  # Keras: the last epoch's logs
    assert bare.calls == ["begin", 0, 1, 2, "end"]
    assert int(state.step) == 3 * 5


def test_signatures_are_read_once_per_fit_not_per_call(binary_trainer, blobs, monkeypatch):
    x, y = blobs
    callback, read = KerasDefaults(), []
    signature = inspect.signature

    def counting(fn, *args, **kwargs):
        if getattr(fn, "__self__", None) is callback:
            read.append(fn.__name__)
        return signature(fn, *args, **kwargs)

    monkeypatch.setattr(hooks.inspect, "signature", counting)
    _fit(binary_trainer, x, y, [callback], epochs=4)
    assert sorted(read) == ["on_epoch_end", "on_train_begin", "on_train_end"]
    assert len(callback.calls) == 1 + 4 + 1


class ReturnsDict(jdl.Callback):
    def on_epoch_end(self, epoch, logs, state):
        return {"params": state.params}


class ReturnsTuple(jdl.Callback):
    def on_train_begin(self, state, context):
        return state, context


class ReturnsOtherModel(jdl.Callback):
    def __init__(self, other):
        self.other = other

    def on_train_end(self, state):
        return self.other


def test_a_bad_return_names_the_callback_and_the_hook(binary_trainer, blobs):
    x, y = blobs
    with pytest.raises(InputTypeError, match=r"argument 'callbacks\[1\]\.on_epoch_end': "
                       r"expected None or a TrainState like the one passed in, got "
                       r"\{'params': .*\(dict\) from ReturnsDict\.on_epoch_end\. "
                       r"Fix: return state \(or None\)"):
        _fit(binary_trainer, x, y, [KeepsState(), ReturnsDict()])
    traces = binary_trainer.programs.traces["block"]
    with pytest.raises(InputTypeError, match=r"'callbacks\[0\]\.on_train_begin'.*\(tuple\) "
                       r"from ReturnsTuple\.on_train_begin"):
        _fit(binary_trainer, x, y, [ReturnsTuple()], batch_size=20)
    assert binary_trainer.programs.traces["block"] == traces  # refused before compiling
    other = jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="binary_crossentropy")
    with pytest.raises(InputError, match=r"'callbacks\[0\]\.on_train_end'.*got a TrainState "
                       r"from ReturnsOtherModel\.on_train_end whose leaf "
                       r"\.params\['dense_0'\]\['bias'\] is \(4,\) float32 where the state "
                       r"passed in has \(16,\) float32"):
        _fit(binary_trainer, x, y, [ReturnsOtherModel(other.init(0, x[:1]))])


class TooManyArguments(jdl.Callback):
    def on_epoch_end(self, epoch, logs, state, extra):
        return state


class StateWithoutContext(jdl.Callback):
    def on_train_begin(self, state):
        return state


class TestHook(jdl.Callback):
    def on_test_end(self, logs=None):
        pass


class BothBatchNames(jdl.Callback):
    def on_batch_end(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


@pytest.mark.parametrize("callback, match", [
    (TooManyArguments(), r"'callbacks\[0\]\.on_epoch_end': expected a hook taking the kit's "
                         r"arguments \(epoch, logs, state\) or Keras' \(epoch, logs\)"),
    (StateWithoutContext(), r"'callbacks\[0\]\.on_train_begin'.*got StateWithoutContext"
                            r"\.on_train_begin\(state\), which would get Keras' arguments"),
    (TestHook(), r"'callbacks\[0\]\.on_test_end': expected hooks fit calls .*Fix: fit "
                 r"evaluates the validation set fused on device"),
    (BothBatchNames(), r"'callbacks\[0\]\.on_train_batch_end': expected one of "
                       r"on_train_batch_end and its Keras alias on_batch_end"),
])
def test_hooks_fit_cannot_call_are_refused_at_the_start(binary_trainer, blobs, callback, match):
    x, y = blobs
    with pytest.raises(InputTypeError, match=match):
        _fit(binary_trainer, x, y, [callback])


class BatchRecorder(jdl.Callback):
    """Keras' batch hooks; ``on_batch_end`` is Keras' alias of ``on_train_batch_end``."""

    def __init__(self):
        self.begun, self.ended = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.begun.append(batch)

    def on_batch_end(self, batch, logs=None):
        self.ended.append((batch, dict(logs)))


class EpochParams(jdl.Callback):
    def __init__(self):
        self.params = []

    def on_epoch_end(self, epoch, logs, state):
        self.params.append(jax.device_get(state.params))


def test_batch_hooks_run_once_per_step_with_its_logs(binary_trainer, blobs):
    x, y = blobs
    recorder = BatchRecorder()
    with pytest.warns(UserWarning, match=r"BatchRecorder \(on_train_batch_begin, "
                      r"on_train_batch_end\): fit dispatches one step at a time "
                      r"\(steps_per_dispatch=1 in place of 'auto'\)"):
        state, history = _fit(binary_trainer, x, y, [recorder], shuffle=False)
    assert recorder.begun == list(range(STEPS)) * 2
    assert [b for b, _ in recorder.ended] == list(range(STEPS)) * 2
    for epoch in range(2):  # the last batch's running logs are the epoch's
        last = recorder.ended[(epoch + 1) * STEPS - 1][1]
        assert last == {"loss": history["loss"][epoch], "accuracy": history["accuracy"][epoch]}
    # Batch 0's logs are that step's own loss: the initial state's loss on x[:16].
    first = binary_trainer.evaluate(binary_trainer.init(jax.random.key(0), x[:1]), x[:16], y[:16])
    assert recorder.ended[0][1]["loss"] == pytest.approx(first["loss"], rel=1e-5)
    # The same steps as a per-step fit of an epoch callback, and no warning then.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected, _ = _fit(binary_trainer, x, y, [EpochParams()], shuffle=False,
                           steps_per_dispatch=1)
    _assert_same_params(state, expected)


class CountsSteps(jdl.Callback):
    """A batch hook with the kit's arguments, returning the state."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, batch, logs, state):
        self.steps.append(int(state.step))
        return state


def test_a_kit_style_batch_hook_sees_each_state(binary_trainer, blobs):
    x, y = blobs
    counter = CountsSteps()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # steps_per_dispatch=1 asked for: nothing to say
        _fit(binary_trainer, x, y, [counter], steps_per_dispatch=1)
    assert counter.steps == list(range(1, 2 * STEPS + 1))


def test_lambda_callback_like_keras(binary_trainer, blobs):
    x, y = blobs
    assert jdl.LambdaCallback is jdl.callbacks.LambdaCallback
    seen = []
    callback = jdl.LambdaCallback(
        on_train_begin=lambda logs: seen.append(("begin", logs)),
        on_epoch_begin=lambda epoch, logs: seen.append(("epoch_begin", epoch)),
        on_epoch_end=lambda epoch, logs: seen.append(("epoch_end", epoch, logs["loss"])),
        on_train_end=lambda: seen.append("end"))
    state, history = _fit(binary_trainer, x, y, [callback], epochs=3)
    assert seen == [("begin", {}), ("epoch_begin", 0), ("epoch_end", 0, history["loss"][0]),
                    ("epoch_begin", 1), ("epoch_end", 1, history["loss"][1]),
                    ("epoch_begin", 2), ("epoch_end", 2, history["loss"][2]), "end"]
    batches = []
    with pytest.warns(UserWarning, match="LambdaCallback"):
        _fit(binary_trainer, x, y, [jdl.LambdaCallback(
            on_train_batch_end=lambda batch, logs: batches.append(batch))], epochs=1)
    assert batches == list(range(STEPS))
    with pytest.raises(InputTypeError, match=r"argument 'on_epoch_end': expected a function "
                       r"fn\(epoch, logs\) or None, got 3 \(int\)"):
        jdl.LambdaCallback(on_epoch_end=3)


def test_a_population_gets_per_member_logs_in_keras_hooks(binary_trainer, blobs):
    x, y = blobs
    logs = []
    state = binary_trainer.init(0, x[:1], population=3)
    binary_trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0, callbacks=[
        jdl.LambdaCallback(on_epoch_end=lambda epoch, epoch_logs: logs.append(epoch_logs["loss"]))])
    assert len(logs) == 2 and all(np.shape(v) == (3,) for v in logs)


def test_trainer_refuses_non_callbacks_and_points_to_lambda_callback(binary_trainer, blobs):
    x, y = blobs
    with pytest.raises(InputTypeError, match=r"argument 'callbacks\[0\]': expected a "
                       r"jdl\.Callback instance, got .*\(function\)\. Fix: subclass "
                       r"jdl\.Callback, or wrap functions: jdl\.LambdaCallback"):
        _fit(binary_trainer, x, y, [lambda epoch, logs: None])
    with pytest.raises(InputTypeError, match=r"Fix: instantiate it: EarlyStopping\(\.\.\.\)"):
        _fit(binary_trainer, x, y, [jdl.EarlyStopping])
