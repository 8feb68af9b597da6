"""What one compiled training step needs on a device, and how much a device has.

:func:`compiled_step_memory` lowers and compiles a trainer's training step on
abstract arguments (``jax.ShapeDtypeStruct`` leaves placed by the run's
shardings: nothing is allocated) and reads XLA's ``memory_analysis()`` of it;
:func:`device_memory_limit` is what one device holds. Both feed the pre-flight
report (:mod:`jaxdl.parallel.report`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from jaxdl import errors

MEMORY_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                 "temp_size_in_bytes", "generated_code_size_in_bytes")


def row_struct(x: Any) -> jax.ShapeDtypeStruct:
    """One row [1, ...] shaped like the rows of ``x``, abstract (float32 when ``x`` has no
    dtype, as a list of lists does not)."""
    return jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), getattr(x, "dtype", np.float32))


def device_memory_limit() -> int | None:
    """Bytes of the first local device's memory, or None when the backend does not say."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # backends without memory stats (CPU)
        return None
    return int(stats["bytes_limit"]) if stats.get("bytes_limit") else None


def _label_struct(trainer: Any, abstract: Any, sample: jax.ShapeDtypeStruct,
                  batch_size: int) -> jax.ShapeDtypeStruct:
    """Labels [B, ...] as the kit's data carries them for this loss and model output."""
    outputs = jax.eval_shape(trainer.programs.outputs, abstract, sample)
    out = tuple(outputs.shape[1:])
    loss = trainer.loss
    if loss.name == "sparse_categorical_crossentropy":
        return jax.ShapeDtypeStruct((batch_size, *out[:-1]), np.int32)
    dtype = np.int32 if loss.task == "binary" else np.float32
    if loss.task != "multiclass" and math.prod(out) == 1:
        out = ()  # y [B] against a [B, 1] output, as the data sets give it
    return jax.ShapeDtypeStruct((batch_size, *out), dtype)


def _abstract_batch(trainer: Any, programs: Any, abstract: Any, sample_x: Any, sample_y: Any,
                    batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The ``{x, y, mask}`` batch of ``batch_size`` rows the step is compiled for."""
    sample = row_struct(sample_x)
    if sample_y is not None:
        # The labels must fit the model's outputs (as fit checks them), or tracing the step
        # below fails with an XLA shape error instead of the kit's message.
        outputs = jax.eval_shape(programs.outputs, programs.member_spec(abstract), sample)
        trainer.loss.check_labels(np.zeros(np.shape(sample_y), getattr(sample_y, "dtype",
                                                                       np.float32)),
                                  tuple(outputs.shape[1:]))
        labels = jax.ShapeDtypeStruct((batch_size, *np.shape(sample_y)[1:]),
                                      getattr(sample_y, "dtype", np.float32))
    else:
        labels = _label_struct(trainer, programs.member_spec(abstract), sample, batch_size)
    return {"x": jax.ShapeDtypeStruct((batch_size, *sample.shape[1:]), sample.dtype),
            "y": labels, "mask": jax.ShapeDtypeStruct((batch_size,), np.float32)}


def _memory_stats(compiled: Any) -> tuple[dict[str, int] | None, str]:
    try:
        stats = compiled.memory_analysis()
    except Exception as e:  # not implemented on this backend
        return None, f"no memory analysis on {jax.default_backend()} " \
                     f"({errors.first_sentence(e)})"
    if isinstance(stats, list | tuple):
        stats = stats[0] if stats else None
    if stats is None:
        return None, f"no memory analysis on {jax.default_backend()}"
    fields = (*MEMORY_FIELDS, "peak_memory_in_bytes")
    memory = {f: int(getattr(stats, f)) for f in fields
              if isinstance(getattr(stats, f, None), int)}
    return (memory, "") if memory else (None, f"no memory analysis on {jax.default_backend()}")


def compiled_step_memory(trainer: Any, programs: Any, abstract: Any, shardings: Any,
                         sample_x: Any, sample_y: Any, batch_size: int
                         ) -> tuple[dict[str, int] | None, str]:
    """The memory per device of ``programs.train_step`` compiled for this placement.

    Args:
      trainer: the :class:`jaxdl.Trainer` (its loss and placement; None placement: one
        device, no mesh).
      programs: the compiled programs whose ``train_step`` is measured (a population's
        when the report is for one).
      abstract: the abstract state (``jax.ShapeDtypeStruct`` leaves).
      shardings: the state's shardings, a tree like ``abstract`` (ignored without a mesh).
      sample_x: one or more input rows [b, ...] (only shape and dtype are used).
      sample_y: labels [b, ...] (only shape and dtype are used), or None for what the
        kit's data sets give for the trainer's loss.
      batch_size: the global batch the step is compiled for.

    Returns:
      ``(memory, note)``: ``memory_analysis()`` fields -> bytes per device and "", or
      None and why the backend reported nothing.

    Raises:
      InputError: ``sample_y`` does not fit the model's outputs.
    """
    placement = trainer.placement
    batch = _abstract_batch(trainer, programs, abstract, sample_x, sample_y, batch_size)
    if placement is None:
        step = jax.jit(programs.train_step, donate_argnums=0)
        state_args, batch_args = abstract, batch
    else:
        batch_sharding = placement.batch_sharding()
        step = jax.jit(programs.train_step, in_shardings=(shardings, batch_sharding),
                       out_shardings=(shardings, None), donate_argnums=0)
        state_args = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract, shardings)
        batch_args = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
                      for k, v in batch.items()}
    compiled = step.lower(state_args, batch_args).compile()
    return _memory_stats(compiled)
