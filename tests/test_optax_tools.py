"""optax's own tree tools: every alias by name, injected values by tree_get/tree_set,
optimizer-state shardings by tree_map_params."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdl as jdl
from jaxdl import errors, optim, population
from jaxdl.parallel import Placement, partition_specs, state_shardings
from jaxdl.state import TrainState

PARAMS = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
GRADS = {"dense": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.full(2, -0.25)}}


def _one_update(tx, steps=1):
    state, updates = tx.init(PARAMS), None
    for _ in range(steps):
        updates, state = tx.update(GRADS, state, PARAMS)
    return updates


def _close(got, want, atol=0.0):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=atol), got, want)


# ---- every optax alias by name ---------------------------------------------------------


def test_the_registry_is_optax_s_public_aliases():
    names = set(optim.OPTIMIZERS)
    assert {"adam", "adamw", "sgd", "momentum", "lion", "adafactor", "lamb", "adabelief",
            "novograd", "rmsprop", "nadam", "radam", "yogi", "sm3", "rprop"} <= names
    # Not optimizers, or not usable by a training step (their update needs the loss).
    assert not names & {"chain", "scale", "inject_hyperparams", "lbfgs", "polyak_sgd",
                        "dpsgd", "clip_by_global_norm", "adam_state"}
    for name, factory in optim.OPTIMIZERS.items():
        if name != "momentum":
            assert factory is vars(optax)[name] and name in optax.__all__
    # Every public alias of optax._src.alias that takes a learning rate is known.
    from optax._src import alias

    for name in optax.__all__:
        obj = vars(optax).get(name)
        func = obj.func if isinstance(obj, functools.partial) else obj
        if (inspect.isfunction(func) and func.__module__ == alias.__name__
                and "learning_rate" in inspect.signature(obj).parameters):
            assert name in names or name == "lbfgs", name


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_alias_updates_with_the_kit_s_extras(name):
    """Each name steps from (grads, state, params) alone — with a schedule, weight decay,
    l2 and clipping too — and gives finite updates shaped like the params."""
    options = {"key": 0} if name == "noisy_sgd" else {}  # optax warns without a key
    plain = _one_update(optim.make_optimizer(name, 0.01, **options))
    extras = _one_update(optim.make_optimizer(
        name, 0.01, weight_decay=1e-3, l2=1e-3, clip_norm=1.0,
        schedule={"name": "warmup_cosine", "total_steps": 10, "warmup_steps": 2}, **options),
        steps=3)
    for updates in (plain, extras):
        assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, PARAMS)
        assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))


def _by_hand(tx, params, model, x, y, batch_size):
    loss = jdl.losses.get("binary_crossentropy")

    def objective(p, xb, yb):
        return jnp.mean(loss.per_example(model.apply({"params": p}, xb), yb))

    @jax.jit
    def step(p, s, xb, yb):
        updates, s = tx.update(jax.grad(objective)(p, xb, yb), s, p)
        return optax.apply_updates(p, updates), s

    state = tx.init(params)
    for start in range(0, len(x), batch_size):
        params, state = step(params, state, x[start:start + batch_size],
                             y[start:start + batch_size])
    return params


@pytest.mark.parametrize("name", ["lion", "adafactor", "lamb"])
def test_a_named_alias_trains_like_optax_applied_by_hand(blobs, name):
    x, y = blobs
    model = jdl.models.MLP(features=(16, 1))
    trainer = jdl.Trainer(model, optimizer=name, learning_rate=0.01,
                          loss="binary_crossentropy")
    start = trainer.init(0, x[:1])
    state, _ = trainer.fit(start, x, y, epochs=1, batch_size=25, shuffle=False, verbose=0)
    want = _by_hand(getattr(optax, name)(0.01), start.params, model, x, y, 25)
    _close(state.params, want, atol=1e-6)


def test_weight_decay_goes_to_an_alias_s_own_option_or_after_it():
    got = _one_update(optim.make_optimizer("lion", 0.1, weight_decay=0.01))
    _close(got, _one_update(optax.lion(0.1, weight_decay=0.01, mask=optim.kernel_mask)))
    got = _one_update(optim.make_optimizer("adafactor", 0.1, weight_decay=0.01))
    want = optax.chain(optax.adafactor(0.1),
                       optax.add_decayed_weights(-0.01 * 0.1, mask=optim.kernel_mask))
    _close(got, _one_update(want))


def test_options_reach_the_alias_and_number_only_aliases_take_schedules():
    _close(_one_update(optim.make_optimizer("lion", 0.1, b1=0.5, b2=0.9)),
           _one_update(optax.lion(0.1, b1=0.5, b2=0.9)))
    schedule = {"name": "step", "decay_steps": 1, "decay_rate": 0.5}
    for name in ("sm3", "rprop"):  # their learning_rate is a number only
        shape = optim.make_schedule(learning_rate=1.0, **schedule)
        want = optax.chain(getattr(optax, name)(1.0),
                           optax.scale_by_schedule(lambda c, shape=shape: 0.1 * shape(c)))
        _close(_one_update(optim.make_optimizer(name, 0.1, schedule=schedule), steps=3),
               _one_update(want, steps=3))


@pytest.mark.parametrize("kwargs,match", [
    (dict(optimizer="lion", b3=0.5),
     r"argument 'optimizer options': expected options that optax\.lion takes \['b1', 'b2', "
     r"'mask', 'mu_dtype', 'weight_decay'\], got \['b3'\]\. Fix: drop b3"),
    (dict(optimizer="momentum", betas=(0.9, 0.99)),
     r"options that optax\.sgd with momentum=0\.9 takes \['accumulator_dtype', 'momentum', "
     r"'nesterov'\], got \['betas'\]"),
    (dict(optimizer="lino"), r"argument 'optimizer': expected one of the known optimizer "
                             r"names \[.*'yogi'\], got 'lino'\. Fix: did you mean 'lion'\?"),
    (dict(optimizer="adafactr"), r"did you mean 'adafactor'\?"),
    (dict(optimizer="lbfgs"), r"argument 'optimizer'.*got 'lbfgs'"),
])
def test_bad_options_and_names_are_clear(kwargs, match):
    with pytest.raises(errors.InputError, match=match):
        optim.make_optimizer(**kwargs)


def test_a_population_injects_an_alias_s_numeric_option(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), optimizer="lion",
                          learning_rate=0.01, loss="binary_crossentropy")
    state = trainer.init(0, x[:1], hparams={"b1": [0.8, 0.95]}, seeds=[1, 2])
    state, _ = trainer.fit(state, x, y, epochs=1, batch_size=25, verbose=0)
    np.testing.assert_allclose(population.hparams(state)["b1"], [0.8, 0.95], rtol=1e-6)
    single = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                         optimizer=optim.make_optimizer("lion", 0.01, b1=0.95))
    s, _ = single.fit(single.init(2, x[:1]), x, y, epochs=1, batch_size=25, verbose=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 s.params, population.member(state, 1).params)
    assert "mask" not in optim.injectable("lion")  # a mask is no number


# ---- injected values through tree_get / tree_set ----------------------------------------


def _state(tx):
    return TrainState.create(PARAMS, tx, jax.random.key(0))


def test_the_kit_s_multiplier_is_told_from_a_user_s_step_size():
    user = optax.chain(optax.adam(0.1), optax.inject_hyperparams(optax.scale)(step_size=2.0))
    state = _state(optim.with_lr_scale(user))
    assert population.hparams(state) == {"step_size": 2.0}
    assert float(optim.lr_scale(state.opt_state)) == 1.0
    state = state.replace(opt_state=optim.set_lr_scale(state.opt_state, 0.5))
    state = population.set_hparams(state, {"step_size": 3.0})
    assert float(optim.lr_scale(state.opt_state)) == 0.5
    assert float(population.hparams(state)["step_size"]) == 3.0
    with pytest.raises(errors.InputError, match=r"argument 'opt_state': expected an "
                                                r"optimizer state with the kit's"):
        optim.lr_scale(optax.adam(0.1).init(PARAMS))


def test_a_name_injected_twice_is_set_in_every_state_with_its_dtype():
    tx = optax.chain(optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
                     optax.inject_hyperparams(optax.adam, hyperparam_dtype=jnp.bfloat16)(
                         learning_rate=0.2))
    state = population.set_hparams(_state(tx), {"learning_rate": 0.5})
    first, second = state.opt_state[0].hyperparams, state.opt_state[1].hyperparams
    assert float(first["learning_rate"]) == float(second["learning_rate"]) == 0.5
    assert second["learning_rate"].dtype == jnp.bfloat16 != first["learning_rate"].dtype
    assert jax.tree.structure(state) == jax.tree.structure(_state(tx))


def test_set_values_keep_dtype_shape_and_sharding(blobs):
    x, _ = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss="binary_crossentropy",
                          mesh={"population": 2, "data": 4})
    state = trainer.init(0, x[:1], hparams={"learning_rate": [0.1, 0.2]})
    old = state.opt_state[0].hyperparams["learning_rate"]
    new = population.set_hparams(state, {"learning_rate": [0.3, 0.4]})
    lr = new.opt_state[0].hyperparams["learning_rate"]
    assert (lr.dtype, lr.shape, lr.sharding) == (old.dtype, old.shape, old.sharding)
    scaled = optim.set_lr_scale(state.opt_state, [0.5, 1.0])
    before, after = optim.lr_scale(state.opt_state), optim.lr_scale(scaled)
    assert (after.dtype, after.shape, after.sharding) == (
        before.dtype, before.shape, before.sharding)
    np.testing.assert_allclose(after, [0.5, 1.0])


# ---- optimizer-state shardings by structure ---------------------------------------------

MIRRORS = {"mu", "nu", "trace"}  # the params-shaped fields of these optimizers' states


def _expected(path, params_shardings, replicated):
    """The parameter's sharding for a leaf under mu/nu/trace, else replicated."""
    names = [getattr(k, "name", None) for k in path]
    hits = [i for i, n in enumerate(names) if n in MIRRORS]
    if not hits:
        return replicated
    node = params_shardings
    for key in path[hits[-1] + 1:]:
        node = node[key.key]
    return node


