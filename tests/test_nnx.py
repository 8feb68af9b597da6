"""NNX modules passed to the Trainer as they are: equal to their Linen twin, state kept right.

An ``nnx.Module`` is wrapped in :class:`jaxdl.models.nnx_model.NNXModel`: params train,
BatchNorm statistics live in ``model_state``, RNG streams are reseeded from the step's key.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import jaxdl as jdl
from jaxdl import errors, population
from jaxdl.models.nnx_model import NNXModel

MESH = {"data": 2, "fsdp": 2, "tensor": 2}
LOSS = "sparse_categorical_crossentropy"


class NnxCNN(nnx.Module):
    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.out = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), strides=(2, 2))
        return self.out(self.drop(x.reshape(x.shape[0], -1)))


class LinenCNN(nn.Module):
    """NnxCNN's twin: the same layers under the same names, so the same variable trees."""

    rate: float

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, name="bn")(nn.Conv(4, (3, 3),
                                                                           name="conv")(x))
        x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
        return nn.Dense(3, name="out")(nn.Dropout(self.rate, deterministic=not train)(x))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 8, 8, 1)).astype(np.float32) * 2 + 1
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 1).astype(np.int32) + (x[:, 4:].mean(
        axis=(1, 2, 3)) > 1).astype(np.int32)
    return x, y


def _trainer(model, **kwargs):
    return jdl.Trainer(model, loss=LOSS, metrics=["accuracy"], learning_rate=1e-2, **kwargs)


@pytest.fixture(scope="module")
def nnx_trainer():
    return _trainer(NnxCNN(0.0, rngs=nnx.Rngs(0)))


def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)))


@pytest.mark.parametrize("mesh", [None, MESH], ids=["one_device", "mesh_2x2x2"])
def test_an_nnx_cnn_trains_like_its_linen_twin(images, nnx_trainer, mesh):
    x, y = images
    nnx_fit = nnx_trainer if mesh is None else _trainer(NnxCNN(0.0, rngs=nnx.Rngs(0)),
                                                        mesh=mesh)
    linen_fit = _trainer(LinenCNN(0.0), mesh=mesh)
    start = nnx_fit.init(0, x[:1])
    twin = linen_fit.init(0, x[:1])
    assert jax.tree.structure(twin.params) == jax.tree.structure(start.params)
    assert set(start.model_state) == {"batch_stats"}
    # The NNX weights in the Linen state, placed as the Linen trainer places its own.
    twin = twin.replace(**{name: jax.tree.map(
        lambda mine, theirs: jax.device_put(theirs, mine.sharding), getattr(twin, name),
        getattr(start, name)) for name in ("params", "model_state")})
    fitted, history = nnx_fit.fit(start, x, y, epochs=3, batch_size=16, verbose=0)
    fitted_twin, twin_history = linen_fit.fit(twin, x, y, epochs=3, batch_size=16, verbose=0)
    assert _max_diff(fitted.params, fitted_twin.params) < 1e-5
    assert _max_diff(fitted.model_state, fitted_twin.model_state) < 1e-5
    np.testing.assert_allclose(history["loss"], twin_history["loss"], rtol=1e-5)
    assert _max_diff(fitted.params, start.params) > 1e-3  # it trained
    np.testing.assert_allclose(nnx_fit.predict(fitted, x), linen_fit.predict(fitted_twin, x),
                               atol=1e-5)


def test_dropout_draws_from_the_step_key_in_training_only(images):
    x, _ = images
    module = NnxCNN(0.5, rngs=nnx.Rngs(0))
    model = NNXModel(module)
    variables = model.init(None, x)
    evaluated = model.apply(variables, x)
    np.testing.assert_array_equal(evaluated, model.apply(variables, x, rngs=jax.random.key(1)))
    train = jax.jit(lambda key: model.apply(variables, x, train=True, rngs={"dropout": key},
                                            mutable=["batch_stats"])[0])
    once, again, other = train(jax.random.key(1)), train(jax.random.key(1)), train(
        jax.random.key(2))
    np.testing.assert_array_equal(once, again)  # the key alone decides the mask
    assert not np.allclose(once, other) and not np.allclose(once, evaluated)
    # The user's object is untouched: its mode, statistics and RNG counters.
    assert module.drop.deterministic is False and module.bn.use_running_average is False
    assert float(jnp.abs(module.bn.mean[...]).max()) == 0.0
    assert int(module.drop.rngs.count[...]) == 0


def test_dropout_layers_without_rngs_use_the_step_key(images):
    x, y = images

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 16, rngs=rngs)
            self.drop = nnx.Dropout(0.5)  # no rngs: the kit gives it the step's key
            self.out = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.out(self.drop(nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))))

    trainer = _trainer(Net(nnx.Rngs(0)))
    state = trainer.init(0, x[:1])
    one, _ = trainer.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    two, _ = trainer.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    jax.tree.map(np.testing.assert_array_equal, one.params, two.params)  # reproducible
    model = trainer.model
    variables = {"params": state.params}
    a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)})
    b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))


