"""A small ResNet with BatchNorm on scikit-learn's digits (8x8 images), random shifts.

Two basic blocks (conv-BN-relu-conv-BN + shortcut) in each of three stages of 16, 32
and 64 channels (8x8 -> 4x4 -> 2x2), global average pooling, 10 logits. The BatchNorm running
statistics live in ``TrainState.model_state``: batch statistics in training steps,
running averages in evaluation and prediction. AdamW with a warm-up cosine
schedule; every training batch shifted by up to one pixel on device.

    jaxdl train --config experiments/digits_resnet.py --workdir /tmp/digits_resnet

Result (2-core shared CPU under load, no compilation cache: ``JAXDL_CACHE_DIR=off``): test
accuracy 0.989 (355 of 359), test loss 0.029, after 60 epochs (1,140 steps of 64), 64.1 s wall
including a 7.2 s compile (load average ~4 on the 2 cores while it ran).
"""

from jaxdl.experiment.default_config import get_config as reference


def get_config():
    c = reference()
    c.data.name = "digits"
    c.data.images = True
    c.model = {"name": "resnet", "stage_sizes": (2, 2, 2), "widths": (16, 32, 64),
               "stem_width": 16, "num_outputs": 10}
    c.loss = "sparse_categorical_crossentropy"
    c.metrics = ("accuracy",)
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 50
    c.augment.crop_padding = 1
    c.epochs = 60
    c.batch_size = 64
    return c
