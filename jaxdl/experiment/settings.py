"""How the experiment layer reads a config: completed from the defaults once, and errors
restated as the ``--config.KEY`` the user typed.

The defaults live only in :func:`jaxdl.experiment.default_config.get_config`. A
config file (or a saved ``config.json``) may hold fewer keys — an older run, a
hand-written config — so :func:`complete` merges it over the defaults once, and
every builder then reads ``config.group.key`` directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections

from jaxdl import errors
from jaxdl.experiment.config import flatten

# Groups taken as given, never merged key by key: a model's keys are its constructor's
# (Model(**config.model)); hyper-parameter names are the user's choice.
WHOLE_GROUPS = ("model", "population.hparams")


def _merge(defaults: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
           prefix: str) -> None:
    for key, value in config.items(preserve_field_references=True):
        path = f"{prefix}{key}"
        default = defaults.get(key) if key in defaults else None
        if (isinstance(value, ml_collections.ConfigDict)
                and isinstance(default, ml_collections.ConfigDict)
                and path not in WHOLE_GROUPS):
            with defaults.unlocked():
                _merge(default, value, path + ".")
            continue
        with defaults.unlocked():
            if key in defaults:  # the given value replaces the default whatever its type
                del defaults[key]
            defaults[key] = value


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` merged over the default experiment's config (a new ConfigDict).

    Every default key is present afterwards; the config's own values (and keys the
    defaults lack) win. ``model`` and ``population.hparams`` are taken whole.
    """
    from jaxdl.experiment.default_config import get_config

    merged = get_config()
    _merge(merged, ml_collections.ConfigDict(config), "")
    return merged


# Library arguments whose config key is not their own name (or the group's key of that
# name): where a builder passes a config value on under another name.
RENAMED = {
    "optimizer": "optimizer.name", "optimizer options": "optimizer",
    "val_fraction + test_fraction": "data.val_fraction", "population": "population.size",
    "hparams": "population.hparams", "seeds": "population.seeds",
    "data placement": "sharding.data_placement", "padding": "augment.crop_padding",
    "stddev": "augment.noise_std", "rate": "augment.feature_dropout",
    "alpha": "augment.mixup_alpha", "mode": "augment.crop_mode", "keep": "checkpoint.keep",
    "class_weight": "data.class_weight",
}


def config_key(argument: str, config: ml_collections.ConfigDict,
               group: str | None = None) -> str | None:
    """The config key a library argument came from, or None if it is not the config's."""
    if argument in RENAMED:
        return RENAMED[argument]
    if group is not None and f"{group}.{argument}" in flatten(config):
        return f"{group}.{argument}"
    if argument in config or argument in flatten(config):
        return argument
    return None


@contextlib.contextmanager
def config_errors(config: ml_collections.ConfigDict, group: str | None = None
                  ) -> Iterator[None]:
    """Restates the kit's argument errors raised inside as ``--config.KEY``.

    ``group``: the config group the code inside reads (its keys are tried first).
    Errors about anything that is not a config key pass unchanged.
    """
    try:
        yield
    except errors.InputError as e:
        if e.argument is None or e.argument.startswith("--"):
            raise
        key = config_key(e.argument, config, group)
        if key is None:
            raise
        raise e.renamed(f"--config.{key}") from None


def sub_config(config: ml_collections.ConfigDict, group: str) -> dict[str, Any]:
    """A group as keyword arguments (lists as tuples), for ``Component(**sub_config(...))``."""
    values: Mapping[str, Any] = config[group].to_dict()
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
