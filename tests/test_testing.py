"""jaxdl.testing: each check passes on the kit and fails when it should."""

import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import testing


def test_the_kit_passes_its_own_checks(binary_trainer, blobs, tmp_path):
    x, y = blobs
    testing.assert_deterministic(binary_trainer, x, y, epochs=2, batch_size=16)
    testing.assert_no_recompile(binary_trainer, x, y, epochs=2, batch_size=16)
    testing.assert_overfits_one_batch(binary_trainer, x[:16], y[:16], steps=150)
    testing.assert_resume_equivalent(binary_trainer, x, y, epochs=4, split_at=2,
                                     directory=tmp_path, batch_size=16, steps_per_dispatch=7)


def test_checks_fail_when_they_should(binary_trainer, blobs):
    x, y = blobs
    a = {"w": np.zeros(3)}
    with pytest.raises(AssertionError, match=r"differ at \['w'\]"):
        testing.assert_trees_identical(a, {"w": np.array([0.0, 1.0, 0.0])})
    with pytest.raises(AssertionError, match="compiled 1 more"):
        _recompiles(binary_trainer, x, y)
    frozen = jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="binary_crossentropy",
                         optimizer="sgd", learning_rate=1e-9)
    with pytest.raises(AssertionError, match="one batch was not overfit"):
        testing.assert_overfits_one_batch(frozen, x[:16], y[:16], steps=5)


def _recompiles(trainer, x, y):
    state = trainer.init(jax.random.key(0), x[:1])
    with testing.no_recompile(trainer):
        trainer.fit(state, x, y, epochs=1, batch_size=13, verbose=0)  # a new batch shape
