"""Lazy re-exports (PEP 562) for packages whose modules import heavy libraries."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, names: Mapping[str, str], modules: Mapping[str, str] | None = None
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, importing on first use.

    Args:
      package: the package's ``__name__`` (for the error message).
      names: attribute -> the dotted module that defines it.
      modules: attribute -> a dotted module that is the attribute itself.
    """
    modules = dict(modules or {})

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        if name in modules:
            return importlib.import_module(modules[name])
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*names, *modules])

    return __getattr__, __dir__
