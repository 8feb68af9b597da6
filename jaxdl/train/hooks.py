"""The callback contract: the base class, LambdaCallback, and how ``fit`` calls each hook.

Callbacks run on the host between dispatches. What ``fit`` does with one is decided once,
when the fit starts (:func:`prepare`), then applied at every call (:func:`call`):

- **Which hooks it has.** ``on_train_begin``, ``on_epoch_begin``, ``on_epoch_end``,
  ``on_train_end``, and Keras' ``on_train_batch_begin`` / ``on_train_batch_end`` (or their
  aliases ``on_batch_begin`` / ``on_batch_end``, not both). Steps are fused on device, out
  of a callback's reach, so a batch hook makes ``fit`` dispatch one step at a time
  (``steps_per_dispatch=1``) and warn once about the cost. Keras' ``on_test_*`` and
  ``on_predict_*`` are refused: validation runs fused; its results are the ``val_*`` logs.
- **How each hook is called, read from its signature.** With the kit's arguments —
  ``on_train_begin(state, context)``, ``on_epoch_begin/end(epoch, logs, state)``,
  ``on_train_batch_begin/end(batch, logs, state)``, ``on_train_end(state)`` — when it can
  take them all positionally and does not name ``logs`` the parameter where the state goes;
  else with Keras' — ``on_train_begin(logs)``, ``on_epoch_*(epoch, logs)``,
  ``on_train_batch_*(batch, logs)``, ``on_train_end(logs)`` — as many as it takes
  (``on_train_end(self)`` gets none). ``keras_style = True`` on a callback gives all its
  hooks Keras' arguments (:class:`LambdaCallback` sets it). A signature that fits neither
  is refused when the fit starts. Keras' logs are ``{}`` at the beginnings and the last
  epoch's at the end of training; at a batch's end, the epoch's running metrics so far.
- **What a hook may return.** None: the state goes on unchanged. Else a ``TrainState``
  like the one passed in: the same tree structure and shapes, each leaf of the same kind
  (float, integer, bool, key); a change of precision within a kind (float32 -> bfloat16)
  recompiles the block once, which the recompile watchdog reports.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.state import TrainState
from jaxdl.train.plan import Dispatch


class Callback:
    """Base class of callbacks; override the hooks you need (see :mod:`jaxdl.train.hooks`).

    Each hook returns the state to go on with, or None for "unchanged". Optional Keras
    hooks a subclass may add: ``on_epoch_begin(epoch, logs)``, and
    ``on_train_batch_begin/end(batch, logs)`` (these make ``fit`` dispatch per step).
    ``stop_training`` ends ``fit`` after this epoch.
    """

    stop_training: bool = False
    # Populations: the members this callback stopped (bool [N]; None for one model).
    stopped_members: np.ndarray | None = None
    # The fit's MemberView, for callbacks that keep context["members"] in on_train_begin.
    members: Any = None

    def on_train_begin(self, state: TrainState, context: dict[str, Any]) -> TrainState | None:
        """Called once before the first dispatch; ``context`` has epochs, steps_per_epoch,
        batch_size, step, population and members (see :func:`jaxdl.train.fit.fit`)."""
        return state

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state: TrainState
                     ) -> TrainState | None:
        """Called after each epoch (0-based ``epoch``) with its logs; returns the state to go on."""
        return state

    def on_train_end(self, state: TrainState) -> TrainState | None:
        """Called once at the end of ``fit``; returns the state ``fit`` returns."""
        return state

    # Checkpointing: a resumed run must continue exactly where it stopped, so a
    # callback's own progress (counters as JSON, arrays as a pytree) is saved too.

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe progress (counters, best values) saved with each checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any], arrays: Any = None) -> None:
        """Restores what :meth:`state_dict` and :meth:`checkpoint_arrays` saved."""

    def checkpoint_arrays(self) -> Any:
        """A pytree of arrays to save with the checkpoint, or None."""
        return None

    def checkpoint_template(self, state: TrainState) -> Any:
        """The structure :meth:`checkpoint_arrays` has, given the run's state (or None)."""
        return None


# hook -> (the kit's parameters, Keras' parameters); the state goes where "state" is.
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "on_train_begin": (("state", "context"), ("logs",)),
    "on_epoch_begin": (("epoch", "logs", "state"), ("epoch", "logs")),
    "on_train_batch_begin": (("batch", "logs", "state"), ("batch", "logs")),
    "on_train_batch_end": (("batch", "logs", "state"), ("batch", "logs")),
    "on_epoch_end": (("epoch", "logs", "state"), ("epoch", "logs")),
    "on_train_end": (("state",), ("logs",)),
}
BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end")
ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}
# Keras hooks fit has no moment for: evaluation and prediction run fused on device.
NOT_CALLED = tuple(f"on_{kind}_{when}" for kind in ("test", "predict")
                   for when in ("begin", "end", "batch_begin", "batch_end"))


