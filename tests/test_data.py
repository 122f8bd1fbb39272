"""The on-disk dataset: opening, validating and reading Zarr groups; streaming statistics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr

from bigrfm import data
from bigrfm.data import ZarrDataset, open_dataset
from bigrfm.exceptions import DataError


def _write_group(path, arrays: dict, *, zarr_format: int = 3, attrs: dict | None = None, chunks: dict | None = None):
    """A Zarr group written with plain zarr calls (independent of bigrfm's writer)."""
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for name, value in arrays.items():
        value = np.asarray(value)
        ch = (chunks or {}).get(name, (max(1, min(len(value), 64)),) + value.shape[1:])
        # str: Zarr's variable-length string type ("<U" would be an unstable fixed-width type)
        dtype = str if value.dtype.kind == "U" else value.dtype
        a = g.create_array(name, shape=value.shape, dtype=dtype, chunks=ch)
        a[...] = value
    if attrs:
        g.attrs.update(attrs)
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_open_and_read_plain_zarr(tmp_path, rng, zarr_format):
    X = rng.normal(size=(300, 5))
    y = rng.integers(0, 3, size=300)
    path = _write_group(tmp_path / "d.zarr", {"X": X, "y": y}, zarr_format=zarr_format, attrs={"feature_names": list("abcde")})
    ds = open_dataset(path)
    assert (ds.n_rows, ds.n_features, ds.dtype, ds.chunk_rows) == (300, 5, "float64", 64)
    assert ds.has_y and ds.y_shape == (300,) and ds.feature_names == tuple("abcde")
    assert ds.validation() is None
    Xb, yb = ds.read(70, 200)
    np.testing.assert_array_equal(Xb, X[70:200])
    np.testing.assert_array_equal(yb, y[70:200])


def test_zarr_dataset_pickles_small_and_reads_after_unpickling(tmp_path, rng):
    X = rng.normal(size=(100, 3)).astype(np.float32)
    path = _write_group(tmp_path / "d.zarr", {"X": X})
    ds = open_dataset(path)
    ds.read(0, 10)  # fills this process's cache; the pickle must not carry it
    blob = pickle.dumps(ds)
    assert len(blob) < 1000
    ds2 = pickle.loads(blob)
    assert ds2 == ds and not ds2.has_y
    Xb, yb = ds2.read(90, 100)
    assert yb is None
    np.testing.assert_array_equal(Xb, X[90:100])


def test_read_sees_a_rewritten_store(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(50, 2))})
    open_dataset(path).read(0, 50)
    X = rng.normal(size=(80, 2))
    _write_group(tmp_path / "d.zarr", {"X": X})
    np.testing.assert_array_equal(open_dataset(path).read(0, 80)[0], X)


def test_string_targets_read_as_unicode(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(6, 2)), "y": np.array(["a", "bb", "a", "c", "bb", "a"])})
    ds = open_dataset(path)
    assert ds.y_dtype == "string"
    _, y = ds.read(1, 5)
    assert y.dtype.kind == "U"
    assert y.tolist() == ["bb", "a", "c", "bb"]


def test_validation_split(tmp_path, rng):
    X, Xv = rng.normal(size=(40, 3)), rng.normal(size=(10, 3))
    path = _write_group(tmp_path / "d.zarr", {"X": X, "y": np.arange(40.0), "X_val": Xv, "y_val": np.arange(10.0)})
    val = open_dataset(path).validation()
    assert isinstance(val, ZarrDataset)
    assert (val.x_name, val.y_name, val.n_rows, val.path) == ("X_val", "y_val", 10, path)
    np.testing.assert_array_equal(val.read(0, 10)[0], Xv)


# -- one DataError per problem --------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope.zarr")


def test_not_a_group(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a Zarr group"):
        open_dataset(tmp_path / "plain")


def test_missing_array_lists_present(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"features": rng.normal(size=(5, 2))})
    with pytest.raises(DataError, match=r"no array 'X'.*\['features'\]"):
        open_dataset(path)


def test_require_y(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(5, 2))})
    assert not open_dataset(path).has_y
    with pytest.raises(DataError, match="no array 'y'"):
        open_dataset(path, require_y=True)


def test_x_not_2d(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(5,))})
    with pytest.raises(DataError, match="must be 2-D"):
        open_dataset(path)


def test_x_not_float(tmp_path):
    path = _write_group(tmp_path / "d.zarr", {"X": np.ones((5, 2), dtype=np.int64)})
    with pytest.raises(DataError, match="bigrfm convert"):
        open_dataset(path)


def test_x_chunked_along_columns(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(10, 4))}, chunks={"X": (5, 2)})
    with pytest.raises(DataError, match="rows only"):
        open_dataset(path)


def test_y_length_mismatch(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(10, 2)), "y": np.zeros(9)})
    with pytest.raises(DataError, match="9 rows but 'X' has 10"):
        open_dataset(path)


def test_y_three_dims(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(10, 2)), "y": np.zeros((10, 2, 2))})
    with pytest.raises(DataError, match="3 dimensions"):
        open_dataset(path)


def test_validation_width_mismatch(tmp_path, rng):
    path = _write_group(
        tmp_path / "d.zarr",
        {"X": rng.normal(size=(10, 2)), "y": np.zeros(10), "X_val": rng.normal(size=(4, 3)), "y_val": np.zeros(4)},
    )
    with pytest.raises(DataError, match="'X_val'.*3 columns"):
        open_dataset(path)


def test_validation_targets_missing(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(10, 2)), "y": np.zeros(10), "X_val": rng.normal(size=(4, 2))})
    with pytest.raises(DataError, match="no 'y_val'"):
        open_dataset(path)


def test_bad_feature_names(tmp_path, rng):
    path = _write_group(tmp_path / "d.zarr", {"X": rng.normal(size=(10, 2))}, attrs={"feature_names": ["a"]})
    with pytest.raises(DataError, match="feature_names"):
        open_dataset(path)
