"""A user's own model class named by import path: ``"mypkg.nets:MyNet"``.

For configs (``model.name = "mypkg.nets:MyNet"`` plus its constructor keywords),
so that ``jaxdl train`` and then ``jaxdl predict/evaluate/explain/summary`` on the
run build the same model. Only a ``flax.linen.Module`` subclass is accepted: a
name that resolves to anything else is refused before it is called.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import flax.linen as nn

from jaxdl import errors

_FIX = ("name a flax.linen.Module class as 'package.module:ClassName', importable from the "
        "environment (installed, on PYTHONPATH, or next to the config file)")


def is_path(name: Any) -> bool:
    """Whether a model name is an import path rather than a registered name."""
    return isinstance(name, str) and ":" in name


def origin(name: str) -> Path | None:
    """Where the module of ``name`` would be imported from (None if it cannot be found)."""
    module = name.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).resolve() if spec is not None and spec.origin else None


def resolve(name: str) -> type[nn.Module]:
    """The Linen module class ``"package.module:ClassName"`` names."""
    module_name, _, attribute = name.partition(":")
    parts = [*module_name.split("."), *attribute.split(".")]
    if not all(part.isidentifier() for part in parts):
        raise errors.input_error("model.name", "a registered model name or "
                                 "'package.module:ClassName'", repr(name), _FIX)
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise errors.input_error("model.name", "an importable module", f"{name!r} "
                                 f"({errors.first_sentence(e)})", _FIX) from None
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise errors.input_error("model.name", "a flax.linen.Module class", f"{name!r}, which "
                                 f"is {errors.describe(found)}", _FIX)
    return found
