"""The pre-flight report: specs and bytes per device, unused rules, replicated parameters,
the compiled step's memory per device, and ``jaxdl summary`` on a mesh (8 fake CPU devices)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import jaxdl as jdl
from jaxdl import errors
from jaxdl.experiment import config as config_lib
from jaxdl.experiment import summary
from jaxdl.parallel import partition_specs
from jaxdl.parallel.report import Preflight, preflight

SAMPLE = np.zeros((1, 256), np.float32)


def _trainer(mesh, rules=()) -> jdl.Trainer:
    return jdl.Trainer(jdl.models.MLP(features=(512, 512, 8)),
                       loss="sparse_categorical_crossentropy", mesh=mesh, rules=rules)


@pytest.fixture(scope="module")
def fsdp():
    """A trainer on mesh fsdp=8 with one rule that matches nothing, and its compiled report."""
    trainer = _trainer({"fsdp": 8}, rules=[(r"no_such_layer", (None, "fsdp"))])
    return trainer, preflight(trainer, SAMPLE, batch_size=64)


def test_fsdp_bytes_per_device_are_an_eighth_and_specs_are_the_placements(fsdp):
    trainer, report = fsdp
    assert isinstance(report, Preflight)
    assert report.mesh_shape == {"data": 1, "fsdp": 8, "tensor": 1} and report.devices == 8
    assert report.params_bytes == 4 * (256 * 512 + 512 + 512 * 512 + 512 + 512 * 8 + 8)
    assert report.params_bytes_per_device == pytest.approx(report.params_bytes / 8, rel=0.03)
    assert report.opt_bytes_per_device == pytest.approx(report.opt_bytes / 8, rel=0.03)
    abstract = trainer.abstract_state(SAMPLE)
    specs, _ = partition_specs(abstract.params, trainer.placement.mesh, trainer.placement.rules)
    expected = {"['dense_0']['kernel']": specs["dense_0"]["kernel"],
                "['dense_1']['kernel']": specs["dense_1"]["kernel"],
                "['dense_2']['bias']": specs["dense_2"]["bias"]}
    rows = {row.path: row for row in report.rows}
    assert {path: rows[path].spec for path in expected} == expected
    assert "fsdp" in tuple(rows["['dense_1']['kernel']"].spec)
    assert rows["['dense_1']['kernel']"].bytes_per_device == 512 * 512 * 4 // 8
    assert rows["['dense_0']['bias']"].bytes_per_device == rows["['dense_0']['bias']"].bytes
    assert not report.replicated_large  # the large ones are all sharded


def test_a_rule_that_matches_nothing_is_warned_about(fsdp):
    _, report = fsdp
    assert report.unused_rules == ["no_such_layer"]
    warning = next(w for w in report.warnings if "no_such_layer" in w)
    assert "matched no parameter" in warning
    assert "warning: sharding rule 'no_such_layer' matched no parameter" in report.render()


def test_large_parameters_left_replicated_are_warned_about():
    report = preflight(_trainer({"data": 8}), SAMPLE, batch_size=64, compile_step=False,
                       large_bytes=8192)
    assert [row.path for row in report.replicated_large] == [
        "['dense_0']['kernel']", "['dense_1']['kernel']", "['dense_2']['kernel']"]
    assert report.params_bytes_per_device == report.params_bytes
    warnings = [w for w in report.warnings if "is replicated" in w]
    assert len(warnings) == 3 and "['dense_1']['kernel'] (512, 512)" in warnings[1]
    assert "fsdp=1" in warnings[1] and "mesh.fsdp" in warnings[1]
    assert report.memory is None and "compile_step=False" in report.render()


def test_a_rule_that_replicates_a_large_parameter_is_named():
    report = preflight(_trainer({"fsdp": 8}, rules=[(r"dense_1.*kernel", ())]), SAMPLE,
                       batch_size=64, compile_step=False, large_bytes=8192)
    assert [row.path for row in report.replicated_large] == ["['dense_1']['kernel']"]
    (warning,) = report.warnings
    assert "rule 'dense_1.*kernel' gives it replicated" in warning
    suggested = re.search(r'a sharding rule such as \(r"([^"]+)", (\(.*\))\)$', warning)
    assert suggested, warning  # a rule to use instead, that matches the parameter
    assert re.search(suggested.group(1), "['dense_1']['kernel']")
    assert suggested.group(2) in ("('fsdp', None)", "(None, 'fsdp')")


def test_the_compiled_step_memory_is_per_device(fsdp):
    _, report = fsdp
    if report.memory is None:
        pytest.skip(f"this backend gives no memory_analysis(): {report.memory_note}")
    for field in ("argument_size_in_bytes", "output_size_in_bytes"):
        assert isinstance(report.memory[field], int) and report.memory[field] > 0
    assert all(isinstance(v, int) and v >= 0 for v in report.memory.values())
    # The arguments are one device's shard of the state plus its slice of the batch.
    state_total = report.params_bytes + report.opt_bytes
    assert report.state_bytes_per_device <= report.memory["argument_size_in_bytes"]
    assert report.memory["argument_size_in_bytes"] < state_total / 4
    assert report.peak_bytes_per_device >= report.memory["argument_size_in_bytes"]
    assert "compiled train step, per device: arguments" in report.render()


def test_a_step_larger_than_the_device_memory_is_warned_about(fsdp):
    _, report = fsdp
    if report.memory is None:
        pytest.skip(f"this backend gives no memory_analysis(): {report.memory_note}")
    small = dataclasses.replace(report, device_memory=1024)
    assert any("out of memory" in w for w in small.warnings)
    assert not any("out of memory" in w for w in report.warnings)  # CPU: no limit known


def test_a_batch_the_mesh_cannot_split_is_a_warning_not_a_compile():
    report = preflight(_trainer({"fsdp": 8}), SAMPLE, batch_size=12)
    assert report.memory is None
    assert any("not compiled" in w and "divisible by the data-parallel size 8" in w
               for w in report.warnings)
    with pytest.raises(errors.InputError, match="argument 'batch_size'"):
        preflight(_trainer({"fsdp": 8}), SAMPLE, batch_size=0)


def test_without_a_mesh_everything_is_on_one_device():
    report = preflight(_trainer(None), SAMPLE, batch_size=32, compile_step=False,
                       large_bytes=1)
    assert report.mesh_shape is None and report.devices == 1
    assert all(r.spec is None and r.bytes_per_device == r.bytes for r in report.rows)
    assert not report.warnings and report.render().startswith("one device, no mesh")


def _config(**mesh):
    config = config_lib.load_config(config_lib.default_config_path())
    config.model.features = (512, 512, 1)
    for axis, size in mesh.items():
        config.mesh[axis] = size
    return config


def test_summary_on_an_fsdp_mesh_shows_specs_and_memory():
    text = summary.summarize(_config(fsdp=8))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("parameter"))
    column = header.index("spec")
    kernel = next(line for line in lines if line.startswith("['dense_1']['kernel']"))
    assert kernel[column:].startswith("(fsdp, None)")
    assert "mesh data=1 fsdp=8 tensor=1 (8 devices)" in text
    assert "total: 279,041 parameters" in text
    assert "compiled train step" in text


def test_summary_of_a_mesh_larger_than_the_machine_says_how_to_fake_it():
    with pytest.raises(errors.InputError, match=r"--config.mesh.*xla_force_host_platform"
                                                r"_device_count=16"):
        summary.summarize(_config(fsdp=16))


def test_logical_axis_names_place_parameters_as_init_does():
    import flax.linen as nn
    import jax

    class Logical(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
            init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
            return nn.Dense(1)(x @ self.param("kernel", init, (x.shape[-1], 512)))

    trainer = jdl.Trainer(Logical(), loss="mse", mesh={"data": 2, "tensor": 4},
                          logical_rules=[("embed", None), ("mlp", "tensor")])
    sample = np.zeros((1, 64), np.float32)
    report = preflight(trainer, sample, batch_size=16, compile_step=False)
    kernel = next(row for row in report.rows if row.path == "['kernel']")
    state = trainer.init(jax.random.key(0), sample)
    assert kernel.spec == state.params["kernel"].sharding.spec
    assert kernel.bytes_per_device == kernel.bytes // 4


def test_a_population_report_places_members_over_the_population_axis():
    trainer = jdl.Trainer(jdl.models.MLP(features=(64, 1)), loss="binary_crossentropy",
                          mesh={"population": 4, "data": 2})
    report = preflight(trainer, np.zeros((1, 32), np.float32), 16, population=8,
                       hparams=["learning_rate"])
    kernel = next(r for r in report.rows if r.path == "['dense_0']['kernel']")
    assert kernel.shape == (8, 32, 64) and kernel.bytes_per_device == kernel.bytes // 4
    assert report.mesh_shape["population"] == 4 and report.memory
