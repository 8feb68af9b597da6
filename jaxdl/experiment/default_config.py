"""The default experiment (`jaxdl train` with no arguments): SimpleNet on breast cancer.

The reference workflow: Dense(10, relu) -> Dense(10, relu) -> Dense(1) logits,
binary cross-entropy, Adam, accuracy; scikit-learn's breast-cancer set split
65/15/20 (stratified, seed 0) and standardized on the training split only.
Compared with the seed's exact settings (``experiments/simplenet_exact.py``:
adam 1e-3, 10 epochs) it trains longer at a higher learning rate.

    jaxdl train                                        # this config
    jaxdl train --config experiments/simplenet.py --workdir /tmp/simplenet

Result on the 2-core CPU machine: see the README's experiments table.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # records: a folder from `jaxdl data prepare --out DIR` (DIR/train, val, test) read
    # instead of `name`; pipeline: "memory" (read it in), "grain" (stream the training
    # split from disk) or "auto" (stream when it is over 2 GiB). images: digits as
    # [8, 8, 1] pixels in [0, 1] (for CNNs) instead of 64 standardized columns.
    # name="text" (experiments/charlm.py): windows of seq_len bytes, every stride bytes
    # (0: seq_len); max_bytes / eval_bytes > 0 spread that many bytes of windows over the
    # training / evaluation files. class_weight: None (unweighted), "balanced" (sklearn's
    # n / (classes * count)) or {label: weight} (keys as strings, e.g. {"1": 3.0}).
    c.data = ml_collections.ConfigDict(dict(
        name="breast_cancer", val_fraction=0.15, test_fraction=0.2, standardize=True,
        clean=True, records="", pipeline="auto", images=False, seq_len=128, stride=0,
        max_bytes=0, eval_bytes=0, class_weight=None))
    c.model = ml_collections.ConfigDict(dict(
        name="mlp", features=(10, 10, 1), activation="relu", dropout_rate=0.0))
    c.loss = "binary_crossentropy"
    c.metrics = ("accuracy", "auc")
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=3e-3, schedule="constant", warmup_steps=0, decay_steps=0,
        decay_rate=0.1, weight_decay=0.0, l2=0.0, clip_norm=0.0))
    # On-device augmentation in every training step (0 / False: off). Images only:
    # crop_padding (random shift by up to that many pixels), flip (left-right).
    c.augment = ml_collections.ConfigDict(dict(
        crop_padding=0, crop_mode="constant", flip=False, noise_std=0.0, feature_dropout=0.0,
        mixup_alpha=0.0))
    c.epochs = 30
    c.batch_size = 32
    c.shuffle = True
    # "auto" (fuse epochs where it is faster), "epoch", or a number of steps.
    c.steps_per_dispatch = ml_collections.FieldReference("auto", field_type=(str, int))
    c.early_stopping = ml_collections.ConfigDict(dict(
        enabled=False, monitor="val_loss", patience=5, restore_best=True))
    c.reduce_lr = ml_collections.ConfigDict(dict(
        enabled=False, monitor="val_loss", factor=0.5, patience=3))
    # A step with a non-finite loss or gradient: "raise" (stop, naming the step; the last good
    # checkpoint is intact), "skip" (drop that update), "rollback" (reload the last
    # checkpoint and go on without it) or "none".
    c.nan_policy = "raise"
    c.precision = "float32"  # "bfloat16": compute in bf16, params and optimizer state float32
    c.grad_accum_steps = 1  # k > 1: k micro-batches of batch_size / k per update (less memory)
    c.log_norms = False  # also log gradient/update/parameter norms and the learning rate
    # Checkpoints under WORKDIR/checkpoints: every N epochs and/or steps, at the end and on
    # SIGTERM/SIGINT; a restarted run resumes from the newest good one. verify: "full"
    # checks every array's checksum at restore, "none" only the meta and structure.
    c.checkpoint = ml_collections.ConfigDict(dict(
        every_epochs=10, every_steps=0, keep=3, best_metric="val_loss", resume=True,
        async_save=True, verify="full"))
    c.profile = ml_collections.ConfigDict(dict(steps=""))  # "START:END": trace to WORKDIR/profile
    # Devices: sizes of the (population, data, fsdp, tensor) mesh axes; -1 = all remaining.
    # All 1: one device. Parameters are placed by sharding.rules ((regex, spec) pairs),
    # FSDP over "fsdp" by default; batches are split over (data, fsdp).
    c.mesh = ml_collections.ConfigDict(dict(population=1, data=1, fsdp=1, tensor=1))
    c.strategy = "auto"  # jax.jit with NamedShardings
    # rules: ((regex on the parameter path, PartitionSpec tuple), ...); logical_rules: Flax
    # logical axis name -> mesh axis, e.g. (("mlp", "tensor"), ("embed", None)).
    c.sharding = ml_collections.ConfigDict(dict(rules=(), logical_rules=(),
                                                data_placement="auto"))
    # Populations (docs/populations.md): size > 0 trains that many models as one vmapped
    # program. hparams: name -> list of values, {"log_uniform": [lo, hi]}, {"uniform": ...},
    # {"grid": [...]} or {"log_grid": [lo, hi]}; seeds: one per member (default seed + i);
    # data_order: "shared" (every member the same batches) or "member" (its own order).
    # mesh.population splits the members over devices.
    c.population = ml_collections.ConfigDict(dict(size=0, hparams={}, seeds=(),
                                                  data_order="shared"))
    c.writers = ("jsonl", "tensorboard")  # WORKDIR/tensorboard/; add "csv" for metrics.csv
    c.plot = False  # write WORKDIR/curves.png at the end
    c.peak_flops = 0.0  # device peak FLOP/s for MFU when the device is not a known accelerator
    return c
