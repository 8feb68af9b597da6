"""Research code through the Trainer: losses that keep their task, pytree outputs, and a
researcher's own training step inside fit — each against a hand-written loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl as jdl
from jaxdl.data import arrays

X = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int32)


def _per_example_bce(logits, labels):
    return optax.losses.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(jnp.float32))


@pytest.mark.parametrize("task, link", [
    ("binary", jax.nn.sigmoid), ("multiclass", lambda o: jax.nn.softmax(o, axis=-1)),
    ("regression", lambda o: o), (None, lambda o: o)])
def test_a_callable_loss_keeps_its_task_for_predict(task, link):
    width = 3 if task == "multiclass" else 1
    model = jdl.models.MLP(features=(4, width))
    trainer = jdl.Trainer(model, loss=lambda o, y: jnp.sum(o ** 2, axis=-1), task=task)
    state = trainer.init(0, X[:1])
    outputs = model.apply({"params": state.params}, X)
    np.testing.assert_allclose(trainer.predict(state, X), link(outputs), rtol=1e-6, atol=1e-7)


def test_classification_metrics_follow_the_task_of_a_callable_loss():
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss=_per_example_bce,
                          task="binary", metrics=["accuracy", "auc"])
    reference = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                            metrics=["accuracy", "auc"])
    state = trainer.init(0, X[:1])
    ours, theirs = (t.evaluate(state, X, Y) for t in (trainer, reference))
    assert ours.keys() == theirs.keys()
    np.testing.assert_allclose([ours[k] for k in ours], [theirs[k] for k in ours], rtol=1e-6)
    with pytest.raises(jdl.InputError, match=r"argument 'task'.*Fix: pass Trainer\(\.\.\., "
                                             r"loss=fn, task="):
        jdl.Trainer(jdl.models.MLP(), loss=_per_example_bce, metrics=["accuracy"])


def test_a_loss_that_returns_a_scalar_is_refused_because_of_padding():
    trainer = jdl.Trainer(jdl.models.MLP(features=(4, 1)),
                          loss=lambda o, y: jnp.mean(_per_example_bce(o, y)), task="binary")
    state = trainer.init(0, X[:1])
    with pytest.raises(jdl.InputError, match=r"argument 'loss': expected one loss value per "
                                             r"example.*padded rows.*drop the final \.mean\(\)"):
        trainer.fit(state, X, Y, epochs=1, batch_size=24, verbose=0)


class VAE(nn.Module):
    """Encoder -> (mean, logvar) -> a sample in training (the mean in eval) -> decoder."""

    latent: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(8)(x))
        mean, logvar = nn.Dense(self.latent)(h), nn.Dense(self.latent)(h)
        z = mean
        if train:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("dropout"),
                                                                  mean.shape)
        return nn.Dense(x.shape[-1])(nn.relu(nn.Dense(8)(z))), mean, logvar


def vae_loss(outputs, x):
    recon, mean, logvar = outputs
    kl = -0.5 * jnp.sum(1 + logvar - mean ** 2 - jnp.exp(logvar), axis=-1)
    return jnp.sum((recon - x) ** 2, axis=-1) + kl


def _hand_written(loss_of, state, tx, epochs, batch_size, n):
    """A plain jitted loop over the kit's batch order (shuffle from (seed, epoch))."""
    @jax.jit
    def step(state, idx, mask):
        def loss_fn(params):
            values = loss_of(params, state, idx, mask)
            return jnp.sum(values * mask) / jnp.sum(mask)

        grads = jax.grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state)

    for epoch in range(epochs):
        order = arrays.epoch_order(0, epoch, n, True)
        for s in range(arrays.steps_per_epoch(n, batch_size)):
            idx = arrays.block_indices(order, batch_size, s, 1)[0]
            mask = np.asarray(arrays.row_mask(n, batch_size, s))
            state = step(state, idx, mask)
    return state


def test_a_vae_with_pytree_outputs_and_y_equal_to_x_matches_a_hand_written_loop():
    model, tx = VAE(), optax.adam(1e-2)
    trainer = jdl.Trainer(model, loss=vae_loss, optimizer=tx, task="regression")
    state = trainer.init(0, X[:1])
    fitted, history = trainer.fit(state, X, X, epochs=3, batch_size=20, verbose=0)
    apply = jdl.step.make_apply(model)

    def loss_of(params, state, idx, mask):
        key = jax.random.split(jax.random.fold_in(state.rng, state.step))[1]
        outputs, _ = apply(params, {}, jnp.asarray(X)[idx], True, key)
        return vae_loss(outputs, jnp.asarray(X)[idx])

    expected = _hand_written(loss_of, jdl.TrainState.create(state.params, tx, state.rng), tx, 3,
                             20, len(X))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 fitted.params, expected.params)
    recon, mean, logvar = trainer.predict(state, X[:5])  # predict returns the pytree
    assert recon.shape == (5, 6) and mean.shape == logvar.shape == (5, 2)
    assert len(history["loss"]) == 3