class LambdaCallback(Callback):
    """Keras' ``LambdaCallback``: hooks from plain functions, called with Keras' arguments.

    Each function returns None (the state goes on unchanged)::

        log = jdl.LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
        trainer.fit(state, x, y, epochs=5, callbacks=[log])

    Args:
      on_train_begin: ``fn(logs)`` (``logs`` is ``{}``), or ``fn()``.
      on_epoch_begin: ``fn(epoch, logs)``, before each epoch's first step.
      on_epoch_end: ``fn(epoch, logs)``: the epoch's metrics and ``val_*``.
      on_train_batch_begin: ``fn(batch, logs)``; makes ``fit`` dispatch one step at a time.
      on_train_batch_end: ``fn(batch, logs)``: the epoch's running metrics so far; makes
        ``fit`` dispatch one step at a time.
      on_train_end: ``fn(logs)``: the last epoch's logs, or ``fn()``.
    """

    keras_style = True

    def __init__(self, on_epoch_begin: Callable | None = None,
                 on_epoch_end: Callable | None = None, on_train_begin: Callable | None = None,
                 on_train_end: Callable | None = None,
                 on_train_batch_begin: Callable | None = None,
                 on_train_batch_end: Callable | None = None):
        given = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for hook, fn in given.items():
            if fn is None:
                continue
            if not callable(fn):
                keras = ", ".join(SIGNATURES[hook][1])
                raise errors.type_error(hook, f"a function fn({keras}) or None",
                                        errors.describe(fn),
                                        f"pass e.g. {hook}=lambda {keras}: print({keras})")
            # An instance attribute shadows the base's method and is called as it is.
            setattr(self, hook, fn)


@dataclasses.dataclass
class Hooks:
    """One callback's hooks as ``fit`` calls them.

    ``calls`` maps a hook name to ``(function, kit_style, count)``: the kit's arguments
    or the first ``count`` of Keras'. ``last_logs``: the last epoch's, for Keras'
    ``on_train_end(logs)``.
    """

    callback: Any
    index: int
    calls: dict[str, tuple[Callable[..., Any], bool, int]]
    last_logs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def argument(self, hook: str) -> str:
        return f"callbacks[{self.index}].{hook}"

    @property
    def per_step(self) -> bool:
        """Whether a batch hook needs every step to be its own dispatch."""
        return any(hook in self.calls for hook in BATCH_HOOKS)

    @property
    def every_epoch(self) -> bool:
        """Whether no dispatch may span two epochs (writers opt out: needs_every_epoch)."""
        return (self.per_step or "on_epoch_begin" in self.calls
                or getattr(self.callback, "needs_every_epoch", True))


def not_a_callback(index: int, value: Any) -> errors.InputTypeError:
    """The error for ``callbacks[index]`` that is not a :class:`Callback` (Keras, too,
    requires its own base class)."""
    fix = (f"instantiate it: {value.__name__}(...)" if isinstance(value, type)
           and issubclass(value, Callback) else "subclass jdl.Callback, or wrap functions: "
           "jdl.LambdaCallback(on_epoch_end=lambda epoch, logs: ...)")
    return errors.type_error(f"callbacks[{index}]", "a jdl.Callback instance",
                             errors.describe(value), fix)


def _signature_error(hooks_argument: str, hook: str, given: str) -> errors.InputTypeError:
    kit, keras = (", ".join(names) for names in SIGNATURES[hook])
    return errors.type_error(
        hooks_argument, f"a hook taking the kit's arguments ({kit}) or Keras' ({keras})",
        given, f"define it as def {hook}(self, {kit}) (returning the state or None) or as "
        f"def {hook}(self, {keras.replace('logs', 'logs=None')})")


def _method(index: int, callback: Any, hook: str) -> tuple[str, Callable[..., Any]] | None:
    """``(name, function)`` fit calls for ``hook`` (None: absent, or the base's no-op)."""
    names = [n for n in (hook, ALIASES.get(hook)) if n and callable(getattr(callback, n, None))]
    if len(names) > 1:
        raise errors.type_error(
            f"callbacks[{index}].{hook}", f"one of {hook} and its Keras alias {names[1]}",
            f"{type(callback).__name__} defining both", f"define only {hook}")
    if not names:
        return None
    fn = getattr(callback, names[0])
    base = getattr(Callback, hook, None)
    if base is not None and getattr(fn, "__func__", None) is base:
        return None  # the base's "return state": nothing to call
    return names[0], fn