@pytest.mark.parametrize("make", [
    lambda: optim.make_optimizer("adam"),
    lambda: optim.make_optimizer("adamw", weight_decay=1e-2, clip_norm=1.0),
    lambda: optim.make_optimizer("sgd", momentum=0.9),
    lambda: optim.make_optimizer("adam", l2=1e-3, inject=("learning_rate", "b1")),
    lambda: optax.inject_hyperparams(optax.adam)(learning_rate=0.1),
], ids=["adam", "adamw+clip", "sgd-momentum", "kit-inject", "optax-inject"])
def test_optimizer_state_follows_its_parameters_by_structure(make):
    sample = np.zeros((1, 32), np.float32)
    trainer = jdl.Trainer(jdl.models.MLP(features=(256, 1)), loss="binary_crossentropy",
                          optimizer=make())
    abstract = trainer.abstract_state(sample)
    mesh = jdl.parallel.make_mesh({"data": 2, "fsdp": 4})
    specs, _ = partition_specs(abstract.params, mesh)
    shardings = state_shardings(abstract, specs, mesh, tx=trainer.tx)
    state = jax.jit(trainer._init_fn, out_shardings=shardings)(jax.random.key(0),
                                                               jnp.asarray(sample))
    replicated = NamedSharding(mesh, P())
    params = jax.tree.map(lambda a: a.sharding, state.params)
    assert params["dense_0"]["kernel"].spec == P(None, "fsdp")  # something is sharded
    mirrored = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state):
        want = _expected(path, params, replicated)
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim), jax.tree_util.keystr(path)
        mirrored += want is not replicated
    assert mirrored >= len(jax.tree.leaves(state.params))
    # The kit's optimizers: the same as the path rule it replaces.
    assert shardings == state_shardings(abstract, specs, mesh)


