"""Model throughput: jaxdl against hand-written Flax+Optax, Keras 3 and PyTorch, in one run.

Prints one JSON line per model (and one for the data pipeline), every ratio measured in
this process:

- ``mlp``: the compute-bound MLP 1024-4096-4096-1024, batch 256, Adam, float32: steady
  steps/s of ``Trainer.fit`` against a hand-written donated ``jax.jit`` step, and the
  achieved FLOP/s (XLA cost analysis of the step) as a fraction of a plain ``jnp.dot``
  4096x4096 matmul's FLOP/s (target: at least 0.9).
- ``cnn``: ``jdl.models.CNN`` on 8x8 digits, batch 64: steady steps/s of ``fit`` against a
  hand-written donated step (target: within 1.1x) and Keras 3 (JAX backend) ``fit``
  (target: at least as fast per step); ``predict`` examples/s at batch 1 and 256 against
  Keras ``predict`` and PyTorch eager under ``no_grad`` (target: faster than both).
- ``resnet``, ``transformer``: steady steps/s against a hand-written donated step.
- ``pipeline``: the grain pipeline's examples/s on digits-shaped records against the CNN's
  consumption (target: at least 5x headroom).
- on a GPU: the transformer's MFU in bfloat16 (target on an H100: at least 45 %).

    .venv/bin/python benchmarks/throughput.py [--quick] [--models mlp,cnn,...]
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import log, timed  # noqa: E402

import jaxdl as jdl  # noqa: E402


def emit(record):
    print(json.dumps(record), flush=True)


def kit_steps_per_s(trainer, x, y, batch_size, epochs, repeats):
    """Steady steps/s of ``Trainer.fit`` (compiled once, then timed)."""
    state = trainer.init(0, x[:1])
    steps = epochs * -(-len(x) // batch_size)

    def fit():
        jax.block_until_ready(trainer.fit(state, x, y, epochs=epochs, batch_size=batch_size,
                                          verbose=0)[0].params)

    fit()
    return steps / timed(fit, repeats), state


def handwritten_steps_per_s(model, loss_fn, tx, x, y, batch_size, steps, repeats,
                            train_kwargs=None):
    """A hand-written Flax+Optax loop: one donated jitted step per batch, batches on device."""
    train_kwargs = train_kwargs or {}
    variables = model.init(jax.random.key(0), jnp.asarray(x[:1]))
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    opt_state = tx.init(params)

    @jax.jit
    def step(params, extra, opt_state, bx, by):
        def objective(p):
            if extra:
                out, updates = model.apply({"params": p, **extra}, bx, mutable=list(extra),
                                           **train_kwargs)
            else:
                out, updates = model.apply({"params": p}, bx, **train_kwargs), {}
            return jnp.mean(loss_fn(out, by)), updates

        (loss, updates), grads = jax.value_and_grad(objective, has_aux=True)(params)
        u, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, u), {**extra, **updates}, opt_state, loss

    step = jax.jit(step.__wrapped__, donate_argnums=(0, 1, 2))
    n = len(x) // batch_size * batch_size
    bx = jnp.asarray(x[:n]).reshape(-1, batch_size, *x.shape[1:])
    by = jnp.asarray(y[:n]).reshape(-1, batch_size, *y.shape[1:])
    state = [params, extra, opt_state]

    def run():
        p, e, o = state
        for i in range(steps):
            p, e, o, loss = step(p, e, o, bx[i % len(bx)], by[i % len(by)])
        jax.block_until_ready(loss)
        state[:] = [p, e, o]

    run()
    return steps / timed(run, repeats)


def matmul_flops_per_s(repeats, size=4096):
    a = jnp.ones((size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, a))
    seconds = timed(lambda: jax.block_until_ready(dot(a, a)), repeats)
    return 2 * size**3 / seconds


def bench_mlp(args):
    batch, widths = 256, (4096, 4096, 1024)
    rng = np.random.default_rng(0)
    steps = 8 if args.quick else 30
    x = rng.normal(size=(batch * steps, 1024)).astype(np.float32)
    y = rng.normal(size=(batch * steps, 1024)).astype(np.float32)
    model = jdl.models.MLP(features=widths)
    trainer = jdl.Trainer(model, loss="mse", optimizer="adam", learning_rate=1e-4)
    kit, state = kit_steps_per_s(trainer, x, y, batch, 1, args.repeats)
    hand = handwritten_steps_per_s(model, lambda o, t: jnp.mean((o - t) ** 2, -1),
                                   optax.adam(1e-4), x, y, batch, steps, args.repeats)
    spec = {"x": jax.ShapeDtypeStruct((batch, 1024), np.float32),
            "y": jax.ShapeDtypeStruct((batch, 1024), np.float32),
            "mask": jax.ShapeDtypeStruct((batch,), np.float32)}
    flops = trainer.programs.flops_per_step(state, spec)
    matmul = matmul_flops_per_s(args.repeats)
    record = {"model": "mlp", "shape": "1024-4096-4096-1024", "batch": batch,
              "steps_per_s": kit, "examples_per_s": kit * batch, "handwritten_steps_per_s": hand,
              "handwritten_over_jaxdl": hand / kit, "flops_per_step": flops,
              "achieved_flops_per_s": flops * kit if flops else None,
              "matmul_flops_per_s": matmul,
              "fraction_of_matmul": flops * kit / matmul if flops else None}
    log(f"mlp: {kit:.2f} steps/s (hand {hand:.2f}), "
        f"{record['fraction_of_matmul']:.2f} of the matmul's FLOP/s")
    return record


DIGITS_CNN = dict(features=(64, 128), dense=(256,), num_outputs=10)  # experiments/digits_cnn


def digits(n=None):
    data = jdl.data.load("digits", seed=0, images=True)
    x, y = data.x_train, data.y_train
    return (x, y) if n is None else (np.resize(x, (n, *x.shape[1:])), np.resize(y, n))


def keras_cnn():
    import keras

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def keras_steps_per_s(x, y, batch, epochs, repeats):
    model = keras_cnn()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile
    steps = epochs * (len(x) // batch)
    return steps / timed(lambda: model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0),
                         repeats), model


def torch_cnn():
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128 * 2 * 2, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10)).eval()


def predict_examples_per_s(predict, x, batch, repeats, calls):
    """Examples/s of ``predict(x[:batch])`` called ``calls`` times (a serving loop)."""
    chunk = x[:batch]
    predict(chunk)
    return batch * calls / timed(lambda: [predict(chunk) for _ in range(calls)], repeats)


def bench_cnn(args):
    batch, epochs = 64, (2 if args.quick else 10)
    x, y = digits(64 * 18)
    model = jdl.models.CNN(**DIGITS_CNN)
    trainer = jdl.Trainer(model, loss="sparse_categorical_crossentropy", learning_rate=1e-3)
    kit, state = kit_steps_per_s(trainer, x, y, batch, epochs, args.repeats)
    steps = epochs * (len(x) // batch)
    hand = handwritten_steps_per_s(
        model, lambda o, t: optax.softmax_cross_entropy_with_integer_labels(o, t),
        optax.adam(1e-3), x, y, batch, steps, args.repeats)
    record = {"model": "cnn", "config": "experiments/digits_cnn.py", "batch": batch,
              "steps_per_s": kit, "examples_per_s": kit * batch, "handwritten_steps_per_s": hand,
              "handwritten_over_jaxdl": hand / kit}
    try:
        keras, keras_model = keras_steps_per_s(x, y, batch, epochs, args.repeats)
        record.update(keras_steps_per_s=keras, jaxdl_over_keras=kit / keras)
    except ImportError as e:
        keras_model, record["keras"] = None, f"skipped: not installed ({e})"
    calls = 20 if args.quick else 200
    for b in (1, 256):
        xb = np.resize(x, (max(b, 256), *x.shape[1:]))
        kit_rate = predict_examples_per_s(
            lambda c: trainer.predict(state, c, batch_size=len(c)), xb, b, args.repeats,
            calls if b == 1 else calls // 10)
        record[f"predict_b{b}_examples_per_s"] = kit_rate
        if keras_model is not None:
            rate = predict_examples_per_s(lambda c: keras_model.predict(c, batch_size=len(c),
                                                                        verbose=0),
                                          xb, b, args.repeats, calls if b == 1 else calls // 10)
            record[f"keras_predict_b{b}_examples_per_s"] = rate
            record[f"predict_b{b}_jaxdl_over_keras"] = kit_rate / rate
        try:
            import torch

            net = torch_cnn()
            xt = torch.from_numpy(np.ascontiguousarray(xb.transpose(0, 3, 1, 2)))

            def torch_predict(c, net=net):
                with torch.no_grad():
                    return torch.softmax(net(c), -1).numpy()

            rate = predict_examples_per_s(torch_predict, xt, b, args.repeats,
                                          calls if b == 1 else calls // 10)
            record[f"torch_predict_b{b}_examples_per_s"] = rate
            record[f"predict_b{b}_jaxdl_over_torch"] = kit_rate / rate
        except ImportError as e:
            record["torch"] = f"skipped: not installed ({e})"
    log(f"cnn: {kit:.1f} steps/s (hand {hand:.1f}, keras {record.get('keras_steps_per_s', 0):.1f})")
    return record


def bench_resnet(args):
    batch, epochs = 64, (1 if args.quick else 4)
    x, y = digits(64 * 18)
    model = jdl.models.ResNet(stage_sizes=(2, 2, 2), widths=(16, 32, 64), stem_width=16)
    trainer = jdl.Trainer(model, loss="sparse_categorical_crossentropy", learning_rate=1e-3)
    kit, _ = kit_steps_per_s(trainer, x, y, batch, epochs, args.repeats)
    hand = handwritten_steps_per_s(
        model, lambda o, t: optax.softmax_cross_entropy_with_integer_labels(o, t),
        optax.adam(1e-3), x, y, batch, epochs * (len(x) // batch), args.repeats,
        train_kwargs={"train": True})
    log(f"resnet: {kit:.1f} steps/s (hand {hand:.1f})")
    return {"model": "resnet", "config": "experiments/digits_resnet.py", "batch": batch,
            "steps_per_s": kit, "examples_per_s": kit * batch, "handwritten_steps_per_s": hand,
            "handwritten_over_jaxdl": hand / kit}


CHARLM = dict(vocab_size=256, num_layers=4, num_heads=4, embed_dim=192, mlp_dim=768,
              max_len=128)  # experiments/charlm.py


def bench_transformer(args):
    """The charlm Transformer (float32 here; bfloat16 and its MFU on an accelerator)."""
    batch, length = 32, 128
    steps = 3 if args.quick else 12
    rng = np.random.default_rng(0)
    text = rng.integers(0, 256, size=(batch * steps, length + 1)).astype(np.int32)
    x, y = text[:, :-1], text[:, 1:]
    accelerator = jax.default_backend() != "cpu"
    precision = "bfloat16" if accelerator else "float32"
    model = jdl.models.Transformer(**CHARLM)
    trainer = jdl.Trainer(model, loss="sparse_categorical_crossentropy", learning_rate=1e-3,
                          precision=precision)
    kit, state = kit_steps_per_s(trainer, x, y, batch, 1, args.repeats)
    hand = handwritten_steps_per_s(
        model, lambda o, t: optax.softmax_cross_entropy_with_integer_labels(o, t).mean(-1),
        optax.adam(1e-3), x, y, batch, steps, args.repeats)
    spec = {"x": jax.ShapeDtypeStruct((batch, length), np.int32),
            "y": jax.ShapeDtypeStruct((batch, length), np.int32),
            "mask": jax.ShapeDtypeStruct((batch,), np.float32)}
    flops = trainer.programs.flops_per_step(state, spec)
    record = {"model": "transformer", "config": "experiments/charlm.py", "batch": batch,
              "seq_len": length, "precision": precision, "steps_per_s": kit,
              "tokens_per_s": kit * batch * length, "examples_per_s": kit * batch,
              "handwritten_steps_per_s": hand, "handwritten_over_jaxdl": hand / kit,
              "flops_per_step": flops}
    from jaxdl.train import perf

    peak = perf.peak_flops()
    if peak and flops:
        record["mfu"] = flops * kit / peak
    log(f"transformer: {kit:.2f} steps/s (hand {hand:.2f})")
    return record


def bench_pipeline(args, consumers):
    """The grain pipeline's examples/s on digits-shaped records vs the models' consumption."""
    x, y = digits(64 * 400)
    with tempfile.TemporaryDirectory() as tmp:
        records = jdl.data.write_records(Path(tmp) / "digits", {"x": x, "y": y})
        with jdl.data.Pipeline(records, batch_size=64, seed=0) as pipe:
            steps = pipe.steps_per_epoch

            def read():
                for first in range(0, steps, 50):
                    pipe.batches(0, first, min(50, steps - first))

            read()
            rate = len(x) / timed(read, args.repeats)
    record = {"model": "pipeline", "records": "digits [8, 8, 1] float32, batch 64",
              "examples_per_s": rate}
    for name, consumed in consumers.items():
        record[f"headroom_over_{name}"] = rate / consumed
    log(f"pipeline: {rate:,.0f} examples/s; headroom {record}")
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn,resnet,transformer,pipeline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    benches = {"mlp": bench_mlp, "cnn": bench_cnn, "resnet": bench_resnet,
               "transformer": bench_transformer}
    consumers = {}
    for name in args.models.split(","):
        try:
            if name == "pipeline":
                record = bench_pipeline(args, consumers)
            elif name in benches:
                record = benches[name](args)
                consumers[name] = record["examples_per_s"]
            else:
                record = {"model": name, "note": "skipped: not available in this checkout"}
        except Exception as e:  # one model failing does not hide the others' figures
            import traceback

            traceback.print_exc(file=sys.stderr)
            record = {"model": name, "note": f"failed: {type(e).__name__}: {e}"}
        record.update({"device": jax.devices()[0].device_kind, "backend": jax.default_backend()})
        emit(record)


if __name__ == "__main__":
    main()
