"""The charlm Transformer on a 2 x 2 x 2 mesh (data x fsdp x tensor), matching one device.

Parameters are placed by their Flax logical axis names (``LOGICAL_RULES``: the MLP's
hidden units and the attention heads over ``tensor``, the model width over ``fsdp``),
every batch split over (data, fsdp). A slice of experiments/charlm.py's corpus, so the
comparison runs in minutes on fake CPU devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        jaxdl train --config experiments/lm_sharded.py --workdir /tmp/lm_sharded
    jaxdl train --config experiments/lm_sharded.py --workdir /tmp/lm_one \\
        --config.mesh.data=1 --config.mesh.fsdp=1 --config.mesh.tensor=1

Result (2026-11-27, 8 fake CPU devices on 2 cores): the two metrics.jsonl files agree
line for line within a relative 1.7e-7 (train/val/test loss and bits per byte; epoch 1
identical to the last digit): val 2.708 bits per byte after 2 epochs, 126 s wall on the
mesh, 107 s on one device. `jaxdl summary --config experiments/lm_sharded.py` shows the
placement: e.g. mlp_in (fsdp, tensor), qkv (fsdp, None, tensor, None), 1/4 of the
parameters per device.
"""

import importlib.util
import pathlib

from jaxdl.models import LOGICAL_RULES


def _charlm():
    path = pathlib.Path(__file__).with_name("charlm.py")
    spec = importlib.util.spec_from_file_location("charlm_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _charlm()
    c.data.max_bytes = 262_144
    c.data.eval_bytes = 65_536
    c.epochs = 2
    c.optimizer.warmup_steps = 20
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
    c.sharding.logical_rules = tuple(LOGICAL_RULES)
    c.checkpoint.every_epochs = 1
    return c
