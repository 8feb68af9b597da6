"""The pre-flight report: where every parameter lives and what one step needs, per device.

Before step 1 of a sharded run (and from ``jaxdl summary`` without training),
:func:`preflight` places the *abstract* state (shapes and dtypes only: nothing
is allocated) by the trainer's mesh and rules, and compiles the training step
for that placement on abstract arguments. On a laptop with fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``) this shows what a pod
run will hold on each device before it is launched::

    report = preflight(trainer, x_train[:1], batch_size=256)
    print(report.render(), file=sys.stderr)
    report.warnings        # unused rules, large parameters left replicated, ...

Per parameter: its PartitionSpec, total bytes and bytes per device (from the
sharding's ``shard_shape``). Warned about: sharding rules that matched no
parameter, parameters of at least ``large_bytes`` that every device holds in
full while the mesh has more than one device, a batch the mesh cannot split,
and a compiled step that needs more than a device's memory (when known). The
compiling and XLA's memory analysis are in :mod:`jaxdl.parallel.step_memory`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from jaxdl import errors
from jaxdl.parallel.step_memory import compiled_step_memory, device_memory_limit, row_struct


def human_bytes(n: float) -> str:
    """``n`` bytes as text in B, KiB, MiB, GiB or TiB (e.g. ``"1.5 MiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def spec_text(spec: PartitionSpec | None) -> str:
    """A PartitionSpec in short form: ``(None, fsdp)``, ``replicated``, or ``-`` (no mesh)."""
    if spec is None:
        return "-"
    if all(axis is None for axis in spec):
        return "replicated"
    parts = ["+".join(a) if isinstance(a, tuple) else str(a) for a in spec]
    return f"({', '.join(parts)})"


def _nbytes(leaf: Any) -> int:
    return math.prod(leaf.shape) * int(leaf.dtype.itemsize)  # PRNG key dtypes have one too


def _per_device(leaf: Any, sharding: Any) -> int:
    if not isinstance(sharding, jax.sharding.Sharding):
        return _nbytes(leaf)
    shard = sharding.shard_shape(tuple(leaf.shape))
    return _nbytes(jax.ShapeDtypeStruct(shard, leaf.dtype))


@dataclasses.dataclass(frozen=True)
class ParamRow:
    """One parameter of the report.

    Attributes:
      path: ``jax.tree_util.keystr`` of the parameter, e.g. ``['dense_0']['kernel']``.
      shape: its global shape.
      dtype: its dtype name.
      spec: its PartitionSpec, or None without a mesh.
      bytes: bytes of the whole array.
      bytes_per_device: bytes of the shard one device holds.
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    spec: PartitionSpec | None
    bytes: int
    bytes_per_device: int

    @property
    def count(self) -> int:
        """The number of values in the parameter."""
        return math.prod(self.shape)


@dataclasses.dataclass
class Preflight:
    """What a run holds and needs per device, computed without allocating the state.

    Attributes:
      rows: one :class:`ParamRow` per parameter, in tree order.
      mesh_shape: the mesh's axis sizes, or None for a single device (no mesh).
      batch_size: the global batch the step was compiled for.
      params_bytes, params_bytes_per_device: all parameters, in total and per device.
      opt_bytes, opt_bytes_per_device: the optimizer state, in total and per device.
      other_bytes_per_device: the rest of the state (step, RNG key, model state) per device.
      data_bytes: bytes of the data set the run keeps on every device (0: not counted).
      unused_rules: patterns of sharding rules that matched no parameter.
      replicated_large: parameters of at least ``large_bytes`` held in full by every device
        while the mesh has more than one device.
      replicated_reasons: path -> why that parameter ended up replicated.
      memory: the compiled step's ``memory_analysis()`` per device (field name -> bytes),
        or None when not compiled or the backend reports nothing (see ``memory_note``).
      memory_note: why ``memory`` is None ("" when it is set).
      device_memory: bytes of one device's memory when known, else None.
      large_bytes: the threshold for ``replicated_large``.
      notes: other warnings (a batch the mesh cannot split, ...).
    """

    rows: list[ParamRow]
    mesh_shape: dict[str, int] | None
    batch_size: int
    params_bytes: int
    params_bytes_per_device: int
    opt_bytes: int
    opt_bytes_per_device: int
    other_bytes_per_device: int
    data_bytes: int = 0
    unused_rules: list[str] = dataclasses.field(default_factory=list)
    replicated_large: list[ParamRow] = dataclasses.field(default_factory=list)
    replicated_reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    memory: dict[str, int] | None = None
    memory_note: str = ""
    device_memory: int | None = None
    large_bytes: int = 1 << 20
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def devices(self) -> int:
        """How many devices the state is placed on."""
        return math.prod(self.mesh_shape.values()) if self.mesh_shape else 1

    @property
    def state_bytes_per_device(self) -> int:
        """Parameters, optimizer state and the rest of the state on one device."""
        return self.params_bytes_per_device + self.opt_bytes_per_device + \
            self.other_bytes_per_device

    @property
    def peak_bytes_per_device(self) -> int | None:
        """The compiled step's peak per device, plus the on-device data set.

        Arguments + outputs - aliased + temporaries + code, or XLA's own peak when the
        backend reports a larger one (the CPU backend's leaves temporaries out).
        """
        if self.memory is None:
            return None
        m = self.memory
        estimate = (m.get("argument_size_in_bytes", 0) + m.get("output_size_in_bytes", 0)
                    - m.get("alias_size_in_bytes", 0) + m.get("temp_size_in_bytes", 0)
                    + m.get("generated_code_size_in_bytes", 0))
        return max(estimate, m.get("peak_memory_in_bytes", 0)) + self.data_bytes

    @property
    def warnings(self) -> list[str]:
        """Everything worth acting on before launching, one sentence each."""
        example = f" (e.g. {self.rows[-1].path})" if self.rows else ""
        out = [f"sharding rule {pattern!r} matched no parameter: the parameters it was "
               "meant for are placed by the default (FSDP over 'fsdp', or replicated). "
               f"Fix: write the pattern against the parameter paths in the table{example}"
               for pattern in self.unused_rules]
        for row in self.replicated_large:
            out.append(f"{row.path} {row.shape} ({human_bytes(row.bytes)}) is replicated: each "
                       f"of the {self.devices} devices holds all of it "
                       f"({self.replicated_reasons.get(row.path, 'no rule shards it')}). "
                       f"Fix: {_shard_fix(row, self.mesh_shape or {})}")
        out.extend(self.notes)
        peak = self.peak_bytes_per_device
        if peak is not None and self.device_memory and peak > self.device_memory:
            out.append(f"the training step needs about {human_bytes(peak)} per device, more "
                       f"than the {human_bytes(self.device_memory)} a device has: it will run "
                       "out of memory. Fix: shard more (mesh.fsdp, sharding.rules) or lower "
                       "batch_size")
        return out

    def render(self) -> str:
        """The report as text: a table of parameters, totals, step memory and warnings."""
        if self.mesh_shape:
            sizes = " ".join(f"{axis}={size}" for axis, size in self.mesh_shape.items())
            split = self.mesh_shape.get("data", 1) * self.mesh_shape.get("fsdp", 1)
            lines = [f"mesh {sizes} ({self.devices} devices); batch {self.batch_size} "
                     f"split {split} ways"]
        else:
            lines = [f"one device, no mesh; batch {self.batch_size}"]
        lines.extend(table(self.rows))
        lines.append(f"total: {sum(r.count for r in self.rows):,} parameters, "
                     f"{human_bytes(self.params_bytes)}; optimizer state "
                     f"{human_bytes(self.opt_bytes)}; per device: params "
                     f"{human_bytes(self.params_bytes_per_device)}, optimizer state "
                     f"{human_bytes(self.opt_bytes_per_device)}, whole state "
                     f"{human_bytes(self.state_bytes_per_device)}")
        if self.memory is not None:
            m = self.memory
            names = {"argument_size_in_bytes": "arguments", "output_size_in_bytes": "outputs",
                     "alias_size_in_bytes": "aliased", "temp_size_in_bytes": "temporaries",
                     "generated_code_size_in_bytes": "code"}
            parts = ", ".join(f"{label} {human_bytes(m[key])}" for key, label in names.items()
                              if key in m)
            data = (f" + data set {human_bytes(self.data_bytes)} (replicated)"
                    if self.data_bytes else "")
            lines.append(f"compiled train step, per device: {parts}{data}; peak about "
                         f"{human_bytes(self.peak_bytes_per_device or 0)}"
                         + (f" of {human_bytes(self.device_memory)}"
                            if self.device_memory else ""))
        else:
            lines.append(f"compiled train step: {self.memory_note}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def table(rows: list[ParamRow]) -> list[str]:
    """The parameter table's lines: header, then path, shape, dtype, count, bytes, spec,
    bytes per device (path padded to the longest, then two spaces)."""
    width = max([len("parameter"), *(len(r.path) for r in rows)])
    spec_width = max([len("replicated"), *(len(spec_text(r.spec)) for r in rows)])
    lines = [f"{'parameter':<{width}}  {'shape':<14} {'dtype':<8} {'count':>10} {'bytes':>10}  "
             f"{'spec':<{spec_width}} {'per device':>10}"]
    for r in rows:
        lines.append(f"{r.path:<{width}}  {str(r.shape):<14} {r.dtype:<8} {r.count:>10,} "
                     f"{human_bytes(r.bytes):>10}  {spec_text(r.spec):<{spec_width}} "
                     f"{human_bytes(r.bytes_per_device):>10}")
    return lines


def _shard_fix(row: ParamRow, mesh_shape: Mapping[str, int]) -> str:
    axis = next((a for a in ("fsdp", "tensor") if mesh_shape.get(a, 1) > 1), None)
    if axis is None:
        return ("give the mesh an fsdp axis (e.g. --config.mesh.fsdp=-1: FSDP shards large "
                "parameters by default) or a tensor axis with a sharding rule")
    size = mesh_shape[axis]
    dims = [d for d in sorted(range(len(row.shape)), key=lambda d: -row.shape[d])
            if row.shape[d] % size == 0]
    if not dims:
        return (f"no dimension of {row.shape} divides the {axis} axis ({size}); pad the "
                "layer to a multiple of it or change the mesh")
    spec = tuple(axis if d == dims[0] else None for d in range(len(row.shape)))
    pattern = re.escape(row.path)
    return f"a sharding rule such as (r\"{pattern}\", {spec})"


def _state_shardings(trainer: Any, abstract: Any, sample_x: Any, population: bool = False,
                     tx: Any = None) -> Any:
    """The state's shardings exactly as ``trainer.init`` places it (logical axis names
    included: they are read from the model's boxed params; ``tx``: the state's optimizer)."""
    if callable(getattr(trainer, "state_shardings", None)):
        return trainer.state_shardings(sample_x)
    variables = getattr(trainer, "_variables", None)
    if variables is None:
        return trainer.placement.state_shardings(abstract, population=population, tx=tx)
    boxed = jax.eval_shape(variables, jax.random.key(0), row_struct(sample_x))["params"]
    return trainer.placement.state_shardings(abstract, boxed_params=boxed,
                                             population=population, tx=tx)


def _replicated_reason(path: str, shape: tuple[int, ...], placement: Any) -> str:
    if getattr(placement, "strategy", "auto") == "shard_map":
        return "the shard_map strategy replicates the whole state"
    for pattern, spec in placement.rules:
        if re.search(pattern, path):
            spec = PartitionSpec(*spec)
            return f"rule {pattern!r} gives it {spec_text(spec)}" + (
                "" if spec_text(spec) == "replicated" else ", over mesh axes of size 1")
    fsdp = placement.mesh.shape["fsdp"]
    if fsdp <= 1:
        return "the mesh has no fsdp axis (fsdp=1) and no rule matches it"
    return f"no dimension of {shape} is divisible by fsdp={fsdp} and no rule matches it"


def _placed_report(abstract: Any, shardings: Any, placement: Any, *, batch_size: int,
                   large_bytes: int, data_bytes: int, device_memory: int | None) -> Preflight:
    """The report's parameter table and byte totals, from the state's placement alone."""

    def leaves(tree: Any) -> list[Any]:
        return jax.tree.leaves(tree, is_leaf=lambda x: x is None)

    param_paths = jax.tree_util.tree_flatten_with_path(abstract.params)[0]
    rows = [ParamRow(jax.tree_util.keystr(path), tuple(leaf.shape), str(leaf.dtype),
                     sharding.spec if isinstance(sharding, NamedSharding) else None,
                     _nbytes(leaf), _per_device(leaf, sharding))
            for (path, leaf), sharding in zip(param_paths, leaves(shardings.params),
                                              strict=True)]

    def per_device(field: str) -> int:
        return sum(_per_device(leaf, sharding) for leaf, sharding in zip(
            jax.tree.leaves(getattr(abstract, field)),
            leaves(getattr(shardings, field)), strict=True))

    mesh_shape = None
    if placement is not None:  # the population axis only when it splits members
        mesh_shape = {axis: size for axis, size in placement.mesh.shape.items()
                      if axis != "population" or size != 1}
    report = Preflight(
        rows=rows, mesh_shape=mesh_shape, batch_size=batch_size,
        params_bytes=sum(r.bytes for r in rows),
        params_bytes_per_device=sum(r.bytes_per_device for r in rows),
        opt_bytes=sum(_nbytes(leaf) for leaf in jax.tree.leaves(abstract.opt_state)),
        opt_bytes_per_device=per_device("opt_state"),
        other_bytes_per_device=sum(per_device(f) for f in ("step", "model_state", "rng")),
        data_bytes=data_bytes,
        unused_rules=list(placement.unused_rules) if placement is not None else [],
        large_bytes=large_bytes,
        device_memory=device_memory if device_memory is not None else device_memory_limit())
    if placement is not None and placement.mesh.size > 1:
        for row in rows:
            if row.bytes >= large_bytes and row.bytes_per_device == row.bytes:
                report.replicated_large.append(row)
                report.replicated_reasons[row.path] = _replicated_reason(row.path, row.shape,
                                                                         placement)
    return report


def preflight(trainer: Any, sample_x: Any, batch_size: int, *, sample_y: Any = None,
              compile_step: bool = True, large_bytes: int = 1 << 20, data_bytes: int = 0,
              device_memory: int | None = None, population: int | None = None,
              hparams: Any = ()) -> Preflight:
    """The pre-flight report of a trainer's state and training step, from shapes only.

    Args:
      trainer: a :class:`jaxdl.Trainer` (with or without a mesh).
      sample_x: one or more input rows [b, ...] (only shape and dtype are used).
      batch_size: the global batch the step is compiled for.
      sample_y: labels [b, ...] whose shape and dtype the batch takes; default: what the
        kit's data sets give for the trainer's loss (int32 class labels for
        classification, float32 targets otherwise).
      compile_step: lower and compile the training step to read its memory per device.
      large_bytes: parameters at least this large that stay replicated on a mesh of more
        than one device are warned about.
      data_bytes: bytes of the data set the run keeps on every device, added to the peak.
      device_memory: one device's memory in bytes, to warn when the step will not fit;
        default: the first local device's ``bytes_limit`` when the backend reports one.
      population, hparams: report a population of this many members (varying the named
        hyper-parameters): shapes carry the member axis, placed over ``mesh.population``.

    Returns:
      A :class:`Preflight`; ``render()`` is the text, ``warnings`` the problems found.

    Raises:
      InputError: ``batch_size`` is not a positive integer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise errors.input_error("batch_size", "an integer >= 1", repr(batch_size),
                                 "pass e.g. batch_size=32")
    abstract = trainer.abstract_state(sample_x, population, tuple(hparams))
    tx, programs = trainer._population(tuple(hparams)) if population else (
        getattr(trainer, "tx", None), trainer.programs)
    placement = trainer.placement
    shardings = _state_shardings(trainer, abstract, sample_x, bool(population), tx) \
        if placement is not None else jax.tree.map(lambda _: None, abstract)

    report = _placed_report(abstract, shardings, placement, batch_size=batch_size,
                            large_bytes=large_bytes, data_bytes=data_bytes,
                            device_memory=device_memory)
    if not compile_step:
        report.memory_note = "not compiled (compile_step=False)"
        return report
    if placement is not None:
        try:
            placement.check_batch(batch_size)
        except errors.InputError as e:
            report.notes.append(f"the training step was not compiled: {e}")
            report.memory_note = "not compiled (the batch does not split over the mesh)"
            return report
    report.memory, report.memory_note = compiled_step_memory(
        trainer, programs, abstract, shardings, sample_x, sample_y, batch_size)
    return report
