"""Meshes from config and partition rules on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import jaxdl as jdl
from jaxdl.parallel import fsdp_spec, make_mesh, partition_specs, state_shardings


def test_mesh_sizes_and_minus_one():
    assert dict(make_mesh().shape) == {"population": 1, "data": 8, "fsdp": 1, "tensor": 1}
    assert dict(make_mesh({"data": 2, "fsdp": -1}).shape) == {"population": 1, "data": 2,
                                                              "fsdp": 4, "tensor": 1}
    assert dict(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}).shape) == {
        "population": 1, "data": 2, "fsdp": 2, "tensor": 2}
    assert dict(make_mesh({"population": 4, "data": -1}).shape) == {
        "population": 4, "data": 2, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("spec,match", [
    ({"data": 3}, r"product is the device count \(8: cpu:0, cpu:1"),
    ({"data": 3, "fsdp": -1}, "divides the 8 devices"),
    ({"data": -1, "fsdp": -1}, "at most one axis of size -1"),
    ({"model": 2}, r"argument .mesh.: expected one of the known mesh axis names"),
    ({"data": 0}, r"argument 'mesh.data'"),
])
def test_bad_meshes_are_clear(spec, match):
    with pytest.raises(ValueError, match=match):
        make_mesh(spec)


def test_fsdp_shards_the_largest_divisible_dimension():
    assert fsdp_spec((30, 1024), 8) == P(None, "fsdp")
    assert fsdp_spec((1024, 30), 8) == P("fsdp", None)
    assert fsdp_spec((10,), 8) == P()  # small: replicated
    assert fsdp_spec((1001, 1003), 8) == P()  # nothing divisible


def test_fsdp_per_device_bytes_are_an_eighth():
    trainer = jdl.Trainer(jdl.models.MLP(features=(512, 512, 8)), loss="mse")
    abstract = trainer.abstract_state(np.zeros((1, 256), np.float32))
    mesh = make_mesh({"fsdp": 8})
    specs, unused = partition_specs(abstract.params, mesh)
    assert not unused
    shardings = state_shardings(abstract, specs, mesh)
    state = jax.jit(trainer._init_fn, out_shardings=shardings)(jax.random.key(0),
                                                               jnp.zeros((1, 256)))
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(state.params))
    per_device = sum(leaf.addressable_shards[0].data.nbytes
                     for leaf in jax.tree.leaves(state.params))
    assert per_device <= total / 8 * 1.02  # biases of 512/8 and the 8-wide head round up
    mu = state.opt_state[0][0].mu  # adam's first moment follows its parameter
    assert mu["dense_0"]["kernel"].sharding.spec == state.params["dense_0"]["kernel"].sharding.spec


def test_rules_first_match_and_unused_rules_are_reported():
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 4)), loss="mse")
    abstract = trainer.abstract_state(np.zeros((1, 8), np.float32))
    mesh = make_mesh({"data": 2, "tensor": 4})
    rules = [(r"dense_0.*kernel", (None, "tensor")), (r"attention", ("tensor",))]
    specs, unused = partition_specs(abstract.params, mesh, rules)
    assert specs["dense_0"]["kernel"] == P(None, "tensor")
    assert unused == ["attention"]
    with pytest.raises(ValueError, match="argument 'sharding.rules'"):
        partition_specs(abstract.params, mesh, [(r"bias", (None, "tensor"))])


@pytest.fixture(scope="module")
def single_device_run(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(64, 1)), loss="binary_crossentropy",
                          metrics=["accuracy"])
    state = trainer.init(jax.random.key(0), x[:1])
    state, history = trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    return jax.device_get(state.params), history


@pytest.mark.parametrize("strategy,mesh,data", [
    ("auto", {"data": 8}, "device"), ("auto", {"fsdp": 8}, "device"),
    ("auto", {"data": 2, "fsdp": 2, "tensor": 2}, "device"), ("auto", {"data": 8}, "host"),
    ("shard_map", {"data": 8}, "device"), ("shard_map", {"data": 4, "fsdp": 2}, "host"),
    ("pmap", {"data": 8}, "device"),
])
def test_strategies_match_one_device(blobs, single_device_run, strategy, mesh, data):
    x, y = blobs  # 100 examples, batch 16: the last batch (4 rows) leaves shards empty
    params, history = single_device_run
    trainer = jdl.Trainer(jdl.models.MLP(features=(64, 1)), loss="binary_crossentropy",
                          metrics=["accuracy"], mesh=mesh, strategy=strategy,
                          data_placement=data)
    state = trainer.init(jax.random.key(0), x[:1])
    state, sharded_history = trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 jax.device_get(state.params), params)
    np.testing.assert_allclose(sharded_history["loss"], history["loss"], rtol=1e-5)
    np.testing.assert_allclose(sharded_history["accuracy"], history["accuracy"], rtol=1e-6)
    kernel = state.params["dense_0"]["kernel"]
    assert len(kernel.sharding.device_set) == 8
    assert trainer.programs.traces["block"] == 1  # shardings stable across dispatches


def test_a_batch_not_divisible_by_the_data_axes_is_clear(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="binary_crossentropy",
                          mesh={"data": 4, "fsdp": 2})
    state = trainer.init(jax.random.key(0), x[:1])
    with pytest.raises(ValueError, match=r"argument 'batch_size': expected a global batch "
                                         r"divisible by the data-parallel size 8 .*got 12"):
        trainer.fit(state, x, y, epochs=1, batch_size=12, verbose=0)


def test_flax_logical_axis_names_map_to_mesh_axes(blobs):
    import flax.linen as nn

    class Annotated(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                ("embed", "mlp"))
            x = nn.relu(nn.Dense(64, kernel_init=init, name="up")(x))
            return nn.Dense(1, name="head")(x)

    x, y = blobs
    trainer = jdl.Trainer(Annotated(), loss="binary_crossentropy",
                          mesh={"data": 2, "tensor": 4},
                          logical_rules=[("embed", None), ("mlp", "tensor")])
    state = trainer.init(jax.random.key(0), x[:1])
    assert state.params["up"]["kernel"].sharding.spec == P(None, "tensor")
    assert state.opt_state[0][0].mu["up"]["kernel"].sharding.spec == P(None, "tensor")
    fitted, history = trainer.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    assert fitted.params["up"]["kernel"].sharding.spec == P(None, "tensor")
    assert np.isfinite(history["loss"][0])


def _sgd_params(blobs, epochs, **trainer_kwargs):
    """Params after ``epochs`` of plain SGD on ``blobs`` (an update that is the gradient
    itself: any scale error in it shows)."""
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          optimizer=optax.sgd(0.1), **trainer_kwargs)
    state = trainer.init(jax.random.key(0), x[:1])
    return jax.device_get(trainer.fit(state, x, y, epochs=epochs, batch_size=16, verbose=0)
                          .state.params)


def _assert_close(actual, expected):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 actual, expected)


@pytest.mark.parametrize("strategy", ["shard_map", "pmap"])
def test_spmd_strategies_take_the_mean_gradient_not_the_sum(blobs, strategy):
    """Under SGD the update is the gradient itself, so a gradient summed over the 8 devices
    (what shard_map's own autodiff adds on top of the step's pmean) shows as 8x the step;
    Adam's normalized updates would hide it."""
    _assert_close(_sgd_params(blobs, 2, mesh={"data": 8}, strategy=strategy),
                  _sgd_params(blobs, 2))


@pytest.mark.parametrize("shape, names", [((8,), ("data",)), ((4, 2), ("data", "fsdp")),
                                          ((2, 2, 2), ("data", "fsdp", "tensor"))])
def test_a_users_own_mesh_with_explicit_or_missing_axes_trains_like_one_device(blobs, shape,
                                                                               names):
    """jax.make_mesh's default axis type is Explicit, and a raw mesh may name only the axes
    it uses: the kit runs on the same devices with Auto axes and size-1 others."""
    mesh = jax.make_mesh(shape, names)
    assert set(mesh.axis_types) == {jax.sharding.AxisType.Explicit}
    _assert_close(_sgd_params(blobs, 1, mesh=mesh), _sgd_params(blobs, 1))


def test_a_mesh_axis_the_kit_does_not_know_is_named():
    with pytest.raises(jdl.InputError, match=r"argument 'mesh': expected a jax\.sharding\.Mesh "
                                             r"whose axes are among \['population', 'data', "
                                             r"'fsdp', 'tensor'\], got axes \['batch'\]"):
        jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="mse",
                    mesh=jax.make_mesh((8,), ("batch",)))
