"""Optimizers from a name or a config: optax aliases, schedules, clipping, decay.

Everything here is an optax ``GradientTransformation`` built from optax's own
pieces. Any optimizer alias optax exports (``adam``, ``lion``, ``adafactor``,
``lamb``, ...) is known by its name, with its own options checked against its
signature. :func:`with_lr_scale` appends an injected scale so callbacks such as
``ReduceLROnPlateau`` can lower the learning rate of *any* optimizer between
dispatches without recompiling (optax applies the learning rate last, so
scaling the final update is scaling the learning rate).

Example::

    tx = jdl.optim.make_optimizer("adamw", learning_rate=1e-3, weight_decay=1e-4,
                                  schedule="warmup_cosine", warmup_steps=100,
                                  total_steps=10_000, clip_norm=1.0)
    tx = jdl.optim.make_optimizer("lion", learning_rate=1e-4, b1=0.95)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax
from optax import tree_utils as otu

from jaxdl import errors

ScalarOrSchedule = float | optax.Schedule

# optax aliases whose update needs the loss itself (``value``, ``value_fn``), which a
# training step does not pass: they are not usable by name.
_NEEDS_LOSS = frozenset({"lbfgs"})
# The kit's own names for an optax alias with other defaults.
_KIT_NAMES = {"momentum": functools.partial(optax.sgd, momentum=0.9)}


def _is_alias(obj: Any) -> bool:
    """An optimizer alias: a function (or a partial of one, e.g. ``nadam``) of
    ``optax._src.alias`` that takes a ``learning_rate`` and returns a transformation."""
    func = obj.func if isinstance(obj, functools.partial) else obj
    if not inspect.isfunction(func) or func.__module__ != "optax._src.alias":
        return False
    signature = inspect.signature(obj)
    returns = signature.return_annotation
    returns_tx = (isinstance(returns, type) and issubclass(returns, optax.GradientTransformation)
                  ) or "GradientTransformation" in str(returns)
    return "learning_rate" in signature.parameters and returns_tx


def _aliases() -> dict[str, Callable[..., optax.GradientTransformation]]:
    # vars(), not getattr(): optax serves its deprecated names through a module
    # __getattr__ that warns, and those are no optimizers anyway.
    public = {name: vars(optax).get(name) for name in optax.__all__}
    found = {name: obj for name, obj in public.items()
             if obj is not None and name not in _NEEDS_LOSS and _is_alias(obj)}
    return dict(sorted({**found, **_KIT_NAMES}.items()))


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = _aliases()
"""Every optimizer known by name: optax's public aliases (``optax.<name>``) plus the
kit's "momentum" (``optax.sgd`` with ``momentum=0.9``); name -> the optax factory."""


def alias_options(optimizer: str) -> list[str]:
    """The keyword options optax's alias ``optimizer`` takes besides ``learning_rate``."""
    if optimizer not in OPTIMIZERS:
        raise errors.unknown_name("optimizer", "optimizer", optimizer, list(OPTIMIZERS))
    return sorted(set(inspect.signature(OPTIMIZERS[optimizer]).parameters) - {"learning_rate"})


def _display(optimizer: str) -> str:
    return "optax.sgd with momentum=0.9" if optimizer == "momentum" else f"optax.{optimizer}"


SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def make_schedule(
    name: str = "constant",
    learning_rate: float = 1e-3,
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_steps: int | None = None,
    decay_rate: float = 0.1,
    end_value: float = 0.0,
) -> ScalarOrSchedule:
    """A learning-rate schedule (an ``optax.Schedule``, or a float for "constant").

    Args:
      name: one of "constant", "cosine", "warmup_cosine", "step".
      learning_rate: peak (or constant) learning rate.
      total_steps: steps of the whole run; needed by the cosine schedules.
      warmup_steps: linear warm-up from 0 (warmup_cosine) — also allowed for "constant".
      decay_steps: "step": multiply by ``decay_rate`` every ``decay_steps`` steps.
      decay_rate: the factor of the "step" schedule.
      end_value: final learning rate of the cosine schedules.
    """
    if name not in SCHEDULES:
        raise errors.unknown_name("schedule", "schedule", name, list(SCHEDULES))
    if isinstance(learning_rate, int | float) and not learning_rate > 0:
        raise errors.input_error("learning_rate", "a positive float", repr(learning_rate),
                                 "pass e.g. learning_rate=1e-3")
    if warmup_steps < 0:
        raise errors.input_error("warmup_steps", "an integer >= 0", repr(warmup_steps),
                                 "pass warmup_steps=0 for no warm-up")
    if name in ("cosine", "warmup_cosine") and not (total_steps and total_steps > warmup_steps):
        raise errors.input_error("total_steps", f"an integer > warmup_steps ({warmup_steps}) "
                                 f"for the {name!r} schedule", repr(total_steps),
                                 "pass total_steps=epochs * steps_per_epoch")
    if name == "constant":
        if warmup_steps:
            return optax.linear_schedule(0.0, learning_rate, warmup_steps)
        return learning_rate
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps, end_value / learning_rate)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                  total_steps, end_value)
    if not decay_steps or decay_steps < 1:
        raise errors.input_error("decay_steps", "an integer >= 1 for the 'step' schedule",
                                 repr(decay_steps), "pass e.g. decay_steps=1000")
    return optax.exponential_decay(learning_rate, decay_steps, decay_rate, staircase=True)


