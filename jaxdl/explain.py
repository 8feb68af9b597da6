"""Feature attributions: saliency, integrated gradients, permutation importance.

Each gradient method is one jitted program over the whole batch: ``vmap`` of ``grad`` of a
per-example scalar (the chosen output of the model on that example). ``predict_fn`` is a
pure function ``x [B, ...] -> outputs [B, K]`` (or ``[B]``), e.g. the raw model outputs of a
trained run in eval mode::

    predict_fn = functools.partial(trainer.programs.outputs, state)   # logits
    attributions = jdl.explain.integrated_gradients(predict_fn, x)      # [B, ...] like x
    attributions.sum(axis=1)       # ~ f(x) - f(baseline) per example (completeness)

Attributions are for the *logits* (raw outputs) by default: attributions of probabilities
saturate where the model is confident. ``probabilities=True`` explains ``link(outputs)``
instead (the given ``link``, e.g. ``trainer.loss.link``; by default sigmoid for one output,
softmax for several). Calling again with the same ``predict_fn`` and shapes does not
recompile; a ``functools.partial(fn, state)`` passes ``state`` into the compiled program as
an argument (not baked-in constants), so a new state does not recompile either.

``explain_workdir`` does the same for a run folder written by ``jaxdl train`` and writes a
CSV of attributions and a PNG (``jaxdl explain``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import errors
from jaxdl.data import validate as check

PredictFn = Callable[[jax.Array], jax.Array]
Link = Callable[[jax.Array], jax.Array]

# Inputs held at once by integrated gradients (examples x path points x features); more
# than this and the path is walked in chunks of points, inside the same program.
_MAX_PATH_ELEMENTS = 1 << 22


def _softmax(outputs: jax.Array) -> jax.Array:
    return jax.nn.softmax(outputs, axis=-1)


class _ById:
    """Hashes an unhashable callable by identity, so it can be a static jit argument."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __hash__(self) -> int:
        return id(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ById) and other.fn is self.fn


def _static(fn: Callable) -> Callable:
    try:
        hash(fn)
    except TypeError:
        return _ById(fn)
    return fn


def _split(predict_fn: PredictFn) -> tuple[Callable, tuple]:
    """``(fn, args)`` with ``predict_fn(x) == fn(*args, x)``; array ``args`` stay traced.

    ``functools.partial(fn, state)`` is split so the state is an argument of the compiled
    program, not a constant baked into it: no weights in the program text, and a new
    state (or a new partial of the same ``fn``) does not recompile.
    """
    if (isinstance(predict_fn, functools.partial) and not predict_fn.keywords
            and predict_fn.args and all(isinstance(leaf, jax.Array | np.ndarray)
                                        for leaf in jax.tree.leaves(predict_fn.args))):
        return _static(predict_fn.func), predict_fn.args
    return _static(predict_fn), ()


# --- boundary checks (host side, before anything compiles) -------------------------------

def _inputs(x: Any) -> np.ndarray:
    return check.as_features(x, "x").astype(np.float32, copy=False)


def _output_width(predict_fn: PredictFn, x: np.ndarray) -> int:
    if not callable(predict_fn):
        raise errors.type_error("predict_fn", "a function x [B, ...] -> outputs [B, K]",
                                errors.describe(predict_fn),
                                "pass e.g. functools.partial(trainer.programs.outputs, state)")
    spec = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    try:
        shape = tuple(jax.eval_shape(predict_fn, spec).shape)
    except Exception as e:  # the model's own shape error, restated in the caller's terms
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise errors.input_error("x", "examples predict_fn accepts", f"examples of shape "
                                 f"{x.shape[1:]} (predict_fn said: {first[:200]})",
                                 "pass inputs shaped like the model's training data") from None
    if not shape or shape[0] != 1:
        raise errors.input_error("predict_fn", "outputs with a leading batch axis [B, K]",
                                 f"outputs of shape {shape} for a batch of 1",
                                 "return one row of outputs per example")
    return math.prod(shape[1:])


