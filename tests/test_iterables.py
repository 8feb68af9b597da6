"""Any iterable of batches: the numbers of the array path on the same batches, no recompile
for a short last batch, resume after SIGTERM, meshes and populations, and clear errors."""

import json
import os
import subprocess
import sys
import textwrap

import grain
import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors, testing

B = 16  # 100 examples: 7 batches, the last one of 4 rows


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _batches(x, y, w=None, size=B):
    return [(x[i:i + size], y[i:i + size]) if w is None else
            (x[i:i + size], y[i:i + size], w[i:i + size]) for i in range(0, len(x), size)]


class _Tensor:
    """A torch-tensor-like leaf: only ``__array__``."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a


class _Loader:
    """A torch-DataLoader-like re-iterable: len() and tensor batches."""

    def __init__(self, batches):
        self._batches = batches

    def __len__(self):
        return len(self._batches)

    def __iter__(self):
        return iter([(_Tensor(bx), _Tensor(by)) for bx, by in self._batches])


class _Lying(_Loader):
    """A loader whose len() is not the batches it yields."""

    def __init__(self, batches, length):
        super().__init__(batches)
        self._length = length

    def __len__(self):
        return self._length


class _TFLike:
    """A tf.data-like dataset: as_numpy_iterator(), len() unknown."""

    def __init__(self, batches):
        self._batches = batches

    def __len__(self):
        raise TypeError("The dataset length is unknown.")

    def __iter__(self):
        raise AssertionError("as_numpy_iterator() is the way in")

    def as_numpy_iterator(self):
        return iter(self._batches)


class _Rows:
    """A grain data source: example i is (x[i], y[i])."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _grain_map(x, y):
    return grain.MapDataset.source(np.arange(len(x))).batch(B).map(lambda i: (x[i], y[i]))


def _dataset(kind, x, y, epochs):
    batches = _batches(x, y)
    if kind == "list":
        return batches, {}
    if kind == "generator":
        return (b for _ in range(epochs) for b in batches), {"steps_per_epoch": len(batches)}
    if kind == "grain":
        return _grain_map(x, y), {}
    if kind == "grain_iter":  # no len(): counted by one pass
        return _grain_map(x, y).to_iter_dataset(), {}
    if kind == "grain_loader":  # its iterator's state is bytes
        sampler = grain.samplers.IndexSampler(len(x), shuffle=False, num_epochs=1,
                                              shard_options=grain.sharding.NoSharding())
        return grain.DataLoader(data_source=_Rows(x, y), sampler=sampler, worker_count=0,
                                operations=[grain.transforms.Batch(B)]), {}
    if kind == "dict_batches":
        return [{"x": bx, "y": by} for bx, by in batches], {}
    if kind == "torch_like":
        return _Loader(batches), {}
    return _TFLike(batches), {}


@pytest.mark.parametrize("kind", ["list", "generator", "grain", "grain_iter", "grain_loader",
                                  "dict_batches", "torch_like", "tf_like"])
def test_a_dataset_trains_like_arrays_on_the_same_batches(blobs, binary_trainer, kind):
    x, y = blobs
    start = binary_trainer.init(0, x[:1])
    a, ha = binary_trainer.fit(start, x, y, epochs=2, batch_size=B, shuffle=False,
                               validation_data=(x[:30], y[:30]), verbose=0)
    dataset, options = _dataset(kind, x, y, epochs=2)
    b, hb = binary_trainer.fit(start, dataset, epochs=2, verbose=0,
                               validation_data=_batches(x[:30], y[:30], size=8), **options)
    assert _max_diff(a.params, b.params) < 1e-6
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-6)
    np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], rtol=1e-6)


