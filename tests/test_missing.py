"""missing="mean": the fit equals a fit on data imputed first with the training means (numpy reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bigrfm import RFMClassifier, RFMRegressor, load_model
from bigrfm.exceptions import DataError, InputError
from bigrfm.io.convert import convert, create_dataset
from bigrfm.io.missing import Imputation
from bigrfm.io.stats import Moments, NanMoments
from bigrfm_cli.main import cli

PARAMS = dict(iters=2, random_state=0, validation_fraction=0.0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 5.0, -1.0, 2.0]
    Xv = rng.normal(size=(200, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 5.0, -1.0, 2.0]
    f = lambda A: A[:, 0] * A[:, 1] + A[:, 2]  # noqa: E731
    Xn, Xvn = X.copy(), Xv.copy()
    Xn[rng.random(X.shape) < [0.1, 0.2, 0.0, 0.05]] = np.nan  # column 2 never missing
    Xvn[rng.random(Xv.shape) < 0.1] = np.nan
    return Xn, f(X), Xvn, f(Xv)


def _impute_first(Xn, Xvn, indicator=False):
    """The numpy reference: each feature's mean over the training rows' non-NaN values, then (optionally) indicators."""
    mu = np.nanmean(Xn, axis=0)
    cols = np.flatnonzero(np.isnan(Xn).any(axis=0))

    def imp(A):
        out = np.where(np.isnan(A), mu, A)
        return np.hstack([out, np.isnan(A)[:, cols].astype(float)]) if indicator else out

    return imp


@pytest.mark.parametrize("indicator", [False, True])
def test_mean_imputation_equals_a_fit_on_data_imputed_first(data, indicator):
    Xn, y, Xvn, yv = data
    imp = _impute_first(Xn, Xvn, indicator)
    ref = RFMRegressor(**PARAMS).fit(imp(Xn), y, imp(Xvn), yv)
    model = RFMRegressor(missing="mean", add_indicator=indicator, **PARAMS).fit(Xn, y, Xvn, yv)
    # compared on the scale of the values (a mean near 0 has no relative precision)
    np.testing.assert_allclose(model.impute_values_, np.nanmean(Xn, axis=0), rtol=0, atol=1e-13 * np.nanmax(np.abs(Xn)))
    # the same kernel problem: the standardization statistics differ only in summation order
    np.testing.assert_allclose(model.x_mean_, ref.x_mean_, rtol=1e-12, atol=1e-12 * np.abs(ref.x_mean_).max())
    np.testing.assert_allclose(model.x_scale_, ref.x_scale_, rtol=1e-12)
    np.testing.assert_allclose(model.M_, ref.M_, rtol=1e-8, atol=1e-8 * np.abs(ref.M_).max())
    pred, expected = model.predict(Xvn), ref.predict(imp(Xvn))
    np.testing.assert_allclose(pred, expected, rtol=0, atol=1e-8 * np.abs(expected).max())
    assert model.best_iter_ == ref.best_iter_
    if indicator:
        assert model.indicator_features_.tolist() == [0, 1, 3] and model.M_.shape == (7, 7)
    else:
        assert model.indicator_features_ is None and model.M_.shape == (4, 4)


def test_without_nan_mean_imputation_changes_nothing(data):
    _, y, _, yv = data
    rng = np.random.default_rng(1)
    X, Xv = rng.normal(size=(600, 4)), rng.normal(size=(200, 4))
    a = RFMRegressor(**PARAMS).fit(X, y, Xv, yv)
    b = RFMRegressor(missing="mean", **PARAMS).fit(X, y, Xv, yv)
    np.testing.assert_array_equal(a.M_, b.M_)
    np.testing.assert_array_equal(a.predict(Xv), b.predict(Xv))


def test_nan_moments_equal_moments_of_the_non_nan_values():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 3)) + 1e6
    X[rng.random(X.shape) < 0.3] = np.nan
    X[:, 2] = np.where(np.arange(500) < 250, np.nan, X[:, 2])  # a column empty in the first blocks
    acc = None
    for lo in range(0, 500, 37):
        part = NanMoments.of_block(X[lo : lo + 37])
        acc = part if acc is None else acc + part
    for j in range(3):
        col = X[~np.isnan(X[:, j]), j]
        np.testing.assert_allclose(acc.mean[j], col.mean(), rtol=1e-15)
        np.testing.assert_allclose(acc.m2[j], ((col - col.mean()) ** 2).sum(), rtol=1e-9)
        assert acc.count[j] == col.size
    # no NaN: the same bits as Moments
    Y = rng.normal(size=(100, 2))
    m, n = Moments.of_block(Y[:40]) + Moments.of_block(Y[40:]), NanMoments.of_block(Y[:40]) + NanMoments.of_block(Y[40:])
    assert np.array_equal(m.mean, n.mean) and np.array_equal(m.std, n.imputed_std)


def test_imputation_applies_values_and_indicators():
    imp = Imputation(np.array([1.0, 2.0, 3.0]), np.array([0, 2]))
    out = imp.apply(np.array([[np.nan, 5.0, 6.0], [4.0, np.nan, np.nan]]))
    np.testing.assert_array_equal(out, [[1.0, 5.0, 6.0, 1.0, 0.0], [4.0, 2.0, 3.0, 0.0, 1.0]])
    assert imp.apply(np.ones((2, 3), dtype=np.uint8)).shape == (2, 5)
    assert imp.output_names(["a", "b", "c"]) == ["a", "b", "c", "missing(a)", "missing(c)"]


def test_errors_name_rows_and_the_option(data):
    Xn, y, _, _ = data
    with pytest.raises(InputError, match=r"Input X contains NaN or inf in \d+ row\(s\): 1, 3, .*missing='mean'"):
        RFMRegressor().fit(Xn, y)
    X_inf = np.nan_to_num(Xn, nan=0.0)
    X_inf[7, 1] = np.inf
    with pytest.raises(InputError, match=r"Input X contains inf in 1 row\(s\): 7\. missing='mean' imputes NaN only"):
        RFMRegressor(missing="mean").fit(X_inf, y)
    all_nan = Xn.copy()
    all_nan[:, 2] = np.nan
    with pytest.raises(DataError, match="column 2 are NaN in every training row"):
        RFMRegressor(missing="mean", **PARAMS).fit(all_nan, y)
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(InputError, match=r"Input y contains NaN or inf in 1 row\(s\): 3"):
        RFMRegressor(missing="mean").fit(Xn, y_nan)


def test_saved_model_applies_the_same_imputation(tmp_path, data):
    Xn, y, Xvn, yv = data
    labels = (y > np.median(y)).astype(int)
    clf = RFMClassifier(missing="mean", add_indicator=True, **PARAMS).fit(Xn, labels, Xvn, (yv > np.median(y)).astype(int))
    clf.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.impute_values_, clf.impute_values_)
    np.testing.assert_array_equal(again.predict_proba(Xvn), clf.predict_proba(Xvn))


def test_store_with_nan_streams_with_missing_mean(tmp_path, data):
    Xn, y, Xvn, yv = data
    with create_dataset(tmp_path / "n.zarr", 4, dtype="float64", chunk_rows=128) as w:
        w.append(Xn, y)
        w.append(Xvn, yv, validation=True)
    with pytest.raises(DataError, match=r"'X' of .*n.zarr contains NaN or inf in row 1 .*--missing mean"):
        RFMRegressor(iters=0).fit_dataset(tmp_path / "n.zarr")
    model = RFMRegressor(missing="mean", block_rows=128, **PARAMS).fit_dataset(tmp_path / "n.zarr")
    imp = _impute_first(Xn, Xvn)
    ref = RFMRegressor(block_rows=128, **PARAMS).fit(imp(Xn), y, imp(Xvn), yv)
    np.testing.assert_allclose(model.M_, ref.M_, rtol=1e-8, atol=1e-8 * np.abs(ref.M_).max())


def test_cli_convert_keeps_nan_with_missing_mean_and_fit_imputes(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(y=X[:, 0] - X[:, 1])
    frame.loc[[5, 17, 40], "b"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    runner = CliRunner()
    refused = runner.invoke(cli, ["convert", str(tmp_path / "d.csv"), str(tmp_path / "d.zarr"), "--target", "y"])
    assert refused.exit_code == 2 and "--missing mean" in refused.output and "row 5" in refused.output
    ok = runner.invoke(cli, ["convert", str(tmp_path / "d.csv"), str(tmp_path / "d.zarr"), "--target", "y", "--missing", "mean"])
    assert ok.exit_code == 0, ok.output
    res = runner.invoke(cli, ["fit", str(tmp_path / "d.zarr"), "--out", str(tmp_path / "m"), "--iters", "1", "--scheduler",
                              "threads", "--missing", "mean", "--add-indicator", "--val-fraction", "0", "--json"])
    assert res.exit_code == 0, res.output
    model = load_model(tmp_path / "m")
    assert model.indicator_features_.tolist() == [1]
    # every row trains (--val-fraction 0); the store holds float32
    np.testing.assert_allclose(model.impute_values_[1], np.nanmean(frame["b"]), rtol=0, atol=1e-6)
    res = runner.invoke(cli, ["evaluate", str(tmp_path / "m"), str(tmp_path / "d.zarr"), "--scheduler", "threads", "--json"])
    assert res.exit_code == 0 and json.loads(res.output.strip().splitlines()[-1])["rows"] == 300


def test_convert_with_missing_mean_still_refuses_inf(tmp_path):
    X = np.ones((20, 2))
    X[4, 0], X[9, 1] = np.nan, np.inf
    np.save(tmp_path / "a.npy", X)
    with pytest.raises(DataError, match=r"Column 'column 1' of .* holds inf in row 9"):
        convert(tmp_path / "a.npy", tmp_path / "a.zarr", missing="mean")
    ds = convert(tmp_path / "a.npy", tmp_path / "a.zarr", missing="mean", drop_nonfinite=True)
    assert ds.n_rows == 19 and np.isnan(ds.read(0, 19)[0][4, 0])
