"""Seed workload: jaxdl against hand-written JAX, Keras 3 (JAX backend) and PyTorch, in one run.

Every peer trains the same model on the same data with the same settings: an MLP 30->10->10->1
(relu, logits + sigmoid binary cross-entropy), Adam 1e-3, batch 32, float32, on the
breast_cancer split of `jdl.data.load("breast_cancer", seed=0)`. It measures:

- steady-state microseconds per training step (compile/warm-up excluded, `--epochs` epochs,
  median of `--repeats` timed calls, no validation pass) for a hand-written Flax+Optax loop
  with all epochs in one jitted `lax.scan`, a hand-written loop with one jitted dispatch per
  step, a lean hand-written loop (one jitted scan over every step, jaxdl's batch order drawn
  beforehand, loss and accuracy per step: the floor a kit's fused fit can approach),
  `jaxdl.Trainer.fit` (steps_per_dispatch "auto" and 1), Keras `model.fit` and an eager
  PyTorch loop;
- wall time of whole processes: `jaxdl train --config experiments/simplenet_exact.py` with a
  cold and a warm compilation cache (JAXDL_CACHE_DIR) against `benchmarks/torch_seed_script.py`;
- seed-settings test accuracy of jaxdl (the CLI's metrics.jsonl) against Keras on the same split
  (Keras: mean over 5 init seeds, because one seed's accuracy is noisier than the 0.03 target).

It prints exactly one JSON line on stdout; progress and library chatter go to stderr. A peer
that is not installed, or a jaxdl part that does not exist yet, becomes a note field instead of
a crash.

Run it (about 3-5 minutes on 2 CPU cores; `--quick` is a smoke run of well under a minute):
    .venv/bin/python benchmarks/seed_workload.py [--epochs 100] [--repeats 3] [--quick]
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

# Keras reads its backend once, at import; it must be set before anything imports keras.
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import linen as nn  # noqa: E402
from timing import log, timed  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Benchmark the checkout this file lives in, even when another jaxdl is installed in the venv.
sys.path.insert(0, str(REPO))

SEED = 0
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
HIDDEN = (10, 10)
SEED_EPOCHS = 10  # the seed settings of experiments/simplenet_exact.py
SUBPROCESS_TIMEOUT_S = 300
TARGETS = {  # (field, comparison, bound) from the brief of this benchmark
    "keras_over_jaxdl": (">=", 20.0),
    "torch_over_jaxdl": (">=", 20.0),
    "jaxdl_over_handwritten_scan": ("<=", 1.15),
    "jaxdl_over_lean_scan": ("<=", 1.15),
    "cold_over_torch": ("<=", 1.2),
    "warm_over_torch": ("<=", 0.7),
    "accuracy_gap": ("<=", 0.03),
}


def note_failure(what, exc):
    """Turns an exception into a one-line note; the traceback goes to stderr for debugging."""
    if isinstance(exc, ImportError):
        return f"skipped: not installed ({exc})"
    if isinstance(exc, FileNotFoundError):
        return f"skipped: {exc}"
    traceback.print_exception(exc, file=sys.stderr)
    return f"failed in {what}: {type(exc).__name__}: {exc}"


def steps_per_epoch(n):
    return -(-n // BATCH_SIZE)  # the last partial batch is a step too, as in Keras and PyTorch


median_time = timed  # benchmarks/timing.py: `run` must block until its work is done


# ----------------------------------------------------------------------------------------- data


def load_data(notes):
    import jaxdl as jdl

    notes["data"] = "jaxdl.data.load('breast_cancer', seed=0)"
    return jdl.data.load("breast_cancer", seed=SEED)


# ---------------------------------------------------------------------------------- hand-written


class MLP(nn.Module):
    """The hand-written baseline's network: Dense-relu-Dense-relu-Dense, logits out."""

    features: tuple = (*HIDDEN, 1)

    @nn.compact
    def __call__(self, x):
        for width in self.features[:-1]:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.features[-1])(x)