def _targets(target: Any, n: int, width: int) -> np.ndarray | None:
    if target is None:
        return None
    array = np.asarray(target)
    if array.dtype.kind not in "iu" or array.ndim > 1:
        raise errors.input_error("target", f"class indices, an int or an int array [{n}]",
                                 errors.describe(array), "pass e.g. target=y.astype(int)")
    array = np.broadcast_to(array, (n,)) if array.ndim == 0 else array
    if array.shape != (n,):
        raise errors.input_error("target", f"one class index per example [{n}]",
                                 f"shape {array.shape}", "pass one index per row of x")
    if array.size and (array.min() < 0 or array.max() >= width):
        raise errors.input_error("target", f"indices in [0, {width - 1}] (the model has "
                                 f"{width} outputs)", f"values from {array.min()} to "
                                 f"{array.max()}", "pass valid class indices, or None for "
                                 "the predicted class")
    return array.astype(np.int32)


def _baseline(baseline: Any, x: np.ndarray) -> np.ndarray:
    if baseline is None:
        return np.zeros_like(x)
    array = np.asarray(baseline, np.float32)
    try:
        array = np.broadcast_to(array, x.shape)
    except ValueError:
        raise errors.input_error("baseline", f"an array broadcastable to x's shape {x.shape} "
                                 f"(e.g. one example of shape {x.shape[1:]})",
                                 f"shape {array.shape}", "pass None for zeros") from None
    if not np.isfinite(array).all():
        raise errors.input_error("baseline", "finite values", "NaN/inf values",
                                 "pass None for zeros, or a finite reference input")
    return np.ascontiguousarray(array)


def _link(probabilities: bool, link: Link | None, width: int) -> Link | None:
    if not probabilities:
        return None
    if link is not None:
        return _static(link)
    return jax.nn.sigmoid if width == 1 else _softmax


# --- the jitted programs ----------------------------------------------------------------

def _scalar_fn(fn: Callable, args: tuple, link: Link | None) -> Callable:
    """``f(x_i [...], t_i []) -> scalar``: output ``t_i`` (or the only one) of one example."""

    def f(xi, ti):
        out = fn(*args, xi[None])
        out = (out if link is None else link(out)).reshape(-1)
        return out[0] if out.size == 1 else out[ti]

    return f


def _default_targets(fn, args, link, x, target):
    if target is not None:
        return target
    out = fn(*args, x)
    out = (out if link is None else link(out)).reshape(x.shape[0], -1)
    return jnp.argmax(out, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("fn", "link"))
def _saliency(fn, args, link, x, target):
    target = _default_targets(fn, args, link, x, target)
    return jax.vmap(jax.grad(_scalar_fn(fn, args, link)))(x, target)


@functools.partial(jax.jit, static_argnames=("fn", "link", "steps", "chunk"))
def _integrated_gradients(fn, args, link, x, baseline, target, steps, chunk):
    target = _default_targets(fn, args, link, x, target)
    points = steps + 1
    num_chunks = -(-points // chunk)
    # Trapezoid rule on [0, 1] with `steps` intervals; padded points carry zero weight.
    alphas = jnp.zeros(num_chunks * chunk).at[:points].set(jnp.linspace(0.0, 1.0, points))
    weights = jnp.zeros(num_chunks * chunk).at[:points].set(
        jnp.full(points, 1.0 / steps).at[0].set(0.5 / steps).at[-1].set(0.5 / steps))
    grad = jax.grad(_scalar_fn(fn, args, link))
    expand = (slice(None),) + (None,) * (x.ndim - 1)

    def example(xi, bi, ti, a, w):  # a, w [chunk] -> weighted gradient sum [...]
        path = bi[None] + a[expand] * (xi - bi)[None]
        grads = jax.vmap(grad, in_axes=(0, None))(path, ti)
        return jnp.tensordot(w, grads, axes=1)

    def body(total, aw):
        a, w = aw
        return total + jax.vmap(example, in_axes=(0, 0, 0, None, None))(
            x, baseline, target, a, w), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x),
                            (alphas.reshape(num_chunks, chunk), weights.reshape(num_chunks, chunk)))
    return (x - baseline) * total


# --- public functions -------------------------------------------------------------------

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
    x = _inputs(x)
    width = _output_width(predict_fn, x)
    target = _targets(target, len(x), width)
    out = _saliency(*_split(predict_fn), _link(probabilities, link, width), x, target)
    return np.asarray(out)


