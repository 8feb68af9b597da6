"""Plain Flax modules and a registry of them by name.

Models import nothing of jaxdl's training code: any Flax module works with the
kit, these are the ones that ship with it. :class:`NNXModel` (imported on first use,
with flax.nnx) presents an ``nnx.Module`` through the Linen interface the kit drives.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxdl import _lazy
from jaxdl.models.cnn import CNN
from jaxdl.models.mlp import ACTIVATIONS, MLP
from jaxdl.models.resnet import ResNet
from jaxdl.models.transformer import LOGICAL_RULES, Transformer

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "resnet": ResNet,
                                      "transformer": Transformer}


def get(name: str, **kwargs: Any) -> nn.Module:
    """Builds a model from its registered name, or its import path
    (``"mypkg.nets:MyNet"``, see :mod:`jaxdl.models.by_path`), and constructor arguments."""
    from jaxdl import errors
    from jaxdl.models import by_path

    if by_path.is_path(name):
        model_class = by_path.resolve(name)
    elif name in MODELS:
        model_class = MODELS[name]
    else:
        raise errors.unknown_name("model.name", "model", name, list(MODELS))
    try:
        return model_class(**kwargs)
    except TypeError as e:
        raise errors.input_error("model", f"constructor arguments of {model_class.__name__}",
                                 repr(kwargs), f"check the field names ({e})") from None


__all__ = ["ACTIVATIONS", "CNN", "LOGICAL_RULES", "MLP", "MODELS", "NNXModel", "ResNet",
           "Transformer", "get"]

__getattr__, _dir = _lazy.exports(__name__, {"NNXModel": "jaxdl.models.nnx_model"})


def __dir__() -> list[str]:
    return sorted({*globals(), *_dir()})
