"""Temporary default config (to be replaced by the owner of the default experiment)."""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(
        dict(
            name="breast_cancer", val_fraction=0.15, test_fraction=0.2, standardize=True, clean=True
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(name="mlp", features=(10, 10, 1), activation="relu", dropout_rate=0.0)
    )
    c.loss = "binary_crossentropy"
    c.metrics = ("accuracy",)
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adam",
            learning_rate=1e-3,
            schedule="constant",
            warmup_steps=0,
            weight_decay=0.0,
            l2=0.0,
            clip_norm=0.0,
        )
    )
    c.epochs = 10
    c.batch_size = 32
    c.shuffle = True
    # "auto" or a number of steps: a field that accepts either type is declared with a tuple
    # field_type, which `jaxdl.config.apply_overrides` honours.
    c.steps_per_dispatch = ml_collections.FieldReference("auto", field_type=(str, int))
    c.early_stopping = ml_collections.ConfigDict(
        dict(enabled=False, monitor="val_loss", patience=5, restore_best=True)
    )
    return c