def test_leaves_of_another_shape_are_replicated_and_training_matches_one_device(blobs):
    """adafactor keeps [1]-shaped rows under a parameter's path: the path rule gave them
    the bias's fsdp spec (which cannot split one element); by structure they replicate."""
    x, y = blobs
    kwargs = dict(optimizer="adafactor", learning_rate=0.01, loss="binary_crossentropy")
    model = jdl.models.MLP(features=(1024, 1))
    sharded = jdl.Trainer(model, mesh={"data": 2, "fsdp": 4}, **kwargs)
    abstract = sharded.abstract_state(x[:1])
    shardings = sharded.placement.state_shardings(abstract, tx=sharded.tx)
    rows = shardings.opt_state[0][0].v_row["dense_0"]
    assert rows["bias"].spec == P() and shardings.params["dense_0"]["bias"].spec == P("fsdp")
    assert shardings.opt_state[0][0].v["dense_0"]["bias"].spec == P("fsdp")
    start = jax.jit(sharded._init_fn, out_shardings=shardings)(jax.random.key(0), x[:1])
    state, _ = sharded.fit(start, x, y, epochs=1, batch_size=16, verbose=0)
    single = jdl.Trainer(model, **kwargs)
    want, _ = single.fit(single.init(0, x[:1]), x, y, epochs=1, batch_size=16, verbose=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 jax.device_get(state.params), jax.device_get(want.params))