def _contrastive_step(model, tx):
    """Two noisy views of each row; InfoNCE between their embeddings over the real rows."""
    def loss_of(params, state, x, mask):
        k1, k2 = jax.random.split(jax.random.fold_in(state.rng, state.step))
        z1 = model.apply({"params": params}, x + 0.1 * jax.random.normal(k1, x.shape))
        z2 = model.apply({"params": params}, x + 0.1 * jax.random.normal(k2, x.shape))
        z1, z2 = (z / jnp.linalg.norm(z, axis=-1, keepdims=True) for z in (z1, z2))
        logits = z1 @ z2.T / 0.5 + jnp.where(mask[None, :] > 0, 0.0, -1e9)
        per_example = optax.losses.softmax_cross_entropy_with_integer_labels(
            logits, jnp.arange(len(x)))
        return per_example

    def train_step(state, batch):
        def objective(params):
            values = loss_of(params, state, batch["x"], batch["mask"])
            return jnp.sum(values * batch["mask"]) / jnp.sum(batch["mask"]), values

        (_, values), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, opt_state=opt_state,
                            params=optax.apply_updates(state.params, updates))
        return new, {"loss": jdl.metrics.mean_stats(values, batch["mask"]),
                     "grad_norm": optax.tree.norm(grads)}

    return train_step, loss_of


def test_a_contrastive_custom_step_runs_inside_fit_like_a_hand_written_loop(tmp_path):
    model, tx = jdl.models.MLP(features=(16, 4)), optax.sgd(0.05)
    train_step, loss_of = _contrastive_step(model, tx)
    trainer = jdl.Trainer(model, loss=None, optimizer=tx, train_step=train_step)
    state = trainer.init(0, X[:1])
    fitted, history = trainer.fit(state, X, Y, epochs=3, batch_size=24, verbose=0)
    expected = _hand_written(
        lambda params, s, idx, mask: loss_of(params, s, jnp.asarray(X)[idx], mask),
        jdl.TrainState.create(state.params, tx, state.rng), tx, 3, 24, len(X))
    assert list(history) == ["loss", "grad_norm"] and len(history["loss"]) == 3
    assert int(fitted.step) == int(expected.step) == 9
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 fitted.params, expected.params)
    again, _ = trainer.fit(trainer.init(0, X[:1]), X, Y, epochs=3, batch_size=24, verbose=0,
                           steps_per_dispatch=1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), fitted.params,
                 again.params)  # fused == per-step dispatch
    with jdl.checkpoint.Checkpointer(tmp_path) as ckpt:  # checkpoints and resume keep working
        first, _ = trainer.fit(trainer.init(0, X[:1]), X, Y, epochs=2, batch_size=24, verbose=0,
                               checkpointing=jdl.checkpoint.Checkpointing(ckpt))
        resumed, _ = trainer.fit(trainer.init(0, X[:1]), X, Y, epochs=3, batch_size=24,
                                 verbose=0, checkpointing=jdl.checkpoint.Checkpointing(ckpt))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), fitted.params,
                 resumed.params)


def test_a_custom_step_without_a_loss_says_evaluation_needs_one():
    model, tx = jdl.models.MLP(features=(16, 4)), optax.sgd(0.05)
    train_step, _ = _contrastive_step(model, tx)
    trainer = jdl.Trainer(model, loss=None, optimizer=tx, train_step=train_step)
    state = trainer.init(0, X[:1])
    with pytest.raises(jdl.InputError, match="argument 'loss': expected a loss to evaluate"):
        trainer.evaluate(state, X, Y)
    with pytest.raises(jdl.InputError, match="argument 'precision': expected 'float32' with a "
                                             "custom train_step"):
        jdl.Trainer(model, loss=None, train_step=train_step, precision="bfloat16")


def test_a_custom_step_trains_a_population_and_keeps_the_nan_policy():
    model, tx = jdl.models.MLP(features=(16, 4)), optax.sgd(0.05)
    train_step, _ = _contrastive_step(model, tx)
    trainer = jdl.Trainer(model, loss=None, optimizer=tx, train_step=train_step)
    single = [trainer.fit(trainer.init(s, X[:1]), X, Y, epochs=2, batch_size=24, verbose=0)[0]
              for s in (3, 4)]
    members, history = trainer.fit(trainer.init(0, X[:1], population=2, seeds=[3, 4]), X, Y,
                                   epochs=2, batch_size=24, verbose=0)
    for i in range(2):
        jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                     members.params, single[i].params)
    assert np.shape(history["loss"]) == (2, 2)

    def exploding(state, batch):
        new, stats = train_step(state, batch)
        blown = jax.tree.map(lambda p: jnp.where(state.step == 1, jnp.nan, p), new.params)
        return new.replace(params=blown), stats

    guarded = jdl.Trainer(model, loss=None, optimizer=tx, train_step=exploding,
                          nan_policy="raise")
    with pytest.raises(jdl.errors.NonFiniteError, match="training step 1 was non-finite"):
        guarded.fit(guarded.init(0, X[:1]), X, Y, epochs=2, batch_size=24, verbose=0)


