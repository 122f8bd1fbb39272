"""Compact storage dtypes: uint8/int8/int16/int32/float16/bool features read as stored and cast per block."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from bigrfm import RFMClassifier, RFMRegressor
from bigrfm.exceptions import DataError
from bigrfm.io import convert as convert_mod
from bigrfm.io.convert import convert, create_dataset
from bigrfm.io.zarr_store import SlowChunkingWarning, open_dataset
from bigrfm_cli.main import cli

PARAMS = dict(iters=2, solver="nystrom", n_centers=120, cg_maxiter=5, random_state=0, block_rows=256, dtype="float32")


@pytest.fixture(scope="module")
def images():
    """Small 'images': uint8 pixels, a label from two of them."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(1000, 16), dtype=np.uint8)
    y = (X[:, 3].astype(int) + X[:, 7] > 255).astype(np.int64)
    return X, y


def _store(path, X, y, dtype):
    with create_dataset(path, X.shape[1], dtype=dtype, chunk_rows=256) as w:
        w.append(X, y)
    return str(path)


def test_uint8_store_gives_the_float32_model(tmp_path, images):
    X, y = images
    compact = _store(tmp_path / "u8.zarr", X, y, "uint8")
    wide = _store(tmp_path / "f32.zarr", X, y, "float32")
    assert open_dataset(compact).dtype == "uint8"
    a = RFMClassifier(**PARAMS).fit_dataset(compact)
    b = RFMClassifier(**PARAMS).fit_dataset(wide)
    np.testing.assert_array_equal(a.M_, b.M_)
    np.testing.assert_array_equal(a.dual_coef_, b.dual_coef_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X.astype(np.float32)))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "float16", "bool"])
def test_compact_zarr_and_dask_arrays_equal_the_float64_fit(dtype):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    X = rng.integers(-100, 100, size=(600, 4)) if dtype != "bool" else rng.random((600, 4)) < 0.5
    X = X.astype(dtype)
    y = X[:, 0].astype(float) * 0.5 + X[:, 1] - X[:, 2] * X[:, 3] * 0.01
    params = {**PARAMS, "dtype": "float64", "iters": 1}
    ref = RFMRegressor(**params).fit(X.astype(np.float64), y)
    Xz = zarr.create_array(zarr.storage.MemoryStore(), shape=X.shape, chunks=(256, 4), dtype=dtype)
    Xz[...] = X
    np.testing.assert_array_equal(RFMRegressor(**params).fit(Xz, y).M_, ref.M_)
    np.testing.assert_array_equal(RFMRegressor(**params).fit(da.from_array(X, chunks=(256, 4)), y).M_, ref.M_)


def test_column_chunked_zarr_array_is_read_in_row_blocks(tmp_path, images):
    X, y = images
    Xz = zarr.create_array(str(tmp_path / "cols.zarr"), shape=X.shape, chunks=(1000, 4), dtype="uint8")
    Xz[...] = X
    # 4 KB chunks: a warning naming the rewrite command; the fit reads row blocks anyway
    with pytest.warns(SlowChunkingWarning, match="bigrfm convert .*cols.zarr OUT.zarr"):
        model = RFMClassifier(**PARAMS).fit(Xz, y)
    ref = RFMClassifier(**PARAMS).fit(X.astype(np.float32), y)
    np.testing.assert_array_equal(model.M_, ref.M_)


def test_convert_keeps_integer_sources_compact(tmp_path, images):
    X, y = images
    np.savez(tmp_path / "img.npz", X=X, y=y)
    small = convert(tmp_path / "img.npz", tmp_path / "u8.zarr", dtype="uint8")
    wide = convert(tmp_path / "img.npz", tmp_path / "f32.zarr")
    assert (small.dtype, wide.dtype) == ("uint8", "float32")
    np.testing.assert_array_equal(small.read(0, 1000)[0], X)
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    assert size(tmp_path / "u8.zarr" / "X") < 0.3 * size(tmp_path / "f32.zarr" / "X")  # a quarter, plus metadata
    # the same rows per chunk by default: read in the same blocks, the same model bit for bit
    assert small.chunk_rows == wide.chunk_rows
    with create_dataset(tmp_path / "big.zarr", 784, dtype="uint8") as w:
        w.append(np.zeros((5000, 784), np.uint8))
    assert open_dataset(str(tmp_path / "big.zarr")).chunk_rows == convert_mod.default_chunk_rows(784, 4) == 2048
    a, b = (RFMClassifier(**{**PARAMS, "block_rows": None}).fit_dataset(ds) for ds in (small, wide))
    np.testing.assert_array_equal(a.M_, b.M_)


@pytest.mark.parametrize("value, dtype, phrase", [
    (256.0, "uint8", "256.0 in row 7, not a whole number from 0 to 255"),
    (1.5, "int16", "1.5 in row 7, not a whole number"),
    (np.nan, "uint8", "nan in row 7 (a missing value: integer dtypes cannot store NaN)"),
    (2.0, "bool", "2.0 in row 7, neither 0 nor 1"),
    (1e6, "float16", "beyond ±65504"),
])
def test_convert_checks_that_values_fit_the_dtype(tmp_path, value, dtype, phrase):
    X = np.ones((20, 3))
    X[7, 2] = value
    np.save(tmp_path / "a.npy", X)
    with pytest.raises(DataError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        convert(tmp_path / "a.npy", tmp_path / "a.zarr", dtype=dtype, missing="mean")
    assert not (tmp_path / "a.zarr").exists()


def test_convert_rechunks_a_zarr_store_along_rows(tmp_path, images):
    X, y = images
    g = zarr.open_group(str(tmp_path / "cols.zarr"), mode="w")
    g.create_array("X", shape=X.shape, chunks=(1000, 2), dtype="uint8")[...] = X
    g.create_array("y", shape=y.shape, chunks=(1000,), dtype="int64")[...] = y
    g.create_array("X_val", shape=(10, 16), chunks=(10, 2), dtype="uint8")[...] = X[:10]
    g.create_array("y_val", shape=(10,), chunks=(10,), dtype="int64")[...] = y[:10]
    g.attrs["feature_names"] = [f"p{j}" for j in range(16)]
    with pytest.warns(SlowChunkingWarning):
        open_dataset(str(tmp_path / "cols.zarr"))
    res = CliRunner().invoke(cli, ["convert", str(tmp_path / "cols.zarr"), str(tmp_path / "rows.zarr"), "--dtype", "uint8",
                                   "--chunk-rows", "256"])
    assert res.exit_code == 0, res.output
    assert "1000 rows, 16 features (uint8), 10 validation rows" in res.output
    ds = open_dataset(str(tmp_path / "rows.zarr"))
    arr = zarr.open_group(str(tmp_path / "rows.zarr"), mode="r")["X"]
    assert arr.chunks == (256, 16) and ds.feature_names[:2] == ("p0", "p1")
    np.testing.assert_array_equal(ds.read(0, 1000)[0], X)
    np.testing.assert_array_equal(ds.validation().read(0, 10)[1], y[:10])


def test_cli_info_shows_the_compact_dtype(tmp_path, images):
    X, y = images
    np.save(tmp_path / "a.npy", np.column_stack([X, y]))
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", str(tmp_path / "a.npy"), str(tmp_path / "a.zarr"), "--target", "16", "--dtype", "uint8"])
    assert res.exit_code == 0, res.output
    info = runner.invoke(cli, ["info", str(tmp_path / "a.zarr")])
    assert "features    16 (uint8)" in info.output