def test_evaluate_and_predict_stream_exactly(blobs, binary_trainer):
    x, y = blobs
    state = binary_trainer.init(0, x[:1])
    expected = binary_trainer.evaluate(state, x, y)
    got = binary_trainer.evaluate(state, (b for b in _batches(x, y, size=24)))
    assert got == pytest.approx(expected, rel=1e-6)
    predicted = binary_trainer.predict(state, (bx for bx, _ in _batches(x, y, size=24)))
    np.testing.assert_allclose(predicted, binary_trainer.predict(state, x), rtol=1e-6)
    from_pairs = binary_trainer.predict(state, _grain_map(x, y))  # (x, y) batches: x is used
    np.testing.assert_allclose(from_pairs, predicted, rtol=1e-6)


def test_a_short_last_batch_does_not_recompile(blobs, binary_trainer):
    x, y = blobs
    start = binary_trainer.init(0, x[:1])
    before = binary_trainer.programs.traces["block"]
    binary_trainer.fit(start, _batches(x, y), epochs=2, steps_per_dispatch=1, verbose=0)
    assert binary_trainer.programs.traces["block"] - before <= 1  # 14 dispatches, one compile
    other = _batches(x[:106 - B], y[:106 - B])  # 6 batches, the last of 10 rows
    other.append(_batches(x, y)[0])  # 7 again: the same plan
    with testing.no_recompile(binary_trainer, "block"):
        binary_trainer.fit(start, other, epochs=2, steps_per_dispatch=1, verbose=0)


def test_batch_size_pads_every_batch_to_it(blobs, binary_trainer):
    x, y = blobs
    start = binary_trainer.init(0, x[:1])
    a, _ = binary_trainer.fit(start, _batches(x, y, size=12), epochs=1, batch_size=B,
                              verbose=0)
    with pytest.raises(errors.InputError, match=r"batches of at most 8 rows .* batch 0 with 12"):
        binary_trainer.fit(start, _batches(x, y, size=12), epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(_max_diff(a.params, start.params))


def test_auto_dispatch_keeps_a_block_of_large_batches_small():
    from jaxdl.train import datasets, members

    wide = np.zeros((16, 2**16), np.float32)  # 4 MiB per batch of 16
    trainer = jdl.Trainer(jdl.models.MLP(features=(1,)), loss="binary_crossentropy")
    state = trainer.init(0, wide[:1])
    source, x, _, _ = datasets.open_fit(
        trainer.programs, state, [(wide, np.zeros(16, np.int32))] * 40, None, batch_size=None,
        steps_per_epoch=None, shuffle=None, validation_data=None, validation_split=0.0,
        members=members.members_for(state, 0), weights={})
    assert source.spec.step_bytes == 16 * (4 + 2**18 + 4)
    assert datasets.dispatch_steps(trainer.programs, state, source, x, "auto") == 15
    assert datasets.dispatch_steps(trainer.programs, state, source, x, 64) == 64
    source.close()


def test_a_sharded_run_fed_by_a_dataset_equals_arrays(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), optimizer="adam",
                          learning_rate=0.05, loss="binary_crossentropy", mesh={"data": 8})
    start = trainer.init(0, x[:1])
    a, _ = trainer.fit(start, x, y, epochs=2, batch_size=B, shuffle=False, verbose=0)
    b, _ = trainer.fit(start, _grain_map(x, y), epochs=2, verbose=0)
    assert _max_diff(a.params, b.params) < 1e-6
    assert trainer.evaluate(b, _batches(x, y)) == pytest.approx(trainer.evaluate(b, x, y),
                                                                 rel=1e-6)
    np.testing.assert_allclose(trainer.predict(b, (bx for bx, _ in _batches(x, y))),
                               trainer.predict(b, x), rtol=1e-6)


