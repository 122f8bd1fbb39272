"""Streamed computations equal the in-memory ones: AGOP on every engine backend, a whole fit from Zarr."""

import numpy as np
import pytest

from bigrfm import RFMClassifier, RFMRegressor
from bigrfm.numerics.agop import agop_from_sums, kernel_agop_block
from bigrfm.io.convert import create_dataset
from bigrfm.io.zarr_store import open_dataset
from bigrfm.numerics.kernels import LaplaceKernel
from bigrfm.model.prepare import Prepare, RowSelect
from bigrfm.model.predictors import KernelPredictor
from closeness import assert_close


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1003, 5))
    y = X[:, 0] * X[:, 1] + np.sin(X[:, 2]) + 0.05 * rng.normal(size=1003)
    path = tmp_path_factory.mktemp("pipe") / "d.zarr"
    with create_dataset(path, 5, dtype="float64", chunk_rows=128) as w:
        w.append(X, y)
    return X, y, str(path)


@pytest.mark.parametrize("backend", ["threads", "local", "remote"])
def test_streamed_agop_equals_in_memory(problem, backend, request):
    engine = request.getfixturevalue(f"{backend}_engine")
    X, y, path = problem
    rng = np.random.default_rng(1)
    Z, alpha = X[:60], rng.normal(size=(60, 2))
    M = np.cov(rng.normal(size=(5, 20))) + 0.1 * np.eye(5)
    pred = KernelPredictor(LaplaceKernel(4.0), M, Z, alpha)
    bc = pred.broadcast()
    expected = agop_from_sums(kernel_agop_block(X, None, **bc), M, centering=True)
    dataset = open_dataset(path)
    for block_rows in (1003, 128, 97):
        sums = engine.map_reduce(kernel_agop_block, dataset, broadcast=bc, prepare=Prepare(None, None, "float64"), block_rows=block_rows)
        assert_close(agop_from_sums(sums, M, centering=True), expected, 1e-10)
    # a selected subset of rows (what agop_sample streams) equals the same rows in memory
    keep = np.sort(rng.choice(1003, 300, replace=False))
    sums = engine.map_reduce(kernel_agop_block, dataset, broadcast=bc, prepare=Prepare(None, None, "float64", select=RowSelect(keep, True)), block_rows=97)
    assert_close(agop_from_sums(sums, M), agop_from_sums(kernel_agop_block(X[keep], None, **bc), M), 1e-10)


@pytest.mark.parametrize("solver", ["nystrom", "exact"])
def test_fit_from_zarr_on_a_local_cluster_equals_in_memory_fit(problem, solver, local_engine):
    X, y, path = problem
    params = dict(iters=2, solver=solver, n_centers=150, cg_maxiter=8, random_state=3, block_rows=256, validation_fraction=0.1)
    mem = RFMRegressor(**params).fit(X, y)
    # the session's LocalCluster (started by an Engine with scheduler="local"), shared by address
    disk = RFMRegressor(scheduler=local_engine.address, **params).fit_dataset(path)
    assert_close(disk.M_, mem.M_, 1e-9)
    assert_close(disk.predict(X[:50]), mem.predict(X[:50]), 1e-9)
    assert disk.best_iter_ == mem.best_iter_


def test_classifier_from_zarr_with_string_labels(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 3))
    y = np.where(X[:, 0] > 0, "b", "a")
    with create_dataset(tmp_path / "c.zarr", 3, dtype="float64") as w:
        w.append(X, y)
    clf = RFMClassifier(iters=1, random_state=0).fit_dataset(tmp_path / "c.zarr")
    assert list(clf.classes_) == ["a", "b"] and clf.score(X, y) > 0.9


def test_nan_in_a_store_names_the_row(tmp_path):
    X = np.ones((50, 2))
    X[37, 1] = np.nan
    with create_dataset(tmp_path / "n.zarr", 2, dtype="float64") as w:
        w.append(X, np.arange(50.0))
    with pytest.raises(ValueError, match="row 37"):
        RFMRegressor(iters=0).fit_dataset(tmp_path / "n.zarr")


def test_array_dataset_and_agop_sample(problem):
    X, y, _ = problem
    model = RFMRegressor(iters=1, agop_sample=200, random_state=0).fit(X, y)
    assert model.M_.shape == (5, 5) and np.isfinite(model.M_).all()
