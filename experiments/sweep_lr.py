"""A learning-rate sweep of the reference workflow: 32 members, one compiled program.

SimpleNet on breast cancer (the default experiment) trained 32 times at once,
learning rates spaced geometrically from 1e-4 to 1 (``log_grid``); every member
sees the same batches, so the curves compare like with like.

    jaxdl train --config experiments/sweep_lr.py --workdir /tmp/sweep
    jaxdl plot /tmp/sweep                        # the 32 curves as a band + the best member

metrics.jsonl has one train/val line per member per epoch (``"member"``), one
test line per member with its learning rate, and a ``"best"`` line naming the
member with the lowest validation loss. Result on the 2-core CPU machine: see
docs/populations.md.
"""

from jaxdl.experiment.default_config import get_config as reference


def get_config():
    c = reference()
    c.population.size = 32
    c.population.hparams = {"learning_rate": {"log_grid": [1e-4, 1.0]}}
    return c