def test_a_population_fed_by_a_dataset_equals_arrays(blobs, binary_trainer):
    x, y = blobs
    start = binary_trainer.init(0, x[:1], population=2)
    a, _ = binary_trainer.fit(start, x, y, epochs=2, batch_size=B, shuffle=False, verbose=0)
    b, hb = binary_trainer.fit(start, _batches(x, y), epochs=2, verbose=0)
    assert _max_diff(a.params, b.params) < 1e-6
    assert len(hb["loss"][0]) == 2  # one value per member
    np.testing.assert_allclose(binary_trainer.predict(b, (bx for bx, _ in _batches(x, y))),
                               binary_trainer.predict(b, x), rtol=1e-6)  # [2, 100, 1]
    np.testing.assert_allclose(binary_trainer.evaluate(b, _batches(x, y))["loss"],
                               binary_trainer.evaluate(b, x, y)["loss"], rtol=1e-6)
    with pytest.raises(errors.InputError, match="argument 'seed': expected one seed"):
        binary_trainer.fit(start, _batches(x, y), epochs=1, seed=[0, 1], verbose=0)


def test_a_grain_loader_resumes_mid_epoch_from_its_saved_state(blobs, binary_trainer, tmp_path):
    from jaxdl import checkpoint

    x, y = blobs
    start = binary_trainer.init(0, x[:1])
    loader = _dataset("grain_loader", x, y, 1)[0]
    whole, _ = binary_trainer.fit(start, loader, epochs=2, verbose=0, steps_per_dispatch=3)
    polls = []

    def preempt_on_the_second_poll():  # after steps 0-5 of the first epoch's 7
        polls.append(1)
        return 15 if len(polls) == 2 else None

    with checkpoint.Checkpointer(tmp_path) as ckpt, pytest.raises(errors.Preempted):
        binary_trainer.fit(start, loader, epochs=2, verbose=0, steps_per_dispatch=3,
                           checkpointing=checkpoint.Checkpointing(
                               ckpt, every_steps=3, stop_requested=preempt_on_the_second_poll))
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        saved = ckpt.read_meta(6)["data_position"]
        assert saved["epoch"] == 0 and saved["step"] == 6 and "bytes" in saved["iterator"]
        resumed, _ = binary_trainer.fit(start, loader, epochs=2, verbose=0, steps_per_dispatch=3,
                                        checkpointing=checkpoint.Checkpointing(ckpt,
                                                                               every_steps=3))
    assert _max_diff(whole.params, resumed.params) == 0


def test_a_rollback_puts_the_dataset_back_too(blobs, tmp_path, poison_once):
    from jaxdl import checkpoint

    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          nan_policy="rollback")
    state = trainer.init(0, x[:1])
    clean, clean_history = trainer.fit(state, _grain_map(x, y), epochs=5, verbose=0,
                                       callbacks=[poison_once(-1)])
    with checkpoint.Checkpointer(tmp_path) as ckpt, pytest.warns(UserWarning,
                                                                 match="rolling back"):
        rolled, history = trainer.fit(state, _grain_map(x, y), epochs=5, verbose=0,
                                      callbacks=[poison_once(2)],
                                      checkpointing=checkpoint.Checkpointing(ckpt,
                                                                             every_epochs=2))
    assert _max_diff(rolled.params, clean.params) == 0
    assert history["loss"] == clean_history["loss"]


