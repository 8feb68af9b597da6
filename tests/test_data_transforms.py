"""clean, Standardizer and MinMaxScaler against numpy and scikit-learn."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import preprocessing

from jaxdl.data.transforms import Cleaned, MinMaxScaler, Standardizer, clean, scaler_from_dict


def _dirty():
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    x[1, 2] = np.nan
    x[4, 0] = np.inf
    x[6] = x[2]
    y[6] = y[2]  # row 6 duplicates row 2
    return x, y


def _first_occurrences(x, y):
    """Reference dedupe: the rows whose (x row, y) was not seen before, in order."""
    seen, keep = set(), []
    for i in range(len(x)):
        pair = (tuple(np.ravel(x[i]).tolist()), tuple(np.ravel(y[i]).tolist()))
        if pair not in seen:
            seen.add(pair)
            keep.append(i)
    return keep


def test_clean_drops_nonfinite_and_duplicates_in_order():
    x, y = _dirty()
    out = clean(x, y)
    assert isinstance(out, Cleaned)
    np.testing.assert_array_equal(out.x, x[[0, 2, 3, 5, 7]])
    np.testing.assert_array_equal(out.y, y[[0, 2, 3, 5, 7]])
    assert out.report == {"rows_in": 8, "nonfinite_rows": 2, "imputed_values": 0,
                          "duplicate_rows": 1, "rows_out": 5}


def test_clean_dedupes_like_a_reference_and_never_casts_labels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(60, 2))  # int features, many repeats
    y = rng.choice([0.0, 0.5, 1.0], size=60)  # 0.5 must not merge with 0 (no int cast)
    out = clean(x, y)
    keep = _first_occurrences(x, y)
    np.testing.assert_array_equal(out.x, x[keep])
    np.testing.assert_array_equal(out.y, y[keep])
    assert out.x.dtype == x.dtype and out.report["duplicate_rows"] == 60 - len(keep)
    alone = clean(x)  # without labels only x rows count
    np.testing.assert_array_equal(alone.x, x[_first_occurrences(x, np.zeros(60))])
    assert alone.y is None


def test_clean_imputes_with_column_statistics():
    x, y = _dirty()
    out = clean(x, y, nonfinite="impute_median", drop_duplicates=False)
    finite = np.where(np.isfinite(x), x, np.nan)
    assert out.x[1, 2] == np.nanmedian(finite[:, 2])
    assert out.x[4, 0] == np.nanmedian(finite[:, 0])
    assert out.report["imputed_values"] == 2 and out.report["rows_out"] == 8
    mean = clean(x, y, nonfinite="impute_mean", drop_duplicates=False)
    np.testing.assert_allclose(mean.x[1, 2], np.nanmean(finite[:, 2]), rtol=1e-6)
    np.testing.assert_array_equal(np.delete(mean.x, [1, 4], axis=0), np.delete(x, [1, 4], 0))


def test_clean_drops_nonfinite_labels_even_when_imputing():
    x, _ = _dirty()
    y = np.linspace(0, 1, 8)
    y[1] = np.nan  # its x row holds the NaN too: dropped, so nothing imputed there
    out = clean(x, y, nonfinite="impute_mean", drop_duplicates=False)
    kept = np.delete(np.arange(8), 1)
    np.testing.assert_array_equal(out.y, y[kept])
    np.testing.assert_allclose(out.x[3, 0], np.mean(x[kept][np.isfinite(x[kept, 0]), 0]))
    assert out.report == {"rows_in": 8, "nonfinite_rows": 1, "imputed_values": 1,
                          "duplicate_rows": 0, "rows_out": 7}


def test_clean_errors():
    x, y = _dirty()
    with pytest.raises(ValueError, match="argument 'x'.*row 1"):
        clean(x, y, nonfinite="error")
    with pytest.raises(ValueError, match=r"argument 'y'.*\(8 rows\), got 3 labels"):
        clean(x, y[:3])
    with pytest.raises(ValueError, match="did you mean 'drop'"):
        clean(x, y, nonfinite="dorp")
    with pytest.raises(ValueError, match="argument 'x': expected a non-empty numeric"):
        clean(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="argument 'x': expected a non-empty numeric"):
        clean([["a", "b"]])
    x[:, 1] = np.nan
    with pytest.raises(ValueError, match="argument 'x'.*column 1 with no finite value"):
        clean(x, nonfinite="impute_median")


def test_standardizer_matches_sklearn_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, size=(50, 4)).astype(np.float32)
    x[:, 3] = 7.0  # constant column: scale 1, no division by zero
    scaler = Standardizer.fit(x)
    expected = preprocessing.StandardScaler().fit_transform(x.astype(np.float64))
    out = scaler(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.inverse(out), x, rtol=1e-5)
    again = scaler_from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert isinstance(again, Standardizer)
    np.testing.assert_array_equal(again(x), out)
    with pytest.raises(ValueError, match="examples of shape"):
        scaler(x[:, :3])


def test_scalers_are_pytrees_that_run_under_jit():
    x = np.random.default_rng(2).uniform(-5, 5, size=(20, 3)).astype(np.float32)
    standardizer, minmax = Standardizer.fit(x), MinMaxScaler.fit(x, feature_range=(-1.0, 1.0))
    assert len(jax.tree.leaves(standardizer)) == 2 and len(jax.tree.leaves(minmax)) == 2

    @jax.jit
    def both(s, m, batch):  # the scalers travel as arguments: their leaves are traced
        return s(batch), m(batch)

    got_s, got_m = both(standardizer, minmax, jnp.asarray(x))
    assert got_s.dtype == got_m.dtype == jnp.float32
    np.testing.assert_allclose(got_s, standardizer(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_m, minmax(x), rtol=1e-5, atol=1e-6)


def test_minmax_scaler_matches_sklearn():
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 5, size=(30, 3)).astype(np.float32)
    x[:, 2] = -2.0  # constant: range 1, maps to the low end
    scaler = MinMaxScaler.fit(x, feature_range=(-1.0, 1.0))
    expected = preprocessing.MinMaxScaler((-1.0, 1.0)).fit_transform(x.astype(np.float64))
    np.testing.assert_allclose(scaler(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scaler.inverse(scaler(x)), x, rtol=1e-5, atol=1e-5)
    d = json.loads(json.dumps(scaler.to_dict()))
    assert d["kind"] == "minmax" and d["feature_range"] == [-1.0, 1.0]
    np.testing.assert_array_equal(scaler_from_dict(d)(x), scaler(x))
    with pytest.raises(ValueError, match="argument 'feature_range'"):
        MinMaxScaler.fit(x, feature_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="what the MinMaxScaler was fit on"):
        scaler(x[:, :2])


def test_fit_rejects_nan_and_bad_dicts():
    with pytest.raises(ValueError, match=r"row 1.*jdl\.data\.clean"):
        Standardizer.fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match=r"jdl\.data\.clean"):
        MinMaxScaler.fit(np.array([[np.inf], [1.0]]))
    with pytest.raises(ValueError, match="argument 'scaler'.*'standardizer' or 'minmax'"):
        scaler_from_dict({"kind": "robust"})
    with pytest.raises(ValueError, match=r"argument 'scaler'.*without \['std'\]"):
        scaler_from_dict({"kind": "standardizer", "mean": [0.0]})
