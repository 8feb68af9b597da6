"""The model zoo's image models (CNN, ResNet with BatchNorm) and NNX modules via the bridge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdl as jdl
from jaxdl import errors
from jaxdl.step import make_apply


@pytest.fixture(scope="session")
def digits():
    data = jdl.data.load("digits", seed=0, images=True)
    return data.x_train[:256], data.y_train[:256]


@pytest.mark.parametrize("shape, input_shape, pooling, flat_width", [
    ((3, 8, 8, 1), None, "max", 2 * 2 * 8), ((3, 8, 8), None, "avg", 2 * 2 * 8),
    ((3, 64), (8, 8, 1), None, 8 * 8 * 8)])
def test_cnn_takes_images_or_flat_rows(shape, input_shape, pooling, flat_width):
    model = jdl.models.CNN(features=(4, 8), dense=(16,), input_shape=input_shape,
                           pooling=pooling)
    x = jnp.ones(shape)
    variables = model.init(jax.random.key(0), x)
    assert variables["params"]["dense_0"]["kernel"].shape == (flat_width, 16)
    out = model.apply(variables, x)
    assert out.shape == (3, 10) and out.dtype == jnp.float32


def test_cnn_dropout_only_in_training():
    model = jdl.models.CNN(features=(4,), dense=(16,), dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
    train = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert train.shape == (4, 10) and not np.allclose(train, model.apply(variables, x))


def test_bfloat16_compute_keeps_float32_parameters_and_outputs():
    for model in (jdl.models.CNN(features=(4,), dense=(), dtype=jnp.bfloat16),
                  jdl.models.ResNet(stage_sizes=(1,), widths=(4,), stem_width=4,
                                    dtype=jnp.bfloat16)):
        x = jnp.ones((2, 8, 8, 1))
        variables = model.init(jax.random.key(0), x)
        assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
        out = model.apply(variables, x)
        assert out.dtype == jnp.float32


def test_bad_image_shapes_are_clear():
    with pytest.raises(errors.InputError, match="input_shape"):
        jdl.models.CNN().init(jax.random.key(0), jnp.ones((2, 64)))
    with pytest.raises(errors.InputError, match="argument 'pooling'"):
        jdl.models.CNN(pooling="min").init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    with pytest.raises(errors.InputError, match="argument 'widths'"):
        jdl.models.ResNet(stage_sizes=(1, 1), widths=(4,)).init(jax.random.key(0),
                                                                jnp.ones((1, 8, 8, 1)))
    with pytest.raises(errors.InputError, match="argument 'strides'"):
        jdl.models.ResNet(stage_sizes=(1, 1), widths=(4, 8), strides=(1,)).init(
            jax.random.key(0), jnp.ones((1, 8, 8, 1)))


def test_resnet_strides_set_the_resolution():
    x = jnp.ones((1, 8, 8, 1))

    def stage_output(strides):
        model = jdl.models.ResNet(stage_sizes=(1, 1), widths=(4, 8), stem_width=4,
                                  strides=strides)
        _, seen = model.apply(model.init(jax.random.key(0), x), x,
                              capture_intermediates=True, mutable=["intermediates"])
        return seen["intermediates"]["stage1_block0"]["__call__"][0].shape

    assert stage_output(None) == (1, 4, 4, 8)     # default: the second stage halves
    assert stage_output((1, 1)) == (1, 8, 8, 8)
    assert stage_output((2, 2)) == (1, 2, 2, 8)


def test_resnet_batch_statistics_train_vs_eval():
    model = jdl.models.ResNet(stage_sizes=(1, 1), widths=(4, 8), stem_width=4)
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1)) * 3 + 1
    variables = model.init(jax.random.key(0), x)
    stats = variables["batch_stats"]
    train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), stats,
                         updates["batch_stats"])
    assert max(jax.tree.leaves(moved)) > 1e-3  # training updates the running statistics
    eval_out = model.apply(variables, x)  # eval: running averages, nothing mutable needed
    assert not np.allclose(train_out, eval_out, atol=1e-4)
    # Eval mode is per-example: a row's output does not depend on the rest of the batch.
    np.testing.assert_allclose(model.apply(variables, x[:2]), eval_out[:2], atol=1e-5)
    # The kit's apply: new statistics from training calls only.
    apply = make_apply(model)
    params, model_state = variables["params"], {"batch_stats": stats}
    out, kept = apply(params, model_state, x, False)
    np.testing.assert_allclose(out, eval_out, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, kept, model_state)
    _, trained = apply(params, model_state, x, True)
    jax.tree.map(np.testing.assert_allclose, trained["batch_stats"], updates["batch_stats"])


def test_a_few_steps_lower_the_loss(digits):
    x, y = digits
    for model in (jdl.models.CNN(features=(8, 16), dense=(32,)),
                  jdl.models.ResNet(stage_sizes=(1, 1), widths=(8, 16), stem_width=8)):
        trainer = jdl.Trainer(model, loss="sparse_categorical_crossentropy",
                              metrics=["accuracy"], learning_rate=1e-2)
        state = trainer.init(0, x[:1])
        before = trainer.evaluate(state, x, y, batch_size=64)["loss"]
        state, history = trainer.fit(state, x, y, epochs=6, batch_size=64, verbose=0)
        assert history["loss"][-1] < 0.8 * history["loss"][0]
        assert trainer.evaluate(state, x, y, batch_size=64)["loss"] < before
        if isinstance(model, jdl.models.ResNet):  # the step threads the batch statistics
            assert set(state.model_state) == {"batch_stats"}
            means = [a for path, a in jax.tree_util.tree_flatten_with_path(
                state.model_state)[0] if "mean" in jax.tree_util.keystr(path)]
            assert any(float(jnp.max(jnp.abs(m))) > 0 for m in means)


class _NnxNet(nnx.Module):
    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(din, 16, rngs=rngs)
        self.out = nnx.Linear(16, dout, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def test_an_nnx_module_trains_through_the_bridge(blobs):
    x, y = blobs
    trainer = jdl.Trainer(nnx.bridge.to_linen(_NnxNet, 8, 1), loss="binary_crossentropy",
                          metrics=["accuracy"], learning_rate=0.05)
    state = trainer.init(0, x[:1])
    assert state.params["hidden"]["kernel"].shape == (8, 16)
    state, history = trainer.fit(state, x, y, epochs=4, batch_size=20, verbose=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert trainer.predict(state, x[:3]).shape == (3, 1)
    # The module itself is accepted too, natively (tests/test_nnx.py): the same params.
    native = jdl.Trainer(_NnxNet(8, 1, rngs=nnx.Rngs(0)), loss="binary_crossentropy")
    assert jax.tree.map(jnp.shape, native.init(0, x[:1]).params) == jax.tree.map(
        jnp.shape, state.params)
