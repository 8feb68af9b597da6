"""The experiment layer: a config file in, a trained run in a workdir out.

- :mod:`~jaxdl.experiment.config` / :mod:`~jaxdl.experiment.overrides`: load a
  ``get_config()`` file, apply ``--config.KEY=VALUE``;
- :mod:`~jaxdl.experiment.default_config`: the default experiment, and the one place
  defaults live; :mod:`~jaxdl.experiment.settings` completes a config from it;
- :mod:`~jaxdl.experiment.build` (config -> Trainer, callbacks, population),
  :mod:`~jaxdl.experiment.data` (config -> splits), :mod:`~jaxdl.experiment.workdir`;
- :mod:`~jaxdl.experiment.train` (``train_and_evaluate``) and
  :mod:`~jaxdl.experiment.results`; :mod:`~jaxdl.experiment.restore` (a run loaded back,
  predict/evaluate/sample); :mod:`~jaxdl.experiment.summary`,
  :mod:`~jaxdl.experiment.explain_run`.

Resolved lazily, so that the CLI can read a config without importing JAX.
"""

from __future__ import annotations

from jaxdl import _lazy

_EXPORTS = {
    "train_and_evaluate": "jaxdl.experiment.train",
    "restore_from_workdir": "jaxdl.experiment.restore",
    "predict_from_workdir": "jaxdl.experiment.restore",
    "evaluate_from_workdir": "jaxdl.experiment.restore",
    "sample_from_workdir": "jaxdl.experiment.restore",
    "load": "jaxdl.experiment.restore",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy.exports(__name__, _EXPORTS)
