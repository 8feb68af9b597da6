"""SimpleNet with exactly the seed article's settings: adam 1e-3, batch 32, 10 epochs.

    jaxdl train --config experiments/simplenet_exact.py --workdir /tmp/simplenet_exact

The Keras original: Dense(10, relu), Dense(10, relu), Dense(1, sigmoid);
compile(adam, binary_crossentropy, accuracy); fit(epochs=10, batch_size=32).
Here the sigmoid lives in the loss (logits out, numerically stable).
Result on the 2-core CPU machine: see the README's experiments table.
"""

from jaxdl.experiment.default_config import get_config as _default


def get_config():
    c = _default()
    c.metrics = ("accuracy",)
    c.optimizer.learning_rate = 1e-3
    c.epochs = 10
    return c