def integrated_gradients(predict_fn: PredictFn, x: Any, baseline: Any = None, steps: int = 64,
                         target: Any = None, *, probabilities: bool = False,
                         link: Link | None = None, points_per_chunk: int | None = None
                         ) -> np.ndarray:
    """Integrated gradients along the straight path from ``baseline`` to ``x``.

    ``(x - baseline) * mean of grad f`` over the path, by the trapezoid rule with ``steps``
    intervals (``steps + 1`` gradient evaluations per example), all examples and path points
    in one jitted program. Completeness: ``attributions[i].sum()`` approaches
    ``f(x[i]) - f(baseline[i])`` as ``steps`` grows (exactly for a linear ``f``), where ``f``
    is the chosen output (see :func:`saliency`); the target class is chosen at ``x``.

    Args:
      predict_fn: pure ``x [B, ...] -> outputs [B, K]``, as in :func:`saliency`.
      x: inputs [B, ...], finite.
      baseline: the reference input: None (zeros: the training mean after standardization),
        a scalar, one example [...], or one per example [B, ...].
      steps: intervals of the path (>= 1); 64 keeps the completeness gap of smooth models
        well under 1%.
      target, probabilities, link: as in :func:`saliency`.
      points_per_chunk: path points evaluated at once (a scan walks the chunks); None sizes
        them to hold about 4M input values at a time.

    Returns:
      float32 numpy array [B, ...] shaped like ``x``.

    Example::

        attributions = integrated_gradients(lambda x: x @ w, x)   # == w.T * x, exactly
    """
    x = _inputs(x)
    steps = check.positive_int(steps, "steps", "pass steps=64")
    width = _output_width(predict_fn, x)
    target = _targets(target, len(x), width)
    baseline = _baseline(baseline, x)
    if points_per_chunk is None:
        chunk = max(1, min(steps + 1, _MAX_PATH_ELEMENTS // max(1, x.size)))
    else:
        chunk = min(steps + 1, check.positive_int(points_per_chunk, "points_per_chunk",
                                                  "pass None to size it automatically"))
    out = _integrated_gradients(*_split(predict_fn), _link(probabilities, link, width), x,
                                baseline, target, steps, chunk)
    return np.asarray(out)


def permutation_importance(score_fn: Callable[[np.ndarray, np.ndarray], float], x: Any, y: Any,
                           n_repeats: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """How much the score drops when each column of a table is shuffled.

    Args:
      score_fn: ``(x [N, F], y [N, ...]) -> float``, higher is better (accuracy, negative
        loss); called ``1 + F * n_repeats`` times with arrays of the same shapes, so a jitted
        score compiles once.
      x: float table [N, F] (N >= 2), finite.
      y: labels [N, ...].
      n_repeats: shuffles per column.
      seed: seed of the ``numpy.random.Generator`` drawing the permutations.

    Returns:
      ``(mean [F], std [F])`` of ``score(x, y) - score(x with column f shuffled, y)``.

    Example::

        accuracy = lambda x, y: float(np.mean((trainer.predict(state, x)[:, 0] > 0.5) == y))
        mean, std = permutation_importance(accuracy, x_test, y_test)
    """
    x = check.as_features(x, "x")
    if x.ndim != 2 or len(x) < 2:
        raise errors.input_error("x", "a table [N, F] with N >= 2", errors.describe(x),
                                 "flatten the features, or use a gradient method for images")
    y = check.as_labels(y, len(x), "y", "x")
    n_repeats = check.positive_int(n_repeats, "n_repeats", "pass n_repeats=5")
    if not callable(score_fn):
        raise errors.type_error("score_fn", "a function (x, y) -> float", errors.describe(
            score_fn), "pass e.g. lambda x, y: accuracy of the model on (x, y)")

    def score(table: np.ndarray) -> float:
        value = float(np.asarray(score_fn(table, y)))
        if not math.isfinite(value):
            raise errors.input_error("score_fn", "a finite score", repr(value),
                                     "return a finite number, e.g. accuracy or -loss")
        return value

    reference = score(x)
    rng = np.random.default_rng(seed)
    drops = np.empty((x.shape[1], n_repeats), np.float64)
    shuffled = x.copy()
    for r in range(n_repeats):
        for f in range(x.shape[1]):
            shuffled[:, f] = x[rng.permutation(len(x)), f]
            drops[f, r] = reference - score(shuffled)
            shuffled[:, f] = x[:, f]
    return drops.mean(axis=1), drops.std(axis=1)


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "integrated_gradients": integrated_gradients,
    "saliency": saliency,
}


# --- a trained run: CSV and PNG ---------------------------------------------------------