_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, warnings
    import jax
    jax.config.update("jax_compilation_cache_dir", sys.argv[3])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    import grain, numpy as np
    import jaxdl as jdl
    from jaxdl import checkpoint, errors
    from jaxdl.experiment.train import preemption_signals

    mode, root = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    y = (x @ rng.normal(size=8) > 0).astype(np.int32)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 100, 16)]
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), optimizer="adam",
                          learning_rate=0.05, loss="binary_crossentropy")

    class SigtermAt(jdl.Callback):  # a real SIGTERM at a known step
        def __init__(self, step):
            self.step, self.seen = step, 0
        def on_train_batch_end(self, batch, logs):
            self.seen += 1
            if self.seen == self.step:
                os.kill(os.getpid(), signal.SIGTERM)

    def data(kind):
        if kind == "grain":
            return grain.MapDataset.source(np.arange(100)).batch(16).map(
                lambda i: (x[i], y[i])), {}
        return (b for _ in range(10) for b in batches), {"steps_per_epoch": 7}

    out = {}
    for kind in ("grain", "generator"):
        kill = SigtermAt(10 if mode == "kill" else -1)
        with preemption_signals() as stop, warnings.catch_warnings(record=True) as caught, \\
                checkpoint.Checkpointer(os.path.join(root, kind)) as ckpt:
            warnings.simplefilter("always")
            dataset, options = data(kind)
            try:
                state, history = trainer.fit(
                    trainer.init(0, x[:1]), dataset, epochs=2, verbose=0, callbacks=[kill],
                    checkpointing=checkpoint.Checkpointing(ckpt, stop_requested=stop),
                    **options)
            except errors.Preempted as e:
                out[kind] = {"preempted": e.step}
                continue
        whole = None
        if kind == "grain":
            dataset, _ = data(kind)
            whole = trainer.fit(trainer.init(0, x[:1]), dataset, epochs=2, verbose=0,
                                callbacks=[SigtermAt(-1)])[0]
            whole = float(max(np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in zip(
                jax.tree.leaves(whole.params), jax.tree.leaves(state.params))))
        out[kind] = {"step": int(state.step), "epochs": len(history["loss"]), "diff": whole,
                     "warnings": [str(w.message) for w in caught
                                  if "cannot be put back" in str(w.message)]}
    print(json.dumps(out))
