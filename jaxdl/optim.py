"""Optimizers from a name or a config: optax aliases, schedules, clipping, decay.

Everything here is an optax ``GradientTransformation`` built from optax's own
pieces. :func:`with_lr_scale` appends an injected scale so callbacks such as
``ReduceLROnPlateau`` can lower the learning rate of *any* optimizer between
dispatches without recompiling (optax applies the learning rate last, so
scaling the final update is scaling the learning rate).

Example::

    tx = jdl.optim.make_optimizer("adamw", learning_rate=1e-3, weight_decay=1e-4,
                                  schedule="warmup_cosine", warmup_steps=100,
                                  total_steps=10_000, clip_norm=1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxdl import errors

ScalarOrSchedule = float | optax.Schedule

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr, **kw: optax.sgd(lr, **kw),
    "momentum": lambda lr, momentum=0.9, **kw: optax.sgd(lr, momentum=momentum, **kw),
    "adam": lambda lr, **kw: optax.adam(lr, **kw),
    "adamw": lambda lr, **kw: optax.adamw(lr, **kw),
    "rmsprop": lambda lr, **kw: optax.rmsprop(lr, **kw),
    "adagrad": lambda lr, **kw: optax.adagrad(lr, **kw),
    "nadam": lambda lr, **kw: optax.nadam(lr, **kw),
    "lamb": lambda lr, **kw: optax.lamb(lr, **kw),
}

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
    if not learning_rate > 0:
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
    **kwargs: Any,
) -> optax.GradientTransformation:
    """An optax optimizer from a name (or a given transformation) plus regularization.

    Args:
      optimizer: a name in :data:`OPTIMIZERS` or an ``optax.GradientTransformation``
        (then ``learning_rate`` and ``kwargs`` are ignored: the transformation has its own).
      learning_rate: a float or an ``optax.Schedule`` (see :func:`make_schedule`).
      weight_decay: decoupled weight decay of kernels (AdamW-style); with "adam" it
        selects "adamw", other names take it as ``optax.add_decayed_weights`` scaled
        by the learning rate.
      l2: coupled L2 penalty on kernels: adds ``l2 * w`` to the gradient, the same as
        ``0.5 * l2 * ||w||^2`` in the loss.
      clip_norm: clip gradients to this global norm first (``None`` or 0: no clipping).
      **kwargs: passed to the optax alias (e.g. ``b1``, ``momentum``, ``nesterov``).
    """
    for name, value in (("weight_decay", weight_decay), ("l2", l2)):
        if value < 0:
            raise errors.input_error(name, "a float >= 0", repr(value), f"pass {name}=0.0 "
                                     "to disable it")
    if clip_norm is not None and clip_norm < 0:
        raise errors.input_error("clip_norm", "a positive float or None", repr(clip_norm),
                                 "pass clip_norm=1.0, or None for no clipping")
    if isinstance(optimizer, optax.GradientTransformation):
        base = optimizer
    elif isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise errors.unknown_name("optimizer", "optimizer", optimizer, list(OPTIMIZERS))
        if isinstance(learning_rate, int | float) and not learning_rate > 0:
            raise errors.input_error("learning_rate", "a positive float", repr(learning_rate),
                                     "pass e.g. learning_rate=1e-3")
        if weight_decay and optimizer in ("adam", "adamw"):
            base = optax.adamw(learning_rate, weight_decay=weight_decay, mask=kernel_mask,
                               **kwargs)
            weight_decay = 0.0
        else:
            try:
                base = OPTIMIZERS[optimizer](learning_rate, **kwargs)
            except TypeError as e:
                raise errors.input_error("optimizer options", f"keyword arguments that optax's "
                                         f"{optimizer!r} accepts", repr(kwargs),
                                         f"check the optax signature ({e})") from None
    else:
        raise errors.type_error("optimizer", "an optimizer name or an optax.GradientTransformation",
                                errors.describe(optimizer), f"pass one of {sorted(OPTIMIZERS)}")
    parts = []
    if clip_norm:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if l2:
        parts.append(optax.add_decayed_weights(l2, mask=kernel_mask))
    parts.append(base)
    if weight_decay:
        lr = learning_rate
        decay = (lambda step: -weight_decay * lr(step)) if callable(lr) else -weight_decay * lr
        parts.append(optax.add_decayed_weights(decay, mask=kernel_mask))
    return optax.chain(*parts) if len(parts) > 1 else base


def with_lr_scale(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` followed by an injected multiplier (initially 1.0) held in the optimizer state."""
    return optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def lr_scale(opt_state: Any) -> jax.Array:
    """The current multiplier of a state made by :func:`with_lr_scale`."""
    return opt_state[-1].hyperparams["step_size"]


def set_lr_scale(opt_state: Any, value: float) -> Any:
    """A copy of ``opt_state`` with the multiplier set to ``value`` (no recompile: it is data)."""
    inner, scale_state = opt_state
    hyper = dict(scale_state.hyperparams)
    hyper["step_size"] = jax.numpy.asarray(value, hyper["step_size"].dtype)
    return (inner, scale_state._replace(hyperparams=hyper))
