"""A CNN on scikit-learn's digits (8x8 images), with random-shift augmentation.

Conv 64 -> pool -> conv 128 -> pool -> dense 256 (dropout 0.3) -> 10 logits; Adam with a warm-up
cosine schedule; every training batch shifted by up to one pixel (a padded random crop,
on device). No flips: a mirrored digit is another digit.

    jaxdl train --config experiments/digits_cnn.py --workdir /tmp/digits_cnn

Result (2-core shared CPU, no compilation cache: ``JAXDL_CACHE_DIR=off``): test accuracy
0.983 (353 of 359), test loss 0.038, after 60 epochs (1,140 steps of 64), 27.7 s wall
including a 5.0 s compile. The run is deterministic; seeds 1 and 2
(``--config.seed=1``) reach 0.992 and 0.986.
"""

from jaxdl.experiment.default_config import get_config as reference


def get_config():
    c = reference()
    c.data.name = "digits"
    c.data.images = True
    c.model = {"name": "cnn", "features": (64, 128), "dense": (256,), "num_outputs": 10,
               "dropout_rate": 0.3}
    c.loss = "sparse_categorical_crossentropy"
    c.metrics = ("accuracy",)
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 50
    c.augment.crop_padding = 1
    c.epochs = 60
    c.batch_size = 64
    return c