def kernel_mask(params: Any) -> Any:
    """True for weight matrices and kernels (ndim >= 2); biases and norm scales are not decayed."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
    optimizer: str | optax.GradientTransformation = "adam",
    learning_rate: ScalarOrSchedule = 1e-3,
    *,
    weight_decay: float = 0.0,
    l2: float = 0.0,
    clip_norm: float | None = None,
    schedule: dict[str, Any] | None = None,
    inject: Sequence[str] = (),
    **kwargs: Any,
) -> optax.GradientTransformation:
    """An optax optimizer from a name (or a given transformation) plus regularization.

    Args:
      optimizer: a name in :data:`OPTIMIZERS` (any optax alias, e.g. "adam", "lion",
        "adafactor", "lamb"; or "momentum") or an ``optax.GradientTransformation``
        (then ``learning_rate`` and ``kwargs`` are ignored: the transformation has its own).
      learning_rate: a float or an ``optax.Schedule`` (see :func:`make_schedule`).
      weight_decay: decoupled weight decay of kernels (AdamW-style). An alias with its
        own ``weight_decay`` option gets it (on kernels only where it takes a mask);
        "adam" then selects "adamw"; other names take it as ``optax.add_decayed_weights``
        scaled by the learning rate, after the alias.
      l2: coupled L2 penalty on kernels: adds ``l2 * w`` to the gradient, the same as
        ``0.5 * l2 * ||w||^2`` in the loss.
      clip_norm: clip gradients to this global norm first (``None`` or 0: no clipping).
      schedule: keyword arguments of :func:`make_schedule` except ``learning_rate``
        (e.g. ``{"name": "warmup_cosine", "total_steps": 1000, "warmup_steps": 100}``):
        ``learning_rate`` is then the schedule's peak — which lets it be injected
        (an ``end_value`` is relative to the peak).
      inject: names of hyper-parameters held in the optimizer state
        (``optax.inject_hyperparams``) instead of compiled in: "learning_rate",
        "weight_decay", "l2", "clip_norm" or a numeric option of the optax alias
        ("b1", "momentum", ...). Their values are then data: a population gives
        each member its own (see :mod:`jaxdl.population`).
      **kwargs: options of the optax alias (e.g. ``b1``, ``momentum``, ``nesterov``),
        checked against its signature (:func:`alias_options`).

    Raises:
      InputError: an unknown name (the close ones are listed), an option the alias does
        not take (its options are listed), or a value out of range.
    """
    _check_arguments(optimizer, learning_rate, weight_decay, l2, clip_norm, kwargs)
    if schedule is not None:
        make_schedule(learning_rate=learning_rate, **schedule)  # validates the settings
    values = dict(learning_rate=learning_rate, weight_decay=weight_decay, l2=l2,
                  clip_norm=clip_norm or 0.0, **kwargs)
    inject = tuple(inject)
    if not inject:
        return _build(optimizer, values, schedule, ())
    options = injectable(optimizer)
    for name in inject:
        if name not in options:
            raise errors.input_error("hparams", f"hyper-parameters that {optimizer!r} takes as "
                                     f"numbers: {sorted(options)}", repr(name),
                                     "vary one of those, or pass an optax transformation built "
                                     "with optax.inject_hyperparams")
        values.setdefault(name, options[name])
    if "learning_rate" in inject and callable(learning_rate):
        raise errors.input_error("learning_rate", "a float peak with a schedule by name when "
                                 "the learning rate varies per member", "an optax schedule",
                                 "pass learning_rate=<peak> and schedule={'name': ...}")
    fixed = {k: v for k, v in values.items() if k not in inject}

    def factory(**hyperparams):
        return _build(optimizer, {**fixed, **hyperparams}, schedule, inject)

    # inject_hyperparams binds arguments by the factory's signature.
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in inject])
    return optax.inject_hyperparams(factory)(**{n: values[n] for n in inject})


def _check_arguments(optimizer: Any, learning_rate: Any, weight_decay: float, l2: float,
                     clip_norm: float | None, options: dict[str, Any]) -> None:
    """Raises before anything is built: a bad value, an unknown name or an unknown option."""
    for name, value in (("weight_decay", weight_decay), ("l2", l2)):
        if value < 0:
            raise errors.input_error(name, "a float >= 0", repr(value), f"pass {name}=0.0 "
                                     "to disable it")
    if clip_norm is not None and clip_norm < 0:
        raise errors.input_error("clip_norm", "a positive float or None", repr(clip_norm),
                                 "pass clip_norm=1.0, or None for no clipping")
    if isinstance(optimizer, str) and optimizer not in OPTIMIZERS:
        raise errors.unknown_name("optimizer", "optimizer", optimizer, list(OPTIMIZERS))
    if not isinstance(optimizer, str | optax.GradientTransformation):
        raise errors.type_error("optimizer", "an optimizer name or an optax.GradientTransformation",
                                errors.describe(optimizer), f"pass one of {sorted(OPTIMIZERS)}")
    if not isinstance(optimizer, str):
        return
    if isinstance(learning_rate, int | float) and not learning_rate > 0:
        raise errors.input_error("learning_rate", "a positive float", repr(learning_rate),
                                 "pass e.g. learning_rate=1e-3")
    known = alias_options(optimizer)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise errors.input_error(
            "optimizer options", f"options that {_display(optimizer)} takes {known}",
            f"{unknown}", f"drop {', '.join(unknown)} or use one of those; the kit's own "
            "are weight_decay, l2, clip_norm, schedule and inject")


def learning_rate_fn(optimizer: Any, learning_rate: Any, schedule: dict[str, Any] | None = None
                     ) -> Callable[[jax.Array], jax.Array] | None:
    """``step -> learning rate`` of an optimizer given by name (the schedule it was built
    with); None for an optax transform, whose rate only its own state may hold."""
    if not isinstance(optimizer, str):
        return None
    rate = make_schedule(learning_rate=learning_rate, **schedule) if schedule else learning_rate
    return rate if callable(rate) else (lambda step: jax.numpy.asarray(rate, jax.numpy.float32))


def injectable(optimizer: str | optax.GradientTransformation) -> dict[str, float]:
    """Hyper-parameters :func:`make_optimizer` can inject for ``optimizer``, with defaults:
    the kit's four and the alias's numeric options (a float default, or an int or None
    one typed as a number, e.g. sgd's ``momentum``; never a flag, a mask or a dtype)."""
    options = {"learning_rate": 1e-3, "weight_decay": 0.0, "l2": 0.0, "clip_norm": 0.0}
    if isinstance(optimizer, str):
        for p in inspect.signature(OPTIMIZERS[optimizer]).parameters.values():
            if isinstance(p.default, bool):
                continue
            if isinstance(p.default, float):
                options.setdefault(p.name, p.default)
            elif (p.default is None or isinstance(p.default, int)) and "float" in (
                    kind := str(p.annotation)) and "Callable" not in kind:  # not a mask
                options.setdefault(p.name, float(p.default or 0.0))
    return options


def _build(optimizer: str | optax.GradientTransformation, values: dict[str, Any],
           schedule: dict[str, Any] | None, injected: Sequence[str]
           ) -> optax.GradientTransformation:
    """The transformation for ``values``; an injected value is a traced array, so the
    structure follows from which names are injected, never from their values."""
    values = dict(values)
    on = {name: name in injected or bool(values[name])
          for name in ("weight_decay", "l2", "clip_norm")}
    lr = values.pop("learning_rate")
    if schedule is not None:
        # Every kit schedule is its peak times a shape, and optax's schedules branch on a
        # peak value, which is traced when injected: scale the unit shape instead.
        shape, peak = make_schedule(learning_rate=1.0, **schedule), lr
        lr = (lambda count: peak * shape(count)) if callable(shape) else peak
    weight_decay, l2, clip_norm = (values.pop(k) for k in ("weight_decay", "l2", "clip_norm"))
    if isinstance(optimizer, optax.GradientTransformation):
        base = optimizer
    else:
        base, on["weight_decay"] = _alias(optimizer, lr, values,
                                          weight_decay if on["weight_decay"] else None)
    parts = []
    if on["clip_norm"]:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if on["l2"]:
        parts.append(optax.add_decayed_weights(l2, mask=kernel_mask))
    parts.append(base)
    if on["weight_decay"]:
        decay = (lambda step: -weight_decay * lr(step)) if callable(lr) else -weight_decay * lr
        parts.append(optax.add_decayed_weights(decay, mask=kernel_mask))
    return optax.chain(*parts) if len(parts) > 1 else base


def _alias(optimizer: str, lr: Any, options: dict[str, Any], weight_decay: Any
           ) -> tuple[optax.GradientTransformation, bool]:
    """optax's alias with ``options``, and whether ``weight_decay`` (None: none) is still
    to be applied after it: an alias with a ``weight_decay`` option takes it itself."""
    if weight_decay is not None and optimizer == "adam":
        optimizer = "adamw"  # adam with decoupled decay is exactly optax's adamw
    alias = OPTIMIZERS[optimizer]
    accepts = inspect.signature(alias).parameters
    options = dict(options)
    own_decay = weight_decay is not None and "weight_decay" in accepts
    if own_decay:
        options["weight_decay"] = weight_decay
        mask = next((m for m in ("mask", "weight_decay_mask") if m in accepts), None)
        if mask:
            options.setdefault(mask, kernel_mask)
    scale = None
    if callable(lr) and "Callable" not in str(accepts["learning_rate"].annotation):
        # rprop and sm3 take a number only: the schedule scales their updates instead.
        lr, scale = 1.0, lr
    try:
        tx = alias(learning_rate=lr, **options)
    except TypeError as e:
        raise errors.input_error("optimizer options", f"keyword arguments that optax's "
                                 f"{optimizer!r} accepts", repr(options),
                                 f"check the optax signature ({e})") from None
    if scale is not None:
        tx = optax.chain(tx, optax.scale_by_schedule(scale))
    return tx, weight_decay is not None and not own_decay


def with_lr_scale(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` followed by an injected multiplier (initially 1.0) held in the optimizer state."""
    return optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))


_INJECT_STATES = ("InjectHyperparamsState", "InjectStatefulHyperparamsState")


def is_injected(path: tuple[Any, ...], value: Any = None) -> bool:
    """``filtering`` for ``optax.tree_utils``: a value in the ``hyperparams`` of an
    ``optax.inject_hyperparams`` state (not its schedules' states, nor other fields)."""
    del value
    return (len(path) >= 2 and isinstance(path[-2], otu.NamedTupleKey)
            and path[-2].tuple_name in _INJECT_STATES and path[-2].name == "hyperparams")


def lr_scale_filter(opt_state: Any) -> Callable[[tuple[Any, ...], Any], bool]:
    """``filtering`` that picks :func:`with_lr_scale`'s multiplier in ``opt_state``: the
    ``step_size`` of the injected state that ends the outer chain and holds nothing else
    (a user's own injected ``step_size`` elsewhere is not it)."""
    # with_lr_scale's chain is a plain tuple whose last state injects step_size alone.
    chained = isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields")
    last = opt_state[-1] if chained and opt_state else None
    ours = set(getattr(last, "hyperparams", None) or ()) == {"step_size"}
    where = (jax.tree_util.SequenceKey(len(opt_state) - 1), jax.tree_util.DictKey("step_size")
             ) if ours else None

    def is_scale(path: tuple[Any, ...], value: Any) -> bool:
        return (where is not None and len(path) == 3 and (path[0], path[2]) == where
                and is_injected(path, value))

    return is_scale


def lr_scale(opt_state: Any) -> jax.Array:
    """The current multiplier of a state made by :func:`with_lr_scale`."""
    scale = otu.tree_get(opt_state, "step_size", filtering=lr_scale_filter(opt_state))
    if scale is None:
        raise errors.input_error(
            "opt_state", "an optimizer state with the kit's learning-rate multiplier "
            "(jaxdl.optim.with_lr_scale)", "a state without it",
            "build the optimizer with jdl.optim.with_lr_scale(tx); the Trainer does unless "
            "it is given its own train_step")
    return scale


def set_lr_scale(opt_state: Any, value: Any) -> Any:
    """A copy of ``opt_state`` with the multiplier set to ``value`` (no recompile: it is data).

    For a population, ``value`` holds one multiplier per member.
    """
    old = lr_scale(opt_state)
    # Same dtype, shape and placement: the step keeps its compiled program.
    new = jax.device_put(jax.numpy.asarray(value, old.dtype).reshape(old.shape),
                         getattr(old, "sharding", None))
    return otu.tree_set(opt_state, lr_scale_filter(opt_state), step_size=new)
