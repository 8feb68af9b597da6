"""``trainer.summary(x)``: Keras' ``model.summary()`` for a Flax model.

One row per module, in call order (each Linen module's ``__call__`` is
intercepted once while the forward pass is traced), with its type, its output
shape, its own parameters (``params``, then the non-trainable ``model_state``
collections such as ``batch_stats``), their count and bytes; then the totals
and the FLOPs of one forward pass from XLA's cost analysis (the same reading as
:func:`jaxdl.train.perf.step_flops`). Modules that own parameters but were not
called through ``__call__`` are listed after, by their path in the params tree.

Everything comes from abstract shapes (``jax.eval_shape`` and a lowering):
nothing is allocated, so a model larger than memory can be summarized.

A population state (``init(..., population=N)``) is summarized per member: the
table shows one member's shapes (every member has the same) and the totals
line adds the population's.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax

from jaxdl import errors
from jaxdl import population as population_lib
from jaxdl import step as step_lib
from jaxdl.parallel.report import human_bytes
from jaxdl.train import perf

_ROOT = "(model)"


@dataclasses.dataclass
class ModuleRow:
    """One module: path in the params tree, type, output shape and its own leaves."""

    path: tuple[str, ...]
    kind: str = ""
    output: str = ""
    # (collection, name, shape, dtype) of the leaves this module owns directly.
    leaves: list[tuple[str, str, tuple[int, ...], Any]] = dataclasses.field(
        default_factory=list)

    @property
    def count(self) -> int:
        return sum(math.prod(shape) for _, _, shape, _ in self.leaves)

    @property
    def nbytes(self) -> int:
        # PRNG key dtypes have an itemsize too; np.dtype() would reject them.
        return sum(math.prod(shape) * dtype.itemsize for _, _, shape, dtype in self.leaves)


@dataclasses.dataclass(frozen=True)
class Summary:
    """A model's per-module table, totals and forward FLOPs (None: the backend gave none)."""

    name: str
    input_shape: tuple[int, ...]
    rows: list[ModuleRow]
    flops: float | None
    population: int | None

    def totals(self, trainable: bool | None = None) -> tuple[int, int]:
        """(count, bytes) of all leaves, or of the trainable (``params``) or other ones."""
        leaves = [leaf for row in self.rows for leaf in row.leaves
                  if trainable is None or (leaf[0] == "params") == trainable]
        return (sum(math.prod(s) for _, _, s, _ in leaves),
                sum(math.prod(s) * d.itemsize for _, _, s, d in leaves))

    def render(self) -> str:
        """The table as text (what ``trainer.summary`` prints)."""
        header = ("module (type)", "output shape", "parameters", "count", "bytes")
        body = [(_label(r), r.output, _leaves_text(r),
                 f"{r.count:,}", human_bytes(r.nbytes)) for r in self.rows]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(5)]
        align = lambda line: "  ".join(
            cell.rjust(w) if i >= 3 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
        member = f", one member of a population of {self.population}" if self.population else ""
        lines = [f'Model: "{self.name}" (input {self.input_shape}{member})', align(header),
                 "-" * len(align(header)), *map(align, body)]
        (count, nbytes), (train, train_b) = self.totals(), self.totals(True)
        lines.append(f"total: {count:,} parameters, {human_bytes(nbytes)}; trainable {train:,} "
                     f"({human_bytes(train_b)}); non-trainable {count - train:,} "
                     f"({human_bytes(nbytes - train_b)})")
        if self.population:
            lines.append(f"population of {self.population}: {count * self.population:,} "
                         f"parameters, {human_bytes(nbytes * self.population)}")
        flops = ("not reported by this backend" if self.flops is None
                 else f"{self.flops:,.0f} FLOPs for a batch of {self.input_shape[0]}")
        lines.append(f"forward pass: {flops} (XLA cost analysis)")
        return "\n".join(lines)


def _label(row: ModuleRow) -> str:
    """``path/to/module (Type)``, indented by depth; the root module is its type alone."""
    if not row.path:
        return row.kind or _ROOT
    return "  " * (len(row.path) - 1) + "/".join(row.path) + (f" ({row.kind})" if row.kind
                                                               else "")


def _leaves_text(row: ModuleRow) -> str:
    return ", ".join(f"{name if collection == 'params' else f'{collection}/{name}'} {shape}"
                     for collection, name, shape, _ in row.leaves)


def _own_leaves(tree: Mapping[str, Any], collection: str, path: tuple[str, ...],
                rows: dict[tuple[str, ...], ModuleRow]) -> None:
    """Adds each leaf of a variables tree to the row of the module that owns it."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _own_leaves(value, collection, (*path, key), rows)
        else:
            row = rows.setdefault(path, ModuleRow(path))
            row.leaves.append((collection, key, tuple(value.shape), value.dtype))


def _forward(model: nn.Module, precision: str):
    """``forward(variables, x)``: the model in eval mode, as predict runs it (no link)."""
    predict = step_lib.make_predict_step(model, precision=precision)
    # predict reads only these two fields of a TrainState.
    return lambda variables, x: predict(types.SimpleNamespace(**variables), x)


def checked(fn: Callable[[], Any], x: Any) -> Any:
    """``fn()``, with a model's complaint about the sample ``x`` in the kit's error shape."""
    try:
        return fn()
    except errors.JaxdlError:
        raise
    except Exception as e:  # the model's own message, quoted
        raise errors.input_error("x", "a batch the model can be applied to",
                                 f"{errors.describe(x)} (the model said: "
                                 f"{errors.first_sentence(e)})",
                                 "pass a slice of the training inputs, e.g. x[:1]") from None


def _called_modules(forward, variables: Any, x: Any) -> list[ModuleRow]:
    """The modules whose ``__call__`` ran, in call order, with type and output shape."""
    rows: list[ModuleRow] = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        row = ModuleRow(tuple(context.module.path), type(context.module).__name__)
        rows.append(row)
        out = next_fun(*args, **kwargs)
        shapes = [tuple(a.shape) for a in jax.tree.leaves(out) if hasattr(a, "shape")]
        row.output = ", ".join(map(str, shapes))
        return out

    def traced(variables, x):
        with nn.intercept_methods(interceptor):
            return forward(variables, x)

    checked(lambda: jax.eval_shape(traced, variables, x), x)
    seen: dict[tuple[str, ...], ModuleRow] = {}
    for row in rows:  # a module called twice (shared weights) is listed once
        seen.setdefault(row.path, row)
    return list(seen.values())


def summarize(model: nn.Module, state: Any, x: Any, *, precision: str = "float32") -> Summary:
    """The per-module summary of ``model`` with the parameters of ``state``.

    Args:
      model: the Flax Linen module the state was built for.
      state: a TrainState or its abstract shapes (``trainer.abstract_state(x)``); a
        population's is summarized per member.
      x: a sample batch, or a ``jax.ShapeDtypeStruct`` [b, ...]: its shape is the
        forward pass's whose FLOPs are reported (``x[:1]``: one example).
      precision: the compute dtype policy predict uses ("float32" or "bfloat16").

    Returns:
      A :class:`Summary`; ``.render()`` is the text ``trainer.summary`` prints.
    """
    members = population_lib.size(state)
    strip = (lambda a: a.shape[1:]) if members else (lambda a: a.shape)
    abstract = lambda tree: jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(strip(a), a.dtype), tree)
    variables = {"params": abstract(state.params), "model_state": abstract(state.model_state)}
    x = jax.tree.map(lambda a: jax.ShapeDtypeStruct(tuple(a.shape), a.dtype), x)
    forward = _forward(model, precision)
    called = _called_modules(forward, variables, x)
    rows = {row.path: row for row in called}
    owned: dict[tuple[str, ...], ModuleRow] = {}
    _own_leaves(variables["params"], "params", (), owned)
    for collection, tree in variables["model_state"].items():
        _own_leaves(tree, collection, (), owned)
    for path, row in owned.items():
        rows.setdefault(path, ModuleRow(path)).leaves.extend(row.leaves)
    # A model with several inputs shows the first's shape (the batch size is common).
    from jaxdl.models.nnx_model import NNXModel

    # An NNX model is named by the user's module, not by the adapter that wraps it.
    name = type(model.module if isinstance(model, NNXModel) else model).__name__
    return Summary(name, tuple(jax.tree.leaves(x)[0].shape), list(rows.values()),
                   perf.step_flops(forward, variables, x), members)


def show(trainer: Any, x: Any, state: Any = None, print_fn: Callable[[str], Any] | None = print,
         precision: str = "float32") -> str:
    """``trainer.summary(x)``: the text of :func:`summarize`, printed with ``print_fn``.

    Args:
      trainer: a :class:`jaxdl.Trainer`.
      x: a sample batch (``x[:1]``); the FLOPs are one forward pass's over it.
      state: summarize its parameters (a population's per member) in place of those
        ``trainer.init`` builds.
      print_fn: called with the text (Keras' argument); None prints nothing.
      precision: the trainer's compute dtype policy.

    Returns:
      The text. Shapes only: nothing is allocated on a device.
    """
    from jaxdl.data import validate as check
    from jaxdl.state import TrainState

    sample = check.as_features(x, "x")
    if state is None:
        state = checked(lambda: trainer.abstract_state(sample), sample)
    elif not isinstance(state, TrainState):
        raise errors.type_error("state", "a jdl.TrainState from trainer.init(...)",
                                errors.describe(state), "pass state = trainer.init(key, x[:1])")
    text = summarize(trainer.model, state, sample, precision=precision).render()
    if print_fn is not None:
        print_fn(text)
    return text
