"""Plain Flax modules and a registry of them by name.

Models import nothing of jaxdl's training code: any Flax module works with the
kit, these are the ones that ship with it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxdl.models.cnn import CNN
from jaxdl.models.mlp import ACTIVATIONS, MLP
from jaxdl.models.resnet import ResNet
from jaxdl.models.transformer import LOGICAL_RULES, Transformer

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "resnet": ResNet,
                                      "transformer": Transformer}


def get(name: str, **kwargs: Any) -> nn.Module:
    """Builds a registered model from its name and constructor arguments."""
    from jaxdl import errors

    if name not in MODELS:
        raise errors.unknown_name("model.name", "model", name, list(MODELS))
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise errors.input_error("model", f"constructor arguments of {MODELS[name].__name__}",
                                 repr(kwargs), f"check the field names ({e})") from None


__all__ = ["ACTIVATIONS", "CNN", "LOGICAL_RULES", "MLP", "MODELS", "ResNet", "Transformer",
           "get"]
