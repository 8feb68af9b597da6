"""`jaxdl train`'s TensorBoard folder, read with TensorBoard's own readers: the Keras layout
(train/ and validation/ runs under the same epoch_<metric> tags), values equal to
metrics.jsonl's, the hparams dashboard's sessions, and a population's runs per member."""

import json

import numpy as np
import pytest
from tensorboard import context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer as multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

from jaxdl import experiment as run
from jaxdl.experiment import config as config_lib
from jaxdl.experiment.results import HPARAMS


def _train(workdir, population=None):
    """The default config (3 epochs), as `jaxdl train` runs it; its metrics.jsonl lines."""
    config = config_lib.load_config(config_lib.default_config_path())
    config.epochs = 3
    if population:
        config.population.size = 3
        config.population.hparams = {"learning_rate": population}
    run.train_and_evaluate(config, workdir, quiet=True)
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return config, lines


def _runs(logdir):
    """Run name (as TensorBoard lists it) -> its scalar tags (the hparams plugin's aside)."""
    events = multiplexer.EventMultiplexer()
    events.AddRunsFromDirectory(str(logdir))
    events.Reload()
    return {name: {t for t in events.GetAccumulator(name).Tags()["tensors"]
                   if not t.startswith("_hparams_/")} for name in events.Runs()}


def _scalars(folder):
    """tag -> {step: value} of one run folder, read by TensorBoard's EventAccumulator."""
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}


def _session_groups(logdir):
    """What the hparams dashboard shows: TensorBoard's own ListSessionGroups handler."""
    events = multiplexer.EventMultiplexer()
    events.AddRunsFromDirectory(str(logdir))
    events.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=events,
                               data_provider=data_provider.MultiplexerDataProvider(
                                   events, str(logdir)))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100,
                                               allowed_statuses=[api_pb2.STATUS_SUCCESS])
    response = list_session_groups.Handler(context.RequestContext(),
                                           backend_context.Context(tb), "", request).run()
    out = {}
    for group in response.session_groups:
        values = {k: getattr(v, v.WhichOneof("kind")) for k, v in group.hparams.items()}
        metrics = {m.name.tag: (m.value, m.training_step) for m in group.metric_values}
        out[group.name] = (values, metrics)
    return out


def _numbers(record):
    return {k: v for k, v in record.items() if k not in ("step", "epoch", "split", "member")
            and isinstance(v, int | float) and not isinstance(v, bool)}


def _check_epochs(folder, lines, member=None):
    """Every train/val line of metrics.jsonl is in the member's train/ and validation/ runs,
    as the float32 TensorBoard stores, at the line's step; and nothing else is."""
    for split, name in (("train", "train"), ("val", "validation")):
        mine = [r for r in lines if r["split"] == split and r.get("member") == member]
        expected = {f"epoch_{k}": {r["step"]: float(np.float32(r[k])) for r in mine}
                    for k in _numbers(mine[0])}
        read = {t: v for t, v in _scalars(folder / name).items() if not t.startswith("perf/")}
        assert read == expected


def test_a_run_writes_keras_layout_equal_to_metrics_jsonl(tmp_path):
    config, lines = _train(tmp_path)
    logdir = tmp_path / "tensorboard"
    runs = _runs(logdir)
    assert set(runs) == {".", "train", "validation"}
    assert {"epoch_loss", "epoch_accuracy", "epoch_auc"} == runs["validation"]
    # The same tags in both runs: TensorBoard overlays a metric's two curves in one chart.
    assert {t for t in runs["train"] if not t.startswith("perf/")} == runs["validation"]
    _check_epochs(logdir, lines)

    perf, test = lines[-2], lines[-1]
    assert (perf["split"], test["split"]) == ("perf", "test")
    train = _scalars(logdir / "train")
    assert {t[5:]: v for t, v in train.items() if t.startswith("perf/")} == {
        k: {perf["step"]: float(np.float32(v))} for k, v in _numbers(perf).items()}
    assert _scalars(logdir) == {f"test/{k}": {test["step"]: float(np.float32(v))}
                                for k, v in _numbers(test).items()}

    (name, (values, metrics)), = _session_groups(logdir).items()
    assert name == "."
    flat = config_lib.flatten(config)
    assert values == {k: ",".join(map(str, flat[k])) if isinstance(flat[k], tuple)
                      else float(flat[k]) if isinstance(flat[k], int) else flat[k]
                      for k in HPARAMS if k in flat}
    assert values["optimizer.name"] == "adam" and values["batch_size"] == 32.0
    assert metrics == {f"test/{k}": (pytest.approx(v, rel=1e-7), test["step"])
                       for k, v in _numbers(test).items()}


def test_a_population_has_runs_and_a_session_per_member(tmp_path):
    _, lines = _train(tmp_path, population=[0.003, 0.01, 1000.0])
    logdir = tmp_path / "tensorboard"
    runs = _runs(logdir)
    assert set(runs) == {".", "train", *(f"member_{i}{s}" for i in range(3)
                                         for s in ("", "/train", "/validation"))}
    assert runs["."] == set()  # the hparams experiment only, for all the members' sessions
    assert {t.split("/")[0] for t in runs["train"]} == {"perf"}  # the fit's, all members'
    for i in range(3):
        assert runs[f"member_{i}/train"] == runs[f"member_{i}/validation"] == runs[
            "member_0/train"]
        _check_epochs(logdir / f"member_{i}", lines, member=i)

    tests = {r["member"]: r for r in lines if r["split"] == "test"}
    groups = _session_groups(logdir)
    assert set(groups) == {f"member_{i}" for i in range(3)}
    for i, test in tests.items():
        values, metrics = groups[f"member_{i}"]
        assert values == {"learning_rate": pytest.approx(test["hparams"]["learning_rate"]),
                          "seed": float(i)}
        assert metrics == {f"test/{k}": (pytest.approx(v, rel=1e-7), test["step"])
                           for k, v in _numbers(test).items()}
