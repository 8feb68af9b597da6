"""Local gradient methods: saliency (the gradient) and gradient x input.

Each is one jitted program over the whole batch: ``vmap`` of ``grad`` of each example's
chosen output (see :func:`saliency`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from jaxdl.explain import _checks
from jaxdl.explain import _program as prog
from jaxdl.explain._program import Link, PredictFn


def saliency_traced(fn, args, link, x, target):
    """Traceable body of :func:`saliency` (also the noise tunnel's inner method)."""
    target = prog.default_targets(fn, args, link, x, target)
    return jax.vmap(prog.example_grad(fn, args, link))(x, target)


def gradient_x_input_traced(fn, args, link, x, target):
    """Traceable body of :func:`gradient_x_input`."""
    return x * saliency_traced(fn, args, link, x, target)


_saliency = jax.jit(saliency_traced, static_argnames=("fn", "link"))
_gradient_x_input = jax.jit(gradient_x_input_traced, static_argnames=("fn", "link"))


def _run(program, predict_fn: PredictFn, x: Any, target: Any, probabilities: bool,
         link: Link | None) -> np.ndarray:
    x = _checks.inputs(x)
    width = _checks.output_width(predict_fn, x)
    target = _checks.targets(target, len(x), width)
    fn, args = prog.split(predict_fn)
    return np.asarray(program(fn, args, prog.link_of(probabilities, link, width), x, target))


def saliency(predict_fn: PredictFn, x: Any, target: Any = None, *, probabilities: bool = False,
             link: Link | None = None) -> np.ndarray:
    """Gradient of each example's chosen output w.r.t. its input, for a batch in one program.

    The chosen output is the only one for a model with one output (a binary logit or a
    regression value); otherwise output ``target[i]`` for example ``i``, by default the
    predicted class (argmax).

    Args:
      predict_fn: pure ``x [B, ...] -> outputs [B, K]`` (or ``[B]``), e.g.
        ``functools.partial(trainer.programs.outputs, state)``; examples must not interact
        (eval mode).
      x: inputs [B, ...], finite (integers are cast to float32).
      target: None (argmax class), an int, or int array [B] of output indices in [0, K).
      probabilities: explain ``link(outputs)`` instead of the raw outputs (logits).
      link: outputs -> probabilities, used with ``probabilities=True``; default sigmoid for
        one output, softmax for several (``trainer.loss.link`` matches the run's loss).

    Returns:
      float32 numpy array [B, ...] shaped like ``x``.

    Example::

        grads = saliency(lambda x: x @ w, x)          # [B, F]; for one output, grads[i] == w
    """
    return _run(_saliency, predict_fn, x, target, probabilities, link)


def gradient_x_input(predict_fn: PredictFn, x: Any, target: Any = None, *,
                     probabilities: bool = False, link: Link | None = None) -> np.ndarray:
    """``x * grad f(x)`` per example (captum's InputXGradient), one program per batch.

    For a linear model without bias it is complete exactly: ``attributions[i].sum() ==
    f(x[i]) - f(0)``; for others it is a first-order estimate of that difference.

    Args:
      predict_fn, x, target, probabilities, link: as in :func:`saliency`.

    Returns:
      float32 numpy array [B, ...] shaped like ``x``.

    Example::

        attributions = gradient_x_input(lambda x: x @ w, x)   # == w.T * x
    """
    return _run(_gradient_x_input, predict_fn, x, target, probabilities, link)


@functools.partial(jax.jit, static_argnames=("fn", "link"))
def _outputs(fn, args, link, x, target):
    target = prog.default_targets(fn, args, link, x, target)
    return prog.chosen(fn, args, link, x, target), target


def explained_outputs(predict_fn: PredictFn, x: Any, target: Any = None, *,
                      probabilities: bool = False, link: Link | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(values [B] float32, target [B] int32)``: what each example's attribution explains.

    ``values[i]`` is the chosen output (logit, or probability with ``probabilities``) of
    example ``i``; ``target`` the output index chosen (argmax when None; 0 for one output).
    """
    x = _checks.inputs(x)
    width = _checks.output_width(predict_fn, x)
    target = _checks.targets(target, len(x), width)
    fn, args = prog.split(predict_fn)
    values, chosen = _outputs(fn, args, prog.link_of(probabilities, link, width), x, target)
    return np.asarray(values), np.asarray(chosen)
