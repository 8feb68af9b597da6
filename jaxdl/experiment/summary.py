"""``jaxdl summary --config FILE``: the model's parameters and their placement, without training.

Shapes come from ``jax.eval_shape`` of the init: nothing is allocated, so a
model far larger than this machine's memory can be inspected. With a mesh in
the config (``--config.mesh.fsdp=8``) the table also shows each parameter's
PartitionSpec and bytes per device, warns about sharding rules that matched
nothing and large parameters left replicated, and gives the compiled training
step's memory per device (see :mod:`jaxdl.parallel.report`). A pod's mesh can
be inspected on a laptop with fake CPU devices::

    XLA_FLAGS=--xla_force_host_platform_device_count=64 JAX_PLATFORMS=cpu \\
        jaxdl summary --config experiments/x.py --config.mesh.fsdp=64
"""

from __future__ import annotations

import math

import jax
import ml_collections

from jaxdl.parallel.report import Preflight, preflight


def _check_device_count(config: ml_collections.ConfigDict) -> None:
    """A mesh larger than this machine: say how to inspect it on fake CPU devices."""
    from jaxdl import errors
    from jaxdl.experiment import build

    spec = build.mesh_spec(config)
    if spec is None:
        return
    needed = math.prod(v for v in spec.values() if isinstance(v, int) and v > 0)
    if needed > jax.device_count():
        sizes = " ".join(f"--config.mesh.{k}={v}" for k, v in spec.items() if v != 1)
        raise errors.input_error(
            "--config.mesh", f"at most the {jax.device_count()} device(s) of this machine",
            f"a mesh of {needed} devices ({sizes})",
            f"inspect it on fake CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{needed} JAX_PLATFORMS=cpu jaxdl summary ... {sizes}")


def preflight_of(config: ml_collections.ConfigDict, *, compile_step: bool = True,
                 large_bytes: int = 1 << 20) -> tuple[Preflight, tuple[int, ...]]:
    """The pre-flight report of an experiment config, and the model's input shape.

    Args:
      config: an experiment config (data, model, loss, optimizer, mesh, sharding, batch_size).
      compile_step: compile the training step to report its memory per device.
      large_bytes: replicated parameters at least this large are warned about on a mesh.

    Returns:
      ``(report, input_shape)``: the :class:`jaxdl.parallel.report.Preflight` for a global
      batch of ``config.batch_size``, and the shape of one input row.

    Raises:
      InputError: naming ``--config.KEY`` for a bad data name, model, mesh or batch size.
    """
    from jaxdl.experiment import build
    from jaxdl.experiment import data as data_lib
    from jaxdl.experiment.settings import complete, config_errors

    config = complete(config)
    with config_errors(config):
        sample_x, sample_y, data_bytes = data_lib.peek(config)
        _check_device_count(config)
        trainer = build.trainer(config, steps_per_epoch=None)
        members = build.population(config)
        report = preflight(trainer, sample_x, config.batch_size, sample_y=sample_y,
                           compile_step=compile_step, large_bytes=large_bytes,
                           data_bytes=data_bytes if trainer.placement else 0,
                           population=members and members["size"],
                           hparams=list(members["hparams"]) if members else ())
    return report, tuple(sample_x.shape[1:])


def summarize(config: ml_collections.ConfigDict) -> str:
    """The parameter table of an experiment config's model and its placement, as text.

    Args:
      config: an experiment config; its ``mesh`` and ``sharding.rules`` place the state and
        ``batch_size`` is the global batch the training step is compiled for.

    Returns:
      A header line, then :meth:`jaxdl.parallel.report.Preflight.render`: one row per
      parameter (path, shape, dtype, count, bytes, spec, bytes per device), the totals, the
      compiled step's memory per device and any warnings.
    """
    report, input_shape = preflight_of(config)
    header = (f"model {config.model.name} on {config.data.name} (inputs {input_shape}), "
              f"{jax.device_count()} device(s)")
    return header + "\n" + report.render()
