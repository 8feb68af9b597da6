"""predict(..., ensemble=True) averages only the members that did not diverge."""

import warnings

import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors


@pytest.fixture(scope="module")
def sgd_trainer():
    # Plain SGD at a learning rate of 1e3 overflows to NaN parameters within a few steps
    # (Adam would only make them huge: its steps are normalized).
    return jdl.Trainer(jdl.models.MLP(features=(16, 1)), optimizer="sgd",
                       loss="binary_crossentropy", nan_policy="none")


def _fit(trainer, blobs, rates):
    x, y = blobs
    state = trainer.init(0, x[:1], population=len(rates), hparams={"learning_rate": rates})
    return trainer.fit(state, x, y, epochs=3, batch_size=20, verbose=0)


def test_a_diverged_member_is_left_out_of_the_ensemble(sgd_trainer, blobs):
    state, history = _fit(sgd_trainer, blobs, [0.05, 0.1, 1e3])
    assert not np.isfinite(history["loss"][-1][2])
    assert not all(np.isfinite(np.asarray(a)[2]).all() for a in jax.tree.leaves(state.params))
    each = sgd_trainer.predict(state, blobs[0])
    assert each.shape == (3, 100, 1) and np.isfinite(each[:2]).all()
    with pytest.warns(UserWarning, match=r"averaged 2 of 3 members; left out \[2\]") as caught:
        mean = sgd_trainer.predict(state, blobs[0], ensemble=True)
    assert len(caught) == 1  # once per call, not once per member or batch
    np.testing.assert_allclose(mean, each[:2].mean(axis=0), rtol=1e-6)
    assert mean.shape == (100, 1)


def test_a_healthy_population_averages_every_member_silently(sgd_trainer, blobs):
    state, _ = _fit(sgd_trainer, blobs, [0.05, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = sgd_trainer.predict(state, blobs[0], ensemble=True)
    np.testing.assert_allclose(mean, sgd_trainer.predict(state, blobs[0]).mean(axis=0),
                               rtol=1e-6)


def test_no_usable_member_is_a_clear_error(sgd_trainer, blobs):
    state, _ = _fit(sgd_trainer, blobs, [1e3, 2e3])
    with pytest.raises(errors.NonFiniteError, match=r"argument 'state'.*2 members, none "
                       r"finite\. Fix: retrain with nan_policy='raise'"):
        sgd_trainer.predict(state, blobs[0], ensemble=True)
