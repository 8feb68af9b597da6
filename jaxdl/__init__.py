"""jaxdl: a JAX functional training kit.

One ``TrainState`` pytree, one pure ``train_step(state, batch) -> (state, metrics)``,
and drivers around it. See ``README.md`` and ``docs/``.

Names are re-exported lazily (PEP 562), so ``import jaxdl.cli`` — and with it
``jaxdl --help`` — does not pay for importing JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxdl import _lazy

__version__ = "0.1.0"

# Public submodules by name: jdl.callbacks and jdl.experiment live in packages grouped by role.
_SUBMODULES = {name: f"jaxdl.{name}" for name in (
    "checkpoint", "count_metrics", "data", "errors", "experiment", "explain", "fuse",
    "losses", "metrics", "models", "optim", "outputs", "parallel", "population", "precision",
    "sample", "state", "step", "testing", "train", "trainer", "weights", "writers")}
_SUBMODULES["callbacks"] = "jaxdl.train.callbacks"
_EXPORTS = {
    "Callback": "jaxdl.train.callbacks",
    "EarlyStopping": "jaxdl.train.callbacks",
    "LambdaCallback": "jaxdl.train.callbacks",
    "ReduceLROnPlateau": "jaxdl.train.callbacks",
    "TerminateOnNaN": "jaxdl.train.callbacks",
    "InputError": "jaxdl.errors",
    "InputTypeError": "jaxdl.errors",
    "JaxdlError": "jaxdl.errors",
    "TrainState": "jaxdl.state",
    "make_train_step": "jaxdl.step",
    "make_eval_step": "jaxdl.step",
    "make_predict_step": "jaxdl.step",
    "Trainer": "jaxdl.trainer",
    "load": "jaxdl.experiment.restore",
}

__all__ = sorted([*_SUBMODULES, *_EXPORTS])


__getattr__, __dir__ = _lazy.exports(__name__, _EXPORTS, _SUBMODULES)


if TYPE_CHECKING:  # for type checkers and IDEs only
    from jaxdl import data, losses, metrics, models, optim, population  # noqa: F401
    from jaxdl.errors import InputError, InputTypeError, JaxdlError  # noqa: F401
    from jaxdl.state import TrainState  # noqa: F401
    from jaxdl.step import make_eval_step, make_predict_step, make_train_step  # noqa: F401
    from jaxdl.train import callbacks  # noqa: F401
    from jaxdl.train.callbacks import Callback, EarlyStopping, ReduceLROnPlateau, TerminateOnNaN  # noqa: F401
    from jaxdl.trainer import Trainer  # noqa: F401