def test_log_norms_reports_the_norms_and_the_rate_computed_by_hand():
    model = jdl.models.MLP(features=(8, 1))
    trainer = jdl.Trainer(model, loss="binary_crossentropy", learning_rate=0.05,
                          schedule={"name": "cosine", "total_steps": 10}, nan_policy="raise",
                          metrics=["auc"])  # the guard's records beside the norms
    state = trainer.init(0, X[:1])
    fitted, history = trainer.fit(state, X, Y, epochs=1, batch_size=64, verbose=0,
                                  shuffle=False, log_norms=True)  # one step: the whole set

    def loss_fn(params):
        logits = model.apply({"params": params}, X)
        return jnp.mean(_per_example_bce(logits, Y))

    grads = jax.grad(loss_fn)(state.params)
    by_hand = {"grad_norm": optax.tree.norm(grads),
               "update_norm": optax.tree.norm(jax.tree.map(lambda a, b: a - b, fitted.params,
                                                           state.params)),
               "param_norm": optax.tree.norm(fitted.params),
               "grad_norm/dense_0": optax.tree.norm(grads["dense_0"]),
               "learning_rate": optax.cosine_decay_schedule(0.05, 10)(0)}
    for name, value in by_hand.items():
        np.testing.assert_allclose(history[name][0], value, rtol=1e-5, err_msg=name)
    assert list(history)[:5] == ["loss", "auc", "grad_norm", "param_norm", "update_norm"]
    assert "grad_norm" not in trainer.fit(state, X, Y, epochs=1, verbose=0)[1]  # off: absent


def test_log_norms_reads_a_population_s_injected_rates():
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy")
    members = trainer.init(0, X[:1], population=2, hparams={"learning_rate": [0.01, 0.2]})
    _, history = trainer.fit(members, X, Y, epochs=2, batch_size=32, verbose=0, log_norms=True)
    np.testing.assert_allclose(history["learning_rate"], [[0.01, 0.2]] * 2, rtol=1e-6)


def test_a_vae_trained_by_its_own_step_reports_its_terms_and_matches_a_hand_written_loop():
    """A researcher's VAE step: the reparameterization key from fold_in(rng, step), the
    reconstruction and KL terms reported apart as exact (total, count) statistics."""
    model, tx = VAE(), optax.adam(1e-2)
    apply = jdl.step.make_apply(model)

    def terms(params, state, x):
        key = jax.random.split(jax.random.fold_in(state.rng, state.step))[1]
        (recon, mean, logvar), _ = apply(params, {}, x, True, key)
        kl = -0.5 * jnp.sum(1 + logvar - mean ** 2 - jnp.exp(logvar), axis=-1)
        return jnp.sum((recon - x) ** 2, axis=-1), kl

    def train_step(state, batch):
        mask = batch["mask"]

        def objective(params):
            recon, kl = terms(params, state, batch["x"])
            return jnp.sum((recon + kl) * mask) / jnp.sum(mask), (recon, kl)

        (_, (recon, kl)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, opt_state=opt_state,
                            params=optax.apply_updates(state.params, updates))
        return new, {"loss": jdl.metrics.mean_stats(recon + kl, mask),
                     "reconstruction": jdl.metrics.mean_stats(recon, mask),
                     "kl": jdl.metrics.mean_stats(kl, mask)}

    trainer = jdl.Trainer(model, loss=None, optimizer=tx, train_step=train_step)
    state = trainer.init(0, X[:1])
    fitted, history = trainer.fit(state, X, X, epochs=3, batch_size=20, verbose=0)
    expected = _hand_written(lambda p, s, idx, mask: sum(terms(p, s, jnp.asarray(X)[idx])),
                             jdl.TrainState.create(state.params, tx, state.rng), tx, 3, 20,
                             len(X))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 fitted.params, expected.params)
    assert list(history)[0] == "loss" and set(history) == {"loss", "reconstruction", "kl"}
    # Exact over the padded last batch: the epoch's loss is the sum of its two terms.
    np.testing.assert_allclose(history["loss"], np.add(history["reconstruction"],
                                                       history["kl"]), rtol=1e-5)
