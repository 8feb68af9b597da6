"""trainer.summary(x): Keras' model.summary() from abstract shapes (jaxdl.train.model_summary)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxdl as jdl
from jaxdl.errors import InputError
from jaxdl.train import model_summary, perf


def _sizes(tree):
    leaves = jax.tree.leaves(tree)
    return sum(np.size(a) for a in leaves), sum(np.asarray(a).nbytes for a in leaves)


def _check_against_real_state(trainer, x):
    """The summary's totals are the real params' sizes; its FLOPs are perf's reading."""
    state = trainer.init(jax.random.key(0), x[:1])
    summary = model_summary.summarize(trainer.model, trainer.abstract_state(x[:1]), x[:1])
    assert summary.totals(trainable=True) == _sizes(state.params)
    assert summary.totals(trainable=False) == _sizes(state.model_state)
    assert sum(row.count for row in summary.rows) == summary.totals()[0]
    flops = perf.step_flops(jdl.make_predict_step(trainer.model), state, x[:1])
    assert summary.flops is not None and summary.flops > 0
    assert summary.flops == flops
    return state, summary


def test_mlp_summary_counts_bytes_and_flops(binary_trainer, blobs, capsys):
    x, _ = blobs
    state, summary = _check_against_real_state(binary_trainer, x)
    text = binary_trainer.summary(x[:1])
    assert capsys.readouterr().out == text + "\n"
    assert text == summary.render()
    count, nbytes = _sizes(state.params)
    assert f"total: {count:,} parameters" in text and count == 8 * 16 + 16 + 16 + 1
    assert "dense_0 (Dense)  (1, 16)" in text and "bias (16,), kernel (8, 16)" in text
    assert f"forward pass: {summary.flops:,.0f} FLOPs for a batch of 1" in text
    assert binary_trainer.summary(x[:1], print_fn=None) == text
    assert capsys.readouterr().out == ""


def test_cnn_summary_lists_each_layer_with_its_output_shape():
    trainer = jdl.Trainer(jdl.models.CNN(features=(4, 8), dense=(16,), num_outputs=3),
                          loss="sparse_categorical_crossentropy")
    x = np.zeros((2, 8, 8, 1), np.float32)
    _, summary = _check_against_real_state(trainer, x)
    rows = {"/".join(r.path): r for r in summary.rows}
    assert [r.kind for r in summary.rows] == ["CNN", "Conv", "Conv", "Dense", "Dense"]
    assert rows["conv_0"].output == "(1, 8, 8, 4)" and rows["conv_1"].output == "(1, 4, 4, 8)"
    assert rows["conv_1"].count == 3 * 3 * 4 * 8 + 8
    assert rows["logits"].nbytes == (16 * 3 + 3) * 4
    assert "(1, 4, 4, 8)" in trainer.summary(x[:1], print_fn=None)


def test_batch_statistics_are_non_trainable_parameters():
    trainer = jdl.Trainer(jdl.models.ResNet(stage_sizes=(1,), widths=(4,), stem_width=4,
                                            num_outputs=2),
                          loss="sparse_categorical_crossentropy")
    x = np.zeros((1, 8, 8, 1), np.float32)
    state, summary = _check_against_real_state(trainer, x)
    stats, _ = _sizes(state.model_state)
    assert stats > 0
    assert f"non-trainable {stats:,}" in summary.render()
    nested = [r for r in summary.rows if len(r.path) == 2]
    assert nested and all(r.path[0].startswith("stage0_block0") for r in nested)


def test_a_population_is_summarized_per_member(binary_trainer, blobs):
    x, _ = blobs
    single = model_summary.summarize(binary_trainer.model,
                                     binary_trainer.abstract_state(x[:1]), x[:1])
    population = binary_trainer.init(0, x[:1], population=3)
    text = binary_trainer.summary(x[:1], state=population, print_fn=None)
    count, nbytes = _sizes(population.params)
    assert count == 3 * single.totals(True)[0]
    assert "one member of a population of 3" in text
    assert f"population of 3: {count:,} parameters" in text
    assert text.splitlines()[1:-2] == single.render().splitlines()[1:-1]  # the member's rows
    assert f"{single.flops:,.0f} FLOPs" in text


def test_shapes_are_enough_no_data_no_state(binary_trainer, blobs):
    x, _ = blobs
    one = model_summary.summarize(binary_trainer.model, binary_trainer.abstract_state(x[:1]),
                                  x[:1])
    batch = model_summary.summarize(binary_trainer.model, binary_trainer.abstract_state(x[:1]),
                                    jax.ShapeDtypeStruct((1024, 8), np.float32))
    assert batch.input_shape == (1024, 8) and batch.totals() == one.totals()
    assert batch.flops == pytest.approx(1024 * one.flops, rel=0.01)  # linear in the batch


class _Pairs(nn.Module):
    """Needs an even number of features."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x.reshape(x.shape[0], -1, 2)).sum(axis=1)


def test_a_batch_the_model_rejects_is_the_users_error():
    trainer = jdl.Trainer(_Pairs(), loss="binary_crossentropy")
    assert "_Pairs" in trainer.summary(np.zeros((1, 4), np.float32), print_fn=None)
    with pytest.raises(InputError, match=r"argument 'x': expected a batch the model can be "
                       r"applied to, got an array of shape \(1, 5\) and dtype float32 \(the "
                       r"model said: .*\)\. Fix: pass a slice of the training inputs, e\.g\. "
                       r"x\[:1\]"):
        trainer.summary(np.zeros((1, 5), np.float32))
    with pytest.raises(jdl.InputTypeError, match=r"argument 'state': expected a jdl\.TrainState"):
        trainer.summary(np.zeros((1, 4), np.float32), state={"params": {}})


def test_an_nnx_model_is_named_by_its_own_module():
    from flax import nnx

    class TwoLayers(nnx.Module):
        def __init__(self, rngs):
            self.hidden, self.out = nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    trainer = jdl.Trainer(TwoLayers(nnx.Rngs(0)), loss="mse")
    x = np.zeros((2, 4), np.float32)
    text = trainer.summary(x, print_fn=None)
    assert text.splitlines()[0] == 'Model: "TwoLayers" (input (2, 4))'
    _check_against_real_state(trainer, x)  # 4*8+8 + 8*1+1 = 49 parameters, as counted
    assert "total: 49 parameters" in text
