"""Populations: a 64-member learning-rate sweep as one program vs 64 runs, in one process.

The reference workflow (the default experiment's data and model: breast_cancer, an MLP
30->10->10->1, Adam, batch 32, float32) swept over 64 learning rates from 1e-4 to 1:

- end to end (one process, compiles included, no persistent cache): one jaxdl population
  of 64 members (``Trainer.init(population=64, hparams=...)`` + ``fit``) against 64
  sequential single-model jaxdl runs, each a new ``Trainer`` as a sweep script would write
  it (target: the population at least 20x faster);
- steady state (compiled, warm): microseconds per member-step of the population against
  a single model's step on the same data (target: at most 0.5x on the 2-core machine),
  and against a hand-written ``jax.vmap`` over 64 members of a Flax+Optax step with all
  epochs in one jitted ``lax.scan`` (the peer: what the kit adds on top of plain vmap);
- an 8-member learning-rate sweep of the digits CNN (``population_mode="auto"``, which
  trains members one by one on CPU where vmapped convolutions are slow) against 8
  sequential single fits of the same compiled model in the same process, both warm
  (target: the population never slower: ratio >= 1), and the vmapped population beside.

Prints exactly one JSON line on stdout; progress goes to stderr.

    .venv/bin/python benchmarks/population.py [--members 64] [--epochs 30] [--quick]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import log, timed  # noqa: E402

import jaxdl as jdl  # noqa: E402

BATCH_SIZE = 32
TARGETS = {"sequential_over_population": (">=", 20.0), "member_step_over_single": ("<=", 0.5),
           "cnn_singles_over_population": (">=", 1.0)}



def trainer(learning_rate=1e-3):
    return jdl.Trainer(jdl.models.MLP(features=(10, 10, 1)), loss="binary_crossentropy",
                       metrics=["accuracy"], learning_rate=learning_rate)


def end_to_end(data, lrs, epochs, sequential):
    x, y, val = data.x_train, data.y_train, (data.x_val, data.y_val)
    started = time.perf_counter()
    t = trainer()
    state = t.init(0, x[:1], hparams={"learning_rate": lrs})
    state, history = t.fit(state, x, y, epochs=epochs, batch_size=BATCH_SIZE,
                           validation_data=val, verbose=0)
    results = t.evaluate(state, data.x_test, data.y_test)
    population_s = time.perf_counter() - started
    best = jdl.population.best(state, history, "val_loss")
    log(f"population of {len(lrs)}: {population_s:.2f}s, best member {best.index} "
        f"(lr {best.hparams['learning_rate']:.3g}) test accuracy "
        f"{results['accuracy'][best.index]:.4f}")
    started = time.perf_counter()
    single_accuracy = []
    for i, lr in enumerate(lrs[:sequential]):
        t = trainer(float(lr))
        s, _ = t.fit(t.init(i, x[:1]), x, y, epochs=epochs, batch_size=BATCH_SIZE,
                     validation_data=val, verbose=0)
        single_accuracy.append(t.evaluate(s, data.x_test, data.y_test)["accuracy"])
    sequential_s = (time.perf_counter() - started) * len(lrs) / sequential
    log(f"{sequential} sequential runs: {sequential_s * sequential / len(lrs):.2f}s "
        f"(-> {sequential_s:.1f}s for {len(lrs)})")
    return {"population_s": population_s, "sequential_s": sequential_s,
            "sequential_runs_timed": sequential,
            "sequential_over_population": sequential_s / population_s,
            "best_member": best.index, "best_learning_rate": best.hparams["learning_rate"],
            "best_test_accuracy": float(results["accuracy"][best.index])}



def steady_state(data, lrs, epochs, repeats):
    x, y = data.x_train, data.y_train
    steps = epochs * -(-len(x) // BATCH_SIZE)
    single = trainer()
    state = single.init(0, x[:1])

    def fit_single():
        jax.block_until_ready(single.fit(state, x, y, epochs=epochs, batch_size=BATCH_SIZE,
                                         verbose=0)[0].params)

    fit_single()
    single_s = timed(fit_single, repeats)
    pop = trainer()
    pstate = pop.init(0, x[:1], hparams={"learning_rate": lrs})

    def fit_population():
        jax.block_until_ready(pop.fit(pstate, x, y, epochs=epochs, batch_size=BATCH_SIZE,
                                      verbose=0)[0].params)

    fit_population()
    population_s = timed(fit_population, repeats)
    hand_s = handwritten_vmap(x, y, lrs, epochs, repeats)
    n = len(lrs)
    out = {"single_us_per_step": 1e6 * single_s / steps,
           "population_us_per_step": 1e6 * population_s / steps,
           "member_step_us": 1e6 * population_s / steps / n,
           "handwritten_vmap_member_step_us": 1e6 * hand_s / steps / n}
    out["member_step_over_single"] = out["member_step_us"] / out["single_us_per_step"]
    out["handwritten_member_step_over_single"] = (out["handwritten_vmap_member_step_us"]
                                                  / out["single_us_per_step"])
    out["population_over_handwritten_vmap"] = population_s / hand_s
    log(f"steady state: single {out['single_us_per_step']:.1f} us/step, population "
        f"{out['population_us_per_step']:.1f} us/step = {out['member_step_us']:.2f} "
        f"us/member-step ({out['member_step_over_single']:.3f}x); hand-written vmap "
        f"{out['handwritten_vmap_member_step_us']:.2f} us/member-step")
    return out


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(10)(x))
        x = nn.relu(nn.Dense(10)(x))
        return nn.Dense(1)(x)


def handwritten_vmap(x, y, lrs, epochs, repeats):
    """The peer: vmap over members of a Flax+Optax step, all epochs in one jitted scan."""
    model = MLP()
    n, spe = len(x), -(-len(x) // BATCH_SIZE)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)

    def init(key, lr):
        params = model.init(key, jnp.zeros((1, x.shape[1])))["params"]
        opt_state = tx.init(params)
        opt_state.hyperparams["learning_rate"] = lr
        return params, opt_state

    def step(carry, batch):
        params, opt_state = carry
        bx, by, mask = batch

        def loss_fn(p):
            logits = model.apply({"params": p}, bx)[:, 0]
            per = optax.sigmoid_binary_cross_entropy(logits, by.astype(jnp.float32))
            return jnp.sum(per * mask) / jnp.sum(mask)

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @jax.jit
    def train(states, data_x, data_y, idx, mask):
        def one_step(states, rows):
            batch = (data_x[rows[0]], data_y[rows[0]], rows[1])
            return jax.vmap(lambda s: step(s, batch)[0])(states), None

        return jax.lax.scan(one_step, states, (idx, mask))[0]

    order = np.concatenate([jdl.data.arrays.epoch_order(0, e, n) for e in range(epochs)])
    padded = spe * BATCH_SIZE
    idx = np.stack([np.resize(order[e * n:(e + 1) * n], padded) for e in range(epochs)])
    idx = idx.reshape(epochs * spe, BATCH_SIZE)
    mask = np.tile((np.arange(padded) < n).astype(np.float32).reshape(spe, BATCH_SIZE),
                   (epochs, 1))
    states = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), len(lrs)),
                                     jnp.asarray(lrs, jnp.float32))
    data_x, data_y = jnp.asarray(x), jnp.asarray(y)
    run = lambda: jax.block_until_ready(train(states, data_x, data_y, idx, mask))
    run()
    return timed(run, repeats)


def cnn_sweep(members, epochs, repeats):
    """The digits CNN swept over ``members`` learning rates: population vs single fits."""
    data = jdl.data.load("digits", seed=0, images=True)
    model = jdl.models.CNN(features=(64, 128), dense=(256,), num_outputs=10, dropout_rate=0.3)
    lrs = [float(v) for v in np.geomspace(1e-4, 1e-2, members)]
    x, y = data.x_train, data.y_train
    fit = dict(epochs=epochs, batch_size=64, verbose=0)
    pop = jdl.Trainer(model, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    single = jdl.Trainer(model, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                         optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))

    # Initialized once (fit leaves the given state valid): both sides time fitting only.
    members_state = pop.init(0, x[:1], population=members, hparams={"learning_rate": lrs})
    # One compiled trainer, its learning rate set per fit as data (no compile).
    single_states = [jdl.population.set_hparams(single.init(i, x[:1]), {"learning_rate": lr})
                     for i, lr in enumerate(lrs)]

    def population(mode):
        jax.block_until_ready(pop.fit(members_state, x, y, population_mode=mode, **fit)[0].step)

    def singles():
        for state in single_states:
            jax.block_until_ready(single.fit(state, x, y, **fit)[0].step)

    for fn in (lambda: population("auto"), lambda: population("vmap"), singles):
        fn()  # compile
    auto, vmap, alone = (timed(fn, repeats) for fn in (
        lambda: population("auto"), lambda: population("vmap"), singles))
    log(f"CNN sweep of {members}: population auto {auto:.2f}s, vmap {vmap:.2f}s, "
        f"{members} single fits {alone:.2f}s")
    return {"cnn_members": members, "cnn_epochs": epochs, "cnn_population_auto_s": auto,
            "cnn_population_vmap_s": vmap, "cnn_single_fits_s": alone,
            "cnn_singles_over_population": alone / auto}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steady-epochs", type=int, default=100)
    parser.add_argument("--sequential", type=int, default=None,
                        help="time this many sequential runs and scale to --members "
                        "(default: all of them)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cnn-members", type=int, default=8)
    parser.add_argument("--cnn-epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 members")
    args = parser.parse_args()
    if args.quick:
        args.members, args.epochs, args.steady_epochs, args.repeats = 8, 3, 5, 1
        args.cnn_members, args.cnn_epochs = 2, 1
    data = jdl.data.load("breast_cancer", seed=0)
    # The process's first compile also starts the XLA backend: pay it before timing
    # either side, so neither is charged for it.
    jax.block_until_ready(jax.jit(lambda a: a + 1)(jnp.zeros(3)))
    lrs = np.geomspace(1e-4, 1.0, args.members).astype(np.float32)
    record = {"benchmark": "population", "members": args.members, "epochs": args.epochs,
              "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    record.update(end_to_end(data, lrs, args.epochs, args.sequential or args.members))
    record.update(steady_state(data, lrs, args.steady_epochs, args.repeats))
    record.update(cnn_sweep(args.cnn_members, args.cnn_epochs, args.repeats))
    record["targets_met"] = {k: (record[k] >= bound if op == ">=" else record[k] <= bound)
                             for k, (op, bound) in TARGETS.items()}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
