"""Dask collections and zarr arrays as X/y: streamed through the engine, the same model as on numpy.

With the same block boundaries (chunks of ``block_rows`` rows) a fit reads the
same rows in the same order whatever holds them, so the models are equal bit
for bit; with other boundaries only the order of additions changes.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from bigrfm import RFMClassifier, RFMRegressor
from bigrfm.exceptions import InputError
from bigrfm.io.dask_data import DaskDataset, dask_dataset
from bigrfm.io.datasets import ArrayDataset, block_bounds

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

N, D, CHUNK = 1200, 5, 200
PARAMS = dict(iters=2, solver="nystrom", n_centers=150, cg_maxiter=6, random_state=0, block_rows=CHUNK)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    y = X[:, 0] * X[:, 1] + np.sin(X[:, 2]) + 0.05 * rng.normal(size=N)
    return X, y


@pytest.fixture(scope="module")
def reference(data):
    return RFMRegressor(**PARAMS).fit(*data)


def _same_model(a, b):
    np.testing.assert_array_equal(a.M_, b.M_)
    np.testing.assert_array_equal(a.dual_coef_, b.dual_coef_)
    np.testing.assert_array_equal(a.centers_, b.centers_)
    assert a.best_iter_ == b.best_iter_


def test_dask_array_gives_the_numpy_model_bit_for_bit(data, reference):
    X, y = data
    model = RFMRegressor(**PARAMS).fit(da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK))
    _same_model(model, reference)
    lazy = model.predict(da.from_array(X, chunks=(CHUNK, D)))
    assert isinstance(lazy, da.Array) and lazy.chunks == ((CHUNK,) * (N // CHUNK),)
    np.testing.assert_array_equal(lazy.compute(), reference.predict(X))


def test_dask_dataframe_gives_the_numpy_model_and_feature_names(data, reference):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(D)])
    ddf = dd.from_pandas(frame, npartitions=N // CHUNK, sort=False)
    target = dd.from_pandas(pd.Series(y, name="y"), npartitions=N // CHUNK, sort=False)
    assert np.isnan(ddf.to_dask_array().chunks[0][0])  # partition lengths unknown until counted
    model = RFMRegressor(**PARAMS).fit(ddf, target)
    _same_model(model, reference)
    assert list(model.feature_names_in_) == list(frame.columns)
    pred = model.predict(ddf)  # lazy, one chunk per partition (lengths unknown: no compute)
    assert isinstance(pred, da.Array) and pred.numblocks == (N // CHUNK,)
    np.testing.assert_array_equal(pred.compute(), reference.predict(X))
    # scikit-learn's feature-name check: other columns are refused
    with pytest.raises(ValueError, match="feature names"):
        model.predict(ddf.rename(columns={"f0": "other"}))


def test_zarr_array_gives_the_numpy_model_without_a_copy(tmp_path, data, reference):
    X, y = data
    Xz = zarr.create_array(str(tmp_path / "X.zarr"), shape=X.shape, chunks=(CHUNK, D), dtype="float64")
    Xz[...] = X
    yz = zarr.create_array(str(tmp_path / "y.zarr"), shape=y.shape, chunks=(CHUNK,), dtype="float64")
    yz[...] = y
    model = RFMRegressor(**PARAMS).fit(Xz, yz)
    _same_model(model, reference)
    pred = model.predict(Xz)
    assert isinstance(pred, np.ndarray)
    np.testing.assert_array_equal(pred, reference.predict(X))
    # numpy targets with a zarr X, and a zarr X_val
    again = RFMRegressor(**{**PARAMS, "validation_fraction": 0.0}).fit(Xz, y, Xz, yz)
    assert again.history_[0]["val_mse"] is not None


def test_other_block_boundaries_change_only_the_order_of_sums(data, reference):
    X, y = data
    model = RFMRegressor(**PARAMS).fit(da.from_array(X, chunks=(150, D)), da.from_array(y, chunks=300))
    np.testing.assert_allclose(model.M_, reference.M_, rtol=1e-9, atol=1e-9 * np.abs(reference.M_).max())
    scale = np.abs(reference.predict(X)).max()
    np.testing.assert_allclose(model.predict(X), reference.predict(X), rtol=0, atol=1e-8 * scale)


def test_unknown_chunk_sizes_are_counted_once(data):
    X, y = data
    Xd, yd = da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK)
    keep = Xd[:, 3] > -0.5  # a filter: row counts per chunk unknown until computed
    Xf, yf = Xd[keep], yd[keep]
    assert np.isnan(Xf.chunks[0][0])
    calls = []

    def compute(*collections):
        calls.append(len(collections))
        return dask.compute(*collections)

    ds = dask_dataset(Xf, yf, compute=compute)
    assert calls == [2]  # one computation counts X's and y's chunks together
    mask = X[:, 3] > -0.5
    assert ds.n_rows == mask.sum() and sum(ds.row_chunks) == ds.n_rows
    Xb, yb = ds.read(0, ds.n_rows)
    np.testing.assert_array_equal(Xb, X[mask])
    np.testing.assert_array_equal(yb, y[mask])
    model = RFMRegressor(**PARAMS).fit(Xf, yf)
    ref = RFMRegressor(**PARAMS).fit(X[mask], y[mask])
    np.testing.assert_allclose(model.M_, ref.M_, rtol=1e-9, atol=1e-9 * np.abs(ref.M_).max())


def test_blocks_are_whole_chunks():
    X = da.zeros((100, 2), chunks=((30, 10, 25, 35), (2,)))
    ds = DaskDataset(X)
    assert block_bounds(ds, 40) == [(0, 40), (40, 65), (65, 100)]
    assert block_bounds(ds, 10) == [(0, 30), (30, 40), (40, 65), (65, 100)]  # a chunk is never split
    assert block_bounds(ArrayDataset(np.zeros((100, 2))), 40) == [(0, 40), (40, 80), (80, 100)]


def test_predict_is_lazy_and_keeps_the_row_chunks(data, reference):
    X, _ = data
    computed = []

    def load(i):
        computed.append(i)
        return X[i * CHUNK : (i + 1) * CHUNK]

    lazy_X = da.concatenate([da.from_delayed(dask.delayed(load)(i), shape=(CHUNK, D), dtype=float) for i in range(N // CHUNK)])
    out = reference.predict(lazy_X)
    assert computed == [] and out.chunks[0] == lazy_X.chunks[0]
    np.testing.assert_array_equal(out.compute(), reference.predict(X))
    assert sorted(computed) == list(range(N // CHUNK))
    # the model's arrays are one key of the graph that every task depends on, not one copy per task
    keys = [k for k in dict(out.__dask_graph__()) if str(k).startswith("BlockPredict-")]
    assert len(keys) == 1


def test_classifier_on_dask_predict_proba_and_decision_function(data):
    X, y = data
    labels = np.where(y > 0, "pos", "neg")
    params = {**PARAMS, "iters": 1}
    ref = RFMClassifier(**params).fit(X, labels)
    Xd = da.from_array(X, chunks=(CHUNK, D))
    model = RFMClassifier(**params).fit(Xd, da.from_array(labels, chunks=CHUNK))
    assert list(model.classes_) == ["neg", "pos"]
    _same_model(model, ref)
    np.testing.assert_array_equal(model.predict(Xd).compute(), ref.predict(X))
    np.testing.assert_array_equal(model.predict_proba(Xd).compute(), ref.predict_proba(X))
    np.testing.assert_array_equal(model.decision_function(Xd).compute(), ref.decision_function(X))


def test_continuous_targets_are_refused_by_the_classifier(data):
    X, y = data
    with pytest.raises(InputError, match="Unknown label type: continuous"):
        RFMClassifier(iters=0).fit(da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK))


def test_scikit_learn_checks_on_collections(data, reference):
    X, y = data
    with pytest.raises(ValueError, match="X has 4 features, but RFMRegressor is expecting 5 features"):
        reference.predict(da.from_array(X[:, :4], chunks=(CHUNK, 4)))
    with pytest.raises(InputError, match="inconsistent numbers of samples"):
        RFMRegressor().fit(da.from_array(X, chunks=(CHUNK, D)), da.from_array(y[:-1], chunks=CHUNK))
    with pytest.raises(ValueError, match="requires y"):
        RFMRegressor().fit(da.from_array(X, chunks=(CHUNK, D)), None)


def test_on_a_local_cluster_blocks_are_computed_by_the_workers(data, reference, local_engine):
    """On a cluster the fit submits each block's slice of the collection; the model is the same."""
    X, y = data
    model = RFMRegressor(scheduler=local_engine.address, **PARAMS).fit(
        da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK))
    _same_model(model, reference)
    # a lazily generated collection: each worker generates the chunks of its blocks
    Xl = da.random.default_rng(1).normal(size=(N, D), chunks=(CHUNK, D))
    yl = Xl[:, 0] * Xl[:, 1]
    on_cluster = RFMRegressor(scheduler=local_engine.address, **PARAMS).fit(Xl, yl)
    _same_model(on_cluster, RFMRegressor(**PARAMS).fit(Xl, yl))