def masked_bce(model, params, xb, yb, mb):
    """Mean sigmoid BCE over the real rows of a padded batch (mask 1 = real, 0 = padding)."""
    logits = model.apply(params, xb)[:, 0]
    per_example = optax.sigmoid_binary_cross_entropy(logits, yb.astype(jnp.float32))
    return jnp.sum(per_example * mb) / jnp.maximum(jnp.sum(mb), 1.0)


def make_sgd_step(model, tx):
    def step(carry, batch):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(partial(masked_bce, model))(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


def padded_order(n, perm, xp=jnp):
    """Batch index matrix (steps, B) and mask for one epoch; the padded tail points at row 0.

    `xp` is jnp inside jit and np in the host loop, where jnp would add dispatches per epoch.
    """
    steps = steps_per_epoch(n)
    pad = steps * BATCH_SIZE - n
    idx = xp.concatenate([perm, xp.zeros((pad,), perm.dtype)]).reshape(steps, BATCH_SIZE)
    mask = (xp.arange(steps * BATCH_SIZE) < n).astype(xp.float32).reshape(steps, BATCH_SIZE)
    return idx, mask


def make_scan_fit(model, tx, epochs):
    """All epochs in one jitted program: scan over epochs, each a scan over its batches."""
    step = make_sgd_step(model, tx)

    @jax.jit
    def fit(params, opt_state, key, x, y):
        n = x.shape[0]

        def epoch(carry, epoch_key):
            # Shuffling on device keeps the whole run inside one dispatch.
            idx, mask = padded_order(n, jax.random.permutation(epoch_key, n))
            carry, losses = jax.lax.scan(step, carry, (x[idx], y[idx], mask))
            return carry, losses.mean()

        (params, opt_state), losses = jax.lax.scan(
            epoch, (params, opt_state), jax.random.split(key, epochs)
        )
        return params, opt_state, losses

    return fit


def bench_handwritten_scan(data, epochs, repeats):
    model, tx = MLP(), optax.adam(LEARNING_RATE)
    params = model.init(jax.random.key(SEED), data.x_train[:1])
    opt_state = tx.init(params)
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    key = jax.random.key(SEED + 1)
    fit = make_scan_fit(model, tx, epochs)
    jax.block_until_ready(fit(params, opt_state, key, x, y))  # compile + first run
    # No donation, so every timed call starts from the same fresh state.
    seconds = median_time(lambda: jax.block_until_ready(fit(params, opt_state, key, x, y)), repeats)

    # Seed settings, for reference next to jaxdl's and Keras's accuracy.
    seed_params, _, _ = make_scan_fit(model, tx, SEED_EPOCHS)(params, opt_state, key, x, y)
    test_logits = model.apply(seed_params, data.x_test)[:, 0]
    accuracy = float(jnp.mean((test_logits > 0) == (data.y_test == 1)))
    return {
        "handwritten_scan_us_per_step": 1e6 * seconds / (epochs * steps_per_epoch(len(x))),
        "handwritten_test_accuracy": accuracy,
    }


def bench_handwritten_per_step(data, epochs, repeats):
    model, tx = MLP(), optax.adam(LEARNING_RATE)
    params = model.init(jax.random.key(SEED), data.x_train[:1])
    opt_state = tx.init(params)
    # Data stays on device; only a (B,) index vector and mask cross per step, so the figure is
    # dispatch overhead plus compute, not host-to-device copies.
    x, y = jax.device_put(data.x_train), jax.device_put(data.y_train)
    n = x.shape[0]
    sgd_step = make_sgd_step(model, tx)

    @partial(jax.jit, donate_argnums=0)
    def train_step(state, idx, mask):
        return sgd_step(state, (x[idx], y[idx], mask))

    def run(n_epochs):
        # Donation consumes the state, so each run starts from a copy of the initial one.
        state = jax.tree.map(jnp.copy, (params, opt_state))
        rng = np.random.default_rng(SEED)
        for _ in range(n_epochs):
            idx, mask = padded_order(n, rng.permutation(n).astype(np.int32), xp=np)
            for s in range(len(idx)):
                state, _ = train_step(state, idx[s], mask[s])
        jax.block_until_ready(state)

    run(1)  # compile
    seconds = median_time(lambda: run(epochs), repeats)
    return {"handwritten_per_step_us_per_step": 1e6 * seconds / (epochs * steps_per_epoch(n))}


def lean_batches(n, epochs):
    """jaxdl's batches for seed SEED: row indices [epochs * steps, B] and masks (0 = padding)."""
    from jaxdl.data import arrays

    steps = steps_per_epoch(n)
    orders = (arrays.epoch_order(SEED, epoch, n) for epoch in range(epochs))
    idx = np.concatenate([arrays.block_indices(o, BATCH_SIZE, 0, steps) for o in orders])
    mask = (np.arange(steps * BATCH_SIZE) < n).astype(np.float32).reshape(steps, BATCH_SIZE)
    return idx, np.tile(mask, (epochs, 1))


def make_lean_fit(model, tx):
    """One jitted scan over every step of the run: gather the rows, step, loss and accuracy."""

    def objective(params, xb, yb, mb):
        logits = model.apply(params, xb)[:, 0]
        per_example = optax.sigmoid_binary_cross_entropy(logits, yb.astype(jnp.float32))
        count = jnp.maximum(jnp.sum(mb), 1.0)
        hits = ((logits > 0) == (yb == 1)).astype(jnp.float32)
        return jnp.sum(per_example * mb) / count, jnp.sum(hits * mb) / count

    @jax.jit
    def fit(params, opt_state, x, y, idx, mask):
        def step(carry, batch):
            params, opt_state = carry
            rows, mb = batch
            xb, yb = jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0)
            grad_fn = jax.value_and_grad(objective, has_aux=True)
            (loss, accuracy), grads = grad_fn(params, xb, yb, mb)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, accuracy)

        return jax.lax.scan(step, (params, opt_state), (idx, mask))

    return fit


