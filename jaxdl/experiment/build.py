"""Config -> objects: the Trainer (model, loss, optimizer, mesh, augmentation), the
callbacks and the population a config describes. Each piece reads its own group.

Every function takes a config completed by :func:`jaxdl.experiment.settings.complete`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxdl import errors
from jaxdl.experiment.settings import config_errors, sub_config


def model(config: ml_collections.ConfigDict):
    """The model of ``config.model``: a registered name or an import path
    (``"mypkg.nets:MyNet"``) and its constructor's keywords; or a module object itself
    (it trains, but a run saved that way cannot be rebuilt from its workdir)."""
    import flax.linen as nn

    from jaxdl import models

    if isinstance(config.model, nn.Module):
        return config.model
    if not isinstance(config.model, ml_collections.ConfigDict):
        raise errors.input_error(
            "--config.model", "a group with a model name and its keywords",
            f"{str(config.model)[:80]!r} (a module object, saved as its text)",
            "name the model by import path in the config: c.model = {'name': "
            "'mypkg.nets:MyNet', ...its keywords}")
    kwargs = sub_config(config, "model")
    with config_errors(config, "model"):
        return models.get(kwargs.pop("name"), **kwargs)


def optimizer(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, Any]:
    """Trainer keyword arguments for ``config.optimizer`` (by name, so that a population
    can inject its hyper-parameters)."""
    opt = config.optimizer
    if opt.schedule in ("cosine", "warmup_cosine") and opt.warmup_steps >= total_steps:
        raise errors.input_error(
            "--config.optimizer.warmup_steps",
            f"fewer steps than the run has ({total_steps} = {config.epochs} epochs x "
            f"{total_steps // max(config.epochs, 1)} steps)", repr(opt.warmup_steps),
            "lower --config.optimizer.warmup_steps or raise --config.epochs")
    schedule = dict(name=opt.schedule, total_steps=total_steps, warmup_steps=opt.warmup_steps,
                    decay_steps=opt.decay_steps, decay_rate=opt.decay_rate)
    return dict(optimizer=opt.name, learning_rate=opt.learning_rate, schedule=schedule,
                weight_decay=opt.weight_decay, l2=opt.l2, clip_norm=opt.clip_norm or None)


def mesh_spec(config: ml_collections.ConfigDict) -> dict[str, int] | None:
    """The config's mesh sizes, or None for a single device (every axis 1)."""
    sizes = {axis: config.mesh[axis] for axis in ("population", "data", "fsdp", "tensor")}
    return None if all(v == 1 for v in sizes.values()) else sizes


def augment(config: ml_collections.ConfigDict):
    """The on-device augmentation ``config.augment`` asks for, or None."""
    from jaxdl.data import augment as augment_lib

    spec = config.augment
    parts = []
    with config_errors(config, "augment"):
        if spec.crop_padding:
            parts.append(augment_lib.random_crop(spec.crop_padding, spec.crop_mode))
        if spec.flip:
            parts.append(augment_lib.random_flip())
        if spec.noise_std:
            parts.append(augment_lib.gaussian_noise(spec.noise_std))
        if spec.feature_dropout:
            parts.append(augment_lib.feature_dropout(spec.feature_dropout))
        if spec.mixup_alpha:
            parts.append(augment_lib.mixup(spec.mixup_alpha))
    return augment_lib.compose(*parts) if parts else None


def trainer(config: ml_collections.ConfigDict, steps_per_epoch: int | None):
    """The Trainer an experiment config describes (model, loss, metrics, optimizer, mesh).

    ``steps_per_epoch`` sizes the learning-rate schedule; None when it is not known
    (inspecting a config without its data): any length past the warm-up will do, since
    the schedule shapes no array.
    """
    from jaxdl.parallel.strategies import STRATEGIES
    from jaxdl.trainer import Trainer

    if steps_per_epoch is None:
        steps_per_epoch = (config.optimizer.warmup_steps or 0) // max(config.epochs, 1) + 1
    if config.strategy not in STRATEGIES:
        raise errors.unknown_name("--config.strategy", "strategy", config.strategy,
                                  list(STRATEGIES))
    total_steps = max(1, config.epochs * steps_per_epoch)
    sharding = config.sharding
    spec = mesh_spec(config)
    mesh = None
    if spec is not None:
        from jaxdl.parallel import make_mesh

        with config_errors(config):
            mesh = make_mesh(spec)
    net, augmentation = model(config), augment(config)
    with config_errors(config, "optimizer"):
        return Trainer(net, loss=config.loss, metrics=list(config.metrics),
                       **optimizer(config, total_steps), nan_policy=config.nan_policy,
                       mesh=mesh, rules=[tuple(rule) for rule in sharding.rules],
                       logical_rules=[tuple(rule) for rule in sharding.logical_rules],
                       strategy=config.strategy, data_placement=sharding.data_placement,
                       precision=config.precision, grad_accum_steps=config.grad_accum_steps,
                       augment=augmentation)


def callbacks(config: ml_collections.ConfigDict) -> list:
    """Early stopping and learning-rate reduction, where the config enables them."""
    from jaxdl.train import callbacks as callbacks_lib

    out = []
    stop = config.early_stopping
    if stop.enabled:
        out.append(callbacks_lib.EarlyStopping(monitor=stop.monitor, patience=stop.patience,
                                               restore_best_weights=stop.restore_best))
    plateau = config.reduce_lr
    if plateau.enabled:
        out.append(callbacks_lib.ReduceLROnPlateau(monitor=plateau.monitor,
                                                   factor=plateau.factor,
                                                   patience=plateau.patience))
    return out


def population(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """``init`` and ``fit`` arguments of the config's population, or None for one model."""
    from jaxdl import population as population_lib

    spec = config.population
    size = spec.size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.input_error("--config.population.size", "an integer >= 0 (0: one model)",
                                 repr(size), "pass e.g. --config.population.size=32")
    if not size:
        return None
    hparams = spec.hparams
    hparams = hparams.to_dict() if hasattr(hparams, "to_dict") else dict(hparams or {})
    seeds = list(spec.seeds or ())
    if seeds and len(seeds) != size:
        raise errors.input_error("--config.population.seeds", f"{size} seeds (population.size)",
                                 f"{len(seeds)} seeds", "give one seed per member, or none "
                                 "(then member i uses seed + i)")
    seeds = [int(s) for s in seeds] or [config.seed + i for i in range(size)]
    if spec.data_order not in ("shared", "member"):
        raise errors.unknown_name("--config.population.data_order", "data order",
                                  spec.data_order, ["shared", "member"])
    with config_errors(config, "population"):
        expanded = population_lib.expand(hparams, size, seed=config.seed)
    return {"size": size, "seeds": seeds, "hparams": expanded,
            "data_seed": config.seed if spec.data_order == "shared" else seeds}


def class_weight(config: ml_collections.ConfigDict) -> Any:
    """``data.class_weight`` as fit takes it: None, "balanced" or a {label: weight} dict."""
    value = config.data.class_weight
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
