"""clean, Standardizer and MinMaxScaler against numpy."""

import jax
import numpy as np
import pytest

from jaxdl.data import MinMaxScaler, Standardizer, clean, scaler_from_dict


def _dirty():
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    x[1, 2] = np.nan
    x[4, 0] = np.inf
    x[6] = x[2]
    y[6] = y[2]  # row 6 duplicates row 2
    return x, y


def test_clean_drops_nonfinite_and_duplicates_in_order():
    x, y = _dirty()
    out = clean(x, y)
    np.testing.assert_array_equal(out.x, x[[0, 2, 3, 5, 7]])
    np.testing.assert_array_equal(out.y, y[[0, 2, 3, 5, 7]])
    assert out.report == {"rows_in": 8, "nonfinite_rows": 2, "imputed_values": 0,
                          "duplicate_rows": 1, "rows_out": 5}


def test_clean_imputes_with_column_statistics():
    x, y = _dirty()
    out = clean(x, y, nonfinite="impute_median", drop_duplicates=False)
    finite = np.where(np.isfinite(x), x, np.nan)
    assert out.x[1, 2] == np.nanmedian(finite[:, 2])
    assert out.x[4, 0] == np.nanmedian(finite[:, 0])
    assert out.report["imputed_values"] == 2 and out.report["rows_out"] == 8


def test_clean_errors():
    x, y = _dirty()
    with pytest.raises(ValueError, match="argument 'x'.*row 1"):
        clean(x, y, nonfinite="error")
    with pytest.raises(ValueError, match="argument 'y'"):
        clean(x, y[:3])
    with pytest.raises(ValueError, match="did you mean 'drop'"):
        clean(x, y, nonfinite="dorp")


def test_standardizer_matches_numpy_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, size=(50, 4)).astype(np.float32)
    x[:, 3] = 7.0  # constant column: scale 1, no division by zero
    scaler = Standardizer.fit(x)
    expected = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    np.testing.assert_allclose(scaler(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(scaler.__call__)(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.inverse(scaler(x)), x, rtol=1e-5)
    again = scaler_from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again(x), scaler(x))
    with pytest.raises(ValueError, match="examples of shape"):
        scaler(x[:, :3])


def test_minmax_scaler_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 5, size=(30, 3)).astype(np.float32)
    scaler = MinMaxScaler.fit(x, feature_range=(-1.0, 1.0))
    expected = (x - x.min(0)) / (x.max(0) - x.min(0)) * 2 - 1
    np.testing.assert_allclose(scaler(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scaler_from_dict(scaler.to_dict())(x), scaler(x))


def test_fit_rejects_nan():
    with pytest.raises(ValueError, match=r"jdl\.data\.clean"):
        Standardizer.fit(np.array([[1.0], [np.nan]]))
