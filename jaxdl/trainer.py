"""Trainer: the Keras-short facade over the pure steps and the drivers.

    trainer = jdl.Trainer(model, optimizer="adam", loss="binary_crossentropy",
                          metrics=["accuracy"])
    state = trainer.init(jax.random.key(0), x_train[:1])
    state, history = trainer.fit(state, x_train, y_train, epochs=10, batch_size=32,
                                 validation_data=(x_val, y_val))
    trainer.evaluate(state, x_test, y_test)   # {"loss": ..., "accuracy": ...}
    trainer.predict(state, x_test)            # probabilities

The Trainer holds no training state: ``state`` goes in and comes out. It holds
the compiled programs, so repeated calls with the same shapes never recompile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxdl import errors, outputs, user_step
from jaxdl import losses as losses_lib
from jaxdl import metrics as metrics_lib
from jaxdl import optim as optim_lib
from jaxdl import step as step_lib
from jaxdl.data import trees
from jaxdl.data import validate as check
from jaxdl.state import TrainState, copied
from jaxdl.train import fit as fit_lib
from jaxdl.train import infer
from jaxdl.train import seeds as seeds_lib
from jaxdl.train.hooks import Callback, not_a_callback
from jaxdl.train.programs import Programs
from jaxdl.writers import ConsoleLogger


class Trainer:
    """Fits, evaluates and predicts with a Flax model, functionally.

    Args:
      model: a Flax module instance (outputs logits for classification): Linen, or an
        initialized ``nnx.Module`` (wrapped in :class:`jaxdl.models.nnx_model.NNXModel`).
      optimizer: a name in :data:`jaxdl.optim.OPTIMIZERS` or any ``optax.GradientTransformation``.
      loss: a name in :data:`jaxdl.losses.LOSSES`, a :class:`jaxdl.losses.Loss`, or
        ``fn(outputs, labels) -> per-example loss [B]``; or one per output of a model
        returning a dict, ``{"a": "binary_crossentropy", "b": "mse"}`` (:mod:`jaxdl.outputs`).
      loss_weights: with a loss per output, ``{"a": 1.0, "b": 0.5}`` (default 1 each): the
        objective is the weighted sum, reported as ``loss`` (each output's as ``a_loss``).
      metrics: names in :data:`jaxdl.metrics.METRICS`, Metric objects or per-example
        callables; with a loss per output, per output: ``{"a": ["accuracy"]}`` (``a_accuracy``).
      learning_rate: float or optax schedule, used when ``optimizer`` is a name.
      weight_decay, l2, clip_norm: regularization, see :func:`jaxdl.optim.make_optimizer`.
      schedule: learning-rate schedule by name, e.g. ``{"name": "warmup_cosine",
        "total_steps": 1000, "warmup_steps": 100}`` (``learning_rate`` is its peak);
        the form a population can vary per member.
      augment: ``aug(key, x, y) -> (x, y)`` run on device in every training step
        (see :mod:`jaxdl.data.augment`).
      mesh: a ``jax.sharding.Mesh`` with axes (data, fsdp, tensor) or sizes such as
        ``{"data": -1}`` / ``{"data": 2, "fsdp": 2, "tensor": 2}``: the state is placed by
        partition ``rules`` (FSDP over ``fsdp`` by default; ``logical_rules`` map Flax
        logical axis names) and every batch is split over (data, fsdp).
      strategy: with a mesh, "auto" (jit + NamedShardings), "shard_map" (an explicit SPMD
        step: local gradients averaged with ``lax.pmean``; parameters replicated) or "pmap"
        (the same step under legacy ``jax.pmap``).
      data_placement: with a mesh, "device" (the training set replicated on the devices,
        batches gathered there), "host" (each process sends only its slice of every global
        batch, assembled with ``jax.make_array_from_process_local_data``) or "auto" (host
        when there are several processes).
      nan_policy: what a step with a non-finite loss or gradient does, decided on device:
        "none" (apply it), "raise" (skip it and stop with NonFiniteError naming the step
        and the gradients), "skip" (skip it, count ``nonfinite_steps`` per epoch) or
        "rollback" (reload the last good checkpoint, then go on without that update).
      precision: "float32", or "bfloat16": compute in bfloat16 with float32 parameters and
        optimizer state (see :mod:`jaxdl.precision`); evaluate and predict compute alike.
      grad_accum_steps: split every training batch into this many micro-batches and apply
        one update for their summed gradients (the batch's update, in less memory);
        ``batch_size`` must be a multiple of it (see :func:`jaxdl.step.make_train_step`).
      task: with a callable ``loss``: "binary", "multiclass" or "regression", which the
        metrics and ``predict``'s link (sigmoid, softmax, identity) follow.
      train_step: your own pure ``fn(state, batch) -> (state, stats)`` in place of the
        kit's (see :mod:`jaxdl.user_step` for what it must respect); ``fit`` keeps fusion,
        padding, checkpoints, callbacks, the NaN policy, populations and "auto" sharding.
        It applies ``optimizer`` itself (pass the optax transform it uses; the state's
        ``opt_state`` is ``optimizer.init(params)``). ``loss`` is then only for evaluation
        and validation and may be None.
    """

    def __init__(self, model: nn.Module, *, loss: str | losses_lib.Loss | Callable | None,
                 optimizer: str | optax.GradientTransformation = "adam",
                 metrics: Sequence[str | metrics_lib.Metric | Callable] | dict[str, Any] = (),
                 loss_weights: dict[str, float] | None = None,
                 learning_rate: float | optax.Schedule = 1e-3, weight_decay: float = 0.0,
                 l2: float = 0.0, clip_norm: float | None = None,
                 schedule: dict[str, Any] | None = None,
                 augment: step_lib.Augment | None = None, nan_policy: str = "none",
                 mesh: Any = None, rules: Any = (), logical_rules: Any = (),
                 strategy: str = "auto", data_placement: str = "auto",
                 precision: str = "float32", grad_accum_steps: int = 1,
                 task: str | None = None, train_step: Callable | None = None):
        if isinstance(model, type) and issubclass(model, nn.Module):
            raise errors.type_error("model", "a Flax module instance", f"the class "
                                    f"{model.__name__}", f"instantiate it: {model.__name__}(...)")
        if not isinstance(model, nn.Module):
            from jaxdl.models import nnx_model  # flax.nnx is imported for non-Linen models only

            wrapped = nnx_model.wrap(model)  # an nnx.Module, seen through Linen's init/apply
            if wrapped is None:
                raise errors.type_error("model", "a Flax module instance (Linen or NNX)",
                                        errors.describe(model),
                                        "pass a flax.linen.Module or an initialized "
                                        "flax.nnx.Module, e.g. Net(..., rngs=nnx.Rngs(0))")
            model = wrapped
        self.model = model
        if train_step is not None:
            user_step.check_options(train_step, augment=augment, precision=precision,
                                    grad_accum_steps=grad_accum_steps, strategy=strategy)
        self.loss, self.metrics = outputs.resolve(loss, loss_weights, metrics, task,
                                                  custom_step=train_step is not None)
        self._optimizer = dict(optimizer=optimizer, learning_rate=learning_rate,
                               weight_decay=weight_decay, l2=l2, clip_norm=clip_norm,
                               schedule=schedule)
        # A custom step applies the optimizer itself: it gets it exactly as given (no
        # learning-rate scale around it, so ReduceLROnPlateau needs the kit's step).
        self._wrap_tx = optim_lib.with_lr_scale if train_step is None else (lambda tx: tx)
        self.tx = self._wrap_tx(optim_lib.make_optimizer(**self._optimizer))
        self._train_step = train_step
        self._augment, self._nan_policy = augment, nan_policy
        self._step_options = dict(precision=precision, grad_accum_steps=grad_accum_steps)
        # Compiled variants: (injected names, population kind or None, log_norms).
        self._variants: dict[tuple[Any, ...], tuple[Any, Programs]] = {}
        self.placement = None
        if mesh is not None:
            from jaxdl.parallel import Placement

            self.placement = Placement(mesh, rules, logical_rules, strategy, data_placement)
        self.programs = self._population((), None)[1]
        # Init runs once: on CPU, compiling it without LLVM's optimizations cuts
        # its compile time by more than half (1.2 s -> 0.45 s for the reference MLP).
        self._fast_compile = {"xla_backend_optimization_level": 0} if (
            jax.default_backend() == "cpu") else None
        self._init = jax.jit(self._init_fn, compiler_options=self._fast_compile)

    def _make_programs(self, tx: optax.GradientTransformation, population: str | None = None,
                       log_norms: bool = False, confusion: bool = False) -> Programs:
        rate = optim_lib.learning_rate_fn(self._optimizer["optimizer"],
                                          self._optimizer["learning_rate"],
                                          self._optimizer["schedule"]) if log_norms else None
        metrics = self.metrics + ((metrics_lib.get("confusion", self.loss.task),) if confusion
                                  and all(m.name != "confusion" for m in self.metrics) else ())
        return Programs(self.model, self.loss, tx, metrics, self._augment,
                        self._nan_policy, self.placement, population=population,
                        train_step=self._train_step, log_norms=log_norms, learning_rate=rate,
                        **self._step_options)

    def _population(self, names: Sequence[str], kind: str | None = "shared",
                    log_norms: bool = False, confusion: bool = False
                    ) -> tuple[optax.GradientTransformation, Programs]:
        """(optimizer, programs) of a population varying ``names`` (``kind`` None: one
        model); built once per variant."""
        names = tuple(sorted(names))
        key = (names, kind, log_norms, confusion)
        if key not in self._variants:
            tx = self.tx
            if names and isinstance(self._optimizer["optimizer"], str):
                tx = self._wrap_tx(optim_lib.make_optimizer(**self._optimizer, inject=names))
            self._variants[key] = (tx, self._make_programs(tx, kind, log_norms, confusion))
        return self._variants[key]

    def programs_for(self, state: TrainState, seed: Any = 0, log_norms: bool = False,
                     confusion: bool = False) -> Programs:
        """The compiled programs that train ``state``: the model's, or its population's
        (``seed``: one per member selects each member's own data order); ``log_norms``:
        the variant that also reports norms and the learning rate; ``confusion``: also
        the confusion matrix."""
        from jaxdl import population

        if population.size(state) is None:
            return self._population((), None, log_norms, confusion)[1]
        kind = "shared" if isinstance(seed, int | np.integer) else "member"
        return self._population(population.hparams(state), kind, log_norms, confusion)[1]

    def _variables(self, rng: jax.Array, sample: jax.Array) -> dict[str, Any]:
        params_key, dropout_key, _ = jax.random.split(rng, 3)
        mode = step_lib.mode_argument(self.model)
        kwargs = {mode: mode == "deterministic"} if mode else {}
        return dict(self.model.init({"params": params_key, "dropout": dropout_key}, sample,
                                    **kwargs))

    def _init_fn(self, rng: jax.Array, sample: jax.Array, tx: Any = None) -> TrainState:
        # Logical partitioning annotations (nn.with_logical_partitioning) are read for
        # placement; the state holds plain arrays.
        variables = nn.meta.unbox(self._variables(rng, sample))
        params = variables.pop("params")
        return TrainState.create(params, tx or self.tx, jax.random.split(rng, 3)[2], variables)

    def init(self, rng: Any, sample_x: Any, *, population: int | None = None,
             hparams: dict[str, Any] | None = None, seeds: Sequence[int] | None = None
             ) -> TrainState:
        """Initializes parameters and optimizer state from a sample batch [b, ...].

        Args:
          rng: a PRNG key or an int seed.
          sample_x: a batch of inputs [b, ...] (e.g. ``x[:1]``), or a pytree of them as the
            model takes it (``{"image": ..., "meta": ...}``).
          population: train N models at once (see :mod:`jaxdl.population`): every leaf
            of the state gets a leading member axis [N, ...].
          hparams: per-member hyper-parameters, name -> N values ("learning_rate",
            "weight_decay", "l2", "clip_norm" or a numeric option of the optimizer, e.g.
            "b1", "momentum"); held in the optimizer state (``optax.inject_hyperparams``).
          seeds: one int per member: member i is initialized exactly like
            ``init(seeds[i], sample_x)``. Default: ``rng + i`` for an int ``rng``, else
            ``jax.random.split(rng, N)``.
        """
        sample = check.as_features(sample_x, "sample_x")
        if population is not None or hparams or seeds is not None:
            return self._init_population(rng, sample, population, dict(hparams or {}), seeds)
        key = seeds_lib.as_key(rng)
        self._check_sample(key, sample, self.tx)
        if self.placement is None:
            return self._init(key, sample)
        boxed = jax.eval_shape(self._variables, key, sample)["params"]
        shardings = self.placement.state_shardings(jax.eval_shape(self._init_fn, key, sample),
                                                   boxed_params=boxed, tx=self.tx)
        init = jax.jit(self._init_fn, out_shardings=shardings)
        return init(key, sample)

    def _init_population(self, rng: Any, sample: jax.Array, size: int | None,
                         hparams: dict[str, Any], seeds: Sequence[int] | None) -> TrainState:
        from jaxdl import population as population_lib

        size, keys = seeds_lib.member_keys(rng, size, hparams, seeds)
        if not isinstance(self._optimizer["optimizer"], str) and hparams:
            known = set(population_lib.hparams(jax.eval_shape(
                self._init_fn, keys[0], sample)))
            if not set(hparams) <= known:
                raise errors.input_error(
                    "hparams", f"hyper-parameters injected in the given optax optimizer "
                    f"{sorted(known)}", repr(sorted(hparams)), "build it with "
                    "optax.inject_hyperparams(optax.adam)(learning_rate=...), or pass the "
                    "optimizer by name")
        tx, _ = self._population(hparams)
        self._check_sample(keys[0], sample, tx)
        init = jax.jit(jax.vmap(lambda k, x: self._init_fn(k, x, tx), in_axes=(0, None)),
                       compiler_options=self._fast_compile,
                       **self._population_init_shardings(keys, sample, tx))
        state = init(keys, sample)
        values = {k: np.asarray(v, np.float32).reshape(size) for k, v in hparams.items()}
        return population_lib.set_hparams(state, values) if values else state

    def _check_sample(self, key: jax.Array, sample: jax.Array, tx: Any) -> None:
        """Traces init once, so a sample the model rejects is the user's error, clearly."""
        try:
            jax.eval_shape(lambda k, x: self._init_fn(k, x, tx), key, sample)
        except errors.JaxdlError:
            raise
        except Exception as e:
            raise errors.input_error("sample_x", "a batch the model can be applied to",
                                     f"{errors.describe(sample)} (the model said: "
                                     f"{errors.first_sentence(e)})",
                                     "pass a slice of the training inputs, e.g. x[:1]") from None

    def _population_init_shardings(self, keys: jax.Array, sample: jax.Array, tx: Any
                                   ) -> dict[str, Any]:
        if self.placement is None:
            return {}
        boxed = jax.eval_shape(self._variables, keys[0], sample)["params"]
        abstract = jax.eval_shape(jax.vmap(lambda k, x: self._init_fn(k, x, tx),
                                           in_axes=(0, None)), keys, sample)
        return {"out_shardings": self.placement.state_shardings(
            abstract, boxed_params=boxed, population=True, tx=tx)}

    def abstract_state(self, sample_x: Any, population: int | None = None,
                       hparams: Sequence[str] = ()) -> TrainState:
        """The state ``init`` would build, as shapes and dtypes only (nothing allocated).

        The restore target for checkpoints and the input to memory estimates; with
        ``population`` (and the names of its ``hparams``), a population's.
        """
        sample = trees.spec(sample_x, 1)
        if not population:
            return jax.eval_shape(self._init_fn, jax.random.key(0), sample)
        tx, _ = self._population(hparams)
        return jax.eval_shape(
            jax.vmap(lambda k, x: self._init_fn(k, x, tx), in_axes=(0, None)),
            jax.eval_shape(lambda: jax.random.split(jax.random.key(0), population)), sample)

    def fit(self, state: TrainState, x: Any, y: Any = None, *, epochs: int = 1,
            batch_size: int | None = None, validation_data: Any = None,
            validation_split: float = 0.0, shuffle: bool | None = None, seed: int = 0,
            steps_per_epoch: int | None = None, callbacks: Sequence[Callback] = (),
            steps_per_dispatch: int | str = "auto", initial_epoch: int = 0, verbose: int = 1,
            checkpoint_dir: str | None = None, checkpointing: Any = None,
            log_norms: bool = False, population_mode: str = "auto", sample_weight: Any = None,
            class_weight: dict[Any, float] | str | None = None) -> fit_lib.FitResult:
        """Trains and returns ``(state, history)``; see :func:`jaxdl.train.fit.fit` for arguments.

        The result unpacks as ``state, history``; its ``stats`` (a
        :class:`~jaxdl.train.fit.FitStats`) hold compile time and throughput.

        ``verbose=1`` prints a line per epoch (a live bar on a terminal); 0 is silent.
        The given ``state`` stays valid (fit works on a copy it may donate).
        ``checkpoint_dir``: save there every epoch and at the end, and resume from the
        newest good checkpoint found there (a :class:`jaxdl.checkpoint.Checkpointing`
        in ``checkpointing`` sets the cadence and more).
        ``log_norms``: also report per epoch the mean gradient, update and parameter norms
        (global and per top-level module) and the learning rate (see :mod:`jaxdl.norms`).
        ``population_mode``: "vmap", "sequential" or "auto" (see :func:`jaxdl.train.fit.fit`).
        ``sample_weight`` [n] / ``class_weight`` ``{label: w}`` or "balanced": each batch's
        loss is ``sum(w_i * l_i) / sum(mask_i)`` (Keras; see :mod:`jaxdl.weights`).
        ``x`` may be a dataset (any iterable of ``(x, y)`` batches; ``y=None``) with
        ``steps_per_epoch`` and ``shuffle=None`` (see :mod:`jaxdl.train.iterables`).
        """
        self._check_state(state)
        callbacks = list(callbacks)
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):  # as Keras requires keras.callbacks.Callback
                raise not_a_callback(i, cb)
        if verbose:
            callbacks.append(ConsoleLogger())
        state = copied(state)
        programs = self.programs_for(state, seed, check.boolean(log_norms, "log_norms"))
        with contextlib.ExitStack() as stack:
            if checkpoint_dir is not None and checkpointing is None:
                from jaxdl import checkpoint

                checkpointing = checkpoint.Checkpointing(
                    stack.enter_context(checkpoint.Checkpointer(checkpoint_dir)))
            return fit_lib.fit(programs, state, x, y, epochs=epochs, batch_size=batch_size,
                               validation_data=validation_data,
                               validation_split=validation_split, shuffle=shuffle, seed=seed,
                               steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                               steps_per_dispatch=steps_per_dispatch,
                               initial_epoch=initial_epoch, checkpointing=checkpointing,
                               population_mode=population_mode, sample_weight=sample_weight,
                               class_weight=class_weight)

    def restore(self, directory: Any, *, sample_x: Any = None) -> TrainState:
        """The newest good checkpoint's state under ``directory`` (a ``checkpoint_dir`` of
        fit, or a ``jaxdl train`` workdir), ready for predict, evaluate or more fit.

        Works from a fresh process: the checkpoint records the example shape and whether
        it holds a population (``sample_x`` is needed only for checkpoints that do not).
        """
        from jaxdl.train import load

        return load.restore(self, directory, sample_x)[0]

    def evaluate(self, state: TrainState, x: Any, y: Any = None, *, batch_size: int | None = None,
                 sample_weight: Any = None, confusion: bool = False) -> dict[str, Any]:
        """``{"loss": float, <metric>: float}`` over all of (x, y), exactly.

        For a population: one value per member (float64 arrays [N]). ``sample_weight`` [n]:
        weighted loss and metrics (see :mod:`jaxdl.weights`); ``confusion=True`` adds
        ``"confusion"``, the [classes][classes] matrix (rows true, columns predicted).
        ``x`` may be a dataset of ``(x, y)`` batches (``y=None``), streamed exactly.
        """
        self._check_state(state)
        programs = self.programs_for(state, confusion=check.boolean(confusion, "confusion"))
        return infer.evaluate(programs, state, x, y, batch_size=batch_size,
                              sample_weight=sample_weight)

    def predict(self, state: TrainState, x: Any, *, batch_size: int | None = None,
                ensemble: bool = False) -> np.ndarray:
        """Predictions [n, ...]: probabilities for classification losses, raw outputs otherwise.

        For a population: [N, n, ...], one row per member; ``ensemble=True`` averages into
        [n, ...] the predictions (probabilities) of the members whose parameters and
        predictions are all finite (under ``nan_policy="none"`` a diverged member's
        parameters are NaN), with one warning naming how many were used when some are not.
        ``x`` may be a dataset of batches (``x``, or ``(x, y)`` / ``{"x": ...}``), streamed.

        Raises:
          NonFiniteError: with ``ensemble=True``, when no member is finite.
        """
        from jaxdl import population

        self._check_state(state)
        population.check_ensemble(state, check.boolean(ensemble, "ensemble"))
        out = infer.predict(self.programs_for(state), state, x, batch_size=batch_size)
        return population.ensemble_mean(state, out) if ensemble else out

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, TrainState):
            raise errors.type_error("state", "a jdl.TrainState from trainer.init(...)",
                                    errors.describe(state), "pass state = trainer.init(key, x[:1])")

    def summary(self, x: Any, *, state: TrainState | None = None,
                print_fn: Callable[[str], Any] | None = print) -> str:
        """Keras' ``model.summary()``; see :func:`jaxdl.train.model_summary.show`."""
        from jaxdl.train import model_summary

        return model_summary.show(self, x, state, print_fn, self._step_options["precision"])
