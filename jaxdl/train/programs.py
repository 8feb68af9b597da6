"""The compiled programs of one (model, loss, optimizer, metrics): built once, reused.

A :class:`Programs` holds the jitted training block, evaluation and
prediction, caches abstract evaluations per input shapes, decides whether the
model runs well inside a rolled loop on this backend, and watches for
recompiles of the training block.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl import errors, fuse, nonfinite, norms, user_step
from jaxdl import losses as losses_lib
from jaxdl import metrics as metrics_lib
from jaxdl import step as step_lib
from jaxdl.state import TrainState

logger = logging.getLogger("jaxdl")


def _signature(arguments: dict[str, Any]) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(arguments)[0]
    return {jax.tree_util.keystr(path): (tuple(getattr(leaf, "shape", ())),
                                         str(getattr(leaf, "dtype", type(leaf).__name__)),
                                         str(getattr(leaf, "sharding", "")))
            for path, leaf in leaves}


class Programs:
    """The jitted programs of one (model, loss, optimizer, metrics, augment).

    Built once (e.g. by :class:`jaxdl.Trainer`) and reused by every call, so a
    second ``fit``/``evaluate``/``predict`` with the same shapes does not compile.
    """

    def __init__(self, model, loss: losses_lib.Loss, tx, metrics: Sequence[metrics_lib.Metric],
                 augment=None, nan_policy: str = "none", placement: Any = None,
                 population: str | None = None, precision: str = "float32",
                 grad_accum_steps: int = 1, train_step: user_step.Step | None = None,
                 log_norms: bool = False, learning_rate: Any = None):
        self.model, self.loss, self.tx = model, loss, tx
        # One model's step; _train_step wraps it for the population or the strategy.
        if train_step is None:
            make_step = functools.partial(
                step_lib.make_train_step, model, loss, tx, metrics, augment=augment,
                nan_policy=nan_policy, precision=precision, grad_accum_steps=grad_accum_steps,
                log_norms=log_norms, learning_rate=learning_rate)
        elif log_norms:
            raise errors.input_error("log_norms", "False with a custom train_step (its "
                                     "gradients are its own)", "True",
                                     "report them from your step: stats['grad_norm'] = "
                                     "optax.tree.norm(grads)")
        else:  # the user's own: its statistics name what it reports
            make_step = functools.partial(user_step.make_step, train_step,
                                          nonfinite.check_policy(nan_policy))
        self.custom_step, self.log_norms = train_step is not None, log_norms
        self.placement = placement
        # None: one model. "shared"/"member": a population (vmap over a leading member
        # axis of the state) training on the same batches / on each member's own order.
        self.population = population
        self.reported = step_lib.reported_metrics(loss, metrics)
        self.names = tuple(m.name for m in self.reported)
        if len(set(self.names)) != len(self.names):
            raise errors.input_error("metrics", "distinct metric names", repr(self.names),
                                     "list each metric once ('loss' is always reported)")
        self.nan_policy = nan_policy
        if population is not None and placement is not None and placement.strategy != "auto":
            raise errors.input_error("strategy", "'auto' for a population (its member axis is "
                                     "vmapped and sharded by jit)", repr(placement.strategy),
                                     "use strategy='auto' with population runs")
        self.train_step = self._train_step(make_step)
        self.eval_step, self.predict_step = self._eval_steps(metrics, precision)
        self.outputs = step_lib.make_predict_step(model)
        # Trace counts: each new trace of a program is a compile (jit's C++ cache also
        # grows for argument variants that reuse an executable, so its size is no measure).
        self.traces: collections.Counter[str] = collections.Counter()
        results = fuse.results_fn(self.reported, population is not None)
        train_results = results
        if self.custom_step:
            train_results = fuse.vmapped(user_step.results, population is not None)
        elif log_norms:
            train_results = fuse.vmapped(lambda stats: {**fuse.results_fn(self.reported)(stats),
                                                        **norms.results(stats)},
                                         population is not None)
        evaluate = fuse.make_evaluate(self.eval_step, self.reported, results)
        self.evaluate = jax.jit(self._counted("evaluate", evaluate))
        self.block = jax.jit(self._counted("block", fuse.make_train_block(
            self.train_step, self.reported, evaluate, train_results,
            freeze_nonfinite=population is not None and nan_policy == "raise")),
                             static_argnames=("batch_size", "num_steps", "ragged_steps",
                                              "ragged_epochs", "num_examples"),
                             donate_argnums=(0, 1))
        self.eval_batch = jax.jit(self._accumulate_eval)
        self.results = jax.jit(results)
        self.predict_all = jax.jit(self._predict_all)
        self.predict_batch = jax.jit(self.predict_step)
        self._loop_friendly: bool | None = None
        self._abstract: dict[Any, Any] = {}
        self._signature: dict[str, tuple] | None = None

    def _train_step(self, make_step: Callable[..., Any]) -> Any:
        """``make_step()`` (one model's step) wrapped for this population or strategy.

        A population vmaps it over the member axis; "shard_map" and "pmap" build it over
        their SPMD axes and map it over the mesh; "auto" (and no mesh) leave it to jit,
        with each batch split over the data axes.
        """
        if self.population is not None:
            from jaxdl import population as population_lib

            member = self.population == "member"
            return self._split_batches(population_lib.vmap_train_step(
                make_step(), member_data=member), member_axis=member)
        if self.placement is None or self.placement.strategy == "auto":
            return self._split_batches(make_step())
        from jaxdl.parallel.strategies import spmd_step

        return spmd_step(self.placement.strategy, make_step, self.placement.mesh)

    def _eval_steps(self, metrics: Sequence[metrics_lib.Metric], precision: str
                    ) -> tuple[Any, Any]:
        """``(eval_step, predict_step)``, vmapped for a population (every member on the
        same examples) and with the batch split over the data axes on a mesh."""
        eval_step = step_lib.make_eval_step(self.model, self.loss, metrics, precision=precision)
        predict = step_lib.make_predict_step(self.model, self.loss.link, precision=precision)
        if self.population is not None:
            eval_step = jax.vmap(eval_step, in_axes=(0, None))
            predict = jax.vmap(predict, in_axes=(0, None))
        placement = self.placement
        if placement is None:
            return eval_step, predict
        return self._split_batches(eval_step), (
            lambda state, x: predict(state, placement.constrain_batch({"x": x})["x"]))

    def train_names(self, train_out: dict[str, Any]) -> tuple[str, ...]:
        """The names a training block reports, in order: the loss and metrics, or a custom
        step's statistics ("loss" first)."""
        if self.custom_step:
            return tuple(m.name for m in user_step.metrics_of(train_out))
        if self.log_norms:  # the global norms first, then per module, then the rate
            logged = sorted((n for n in train_out if norms.is_norm(n)),
                            key=lambda n: ("/" in n, n == norms.LEARNING_RATE, n))
            return (*self.names, *logged)
        return self.names

    def member_spec(self, state: TrainState) -> Any:
        """The state of one model: ``state`` itself, or a population member's shapes."""
        if self.population is None:
            return state
        from jaxdl import population as population_lib

        return population_lib.abstract_member(state)

    def abstract(self, kind: str, fn, *args) -> Any:
        """``jax.eval_shape(fn, *args)``, cached by ``kind`` and the arguments' shapes.

        Tracing a step costs tens of milliseconds; a fit calls this with the same
        shapes every time, so it pays once.
        """
        return self.abstract_value(kind, lambda: jax.eval_shape(fn, *args), *args)

    def _counted(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def traced(*args, **kwargs):
            self.traces[name] += 1  # runs at trace time only
            return fn(*args, **kwargs)

        return traced

    def _split_batches(self, step: Any, member_axis: bool = False) -> Any:
        """On a mesh, a step wrapper that splits each batch over the data axes."""
        if self.placement is None:
            return step
        return lambda state, batch, *args: step(
            state, self.placement.constrain_batch(batch, member_axis), *args)

    def _accumulate_eval(self, acc, state, data, idx, mask):
        stats = self.eval_step(state, fuse.gather(data, idx, mask))
        return stats if acc is None else metrics_lib.merge(acc, stats)

    def _predict_all(self, state, x, idx):
        return jax.lax.map(lambda i: self.predict_step(
            state, jax.tree.map(lambda a: jnp.take(a, i, axis=0), x)), idx)

    def watch(self, first: bool, arguments: dict[str, Any], traces_before: int) -> None:
        """The recompile watchdog: logs which argument changed when the block compiled again.

        Compiling on a fit's first dispatch is expected (new data shapes are logged as
        information); compiling again inside a fit means a callback or the data changed
        an argument's shape, dtype or sharding, which costs a full compile each time.
        """
        if self.traces["block"] == traces_before:
            if first and self._signature is None:
                self._signature = _signature(arguments)
            return
        signature = _signature(arguments)
        previous, self._signature = self._signature, signature
        if previous is None:
            return
        changes = [f"{k}: {previous.get(k, 'absent')} -> {v}" for k, v in signature.items()
                   if previous.get(k) != v]
        changes += [f"{k}: {v} -> absent" for k, v in previous.items() if k not in signature]
        message = ("training block recompiled; changed: " + "; ".join(changes[:6])
                   if changes else "training block recompiled (static arguments changed)")
        if first:
            logger.info(message)
        else:
            logger.warning(message + ". Keep shapes, dtypes and shardings fixed between "
                           "dispatches (a callback replacing the state?)")

    def flops_per_step(self, state: TrainState, batch_spec: dict[str, Any]) -> float | None:
        """FLOPs of one training step (XLA cost analysis), cached per shapes."""
        from jaxdl.train import perf

        return self.abstract_value("flops", lambda: perf.step_flops(self.train_step, state,
                                                                     batch_spec),
                                   state, batch_spec)

    def abstract_value(self, kind: str, compute, *args) -> Any:
        # dtype objects hash as they are (str() of ~30 leaves was 50 us per call).
        key = (kind, jax.tree.structure(args),
               tuple((a.shape, a.dtype) for a in jax.tree.leaves(args)))
        if key not in self._abstract:
            self._abstract[key] = compute()
        return self._abstract[key]

    def loop_friendly(self, state: TrainState, x: Any) -> bool:
        """Whether this model runs at full speed inside a rolled scan (decided once);
        ``x``: inputs [n, ...] or a pytree of them."""
        if self._loop_friendly is None:
            sample = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype), x)
            self._loop_friendly = fuse.loop_friendly(self.outputs, self.member_spec(state),
                                                     sample)
        return self._loop_friendly
