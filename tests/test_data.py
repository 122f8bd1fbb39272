"""The on-disk dataset: opening, validating and reading Zarr groups; streaming statistics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr

from bigrfm.io import convert as convert_mod
from bigrfm.io import datasets as data, stats
from bigrfm.io.zarr_store import SlowChunkingWarning, ZarrDataset, chunking_warning, open_dataset
from bigrfm.exceptions import DataError, InputError
from closeness import assert_close


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


def test_x_not_numeric(tmp_path):
    path = _write_group(tmp_path / "d.zarr", {"X": np.array([["a", "b"], ["c", "d"]])})
    with pytest.raises(DataError, match="numbers or booleans"):
        open_dataset(path)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float16", "bool"])
def test_compact_dtypes_are_read_as_stored(tmp_path, rng, dtype):
    X = rng.integers(0, 2 if dtype == "bool" else 100, size=(50, 3)).astype(dtype)
    ds = open_dataset(_write_group(tmp_path / "d.zarr", {"X": X}))
    assert ds.dtype == dtype
    Xb, _ = ds.read(10, 20)
    assert Xb.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(Xb, X[10:20])


def test_x_chunked_along_columns_reads_row_blocks_and_warns_when_slow(tmp_path, rng):
    X = rng.normal(size=(10, 4))
    # 5 x 2 chunks of 80 bytes: every block of rows gathers many tiny chunks
    path = _write_group(tmp_path / "d.zarr", {"X": X}, chunks={"X": (5, 2)})
    with pytest.warns(SlowChunkingWarning, match=r"chunked along columns.*`bigrfm convert .*d.zarr OUT.zarr`"):
        ds = open_dataset(path)
    np.testing.assert_array_equal(ds.read(3, 9)[0], X[3:9])


def test_chunking_warning_only_when_reads_are_slow():
    # 4 MiB chunks of 25 of 100 columns read about as fast as row chunks (measured): no warning
    assert chunking_warning("X", "p", (200_000, 100), (40_960, 25), 4) is None
    assert chunking_warning("X", "p", (200_000, 100), (8_192, 100), 4) is None  # row chunks
    tiny = chunking_warning("X", "p", (200_000, 100), (1_024, 10), 4)
    assert "reads 10 chunks of 40 KiB" in tiny and "bigrfm convert p OUT.zarr" in tiny
    tall = chunking_warning("X", "p", (200_000, 100), (200_000, 10), 4)
    assert "spans 200000 rows" in tall


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


# -- readers written by other tools ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_xarray_to_zarr(tmp_path, rng):
    xr = pytest.importorskip("xarray")
    X = rng.normal(size=(120, 4))
    y = rng.normal(size=120)
    path = str(tmp_path / "xr.zarr")
    xr.Dataset({"X": (("row", "feature"), X), "y": (("row",), y)}).to_zarr(path)
    ds = open_dataset(path)
    assert (ds.n_rows, ds.n_features, ds.y_shape) == (120, 4, (120,))
    Xb, yb = ds.read(0, 120)
    np.testing.assert_array_equal(Xb, X)
    np.testing.assert_array_equal(yb, y)


def test_dask_to_zarr_with_aligned_chunks(tmp_path, rng):
    # dask issue 12583: to_zarr with zarr chunks != dask chunks writes wrong data; keep the
    # two equal and check the round trip
    da = pytest.importorskip("dask.array")
    X = rng.normal(size=(1000, 6)).astype(np.float32)
    y = rng.integers(0, 2, size=1000)
    path = str(tmp_path / "dask.zarr")
    zarr.open_group(path, mode="w")
    # to_zarr without zarr `chunks=`: the arrays it creates take the dask chunks
    da.from_array(X, chunks=(128, 6)).to_zarr(path, component="X")
    da.from_array(y, chunks=(128,)).to_zarr(path, component="y")
    ds = open_dataset(path)
    assert ds.chunk_rows == 128
    Xb, yb = ds.read(0, 1000)
    np.testing.assert_array_equal(Xb, X)  # the round trip that catches the dask bug
    np.testing.assert_array_equal(yb, y)


# -- blocks ------------------------------------------------------------------------------


def test_default_block_rows():
    assert data.default_block_rows(8, 4, target_bytes=3200) == 100
    assert data.default_block_rows(10**9, 8) == 1
    with pytest.raises(InputError):
        data.default_block_rows(0, 4)


class _CountingDataset:
    def __init__(self, ds):
        self.ds, self.reads = ds, []

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def read(self, start, stop):
        self.reads.append((start, stop))
        return self.ds.read(start, stop)


@pytest.mark.parametrize("block_rows", [1, 7, 50, 64, 100, 301, 1000])
def test_iter_blocks_covers_rows_in_order_reading_whole_chunks(tmp_path, rng, block_rows):
    X = rng.normal(size=(301, 3))
    y = np.arange(301)
    path = _write_group(tmp_path / "d.zarr", {"X": X, "y": y})  # 64-row chunks
    ds = _CountingDataset(open_dataset(path))
    blocks = list(data.iter_blocks(ds, block_rows))
    assert [(a, b) for a, b, _, _ in blocks] == data.row_blocks(301, block_rows)
    np.testing.assert_array_equal(np.concatenate([b[2] for b in blocks]), X)
    np.testing.assert_array_equal(np.concatenate([b[3] for b in blocks]), y)
    assert all(lo % 64 == 0 and (hi % 64 == 0 or hi == 301) for lo, hi in ds.reads)
    assert sum(hi - lo for lo, hi in ds.reads) == 301  # each row read once


def test_iter_blocks_array_dataset_without_targets():
    X = np.arange(20.0).reshape(10, 2)
    blocks = list(data.iter_blocks(data.ArrayDataset(X), 4))
    assert [(a, b) for a, b, _, _ in blocks] == [(0, 4), (4, 8), (8, 10)]
    assert all(b[3] is None for b in blocks)


# -- streaming statistics ---------------------------------------------------------------


def _moments_in_blocks(X, block_rows):
    out = stats.Moments.of_block(X[:0])
    for lo, hi in data.row_blocks(X.shape[0], block_rows):
        out = stats.combine(out, stats.Moments.of_block(X[lo:hi]))
    return out


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("block_rows", [1, 7, 100, 999, 1000])
def test_moments_over_blocks_equal_numpy(rng, offset, block_rows):
    X = offset + rng.normal(size=(999, 4)) * np.array([1.0, 2.0, 0.5, 3.0])
    m = _moments_in_blocks(X, block_rows)
    assert m.count == 999
    assert_close(m.mean, X.mean(axis=0), 1e-12, scale=np.abs(X).max())  # a mean near 0 has no relative precision
    np.testing.assert_allclose(m.std, X.std(axis=0), rtol=1e-12)  # Chan's update keeps the spread to ~1e-15


def test_naive_formula_fails_where_moments_do_not(rng):
    # the reason for Chan's update: E[x^2] - E[x]^2 loses the spread of 1e6 +- 1 data
    X = (1e6 + rng.normal(size=(1000, 1))).astype(np.float32)
    with np.errstate(invalid="ignore"):  # the naive variance may even come out negative
        naive = np.sqrt(np.mean(X * X, axis=0) - np.mean(X, axis=0) ** 2)
    good = _moments_in_blocks(X, 7).std
    exact = X.astype(np.float64).std(axis=0)
    assert abs(naive[0] - exact[0]) > 0.1 * exact[0] or not np.isfinite(naive[0])
    np.testing.assert_allclose(good, exact, rtol=1e-12)


def test_constant_columns_get_unit_std(rng):
    X = np.column_stack([np.full(500, 0.1), np.zeros(500), rng.normal(size=500)])
    m = _moments_in_blocks(X, 7)
    assert m.std[0] == 1.0 and m.std[1] == 1.0
    np.testing.assert_allclose(m.std[2], X[:, 2].std(), rtol=1e-12)
    # standardizing never divides by zero
    assert np.isfinite((X - m.mean) / m.std).all()


def test_block_stats_regression_and_classification(rng):
    X = rng.normal(size=(200, 3))
    y_reg = rng.normal(size=(200, 2)) + 5
    y_cls = rng.choice(np.array(["cat", "dog", "emu"]), size=200)
    for y, classification in ((y_reg, False), (y_cls, True)):
        parts = [stats.block_stats(X[lo:hi], y[lo:hi], classification=classification) for lo, hi in data.row_blocks(200, 33)]
        parts.insert(2, stats.block_stats(X[:0], y[:0], classification=classification))  # an empty block
        total = parts[0]
        for p in parts[1:]:
            total = stats.combine_stats(total, p)
        assert_close(total.x.mean, X.mean(axis=0), 1e-12, scale=np.abs(X).max())
        if classification:
            labels, counts = np.unique(y, return_counts=True)
            np.testing.assert_array_equal(total.y.labels, labels)
            np.testing.assert_array_equal(total.y.counts, counts)
        else:
            assert_close(total.y.mean, y.mean(axis=0), 1e-12, scale=np.abs(y).max())
            np.testing.assert_allclose(total.y.std, y.std(axis=0), rtol=1e-12)
    assert stats.block_stats(X, None, classification=True).y is None


def test_class_counts_merge_disjoint_and_overlapping():
    a = stats.ClassCounts.of_block(np.array([3, 1, 3]))
    b = stats.ClassCounts.of_block(np.array([2, 3]))
    c = a + b
    assert c.labels.tolist() == [1, 2, 3] and c.counts.tolist() == [1, 1, 3] and c.count == 5


def test_check_finite_names_global_row():
    X = np.ones((10, 3))
    X[4, 1] = np.nan
    X[7, 0] = np.inf
    with pytest.raises(DataError, match=r"'X' of data.zarr contains NaN or inf in row 1004 and 1 more.*--drop-nonfinite"):
        stats.check_finite(X, None, 1000, source="data.zarr")
    y = np.zeros(10)
    y[9] = np.nan
    with pytest.raises(DataError, match="'y' contains NaN or inf in row 9 "):
        stats.check_finite(np.ones((10, 3)), y, 0)


def test_check_finite_accepts_large_finite_values_and_labels():
    X = np.full((4, 3), np.finfo(np.float32).max, dtype=np.float32)  # row sums overflow
    stats.check_finite(X, np.array(["a", "b", "c", "d"]), 0)


# -- writing --------------------------------------------------------------------------------


def test_create_dataset_round_trip_with_validation_and_string_targets(tmp_path, rng):
    X = rng.normal(size=(1000, 5))
    y = rng.choice(np.array(["no", "yes"]), size=1000)
    out = tmp_path / "w.zarr"
    with convert_mod.create_dataset(out, 5, dtype="float64", chunk_rows=128, feature_names=list("abcde")) as w:
        for lo, hi in data.row_blocks(900, 77):
            w.append(X[lo:hi], y[lo:hi])
        w.append(X[900:], y[900:], validation=True)
    ds = open_dataset(out)
    assert (ds.n_rows, ds.chunk_rows, ds.feature_names, ds.y_dtype) == (900, 128, tuple("abcde"), "string")
    Xr, yr = ds.read(0, 900)
    np.testing.assert_array_equal(Xr, X[:900])
    np.testing.assert_array_equal(yr, y[:900])
    val = ds.validation()
    np.testing.assert_array_equal(val.read(0, 100)[0], X[900:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.zarr"]


@pytest.mark.parametrize("compressor", ["lz4", "zstd"])
def test_create_dataset_compressors(tmp_path, rng, compressor):
    X = rng.normal(size=(300, 4)).astype(np.float32)
    w = convert_mod.create_dataset(tmp_path / "c.zarr", 4, compressor=compressor, chunk_rows=64)
    w.append(X)
    ds = w.close()
    np.testing.assert_array_equal(ds.read(0, 300)[0], X)
    assert not ds.has_y


def test_default_chunk_is_about_8_mib():
    rows = convert_mod.default_chunk_rows(28, 4)
    assert rows % 1024 == 0 and 6 * 2**20 < rows * 28 * 4 <= 8 * 2**20


def test_writer_error_leaves_nothing(tmp_path, rng):
    out = tmp_path / "w.zarr"
    with pytest.raises(RuntimeError):
        with convert_mod.create_dataset(out, 3) as w:
            w.append(rng.normal(size=(10, 3)), np.zeros(10))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    w = convert_mod.create_dataset(out, 3)
    with pytest.raises(InputError, match="shape"):
        w.append(rng.normal(size=(10, 4)))
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_lossy_target_change(tmp_path):
    w = convert_mod.create_dataset(tmp_path / "w.zarr", 1)
    w.append(np.zeros((2, 1)), np.array([1, 2]))
    w.append(np.zeros((2, 1)), np.array([3.0, 4.0]))  # integral floats are fine
    with pytest.raises(DataError, match="one kind of value"):
        w.append(np.zeros((2, 1)), np.array([0.5, 1.0]))
    assert list(tmp_path.iterdir()) == []


def test_writer_with_no_rows_is_an_error(tmp_path):
    with pytest.raises(DataError, match="No rows"):
        convert_mod.create_dataset(tmp_path / "w.zarr", 2).close()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path, rng):
    out = tmp_path / "w.zarr"
    w = convert_mod.create_dataset(out, 2)
    w.append(np.ones((3, 2)))
    w.close()
    with pytest.raises(InputError, match="already exists.*--overwrite"):
        convert_mod.create_dataset(out, 2)
    w = convert_mod.create_dataset(out, 2, overwrite=True)
    w.append(np.zeros((5, 2)))
    assert w.close().n_rows == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.zarr"]


def test_overwrite_never_replaces_a_non_zarr_folder(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="not a Zarr store"):
        convert_mod.create_dataset(precious, 2, overwrite=True)
    assert (precious / "thesis.tex").exists()


def test_small_dataset_gets_a_chunk_of_its_own_size(tmp_path, rng):
    # a stored chunk takes its full size on disk: 10 rows must not cost 8 MiB
    w = convert_mod.create_dataset(tmp_path / "s.zarr", 3)
    w.append(rng.normal(size=(10, 3)), np.arange(10))
    ds = w.close()
    assert ds.chunk_rows == 10
    assert convert_mod.describe(ds)["bytes_on_disk"] < 10_000
