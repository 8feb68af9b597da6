"""A byte-level Transformer language model on the Python standard library's source.

The corpus (jaxdl.data.text) is the stdlib's own .py files, split into train/val/test
by a hash of each file's path; examples are non-overlapping 128-byte windows, the
target the next byte. A 4-layer pre-norm Transformer (width 192, 4 heads, RoPE), Adam
with a warm-up cosine schedule; validation bits per byte every epoch.

    jaxdl train --config experiments/charlm.py --workdir /tmp/charlm
    jaxdl sample --workdir /tmp/charlm --prompt "def " --length 200

Result on the 2-core CPU machine (2026-11-27, cold compilation cache): validation
1.87 / 1.59 / 1.51 bits per byte after epochs 1 / 2 / 3 (the unigram baseline of the val
split under the train split's byte frequencies: 4.83), test 1.72 (unigram 4.66);
1,465 steps of 32 x 128 bytes, 1,064 s of training, 1,083 s wall. A sample at
temperature 0.7 after "def " (its docstring quotes written as '''):

    def __init__(self, errors):
            '''Return a single insrally with more the process the file operating argument.
"""

import ml_collections

from jaxdl.experiment.default_config import get_config as reference


def get_config():
    c = reference()
    # max_bytes / eval_bytes: 128-byte windows worth that many bytes, spread evenly over
    # every file of the split (the first 2 MB alone would be a few packages' style).
    c.data = ml_collections.ConfigDict(dict(
        name="text", seq_len=128, stride=0, max_bytes=2_000_000, eval_bytes=262_144,
        records="", pipeline="auto", images=False, val_fraction=0.0, test_fraction=0.0,
        standardize=False, clean=False))
    c.model = ml_collections.ConfigDict(dict(
        name="transformer", vocab_size=256, num_layers=4, num_heads=4, embed_dim=192,
        mlp_dim=768, max_len=128, dropout_rate=0.0, positions="rope", remat=False))
    c.loss = "sparse_categorical_crossentropy"
    c.metrics = ("bits_per_byte",)
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.clip_norm = 1.0
    c.batch_size = 32
    c.epochs = 3
    c.checkpoint.every_epochs = 1
    return c
