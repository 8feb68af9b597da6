"""The decoder-only Transformer: causality, positions, remat, dtypes, logical sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors
from jaxdl.models import LOGICAL_RULES, Transformer

TINY = dict(vocab_size=32, num_layers=2, num_heads=2, embed_dim=16, mlp_dim=32, max_len=16)


def _tokens(shape=(2, 12), seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, 32)


@pytest.mark.parametrize("positions, norm", [("rope", "layernorm"), ("learned", "rmsnorm")])
def test_causal_shapes_and_dtypes(positions, norm):
    model = Transformer(**TINY, positions=positions, norm=norm)
    tokens = _tokens()
    variables = model.init(jax.random.key(0), tokens)
    logits = model.apply(variables, tokens)
    assert logits.shape == (2, 12, 32) and logits.dtype == jnp.float32
    changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % 32)
    after = model.apply(variables, changed)
    np.testing.assert_allclose(after[:, :7], logits[:, :7], atol=1e-6)  # the past is blind
    assert not np.allclose(after[:, 7:], logits[:, 7:])
    # Generation feeds prefixes of any length <= max_len to the same parameters.
    np.testing.assert_allclose(model.apply(variables, tokens[:, :5]), logits[:, :5], atol=1e-5)
    assert model.apply(variables, _tokens((1, TINY["max_len"]))).shape == (1, 16, 32)


def test_every_parameter_has_logical_axis_names():
    for kw in (dict(positions="rope"), dict(positions="learned", norm="rmsnorm")):
        boxed = jax.eval_shape(Transformer(**TINY, **kw).init, jax.random.key(0), _tokens())
        leaves = jax.tree_util.tree_flatten_with_path(
            boxed["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
        for path, leaf in leaves:
            assert isinstance(leaf, nn.LogicallyPartitioned), jax.tree_util.keystr(path)
            assert len(leaf.names) == leaf.value.ndim
        names = {n for _, leaf in leaves for n in leaf.names if n is not None}
        assert names <= {rule for rule, _ in LOGICAL_RULES}  # the rules cover every name


def test_bfloat16_compute_keeps_float32_parameters():
    model = Transformer(**TINY, dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), _tokens())
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert model.apply(variables, _tokens()).dtype == jnp.float32


def test_remat_changes_memory_not_results():
    tokens, targets = _tokens(), _tokens(seed=1)
    plain, remat = Transformer(**TINY), Transformer(**TINY, remat=True)
    params = plain.init(jax.random.key(0), tokens)["params"]

    def loss(model, p):
        logits = model.apply({"params": p}, tokens)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * targets)

    a, ga = jax.value_and_grad(lambda p: loss(plain, p))(params)
    b, gb = jax.value_and_grad(lambda p: loss(remat, p))(params)
    assert a == pytest.approx(float(b), rel=1e-6)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-6), ga, gb)


def test_dropout_only_in_training():
    model = Transformer(**TINY, dropout_rate=0.5)
    tokens = _tokens()
    variables = model.init(jax.random.key(0), tokens)
    eval_a, eval_b = model.apply(variables, tokens), model.apply(variables, tokens)
    np.testing.assert_array_equal(eval_a, eval_b)
    train = model.apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(train, eval_a)


def test_bad_settings_are_clear():
    key = jax.random.key(0)
    with pytest.raises(errors.InputError, match="argument 'embed_dim'"):
        Transformer(**{**TINY, "embed_dim": 15}).init(key, _tokens())
    with pytest.raises(errors.InputError, match="argument 'embed_dim'.*even head size"):
        Transformer(**{**TINY, "embed_dim": 6}).init(key, _tokens())
    with pytest.raises(errors.InputError, match="argument 'positions'"):
        Transformer(**TINY, positions="alibi").init(key, _tokens())
    with pytest.raises(errors.InputError, match="argument 'norm'"):
        Transformer(**TINY, norm="batchnorm").init(key, _tokens())
    with pytest.raises(errors.InputError, match="argument 'x'.*max_len=16"):
        Transformer(**TINY, positions="learned").init(key, _tokens((1, 17)))
    with pytest.raises(errors.InputError, match="argument 'x'.*tokens \\[B, T\\]"):
        Transformer(**TINY).init(key, _tokens((12,)))


@pytest.fixture(scope="module")
def pattern():
    """Sequences of a learnable rule: each token is the previous one + 1 (mod 32)."""
    starts = np.random.default_rng(0).integers(0, 32, size=64)
    seq = (starts[:, None] + np.arange(13)[None, :]) % 32
    return seq[:, :-1].astype(np.int32), seq[:, 1:].astype(np.int32)


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_fit_learns_a_pattern_and_bits_per_byte_follow_the_loss(pattern, positions):
    x, y = pattern
    trainer = jdl.Trainer(Transformer(**TINY, positions=positions),
                          loss="sparse_categorical_crossentropy",
                          metrics=["accuracy", "bits_per_byte"], learning_rate=1e-2)
    state, history = trainer.fit(trainer.init(0, x[:1]), x, y, epochs=8, batch_size=16,
                                 verbose=0)
    assert history["loss"][-1] < 0.3 * history["loss"][0]
    assert history["bits_per_byte"][-1] == pytest.approx(history["loss"][-1] / np.log(2),
                                                         rel=1e-5)
    assert history["accuracy"][-1] > 0.8


def test_logical_axes_shard_over_the_mesh_like_one_device(pattern):
    x, y = pattern
    model = Transformer(**TINY)
    one = jdl.Trainer(model, loss="sparse_categorical_crossentropy", learning_rate=1e-2)
    mesh = jdl.Trainer(model, loss="sparse_categorical_crossentropy", learning_rate=1e-2,
                       mesh={"data": 2, "fsdp": 2, "tensor": 2}, logical_rules=LOGICAL_RULES)
    state = mesh.init(0, x[:1])
    spec = state.params["block_0"]["mlp_in"]["kernel"].sharding.spec
    assert tuple(spec) == ("fsdp", "tensor")
    qkv = state.params["block_0"]["qkv"]["kernel"].sharding.spec
    assert "tensor" in tuple(qkv)
    a, ha = one.fit(one.init(0, x[:1]), x, y, epochs=2, batch_size=16, verbose=0)
    b, hb = mesh.fit(state, x, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-5)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v),
                                                         atol=2e-5), a.params, b.params)