def test_batch_statistics_update_in_training_and_serve_evaluation(images, nnx_trainer):
    x, y = images
    start = nnx_trainer.init(0, x[:1])
    fitted, _ = nnx_trainer.fit(start, x, y, epochs=1, batch_size=16, verbose=0)
    assert _max_diff(fitted.model_state, start.model_state) > 1e-3  # training moved them
    stats = jax.device_get(fitted.model_state)
    nnx_trainer.evaluate(fitted, x, y, batch_size=16)
    probabilities = nnx_trainer.predict(fitted, x, batch_size=16)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(fitted.model_state), stats)
    # Eval mode normalizes with the running averages: per example, not per batch.
    model = nnx_trainer.model
    logits = model.apply({"params": fitted.params, **fitted.model_state}, x)
    np.testing.assert_allclose(probabilities, jax.nn.softmax(logits), atol=1e-6)
    np.testing.assert_allclose(nnx_trainer.predict(fitted, x[:3]), probabilities[:3],
                               atol=1e-6)
    initial = model.apply({"params": fitted.params, **start.model_state}, x)
    assert not np.allclose(logits, initial, atol=1e-3)  # the statistics are used


def test_checkpoints_resume_an_nnx_model(images, nnx_trainer, tmp_path):
    x, y = images
    start = nnx_trainer.init(0, x[:1])
    whole, _ = nnx_trainer.fit(start, x, y, epochs=3, batch_size=16, verbose=0)
    nnx_trainer.fit(start, x, y, epochs=2, batch_size=16, verbose=0,
                    checkpoint_dir=str(tmp_path))
    resumed, history = nnx_trainer.fit(start, x, y, epochs=3, batch_size=16, verbose=0,
                                       checkpoint_dir=str(tmp_path))
    assert len(history["loss"]) == 3 and int(resumed.step) == int(whole.step)
    jax.tree.map(np.testing.assert_array_equal, resumed.params, whole.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.model_state, whole.model_state)


def test_a_population_shares_the_module_weights_and_trains(images, nnx_trainer):
    x, y = images
    state = nnx_trainer.init(0, x[:1], hparams={"learning_rate": [1e-2, 3e-2]})
    assert population.size(state) == 2
    assert _max_diff(population.member(state, 0).params, population.member(state, 1).params) == 0
    fitted, history = nnx_trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    assert np.shape(history["loss"]) == (2, 2)
    assert _max_diff(population.member(fitted, 0).params,
                     population.member(fitted, 1).params) > 1e-4


def test_a_factory_seeds_each_member_like_a_linen_model(images):
    x, _ = images
    trainer = _trainer(NNXModel.from_factory(lambda rngs: NnxCNN(0.0, rngs=rngs)))
    state = trainer.init(0, x[:1], seeds=[3, 4])
    members = [population.member(state, i).params for i in range(2)]
    assert _max_diff(members[0], members[1]) > 1e-3
    assert _max_diff(trainer.init(4, x[:1]).params, members[1]) < 1e-6


def test_nnx_partitioning_annotations_place_parameters(images):
    x, y = images

    class Annotated(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
            self.hidden = nnx.Linear(64, 16, kernel_init=init, rngs=rngs)
            self.out = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))

    with nnx.use_eager_sharding(False):  # placed by the Trainer, not when built
        module = Annotated(nnx.Rngs(0))
    boxed = NNXModel(module).init(None, x[:1])["params"]["hidden"]["kernel"]
    assert isinstance(boxed, nn.LogicallyPartitioned) and boxed.names == ("embed", "mlp")
    trainer = _trainer(module, mesh=MESH, logical_rules=[("embed", "fsdp"), ("mlp", "tensor")])
    state = trainer.init(0, x[:1])
    assert state.params["hidden"]["kernel"].sharding.spec == P("fsdp", "tensor")
    np.testing.assert_array_equal(state.params["hidden"]["kernel"], module.hidden.kernel[...])
    state, history = trainer.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    assert state.params["hidden"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert np.isfinite(history["loss"][-1])


def test_objects_that_are_not_flax_modules_are_refused_clearly():
    with pytest.raises(errors.InputTypeError, match="Linen or NNX.*flax.nnx.Module"):
        jdl.Trainer(lambda x: x, loss=LOSS)
    with pytest.raises(errors.InputTypeError, match=r"instantiate it: NnxCNN\(\.\.\., rngs="):
        jdl.Trainer(NnxCNN, loss=LOSS)
    with pytest.raises(errors.InputTypeError, match="argument 'module'"):
        NNXModel(LinenCNN(0.0))
