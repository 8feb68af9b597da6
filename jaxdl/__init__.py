"""jaxdl: a JAX functional training kit.

One ``TrainState`` pytree, one pure ``train_step(state, batch) -> (state, metrics)``,
and drivers around it. See ``README.md`` and ``docs/``.

Names are re-exported lazily (PEP 562), so ``import jaxdl.cli`` — and with it
``jaxdl --help`` — does not pay for importing JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_SUBMODULES = ("callbacks", "checkpoint", "data", "errors", "event_writers", "explain", "fuse",
               "loop", "losses", "metrics", "models", "optim", "perf", "plot", "programs",
               "resume", "state", "step", "testing", "trainer", "writers")
_EXPORTS = {
    "Callback": "jaxdl.callbacks",
    "EarlyStopping": "jaxdl.callbacks",
    "ReduceLROnPlateau": "jaxdl.callbacks",
    "TerminateOnNaN": "jaxdl.callbacks",
    "InputError": "jaxdl.errors",
    "InputTypeError": "jaxdl.errors",
    "JaxdlError": "jaxdl.errors",
    "TrainState": "jaxdl.state",
    "make_train_step": "jaxdl.step",
    "make_eval_step": "jaxdl.step",
    "make_predict_step": "jaxdl.step",
    "Trainer": "jaxdl.trainer",
}

__all__ = sorted([*_SUBMODULES, *_EXPORTS])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxdl.{name}")
    raise AttributeError(f"module 'jaxdl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs only
    from jaxdl import callbacks, data, losses, metrics, models, optim  # noqa: F401
    from jaxdl.callbacks import Callback, EarlyStopping, ReduceLROnPlateau, TerminateOnNaN  # noqa: F401
    from jaxdl.errors import InputError, InputTypeError, JaxdlError  # noqa: F401
    from jaxdl.state import TrainState  # noqa: F401
    from jaxdl.step import make_eval_step, make_predict_step, make_train_step  # noqa: F401
    from jaxdl.trainer import Trainer  # noqa: F401