def test_a_population_s_state_follows_its_members_parameters():
    sample = np.zeros((1, 32), np.float32)
    trainer = jdl.Trainer(jdl.models.MLP(features=(256, 1)), loss="binary_crossentropy")
    abstract = trainer.abstract_state(sample, population=2, hparams=("learning_rate",))
    tx = trainer._population(("learning_rate",))[0]
    placement = Placement({"population": 2, "fsdp": 4})
    shardings = placement.state_shardings(abstract, population=True, tx=tx)
    kernel = shardings.params["dense_0"]["kernel"].spec
    assert kernel == P("population", None, "fsdp")
    inject = shardings.opt_state[0]
    assert inject.inner_state[0].mu["dense_0"]["kernel"].spec == kernel
    assert inject.hyperparams["learning_rate"].spec == P("population")
    assert shardings.step.spec == P("population")


def test_an_optimizer_optax_cannot_map_falls_back_to_the_path_rule():
    def init(params):  # reads the params' own structure: optax's placeholder has none
        return {"norm": jnp.zeros(params["dense_0"]["kernel"].shape[:1])}

    tx = optax.GradientTransformation(init, lambda g, s, p=None: (g, s))
    trainer = jdl.Trainer(jdl.models.MLP(features=(256, 1)), loss="mse", optimizer=tx)
    abstract = trainer.abstract_state(np.zeros((1, 32), np.float32))
    mesh = jdl.parallel.make_mesh({"fsdp": 8})
    specs, _ = partition_specs(abstract.params, mesh)
    assert state_shardings(abstract, specs, mesh, tx=trainer.tx) == state_shardings(
        abstract, specs, mesh)


def test_trainer_init_places_adafactor_by_structure(blobs):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(1024, 1)), optimizer="adafactor",
                          loss="binary_crossentropy", mesh={"data": 2, "fsdp": 4})
    state = trainer.init(0, x[:1])
    assert state.opt_state[0][0].v_row["dense_0"]["bias"].sharding.spec == P()
    trainer.fit(state, x, y, epochs=1, batch_size=16, verbose=0)
    pop = trainer.init(0, x[:1], hparams={"learning_rate": [0.01, 0.02]})
    trainer.fit(pop, x, y, epochs=1, batch_size=16, verbose=0)
