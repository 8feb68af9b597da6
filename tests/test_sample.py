"""Sampling from a language model: greedy continuation of a learned pattern."""

import flax.linen as nn
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors, sample


class Bigram(nn.Module):
    """Next-byte logits from the current byte only: causal by construction."""

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        return nn.Dense(256)(nn.Embed(256, 16)(tokens))


@pytest.fixture(scope="module")
def bigram():
    text = sample.encode("abcd" * 64)
    x = np.stack([text[i:i + 16] for i in range(0, 240, 4)])
    y = np.stack([text[i + 1:i + 17] for i in range(0, 240, 4)])
    trainer = jdl.Trainer(Bigram(), loss="sparse_categorical_crossentropy",
                          learning_rate=0.05)
    state, _ = trainer.fit(trainer.init(0, x[:1]), x, y, epochs=30, batch_size=20, verbose=0)
    return trainer, state


def test_greedy_sampling_continues_the_pattern(bigram):
    trainer, state = bigram
    tokens = sample.generate(trainer, state, "ab", num_tokens=10, temperature=0.0,
                             context=16)
    assert sample.decode(tokens) == "abcdabcdabcd"
    # A prompt longer than the context window: only the last 16 tokens are seen.
    long = sample.generate(trainer, state, "abcd" * 10 + "a", num_tokens=3, temperature=0.0,
                           context=16)
    assert sample.decode(long).endswith("abcd")


def test_sampling_is_seeded_and_top_k_limits_choices(bigram):
    trainer, state = bigram
    a = sample.generate(trainer, state, "a", num_tokens=20, temperature=5.0, seed=1, context=16)
    b = sample.generate(trainer, state, "a", num_tokens=20, temperature=5.0, seed=1, context=16)
    np.testing.assert_array_equal(a, b)
    top1 = sample.generate(trainer, state, "a", num_tokens=8, temperature=5.0, top_k=1,
                           context=16)
    assert sample.decode(top1) == "abcdabcda"


def test_bad_sampling_arguments_are_clear(bigram):
    trainer, state = bigram
    with pytest.raises(errors.InputError, match="argument 'prompt'"):
        sample.generate(trainer, state, "", context=16)
    with pytest.raises(errors.InputError, match="argument 'temperature'"):
        sample.generate(trainer, state, "a", temperature=-1.0, context=16)


def test_sample_from_a_trained_transformer_run(tmp_path):
    """`jaxdl sample --workdir` on a tiny text run: the Transformer from the config."""
    import ml_collections

    from jaxdl import experiment as run
    from jaxdl.experiment.default_config import get_config

    config = get_config()
    config.data = ml_collections.ConfigDict(dict(
        name="text", seq_len=16, stride=0, max_bytes=8192, eval_bytes=1024, records="",
        pipeline="auto", images=False, val_fraction=0.0, test_fraction=0.0,
        standardize=False, clean=False))
    config.model = ml_collections.ConfigDict(dict(
        name="transformer", num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32, max_len=16))
    config.loss = "sparse_categorical_crossentropy"
    config.metrics = ("bits_per_byte",)
    config.epochs, config.batch_size = 1, 32
    # A warm-up longer than one step per epoch: restoring rebuilds the run's own schedule.
    config.optimizer.schedule, config.optimizer.warmup_steps = "warmup_cosine", 4
    results = run.train_and_evaluate(config, tmp_path, quiet=True)
    assert 0 < results["bits_per_byte"] <= 8.5
    text = run.sample_from_workdir(tmp_path, "def ", num_tokens=12, temperature=0.0)
    assert text.startswith("def ") and len(text) > len("def ")  # 12 bytes more, as text