def _calling(index: int, callback: Any, hook: str, name: str, fn: Callable[..., Any]
             ) -> tuple[Callable[..., Any], bool, int]:
    """``(fn, kit_style, count)`` from ``fn``'s signature (the rule in the module docstring)."""
    kit, keras = SIGNATURES[hook]
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a readable signature: the kit's
        return fn, True, len(kit)
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    at = kit.index("state")
    kit_style = ((varargs or len(positional) >= len(kit))
                 and not (at < len(positional) and positional[at].name == "logs")
                 and not getattr(callback, "keras_style", False))
    count = len(kit) if kit_style else (len(keras) if varargs
                                        else min(len(positional), len(keras)))
    argument = f"callbacks[{index}].{name}"
    given = f"{type(callback).__name__}.{name}{signature}"
    if not kit_style and any(p.name == "state" for p in positional[:count]):
        raise _signature_error(argument, hook, f"{given}, which would get Keras' arguments "
                               f"({', '.join(keras)}) in 'state'")
    try:
        signature.bind(*range(count))
    except TypeError as e:
        raise _signature_error(argument, hook, f"{given} ({e})") from None
    return fn, kit_style, count


def _hooks(index: int, callback: Any) -> Hooks:
    for hook in NOT_CALLED:
        if callable(getattr(callback, hook, None)):
            raise errors.type_error(
                f"callbacks[{index}].{hook}", f"hooks fit calls ({', '.join(SIGNATURES)})",
                f"{type(callback).__name__} defining {hook}",
                "fit evaluates the validation set fused on device: read its results as the "
                "val_* entries of the logs on_epoch_end gets")
    calls = {}
    for hook in SIGNATURES:
        found = _method(index, callback, hook)
        if found is not None:
            calls[hook] = _calling(index, callback, hook, *found)
    return Hooks(callback, index, calls)


def prepare(callbacks: Sequence[Any]) -> list[Hooks]:
    """Reads each callback's hooks and signatures once, when a fit starts.

    Raises:
      InputTypeError: naming ``callbacks[i].<hook>`` for a signature that fits neither
        the kit's arguments nor Keras', a batch hook defined under both of its names, or
        an evaluation/prediction hook fit never calls.
    """
    return [_hooks(index, callback) for index, callback in enumerate(callbacks)]


def plan_options(hooks: Sequence[Hooks], steps_per_dispatch: int | str
                 ) -> tuple[int | str, bool]:
    """``(steps_per_dispatch, every_epoch)`` for the plan: one step per dispatch when a
    callback has a batch hook (said once, with its cost)."""
    every_epoch = any(h.every_epoch for h in hooks)
    per_step = [h for h in hooks if h.per_step]
    if per_step and steps_per_dispatch != 1:
        names = ", ".join(f"{type(h.callback).__name__} ("
                          f"{', '.join(k for k in BATCH_HOOKS if k in h.calls)})"
                          for h in per_step)
        warnings.warn(
            f"{names}: fit dispatches one step at a time (steps_per_dispatch=1 in place of "
            f"{steps_per_dispatch!r}) so that the batch hooks see every step. Each step then "
            "costs a dispatch and a host round trip for its logs, and steps are no longer "
            "fused on device (small models train several times slower). Use on_epoch_end "
            "to keep the steps fused.", UserWarning, stacklevel=4)
        steps_per_dispatch = 1
    return steps_per_dispatch, every_epoch


def _kind(dtype: Any) -> str:
    """float, integer, bool, complex or key: what a leaf may not change into another."""
    for kind, base in (("key", jax.dtypes.prng_key), ("float", jnp.floating),
                       ("integer", jnp.integer), ("bool", jnp.bool_),
                       ("complex", jnp.complexfloating)):
        if jax.dtypes.issubdtype(dtype, base):
            return kind
    return str(dtype)


def _aval(leaf: Any) -> tuple[tuple[int, ...], Any]:
    dtype = getattr(leaf, "dtype", None)
    return tuple(np.shape(leaf)), (np.asarray(leaf).dtype if dtype is None else dtype)


