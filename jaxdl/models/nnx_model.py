"""NNX modules in the kit: an adapter with the interface the kit uses for a Linen module.

The kit drives a model through ``init(rngs, x) -> variables`` and ``apply(variables, x,
rngs=..., mutable=..., train=...)``. :class:`NNXModel` gives a user's ``nnx.Module``
instance (never subclassed, never mutated) exactly that interface, by ``nnx.split`` on
the way in and ``nnx.merge`` on a fresh copy for every call::

    model = jdl.models.NNXModel(Net(din=8, rngs=nnx.Rngs(0)))  # Trainer(Net(...)) does this
    variables = model.init(None, x)        # {"params": ..., "batch_stats": ...}: its own weights
    y = model.apply(variables, x)          # eval mode
    y, updates = model.apply(variables, x, train=True, rngs={"dropout": key},
                             mutable=["batch_stats"])

Where the module's state goes:

- ``nnx.Param`` (and subclasses) -> ``variables["params"]``, trained by the optimizer;
  an ``out_sharding`` annotation (``nnx.with_partitioning(init, ("embed", "mlp"))``)
  becomes an ``nn.LogicallyPartitioned`` box there, read by the kit's placement;
- every other ``nnx.Variable`` type -> its Linen collection (``nnx.BatchStat`` ->
  ``"batch_stats"``; otherwise the registered name or the type's name), the kit's
  ``TrainState.model_state``: updated when ``mutable`` asks for it (training);
- RNG streams (``nnx.RngState``) -> nowhere: each call starts from the module's own
  streams, and given ``rngs`` (the training step's key) reseeds all of them from it.

Paths are dicts of strings (an ``nnx.List`` index ``0`` is the key ``"0"``), so the
variables checkpoint like a Linen model's.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from jaxdl import errors

PARAMS = "params"
_MODE_NAMES = ("train", "training", "deterministic", "is_training")
# A Leaf is (collection or None for RNG state, the module's path to it, a template Variable).
Leaf = tuple[str | None, tuple[Any, ...], Any]


def _collection(variable: Any) -> str | None:
    """The Linen collection an NNX variable belongs in; None for RNG state."""
    kind = type(variable)
    if issubclass(kind, nnx.RngState):
        return None
    if issubclass(kind, nnx.Param):
        return PARAMS
    try:  # the names flax registers (BatchStat -> batch_stats); no global registration
        return nnx.variable_name_from_type(kind)
    except ValueError:
        return kind.__name__


def _tag_id(tag: str) -> int:
    """A stable 31-bit number per stream name (Python's ``hash`` of a str is salted)."""
    return zlib.crc32(tag.encode()) & 0x7FFFFFFF


def _mode_name(module: nnx.Module) -> str | None:
    """The name of the module's own train/eval argument of ``__call__``, if it has one."""
    parameters = inspect.signature(type(module).__call__).parameters
    return next((name for name in _MODE_NAMES if name in parameters), None)


def _lookup(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or str(key) not in tree:
            return None
        tree = tree[str(key)]
    return tree


def _nest(items: Sequence[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in items:
        node = out
        for key in path[:-1]:
            node = node.setdefault(str(key), {})
        node[str(path[-1])] = value
    return out


def _box(value: Any, variable: Any) -> Any:
    """``value`` in an ``nn.LogicallyPartitioned`` box when ``variable`` is annotated."""
    sharding = variable.get_metadata().get("out_sharding")
    if not sharding:
        return value
    if isinstance(sharding, jax.sharding.NamedSharding):
        sharding = sharding.spec
    return nn.LogicallyPartitioned(value, tuple(sharding))


class NNXModel:
    """A user's ``nnx.Module`` seen through the Linen ``init``/``apply`` interface.

    ``jdl.Trainer(module, ...)`` wraps an ``nnx.Module`` in this itself; build one
    directly to call ``init``/``apply`` by hand, or with :meth:`from_factory`.

    Args:
      module: an initialized ``nnx.Module`` instance, as the user wrote it. Its weights
        are read once, here: later changes to the object are not seen.

    Initialization: the module exists, so :meth:`init` returns *its* weights (an NNX model
    equals its Linen twin given the same weights) and ignores its ``rngs``; a Trainer's
    ``init`` seed then only seeds dropout and augmentation. A population's members all
    start from these weights and differ by their hyper-parameters, dropout keys and data
    order, unless the model comes from :meth:`from_factory`.

    Modes: ``train=True`` runs a merged copy after ``module.train()``, ``train=False``
    after ``module.eval()`` (Dropout ``deterministic``, BatchNorm ``use_running_average``);
    a module whose ``__call__`` takes ``train``/``training``/``deterministic`` also gets
    it. Everything is traceable: the kit calls ``apply`` under ``jit``, ``vmap``,
    ``grad`` and ``shard_map``.
    """

    def __init__(self, module: nnx.Module, *,
                 _factory: Callable[[nnx.Rngs], nnx.Module] | None = None):
        if not isinstance(module, nnx.Module):
            raise errors.type_error("module", "a flax.nnx.Module instance",
                                    errors.describe(module),
                                    "pass an initialized module, e.g. Net(..., rngs=nnx.Rngs(0))")
        self.module = module
        self._factory = _factory
        self._graphdef, self._leaves, self._initial = self._split(module)
        self._collections = tuple(sorted({c for c, _, _ in self._leaves if c is not None}))
        self._tags = tuple(sorted({v.get_metadata().get("tag", "default")
                                   for c, _, v in self._leaves if c is None}))
        self._mode = _mode_name(module)

    @classmethod
    def from_factory(cls, make: Callable[[nnx.Rngs], nnx.Module]) -> NNXModel:
        """A model re-initialized from the key of every ``init`` (Linen-like seeding).

        ``make(rngs)`` builds the module, e.g. ``lambda rngs: Net(8, rngs=rngs)``; it is
        called once here with ``nnx.Rngs(0)`` for the structure, then inside ``init``
        (traced) with ``nnx.Rngs(params=<params key>, dropout=<dropout key>)`` (plus a
        ``default`` stream), so each population member gets weights from its own seed.
        """
        return cls(make(nnx.Rngs(0)), _factory=make)

    @staticmethod
    def _split(module: nnx.Module) -> tuple[Any, tuple[Leaf, ...], dict[str, Any]]:
        """(graphdef, leaves, initial values by collection) of ``module``."""
        graphdef, state = nnx.split(module)
        leaves, initial = [], {}
        for path, variable in nnx.to_flat_state(state):
            collection = _collection(variable)
            # A template copy: the user's Variable objects are never touched again.
            leaves.append((collection, tuple(path), variable.replace(variable.get_value())))
            if collection is not None:
                initial.setdefault(collection, []).append((path, variable.get_value()))
        return graphdef, tuple(leaves), {c: _nest(items) for c, items in initial.items()}

    def __call__(self, x: Any, train: bool = False, rngs: Any = None) -> Any:
        """The module's outputs with its initial weights (``train`` is the kit's switch)."""
        return self.apply(self._initial, x, train=train, rngs=rngs)

    def init(self, rngs: Any, x: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The variables ``{"params": ..., <collection>: ...}`` of the module.

        Args:
          rngs: ignored for a module instance (its weights exist); for
            :meth:`from_factory`, a key or ``{"params": key, "dropout": key}``.
          x: a sample batch [B, ...]; the module is traced on it (shapes only) so that a
            batch it rejects fails here, as a Linen ``init`` would.
          *args, **kwargs: passed to :meth:`apply` (``train=False`` and the like).

        Returns:
          Nested dicts of arrays by collection; annotated params in
          ``nn.LogicallyPartitioned`` boxes.
        """
        variables = self._initial if self._factory is None else self._rebuild(rngs)
        jax.eval_shape(lambda v, x: self.apply(v, x, *args, **kwargs), variables, x)
        params = _nest([(path, _box(_lookup(variables[PARAMS], path), template))
                        for c, path, template in self._leaves if c == PARAMS])
        return {**variables, PARAMS: params}  # "params" even when empty, as the kit expects

    def _rebuild(self, rngs: Any) -> dict[str, Any]:
        """The initial variables of a module built by the factory from ``rngs``."""
        keys = dict(rngs) if isinstance(rngs, Mapping) else {PARAMS: rngs}
        keys.setdefault("default", jax.random.fold_in(keys[PARAMS], 1))
        _, leaves, initial = self._split(self._factory(nnx.Rngs(**keys)))
        layout = [(c, path, v.get_value().shape, v.get_value().dtype) for c, path, v in leaves]
        expected = [(c, path, v.get_value().shape, v.get_value().dtype)
                    for c, path, v in self._leaves]
        if layout != expected:
            raise errors.input_error(
                "make", "a factory that builds the same structure for every key",
                "a module whose variables differ from the first one built",
                "build the module from its arguments and the given rngs only")
        return initial

    def apply(self, variables: Mapping[str, Any], x: Any, *args: Any, rngs: Any = None,
              mutable: bool | str | Sequence[str] = False, train: bool = False,
              **kwargs: Any) -> Any:
        """Runs a fresh copy of the module on ``x`` [B, ...] with ``variables``.

        Args:
          variables: ``{"params": ..., <collection>: ...}`` as :meth:`init` gives them
            (boxed or not); a missing collection takes the module's initial values.
          x: the inputs [B, ...]; ``*args`` and ``**kwargs`` follow to the module.
          rngs: None (the module's own RNG streams), a key, or ``{"dropout": key, ...}``:
            every stream named in it is reseeded with its key, every other stream with
            ``fold_in(base, crc32(name))``, ``base`` the "dropout" key (else the first);
            Dropout layers built without rngs get a stream from ``base`` too.
          mutable: False, True (all non-param collections) or collection names.
          train: training mode (``module.train()``) or eval mode (``module.eval()``).

        Returns:
          The outputs, or ``(outputs, updates)`` with ``mutable``: the new values of
          those collections, shaped like ``variables``.
        """
        module = self._merge(nn.meta.unbox(variables))
        if rngs is not None:
            self._seed(module, rngs)
        # On the merged copy only: the user's object keeps its own mode.
        module.train() if train else module.eval()
        if self._mode is not None:
            kwargs[self._mode] = (not train) if self._mode == "deterministic" else train
        outputs = module(x, *args, **kwargs)
        if mutable is False:
            return outputs
        names = (self._collections if mutable is True else
                 (mutable,) if isinstance(mutable, str) else tuple(mutable))
        names = tuple(c for c in names if c != PARAMS)
        return outputs, self._state_of(module, names)

    def _merge(self, variables: Mapping[str, Any]) -> nnx.Module:
        """A fresh module from ``variables``; RNG state and missing values: the initial."""
        leaves = []
        for collection, path, template in self._leaves:
            value = None if collection is None else _lookup(variables.get(collection), path)
            # A new Variable per call: reseeding and BatchNorm's updates mutate it inside
            # the trace, never the template.
            leaves.append((path, template.replace(template.get_value() if value is None
                                                  else value)))
        return nnx.merge(self._graphdef, nnx.from_flat_state(leaves))

    def _seed(self, module: nnx.Module, rngs: Any) -> None:
        """Reseeds every RNG stream of the merged copy from ``rngs`` (inside the trace)."""
        given = dict(rngs) if isinstance(rngs, Mapping) else {"dropout": rngs}
        base = given.get("dropout", next(iter(given.values())))
        keys = {tag: given.get(tag, jax.random.fold_in(base, _tag_id(tag)))
                for tag in self._tags}
        if keys:
            nnx.reseed(module, policy="match_shape", **keys)
        # A Dropout built without rngs expects them at call time: give it a stream.
        unseeded = jax.random.fold_in(base, _tag_id("unseeded dropout"))
        for i, (_, layer) in enumerate(nnx.iter_modules(module)):
            if isinstance(layer, nnx.Dropout) and layer.rngs is None:
                layer.rngs = nnx.RngStream(jax.random.fold_in(unseeded, i),
                                           tag=layer.rng_collection)

    def _state_of(self, module: nnx.Module, names: Sequence[str]) -> dict[str, Any]:
        """The values of collections ``names`` in ``module``, as nested dicts."""
        _, state = nnx.split(module)
        flat = {tuple(path): variable for path, variable in nnx.to_flat_state(state)}
        return {name: _nest([(path, flat[path].get_value()) for c, path, _ in self._leaves
                             if c == name]) for name in names if name in self._collections}


def wrap(model: Any) -> NNXModel | None:
    """``model`` as the kit drives it if it is an NNX module (or already wrapped), else None.

    Raises:
      InputTypeError: ``model`` is an NNX module class rather than an instance.
    """
    if isinstance(model, NNXModel):
        return model
    if isinstance(model, nnx.Module):
        return NNXModel(model)
    if isinstance(model, type) and issubclass(model, nnx.Module):
        raise errors.type_error("model", "a Flax module instance", f"the NNX class "
                                f"{model.__name__}", f"instantiate it: "
                                f"{model.__name__}(..., rngs=nnx.Rngs(0))")
    return None
