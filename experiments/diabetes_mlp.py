"""Regression: an MLP on scikit-learn's diabetes set (442 patients, 10 features).

    jaxdl train --config experiments/diabetes_mlp.py --workdir /tmp/diabetes

Targets are the raw disease-progression scores (25..346); inputs standardized
on the training split. MSE loss, MAE reported; a linear model reaches an MAE
of about 43 on this set, the README's table has this config's result.
"""

from jaxdl.experiment.default_config import get_config as _default


def get_config():
    c = _default()
    c.data.name = "diabetes"
    c.model.features = (32, 32, 1)
    c.loss = "mse"
    c.metrics = ("mae",)
    c.optimizer.learning_rate = 1e-2
    c.epochs = 200
    c.early_stopping.enabled = True
    c.early_stopping.patience = 20
    return c