def _like(a: Any, b: Any) -> bool:
    (shape_a, dtype_a), (shape_b, dtype_b) = _aval(a), _aval(b)
    return shape_a == shape_b and _kind(dtype_a) == _kind(dtype_b)


def _mismatch(before: TrainState, after: TrainState) -> str | None:
    """What differs between two states' trees (None when ``after`` is like ``before``)."""
    old_leaves, old_tree = jax.tree.flatten(before)
    new_leaves, new_tree = jax.tree.flatten(after)
    if old_tree == new_tree and all(map(_like, old_leaves, new_leaves)):
        return None  # the common case, without building key paths
    old = jax.tree_util.tree_flatten_with_path(before)[0]
    new = jax.tree_util.tree_flatten_with_path(after)[0]
    if old_tree != new_tree:
        old_paths = {jax.tree_util.keystr(p) for p, _ in old}
        new_paths = {jax.tree_util.keystr(p) for p, _ in new}
        missing, extra = sorted(old_paths - new_paths), sorted(new_paths - old_paths)
        where = (f"lacks {missing[0]}" if missing else f"has {extra[0]} in addition"
                 if extra else "has its leaves in another structure")
        return f"tree structure differs from the state passed in: it {where}"
    path, a, b = next((p, a, b) for (p, a), (_, b) in zip(old, new, strict=True)
                      if not _like(a, b))
    return (f"leaf {jax.tree_util.keystr(path)} is {' '.join(map(str, _aval(b)))} where the "
            f"state passed in has {' '.join(map(str, _aval(a)))}")


def _checked(hooks: Hooks, hook: str, before: TrainState, returned: Any) -> TrainState:
    if returned is None or returned is before:
        return before
    source = f"{type(hooks.callback).__name__}.{hook}"
    expected = "None or a TrainState like the one passed in"
    fix = "return state (or None), e.g. state.replace(params=...)"
    if not isinstance(returned, TrainState):
        raise errors.type_error(hooks.argument(hook), expected,
                                f"{errors.describe(returned)} from {source}", fix)
    mismatch = _mismatch(before, returned)
    if mismatch is not None:
        raise errors.input_error(hooks.argument(hook), expected,
                                 f"a TrainState from {source} whose {mismatch}", fix)
    return returned


def call(hooks: Hooks, hook: str, state: TrainState, *args: Any) -> TrainState:
    """Calls one callback's ``hook`` and returns the state to go on with.

    ``args`` are the kit's arguments other than the state: ``(context,)`` for
    ``on_train_begin``, ``(epoch, logs)`` / ``(batch, logs)`` for the epoch and batch
    hooks, none for ``on_train_end``.

    Raises:
      InputTypeError / InputError: naming ``callbacks[i].<hook>`` when it returned
        something other than None or a TrainState like ``state``.
    """
    if hook == "on_epoch_end":
        hooks.last_logs = args[1]
    entry = hooks.calls.get(hook)
    if entry is None:
        return state
    fn, kit_style, count = entry
    if kit_style:
        at = SIGNATURES[hook][0].index("state")
        returned = fn(*args[:at], state, *args[at:])
    else:
        keras = {"on_train_begin": ({},), "on_train_end": (dict(hooks.last_logs),)}
        returned = fn(*keras.get(hook, args)[:count])
    return _checked(hooks, hook, state, returned)


def call_all(hooks: Sequence[Hooks], hook: str, state: TrainState, *args: Any) -> TrainState:
    """:func:`call` for every callback, in order, each getting the state the last returned."""
    for one in hooks:
        state = call(one, hook, state, *args)
    return state


def begin_dispatch(hooks: Sequence[Hooks], dispatch: Dispatch, state: TrainState
                   ) -> TrainState:
    """``on_epoch_begin`` before an epoch's first step, then ``on_train_batch_begin``
    (with a batch hook, each dispatch is one step: ``dispatch.first_step`` is the batch)."""
    if dispatch.first_step == 0:
        for epoch in dispatch.epochs:
            state = call_all(hooks, "on_epoch_begin", state, epoch, {})
    return call_all(hooks, "on_train_batch_begin", state, dispatch.first_step, {})


def end_batch(hooks: Sequence[Hooks], dispatch: Dispatch, state: TrainState,
              logs: Callable[[], dict[str, Any]]) -> TrainState:
    """``on_train_batch_end(batch, logs())``; ``logs`` is fetched only when a callback has it."""
    if not any("on_train_batch_end" in h.calls for h in hooks):
        return state
    return call_all(hooks, "on_train_batch_end", state, dispatch.first_step, logs())