""")


def test_resume_after_sigterm_grain_exactly_a_generator_at_the_epoch_start(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    cache = os.environ.get("JAXDL_TEST_CACHE_DIR", os.path.join(
        os.path.expanduser("~"), ".cache", "jaxdl", "xla-tests"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def run(mode):
        done = subprocess.run([sys.executable, str(script), mode, str(tmp_path), cache],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    killed = run("kill")
    assert killed == {"grain": {"preempted": 10}, "generator": {"preempted": 10}}
    resumed = run("resume")
    # grain: the iterator's state was saved (epoch 1, step 3): the same run, exactly.
    assert resumed["grain"] == {"step": 14, "epochs": 2, "diff": 0.0, "warnings": []}
    # A generator cannot say where it was: epoch 1 again from its start, said once.
    generator = resumed["generator"]
    assert generator["step"] == 10 + 7 and generator["epochs"] == 2
    assert len(generator["warnings"]) == 1
    assert "resuming at the start of epoch 1" in generator["warnings"][0]


def test_dataset_errors_are_clear(blobs, binary_trainer):
    x, y = blobs
    state = binary_trainer.init(0, x[:1])

    def fit(dataset, **kw):
        binary_trainer.fit(state, dataset, **{"epochs": 1, "verbose": 0, **kw})

    cases = [
        (errors.InputError, r"argument 'x': expected batches whose arrays all hold the same "
         r"number \(>= 1\) of rows.*got batch 0 with rows x: 16, y: 15",
         dict(dataset=[(x[:16], y[:15])])),
        (errors.InputError, r"expected every batch with the first batch's example shapes.*"
         r"batch 1 of epoch 0", dict(dataset=[(x[:16], y[:16]), (x[16:32, :4], y[16:32])])),
        (errors.InputTypeError, r"expected numeric arrays in every batch, got batch 0: x of "
         r"dtype <U1", dict(dataset=[(np.array([["a"]] * 4), y[:4])])),
        (errors.InputError, r"expected a dataset that yields at least one batch",
         dict(dataset=iter([]), steps_per_epoch=3)),
        (errors.InputError, r"argument 'steps_per_epoch': expected an integer >= 1 with a "
         r"one-shot iterator", dict(dataset=(b for b in _batches(x, y)))),
        (errors.InputError, r"argument 'steps_per_epoch': expected an integer >= 1 with an "
         r"endless dataset", dict(dataset=_grain_map(x, y).repeat())),
        (errors.InputError, r"argument 'shuffle': expected None or False with a dataset",
         dict(dataset=_batches(x, y), shuffle=True)),
        (errors.InputError, r"argument 'validation_split': expected 0 with a dataset",
         dict(dataset=_batches(x, y), validation_split=0.2)),
        (errors.InputError, r"argument 'y': expected None when x is a dataset",
         dict(dataset=iter(_batches(x, y)), y=y, steps_per_epoch=2)),
        (errors.InputTypeError, r"argument 'x': expected batches \(x, y\), \(x, y, "
         r"sample_weight\) or \{'x'.*got batch 0", dict(dataset=iter([x[:4]]),
                                                       steps_per_epoch=1)),
        (errors.InputError, r"expected every batch with the first batch's structure",
         dict(dataset=[(x[:16], y[:16]), (x[16:32], y[16:32], np.ones(16))])),
        (errors.InputError, r"expected an iterator that lasts the whole run.*ran out after 7 "
         r"batches \(epoch 1, step 0\)", dict(dataset=iter(_batches(x, y)), epochs=2,
                                              steps_per_epoch=7)),
        (errors.InputError, r"expected every pass of the dataset 5 batches long .*got more "
         r"in epoch 0", dict(dataset=_Lying(_batches(x, y), 5))),
        (errors.InputError, r"expected every pass of the dataset 8 batches long .*got 7 "
         r"batches in epoch 0", dict(dataset=_Lying(_batches(x, y), 8))),
        (errors.InputError, r"argument 'steps_per_epoch': expected None with arrays",
         dict(dataset=x, y=y, steps_per_epoch=3)),
    ]
    for error, message, kwargs in cases:
        with pytest.raises(error, match=message):
            fit(kwargs.pop("dataset"), **kwargs)
    with pytest.raises(errors.InputError, match=r"argument 'y': expected None when x is a "
                       "dataset"):
        binary_trainer.evaluate(state, _batches(x, y), y)


def _weights_landed():
    try:
        from jaxdl import weights  # noqa: F401 - the other helper's sample weights
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _weights_landed(), reason="sample weights not in the kit yet")
def test_weighted_batches_train_like_weighted_arrays(blobs, binary_trainer):
    x, y = blobs
    w = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    start = binary_trainer.init(0, x[:1])
    a, _ = binary_trainer.fit(start, x, y, sample_weight=w, epochs=2, batch_size=B,
                              shuffle=False, verbose=0)
    b, _ = binary_trainer.fit(start, _batches(x, y, w), epochs=2, verbose=0)
    assert _max_diff(a.params, b.params) < 1e-6
    assert binary_trainer.evaluate(b, _batches(x, y, w)) == pytest.approx(
        binary_trainer.evaluate(b, x, y, sample_weight=w), rel=1e-6)


@pytest.mark.skipif(not _weights_landed(), reason="pytree batches not in the kit yet")
def test_pytree_batches_train_like_pytree_arrays():
    import flax.linen as nn
    import jax.numpy as jnp

    class TwoInputs(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(jnp.concatenate([x["a"], x["b"]], axis=-1))

    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(40, 3)).astype(np.float32),
         "b": rng.normal(size=(40, 2)).astype(np.float32)}
    y = (x["a"][:, 0] > 0).astype(np.int32)
    trainer = jdl.Trainer(TwoInputs(), optimizer="sgd", learning_rate=0.1,
                          loss="binary_crossentropy")
    start = trainer.init(0, jax.tree.map(lambda v: v[:1], x))
    a, _ = trainer.fit(start, x, y, epochs=2, batch_size=B, shuffle=False, verbose=0)
    batches = [({k: v[i:i + B] for k, v in x.items()}, y[i:i + B]) for i in range(0, 40, B)]
    b, _ = trainer.fit(start, batches, epochs=2, verbose=0)
    assert _max_diff(a.params, b.params) < 1e-6
    np.testing.assert_allclose(trainer.predict(b, (bx for bx, _ in batches)),
                               trainer.predict(b, x), rtol=1e-6)
