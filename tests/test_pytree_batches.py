"""Pytree batches: models with several inputs and outputs, per-output losses and metrics.

Every number is compared with a hand-written Flax + Optax loop over the same batches
(``shuffle=False``), or with numpy.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl as jdl
from jaxdl import errors

N, B = 37, 8  # the last batch of an epoch holds 5 real rows and 3 padded ones


class TwoInputs(nn.Module):
    """image [B, 4, 4, 1] and meta [B, 3] -> one logit."""

    @nn.compact
    def __call__(self, x):
        image = x["image"].reshape(x["image"].shape[0], -1)
        h = jnp.tanh(nn.Dense(6)(jnp.concatenate([image, x["meta"]], axis=-1)))
        return nn.Dense(1)(h)


class TwoOutputs(nn.Module):
    """x [B, 5] -> {"a": one logit, "b": two regression targets}."""

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(6)(x))
        return {"a": nn.Dense(1)(h), "b": nn.Dense(2)(h)}


class TupleInputs(nn.Module):
    @nn.compact
    def __call__(self, x):
        first, second = x
        return nn.Dense(1)(jnp.concatenate([first, second], axis=-1))


@pytest.fixture(scope="module")
def two_inputs():
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(N, 4, 4, 1)).astype(np.float32),
         "meta": rng.normal(size=(N, 3)).astype(np.float32)}
    y = (x["meta"][:, 0] + x["image"][:, 0, 0, 0] > 0).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def two_outputs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, 5)).astype(np.float32)
    y = {"a": (x[:, 0] > 0).astype(np.float32),
         "b": np.stack([x[:, 1] * 2, x[:, 2] - x[:, 3]], axis=1).astype(np.float32)}
    return x, y


def _reference_fit(model, params, x, y, per_example, epochs, lr=0.1):
    """The plain loop: sequential batches of B, the last one only its real rows."""
    tx = optax.sgd(lr)
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb):
        return jnp.mean(per_example(model.apply({"params": p}, xb), yb))

    grad = jax.jit(jax.grad(loss_fn))
    for _ in range(epochs):
        for start in range(0, N, B):
            rows = slice(start, min(start + B, N))
            g = grad(params, jdl.data.trees.take(x, rows), jdl.data.trees.take(y, rows))
            updates, opt_state = tx.update(g, opt_state, params)
            params = optax.apply_updates(params, updates)
    return params


def _bce(logits, labels):
    return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels)


def _assert_params_close(actual, expected, atol=1e-5):
    chex.assert_trees_all_close(actual, expected, atol=atol, rtol=1e-7)


def test_a_two_input_model_trains_like_the_plain_loop(two_inputs):
    x, y = two_inputs
    trainer = jdl.Trainer(TwoInputs(), loss="binary_crossentropy", optimizer=optax.sgd(0.1),
                          metrics=["accuracy"])
    state = trainer.init(0, {"image": x["image"][:1], "meta": x["meta"][:1]})
    start = jax.tree.map(np.asarray, state.params)
    state, history = trainer.fit(state, x, y, epochs=3, batch_size=B, shuffle=False,
                                 verbose=0)
    _assert_params_close(state.params, _reference_fit(TwoInputs(), start, x, y, _bce, 3))
    assert sorted(history) == ["accuracy", "loss"]
    probs = trainer.predict(state, x, batch_size=B)
    logits = TwoInputs().apply({"params": state.params}, x)
    np.testing.assert_allclose(probs, jax.nn.sigmoid(logits), atol=1e-6)
    loss = float(np.mean(_bce(logits, y)))
    result = trainer.evaluate(state, x, y, batch_size=B)
    np.testing.assert_allclose(result["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], np.mean((logits[:, 0] > 0) == (y > 0.5)))


def test_a_two_output_model_trains_like_the_plain_loop_with_weighted_losses(two_outputs):
    x, y = two_outputs
    trainer = jdl.Trainer(TwoOutputs(), loss={"a": "binary_crossentropy", "b": "mse"},
                          loss_weights={"a": 1.0, "b": 0.5},
                          metrics={"a": ["accuracy"], "b": ["mae"]}, optimizer=optax.sgd(0.1))
    state = trainer.init(0, x[:1])
    start = jax.tree.map(np.asarray, state.params)

    def per_example(out, labels):
        mse = jnp.mean((out["b"] - labels["b"]) ** 2, axis=1)
        return _bce(out["a"], labels["a"]) + 0.5 * mse

    state, history = trainer.fit(state, x, y, epochs=3, batch_size=B, shuffle=False,
                                 validation_data=(x, y), verbose=0)
    _assert_params_close(state.params, _reference_fit(TwoOutputs(), start, x, y, per_example,
                                                      3))
    assert list(history) == ["loss", "a_loss", "b_loss", "a_accuracy", "b_mae", "val_loss",
                             "val_a_loss", "val_b_loss", "val_a_accuracy", "val_b_mae"]
    # The epoch's loss is the weighted sum of the outputs' losses, example for example.
    np.testing.assert_allclose(history["loss"], np.add(history["a_loss"],
                                                       0.5 * np.asarray(history["b_loss"])),
                               rtol=1e-5)
    out = TwoOutputs().apply({"params": state.params}, x)
    expected = {"loss": np.mean(per_example(out, y)), "a_loss": np.mean(_bce(out["a"], y["a"])),
                "b_loss": np.mean((out["b"] - y["b"]) ** 2),
                "a_accuracy": np.mean((out["a"][:, 0] > 0) == (y["a"] > 0.5)),
                "b_mae": np.mean(np.abs(out["b"] - y["b"]))}
    result = trainer.evaluate(state, x, y, batch_size=B)
    assert list(result) == list(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(result[key], value, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(history[f"val_{key}"][-1], value, rtol=1e-5, atol=1e-7)
    predicted = trainer.predict(state, x, batch_size=B)
    assert set(predicted) == {"a", "b"}
    assert predicted["a"].shape == (N, 1) and predicted["b"].shape == (N, 2)
    np.testing.assert_allclose(predicted["a"], jax.nn.sigmoid(out["a"]), atol=1e-6)
    np.testing.assert_allclose(predicted["b"], out["b"], atol=1e-6)


def test_a_padded_last_batch_changes_no_number(two_inputs):
    x, y = two_inputs
    trainer = jdl.Trainer(TwoInputs(), loss="binary_crossentropy", metrics=["accuracy", "auc"])
    state = trainer.init(0, x)
    whole = trainer.evaluate(state, x, y, batch_size=N)
    padded = trainer.evaluate(state, x, y, batch_size=B)  # 5 batches, the last padded
    for key in whole:
        np.testing.assert_allclose(padded[key], whole[key], rtol=1e-6)
    np.testing.assert_allclose(trainer.predict(state, x, batch_size=B),
                               trainer.predict(state, x, batch_size=N), atol=1e-7)


def test_a_tuple_of_inputs_is_two_inputs_not_two_examples():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(10, 2)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32))
    y = rng.normal(size=(10, 1)).astype(np.float32)
    trainer = jdl.Trainer(TupleInputs(), loss="mse")
    state = trainer.init(0, x)
    state, _ = trainer.fit(state, x, y, epochs=1, batch_size=4, verbose=0)
    assert trainer.predict(state, x).shape == (10, 1)
    assert jdl.data.trees.rows([[1.0, 2.0], [3.0, 4.0]]) == 2  # numbers stay one array


def _fit_params(trainer, x, y, **kwargs):
    state = trainer.init(0, x)
    state, history = trainer.fit(state, x, y, epochs=2, batch_size=16, shuffle=True, seed=3,
                                 verbose=0, **kwargs)
    return jax.tree.map(np.asarray, state.params), history


def test_a_sharded_run_with_pytree_batches_equals_one_device(two_outputs):
    x, y = two_outputs
    x = {"first": x[:, :2], "rest": x[:, 2:]}

    class Split(nn.Module):
        @nn.compact
        def __call__(self, x):
            return TwoOutputs()(jnp.concatenate([x["first"], x["rest"]], axis=-1))

    make = lambda **kw: jdl.Trainer(Split(), loss={"a": "binary_crossentropy", "b": "mse"},
                                    metrics={"a": ["accuracy"]}, **kw)
    one, one_history = _fit_params(make(), x, y)
    eight, eight_history = _fit_params(make(mesh={"data": 8}), x, y)
    _assert_params_close(eight, one)
    np.testing.assert_allclose(eight_history["a_accuracy"], one_history["a_accuracy"])
    host, _ = _fit_params(make(mesh={"data": 8}, data_placement="host"), x, y)
    _assert_params_close(host, one)
    spmd, _ = _fit_params(make(mesh={"data": 8}, strategy="shard_map"), x, y)
    _assert_params_close(spmd, one)


def test_a_raw_mesh_without_a_population_axis_fits(two_inputs):
    x, y = two_inputs
    devices = np.asarray(jax.devices()).reshape(4, 2, 1)
    mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "tensor"))
    sharded = jdl.Trainer(TwoInputs(), loss="binary_crossentropy", mesh=mesh)
    state = sharded.init(0, x)
    state, history = sharded.fit(state, x, y, epochs=2, batch_size=8, shuffle=False,
                                 verbose=0)
    plain = jdl.Trainer(TwoInputs(), loss="binary_crossentropy")
    reference, expected = plain.fit(plain.init(0, x), x, y, epochs=2, batch_size=8,
                                    shuffle=False, verbose=0)
    _assert_params_close(state.params, reference.params)
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-5)
    population = sharded.init(0, x, population=2)
    population, _ = sharded.fit(population, x, y, epochs=1, batch_size=8, verbose=0)
    assert np.asarray(population.step).tolist() == [5, 5]


def test_a_population_with_pytree_batches_equals_its_single_runs(two_outputs):
    x, y = two_outputs
    trainer = jdl.Trainer(TwoOutputs(), loss={"a": "binary_crossentropy", "b": "mse"},
                          metrics={"b": ["mae"]})
    state = trainer.init(0, x[:1], population=2)
    state, history = trainer.fit(state, x, y, epochs=2, batch_size=B, seed=5, verbose=0)
    assert np.shape(history["b_mae"]) == (2, 2)
    for member in (0, 1):
        single = trainer.init(member, x[:1])
        single, single_history = trainer.fit(single, x, y, epochs=2, batch_size=B, seed=5,
                                             verbose=0)
        _assert_params_close(jdl.population.member(state, member).params, single.params)
        np.testing.assert_allclose(np.asarray(history["b_mae"])[:, member],
                                   single_history["b_mae"], rtol=1e-5)
    predicted = trainer.predict(state, x)
    assert predicted["a"].shape == (2, N, 1) and predicted["b"].shape == (2, N, 2)
    mean = trainer.predict(state, x, ensemble=True)
    np.testing.assert_allclose(mean["b"], predicted["b"].mean(axis=0), rtol=1e-6)


def test_checkpoint_and_resume_with_pytree_batches(two_inputs, tmp_path):
    x, y = two_inputs
    make = lambda: jdl.Trainer(TwoInputs(), loss="binary_crossentropy", metrics=["accuracy"])
    trainer = make()
    straight, history = trainer.fit(trainer.init(0, x), x, y, epochs=4, batch_size=B,
                                    verbose=0)
    first = make()
    first.fit(first.init(0, x), x, y, epochs=2, batch_size=B, verbose=0,
              checkpoint_dir=str(tmp_path))
    second = make()  # a fresh trainer, as in a new process
    resumed, resumed_history = second.fit(second.init(0, x), x, y, epochs=4, batch_size=B,
                                          verbose=0, checkpoint_dir=str(tmp_path))
    _assert_params_close(resumed.params, straight.params, atol=1e-6)
    np.testing.assert_allclose(resumed_history["loss"], history["loss"], rtol=1e-6)
    restored = make().restore(tmp_path)  # its meta holds the tree of input shapes
    _assert_params_close(restored.params, straight.params, atol=1e-6)
    meta = jdl.data.trees.shapes(x)
    assert meta == {"image": [4, 4, 1], "meta": [3]}
    assert jdl.data.trees.shapes(x["meta"]) == [3]  # one array: the value it always had


def test_summary_of_a_two_input_model(two_inputs):
    x, _ = two_inputs
    trainer = jdl.Trainer(TwoInputs(), loss="binary_crossentropy")
    text = trainer.summary({"image": x["image"][:1], "meta": x["meta"][:1]}, print_fn=None)
    assert "Dense_0" in text and "total: 127 parameters" in text  # 19*6+6 + 6+1


# --- errors ---


def _message(excinfo):
    return str(excinfo.value)


def test_leaves_of_different_lengths_are_refused(two_inputs):
    x, y = two_inputs
    trainer = jdl.Trainer(TwoInputs(), loss="binary_crossentropy")
    state = trainer.init(0, x)
    bad = {"image": x["image"], "meta": x["meta"][:30]}
    with pytest.raises(errors.InputError) as e:
        trainer.fit(state, bad, y, verbose=0)
    assert _message(e) == ("argument 'x['meta']': expected 37 examples, as x['image'] has, "
                           "got 30. Fix: give every input and label leaf the same number of "
                           "rows")
    with pytest.raises(errors.InputError, match=r"argument 'y': expected one label per "
                       r"example of x \(37\), got 30 labels"):
        trainer.fit(state, x, y[:30], verbose=0)


def test_a_non_numeric_or_non_finite_leaf_is_named(two_inputs):
    x, y = two_inputs
    trainer = jdl.Trainer(TwoInputs(), loss="binary_crossentropy")
    state = trainer.init(0, x)
    with pytest.raises(errors.InputTypeError) as e:
        trainer.evaluate(state, {"image": x["image"], "meta": np.full((N, 3), "a")}, y)
    assert _message(e) == ("argument 'x['meta']': expected numeric values, got dtype <U1. "
                           "Fix: encode non-numeric columns as numbers first")
    meta = x["meta"].copy()
    meta[4, 1] = np.nan
    with pytest.raises(errors.InputError, match=r"argument 'x\['meta'\]': expected finite "
                       r"values \(no NaN or inf\), got 1 row\(s\) with NaN/inf, first at row 4"):
        trainer.predict(state, {"image": x["image"], "meta": meta})
    with pytest.raises(errors.InputError, match=r"argument 'x': expected a pytree with at "
                       r"least one array, got \{\}"):
        trainer.predict(state, {})
    with pytest.raises(errors.InputError, match=r"argument 'x': expected examples whose shape "
                       r"the model accepts"):
        trainer.predict(state, {"image": x["image"]})


def test_losses_that_do_not_match_the_outputs_are_refused(two_outputs):
    x, y = two_outputs
    trainer = jdl.Trainer(TwoOutputs(), loss={"a": "binary_crossentropy", "c": "mse"})
    state = trainer.init(0, x[:1])
    with pytest.raises(errors.InputError) as e:
        trainer.fit(state, x, y, verbose=0)
    assert _message(e) == ("argument 'loss': expected a model returning a dict of outputs "
                           "with the keys of the loss ['a', 'c'], got ['a', 'b']. Fix: give "
                           "the model's outputs, the labels and loss= the same names")
    good = jdl.Trainer(TwoOutputs(), loss={"a": "binary_crossentropy", "b": "mse"})
    state = good.init(0, x[:1])
    with pytest.raises(errors.InputError, match=r"argument 'y': expected a dict of labels "
                       r"with the keys of the loss \['a', 'b'\], got \['a'\]"):
        good.fit(state, x, {"a": y["a"]}, verbose=0)
    with pytest.raises(errors.InputError, match=r"argument 'validation_data\[1\]\['a'\]': "
                       r"expected labels in \[0, 1\] for binary_crossentropy"):
        good.fit(state, x, y, validation_data=(x, {"a": y["a"] * 3, "b": y["b"]}), verbose=0)
    with pytest.raises(errors.InputError, match=r"argument 'y\['b'\]': expected 2 target "
                       r"value\(s\) per example"):
        good.evaluate(state, x, {"a": y["a"], "b": y["b"][:, :1]})


def test_bad_per_output_options_are_refused():
    model = TwoOutputs()
    with pytest.raises(errors.InputError, match=r"argument 'loss_weights': expected keys among "
                       r"the loss's outputs \['a', 'b'\], got \['c'\]"):
        jdl.Trainer(model, loss={"a": "mse", "b": "mse"}, loss_weights={"c": 1.0})
    with pytest.raises(errors.InputError, match=r"argument 'loss_weights\['a'\]': expected a "
                       r"finite number >= 0, got -1.0"):
        jdl.Trainer(model, loss={"a": "mse", "b": "mse"}, loss_weights={"a": -1.0})
    with pytest.raises(errors.InputError, match=r"argument 'loss_weights': expected None with "
                       r"a single loss"):
        jdl.Trainer(model, loss="mse", loss_weights={"a": 1.0})
    with pytest.raises(errors.InputError, match=r"argument 'metrics': expected a list with a "
                       r"single loss"):
        jdl.Trainer(model, loss="mse", metrics={"a": ["mae"]})
    with pytest.raises(errors.InputError, match=r"argument 'metrics': expected metrics per "
                       r"output, e.g. \{'a': \['accuracy'\]\}, with a loss per output"):
        jdl.Trainer(model, loss={"a": "mse", "b": "mse"}, metrics=["mae"])
    with pytest.raises(errors.InputError, match=r"argument 'metrics': expected keys among the "
                       r"loss's outputs \['a', 'b'\], got \['z'\]"):
        jdl.Trainer(model, loss={"a": "mse", "b": "mse"}, metrics={"z": ["mae"]})
    with pytest.raises(errors.InputError, match=r"argument 'metrics': expected metric "
                       r"'accuracy' to be used with a classification loss"):
        jdl.Trainer(model, loss={"a": "mse", "b": "mse"}, metrics={"a": ["accuracy"]})
    with pytest.raises(errors.InputError, match=r"argument 'loss': expected a loss per output"):
        jdl.Trainer(model, loss={})
    with pytest.raises(errors.InputTypeError, match=r"argument 'loss': expected output names "
                       r"\(str keys\), got \[0\]"):
        jdl.Trainer(model, loss={0: "mse"})
    with pytest.raises(errors.InputError, match=r"argument 'task': expected None with a loss "
                       r"per output"):
        jdl.Trainer(model, loss={"a": "mse"}, task="regression")
