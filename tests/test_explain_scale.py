"""The input-scale check shared by `jaxdl predict` and `jaxdl explain`: values far off the
training scale warn, naming the value and the fix; values on it stay silent."""

import warnings

import numpy as np
import pytest

from jaxdl.experiment import config as config_lib
from jaxdl.experiment import input_scale


def _config(**data):
    config = config_lib.load_config(config_lib.default_config_path())
    config.data.update(data)
    return config


def test_a_standardized_run_flags_values_a_hundred_deviations_out():
    scaler = {"kind": "standardizer", "mean": [0.0] * 3, "std": [1.0] * 3}
    x = np.zeros((4, 3), np.float32)
    x[2, 1] = 150.0
    with pytest.warns(input_scale.InputScaleWarning, match="1 value\\(s\\) in 1 row\\(s\\) of "
                      "f.csv.*row 2, b at 150.*Fix: pass raw inputs in the units"):
        input_scale.check(x, scaler, _config(), "f.csv", names=["a", "b", "c"])
    x[2, 1] = 99.0  # an outlier, not a unit mistake
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert input_scale.check(x, scaler, _config(), "f.csv") is None


def test_a_minmax_run_flags_values_ten_ranges_out():
    scaler = {"kind": "minmax", "minimum": [0.0], "scale": [1.0], "feature_range": [0.0, 1.0]}
    assert input_scale.check(np.array([[10.5]], np.float32), scaler, _config(), "f") is None
    with pytest.warns(input_scale.InputScaleWarning, match="near \\[0, 1\\]"):
        input_scale.check(np.array([[11.5]], np.float32), scaler, _config(), "f")


def test_an_image_run_without_a_scaler_uses_its_training_range():
    config = _config(name="digits", images=True)
    pixels = np.full((2, 8, 8, 1), 0.5, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert input_scale.check(pixels, None, config, "ok.csv") is None
    with pytest.warns(input_scale.InputScaleWarning, match="\\[0, 1\\].*pixel_0_0 at 16.*"
                      "pixel / 16"):
        input_scale.check(pixels * 32, None, config, "raw.csv")
    # Integer tokens, or a run whose data cannot be read, are not judged.
    assert input_scale.check(np.ones((2, 4), np.int32), None, config, "t") is None
    assert input_scale.check(pixels * 32, None, _config(records="/nonexistent"), "r") is None