def bench_lean_scan(data, epochs, repeats):
    model, tx = MLP(), optax.adam(LEARNING_RATE)
    params = model.init(jax.random.key(SEED), data.x_train[:1])
    opt_state = tx.init(params)
    n = len(data.x_train)
    # The batch order is drawn before timing: the figure is the compiled loop alone.
    arrays = jax.device_put((data.x_train, data.y_train, *lean_batches(n, epochs)))
    fit = make_lean_fit(model, tx)
    jax.block_until_ready(fit(params, opt_state, *arrays))  # compile + first run
    seconds = median_time(lambda: jax.block_until_ready(fit(params, opt_state, *arrays)), repeats)
    return {"lean_scan_us_per_step": 1e6 * seconds / (epochs * steps_per_epoch(n))}


# ----------------------------------------------------------------------------------------- jaxdl


def bench_jaxdl_fit(data, epochs, repeats, steps_per_dispatch):
    import jaxdl as jdl

    model = jdl.models.MLP(features=(*HIDDEN, 1), activation="relu")
    trainer = jdl.Trainer(
        model,
        optimizer=optax.adam(LEARNING_RATE),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    x, y = data.x_train, data.y_train

    def run():
        # A fresh state per call: fit may donate it, and every call should do the same work.
        state = jax.block_until_ready(trainer.init(jax.random.key(SEED), x[:1]))
        start = time.perf_counter()
        state, _ = trainer.fit(
            state,
            x,
            y,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            steps_per_dispatch=steps_per_dispatch,
            verbose=0,
        )
        jax.block_until_ready(state)
        return time.perf_counter() - start

    run()  # compile, with the same epochs so the timed calls reuse the same programs
    seconds = statistics.median(run() for _ in range(repeats))
    return 1e6 * seconds / (epochs * steps_per_epoch(len(x)))


# ----------------------------------------------------------------------------------------- Keras


def keras_model(keras, n_features):
    model = keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(HIDDEN[0], activation="relu"),
            keras.layers.Dense(HIDDEN[1], activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def bench_keras(data, epochs, repeats, accuracy_seeds):
    import keras

    out = {"keras_backend": keras.backend.backend(), "keras_version": keras.__version__}
    x = data.x_train
    y = data.y_train.astype(np.float32).reshape(-1, 1)  # match the (n, 1) sigmoid output
    keras.utils.set_random_seed(SEED)
    model = keras_model(keras, x.shape[1])
    # The warm-up compiles both batch shapes (full and last partial); timed fits continue
    # training the same model, which costs the same per step.
    model.fit(x, y, epochs=1, batch_size=BATCH_SIZE, verbose=0)
    seconds = median_time(
        lambda: model.fit(x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0), repeats
    )
    out["keras_fit_us_per_step"] = 1e6 * seconds / (epochs * steps_per_epoch(len(x)))

    # Seed settings (the accuracy peer of simplenet_exact), from fresh models. After 10 epochs
    # the test accuracy still swings by several points with the init seed (0.85-0.95 seen on
    # this split), more than the 0.03 gap target, so the figure is a mean over seeds.
    accuracies = []
    for seed in range(accuracy_seeds):
        keras.utils.set_random_seed(seed)
        model = keras_model(keras, x.shape[1])
        model.fit(x, y, epochs=SEED_EPOCHS, batch_size=BATCH_SIZE, verbose=0)
        y_test = data.y_test.astype(np.float32).reshape(-1, 1)
        test = model.evaluate(data.x_test, y_test, verbose=0, return_dict=True)
        accuracies.append(float(test["accuracy"]))
    out["keras_test_accuracy"] = statistics.mean(accuracies)
    out["keras_test_accuracy_per_seed"] = accuracies
    return out


# --------------------------------------------------------------------------------------- PyTorch


def bench_torch(data, epochs, repeats):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(SEED)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train.astype(np.float32))
    n = len(x)
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], HIDDEN[0]),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN[0], HIDDEN[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN[1], 1),
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def run(n_epochs):
        for _ in range(n_epochs):
            order = torch.randperm(n)
            for first in range(0, n, BATCH_SIZE):
                idx = order[first : first + BATCH_SIZE]
                optimizer.zero_grad()
                loss_fn(model(x[idx])[:, 0], y[idx]).backward()
                optimizer.step()

    run(1)  # warm-up: allocator, autograd and thread pool
    seconds = median_time(lambda: run(epochs), repeats)
    return {
        "torch_eager_us_per_step": 1e6 * seconds / (epochs * steps_per_epoch(n)),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------ whole processes


def timed_process(cmd, env=None):
    """Wall seconds of one process start-to-exit; raises with its stderr tail if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}: {tail}")
    return seconds


def jaxdl_command():
    entry_point = Path(sys.executable).parent / "jaxdl"
    # `python -m jaxdl` (jaxdl/__main__.py) when the package is not pip-installed in the venv.
    base = [str(entry_point)] if entry_point.exists() else [sys.executable, "-m", "jaxdl"]
    return [*base, "train", "--config", "experiments/simplenet_exact.py"]


def test_metrics(workdir):
    lines = (Path(workdir) / "metrics.jsonl").read_text().strip().splitlines()
    last = json.loads(lines[-1])
    if last.get("split") != "test":
        raise ValueError(f"last line of metrics.jsonl is not the test evaluation: {last}")
    return last


def bench_jaxdl_cli(repeats):
    """Each repeat: a fresh cache dir, one cold run, then one warm run reusing that cache."""
    if not (REPO / "experiments" / "simplenet_exact.py").exists():
        raise FileNotFoundError("experiments/simplenet_exact.py does not exist yet")
    env = dict(os.environ)
    # A cache inherited from the caller's environment would make the "cold" run warm.
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cold, warm, accuracies = [], [], []
    root = Path(tempfile.mkdtemp(prefix="jaxdl_seed_bench_"))
    try:
        for r in range(repeats):
            env["JAXDL_CACHE_DIR"] = str(root / f"cache{r}")
            for kind, times in (("cold", cold), ("warm", warm)):
                # A fresh workdir per run, so no run resumes from another's checkpoint.
                workdir = root / f"work{r}_{kind}"
                times.append(timed_process([*jaxdl_command(), "--workdir", workdir], env))
                accuracies.append(float(test_metrics(workdir)["accuracy"]))
                log(f"  jaxdl train {kind} #{r + 1}: {times[-1]:.2f}s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {
        "jaxdl_train_cold_s": statistics.median(cold),
        "jaxdl_train_warm_s": statistics.median(warm),
        "jaxdl_test_accuracy": accuracies[0],
    }
    if len(set(accuracies)) > 1:  # same config and seed: runs should agree exactly
        out["jaxdl_test_accuracy_note"] = f"runs disagree: {accuracies}"
    return out


def bench_torch_script(repeats):
    import torch  # noqa: F401  (only to skip cleanly when PyTorch is absent)

    cmd = [sys.executable, str(REPO / "benchmarks" / "torch_seed_script.py")]
    seconds = []
    for r in range(repeats):
        seconds.append(timed_process(cmd))
        log(f"  torch_seed_script #{r + 1}: {seconds[-1]:.2f}s")
    return {"torch_script_s": statistics.median(seconds)}


# ------------------------------------------------------------------------------------------ main


def ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def add_ratios(result):
    r = result
    r["keras_over_jaxdl"] = ratio(r.get("keras_fit_us_per_step"), r.get("jaxdl_fit_us_per_step"))
    r["torch_over_jaxdl"] = ratio(r.get("torch_eager_us_per_step"), r.get("jaxdl_fit_us_per_step"))
    r["jaxdl_over_handwritten_scan"] = ratio(
        r.get("jaxdl_fit_us_per_step"), r.get("handwritten_scan_us_per_step")
    )
    r["jaxdl_over_lean_scan"] = ratio(
        r.get("jaxdl_fit_us_per_step"), r.get("lean_scan_us_per_step")
    )
    r["cold_over_torch"] = ratio(r.get("jaxdl_train_cold_s"), r.get("torch_script_s"))
    r["warm_over_torch"] = ratio(r.get("jaxdl_train_warm_s"), r.get("torch_script_s"))
    if r.get("jaxdl_test_accuracy") is not None and r.get("keras_test_accuracy") is not None:
        r["accuracy_gap"] = abs(r["jaxdl_test_accuracy"] - r["keras_test_accuracy"])
    else:
        r["accuracy_gap"] = None
    r["targets_met"] = {
        name: (r[name] >= bound if op == ">=" else r[name] <= bound)
        for name, (op, bound) in TARGETS.items()
        if r.get(name) is not None
    }


def run_part(result, name, fn, *args):
    """Runs one peer; its figures join `result`, or a note under `name` explains their absence."""
    log(f"[seed_workload] {name} ...")
    start = time.perf_counter()
    try:
        result.update(fn(*args))
    except Exception as exc:
        result[name] = note_failure(name, exc)
        log(f"  -> {result[name]}")
    log(f"  ({time.perf_counter() - start:.1f}s)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per steady-state timing (default 100; 10 with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls / processes per figure, median kept (default 3; 1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer epochs, repeats")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (10 if args.quick else 100)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    result = {
        "benchmark": "seed_workload",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "batch_size": BATCH_SIZE,
        "quick": args.quick,
    }
    # Libraries may print to stdout; the one JSON line must be alone there.
    with contextlib.redirect_stdout(sys.stderr):
        data = load_data(result)
        result["n_train"] = int(len(data.x_train))
        result["steps_per_epoch"] = steps_per_epoch(len(data.x_train))
        e, k = args.epochs, args.repeats
        run_part(result, "handwritten_scan", bench_handwritten_scan, data, e, k)
        run_part(result, "handwritten_per_step", bench_handwritten_per_step, data, e, k)
        run_part(result, "lean_scan", bench_lean_scan, data, e, k)
        run_part(
            result,
            "jaxdl",
            lambda: {
                "jaxdl_fit_us_per_step": bench_jaxdl_fit(data, e, k, "auto"),
                "jaxdl_fit_us_per_step_dispatch_1": bench_jaxdl_fit(data, e, k, 1),
            },
        )
        run_part(result, "keras", bench_keras, data, e, k, 2 if args.quick else 5)
        run_part(result, "torch", bench_torch, data, e, k)
        run_part(result, "jaxdl_cli", bench_jaxdl_cli, k)
        run_part(result, "torch_script", bench_torch_script, k)
        add_ratios(result)
    result["total_s"] = time.perf_counter() - start
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
