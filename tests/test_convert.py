"""`bigrfm convert` and `bigrfm info`: files to Zarr datasets and back, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner

from bigrfm.io.convert import convert
from bigrfm.io.zarr_store import open_dataset
from bigrfm.exceptions import DataError, InputError
from bigrfm_cli.main import cli


@pytest.fixture
def frame():
    rng = np.random.default_rng(1)
    n = 500
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(-5, 5, size=n),
            "c": rng.normal(size=n) * 1e-3 + 100,
            "label": rng.choice(["cat", "dog", "emu"], size=n),
            "value": rng.normal(size=n),
        }
    )


def _read_all(ds):
    return ds.read(0, ds.n_rows)


def _only(tmp_path, *names):
    """The folder holds exactly these entries: no partial output, no temporary folder."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_round_trip(tmp_path, frame, suffix):
    src = tmp_path / f"d{suffix}"
    frame.to_csv(src, index=False)  # pandas compresses by the .gz suffix
    ds = convert(src, tmp_path / "d.zarr", target="value", features="a,b,c", dtype="float64", read_rows=37, chunk_rows=64)
    X, y = _read_all(ds)
    back = pd.read_csv(src)
    np.testing.assert_array_equal(X, back[["a", "b", "c"]].to_numpy(np.float64))
    np.testing.assert_array_equal(y, back["value"].to_numpy())
    assert ds.feature_names == ("a", "b", "c") and ds.chunk_rows == 64 and ds.dtype == "float64"


def test_parquet_round_trip_with_text_target(tmp_path, frame):
    src = tmp_path / "d.parquet"
    frame.to_parquet(src, row_group_size=90)
    ds = convert(src, tmp_path / "d.zarr", target="label", features=["a", "b", "c", "value"], dtype="float64", read_rows=50)
    X, y = _read_all(ds)
    np.testing.assert_array_equal(X, frame[["a", "b", "c", "value"]].to_numpy(np.float64))
    assert ds.y_dtype == "string" and y.dtype.kind == "U"
    np.testing.assert_array_equal(y, frame["label"].to_numpy(str))


def test_integer_target_stays_integer(tmp_path, frame):
    src = tmp_path / "d.parquet"
    frame.to_parquet(src)
    ds = convert(src, tmp_path / "d.zarr", target="b", features="a")
    assert ds.y_dtype == "int64"
    np.testing.assert_array_equal(_read_all(ds)[1], frame["b"].to_numpy())


def test_npy_round_trip_target_column(tmp_path):
    A = np.random.default_rng(2).normal(size=(300, 4))
    np.save(tmp_path / "a.npy", A)
    ds = convert(tmp_path / "a.npy", tmp_path / "a.zarr", target=-1, dtype="float64", read_rows=64)
    X, y = _read_all(ds)
    np.testing.assert_array_equal(X, A[:, :3])
    np.testing.assert_array_equal(y, A[:, 3])
    ds2 = convert(tmp_path / "a.npy", tmp_path / "b.zarr", features=["2", "0"], dtype="float64")
    np.testing.assert_array_equal(_read_all(ds2)[0], A[:, [2, 0]])
    assert not ds2.has_y


@pytest.mark.parametrize("fortran", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_streams_x_and_y(tmp_path, fortran, compressed):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(250, 3))
    X = np.asfortranarray(X) if fortran else X
    y = rng.integers(0, 4, size=250)
    (np.savez_compressed if compressed else np.savez)(tmp_path / "a.npz", X=X, y=y)
    ds = convert(tmp_path / "a.npz", tmp_path / "a.zarr", dtype="float64", read_rows=40)
    Xr, yr = _read_all(ds)
    np.testing.assert_array_equal(Xr, X)
    np.testing.assert_array_equal(yr, y)


def test_float32_default_and_compressors(tmp_path, frame):
    src = tmp_path / "d.csv"
    frame.to_csv(src, index=False)
    for comp in ("none", "lz4", "zstd"):
        ds = convert(src, tmp_path / f"{comp}.zarr", target="value", features="a,b", compressor=comp)
        assert ds.dtype == "float32"
        np.testing.assert_array_equal(_read_all(ds)[0], frame[["a", "b"]].to_numpy(np.float32))


def test_val_fraction_splits_rows(tmp_path, frame):
    src = tmp_path / "d.csv"
    frame.to_csv(src, index=False)
    ds = convert(src, tmp_path / "d.zarr", target="value", features="a,b,c", dtype="float64", val_fraction=0.3, read_rows=64)
    val = ds.validation()
    assert val is not None and ds.n_rows + val.n_rows == len(frame)
    assert 100 < val.n_rows < 200
    X, y = _read_all(ds)
    Xv, yv = _read_all(val)
    union = np.column_stack([np.concatenate([X, Xv]), np.concatenate([y, yv])])
    source = frame[["a", "b", "c", "value"]].to_numpy(np.float64)
    np.testing.assert_array_equal(np.unique(union, axis=0), np.unique(source, axis=0))


@pytest.mark.parametrize("buckets", [None, 4])
def test_shuffle_is_a_reproducible_permutation(tmp_path, frame, buckets):
    src = tmp_path / "d.parquet"
    frame.to_parquet(src)
    kw = dict(target="label", features="a,b,c,value", dtype="float64", shuffle=True, shuffle_buckets=buckets, read_rows=64, chunk_rows=50)
    X1, y1 = _read_all(convert(src, tmp_path / "s1.zarr", seed=7, **kw))
    X2, y2 = _read_all(convert(src, tmp_path / "s2.zarr", seed=7, **kw))
    X3, _ = _read_all(convert(src, tmp_path / "s3.zarr", seed=8, **kw))
    source = frame[["a", "b", "c", "value"]].to_numpy(np.float64)
    assert not np.array_equal(X1, source)  # the order changed
    order = np.lexsort(X1.T)
    np.testing.assert_array_equal(X1[order], source[np.lexsort(source.T)])  # same rows
    # each row keeps its label
    lookup = {tuple(r): lab for r, lab in zip(source, frame["label"])}
    assert all(lookup[tuple(r)] == lab for r, lab in zip(X1, y1))
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    _only(tmp_path, "d.parquet", "s1.zarr", "s2.zarr", "s3.zarr")


def test_shuffle_with_validation_split(tmp_path, frame):
    src = tmp_path / "d.parquet"
    frame.to_parquet(src)
    ds = convert(src, tmp_path / "s.zarr", target="value", features="a,b", dtype="float64", shuffle=True, shuffle_buckets=3, val_fraction=0.2)
    val = ds.validation()
    X = np.concatenate([_read_all(ds)[0], _read_all(val)[0]])
    source = frame[["a", "b"]].to_numpy(np.float64)
    np.testing.assert_array_equal(X[np.lexsort(X.T)], source[np.lexsort(source.T)])


def test_one_hot_finds_categories_across_blocks(tmp_path):
    df = pd.DataFrame({"x": np.arange(10.0), "color": ["red"] * 8 + ["blue", None], "t": np.arange(10) % 2})
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    ds = convert(src, tmp_path / "d.zarr", target="t", one_hot=True, read_rows=4, dtype="float64")
    assert ds.feature_names == ("x", "color=blue", "color=red")
    X, y = _read_all(ds)
    np.testing.assert_array_equal(X[:, 0], np.arange(10.0))
    np.testing.assert_array_equal(X[:, 1], [0] * 8 + [1, 0])
    np.testing.assert_array_equal(X[:, 2], [1] * 8 + [0, 0])  # a missing value sets no column
    assert zarr.open_group(str(tmp_path / "d.zarr"), mode="r").attrs["one_hot_categories"] == {"color": ["blue", "red"]}


def test_drop_nonfinite(tmp_path):
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, np.inf, 5.0], "t": [1.0, 2.0, np.nan, 4.0, 5.0]})
    df.to_csv(tmp_path / "d.csv", index=False)
    ds = convert(tmp_path / "d.csv", tmp_path / "d.zarr", target="t", drop_nonfinite=True, dtype="float64")
    X, y = _read_all(ds)
    np.testing.assert_array_equal(X[:, 0], [1.0, 5.0])
    np.testing.assert_array_equal(y, [1.0, 5.0])


# -- bad inputs: one clear error and nothing left behind -----------------------------------


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "name, text, kwargs, error, phrase",
    [
        ("r.csv", "a,b,t\n1,2,3\n4,5,6,7\n", {"target": "t"}, DataError, "ragged|Expected 3 fields"),
        ("m.csv", "a,b\n1,2\n", {"target": "t"}, DataError, "no column 't' for --target; columns: 'a', 'b'"),
        ("f.csv", "a,b,t\n1,2,3\n", {"target": "t", "features": "a,z"}, DataError, r"no column\(s\) \['z'\]"),
        ("n.csv", "a,b,t\n1,2,3\n1,,3\n", {"target": "t"}, DataError, "Column 'b' of .* row 1 "),
        ("i.csv", "a,b,t\n1,2,3\n1,2,3\n1,inf,3\n", {"target": "t", "read_rows": 2}, DataError, "Column 'b' .* row 2 "),
        ("y.csv", "a,t\n1,2.5\n1,\n", {"target": "t"}, DataError, "target column 't' .* row 1 "),
        ("s.csv", "a,t\n1,x\n1,\n", {"target": "t"}, DataError, "target column 't' .* empty in row 1 "),
        ("e.csv", "", {}, DataError, "is empty"),
        ("h.csv", "a,b,t\n", {"target": "t"}, DataError, "no data rows"),
        ("c.csv", "a,b,t\n1,x,3\n", {"target": "t"}, DataError, r"\['b'\] .* not numeric.*--one-hot"),
        ("l.csv", "a,t\n1,1\n2,x\n", {"target": "t", "read_rows": 1}, DataError, "numbers .* into text"),
        ("late.csv", "a,t\n1,1\nz,2\n", {"target": "t", "read_rows": 1}, DataError, "non-numeric value 'z' in row 1"),
        ("d.txt", "a\n1\n", {}, InputError, "Cannot tell the format"),
    ],
)
def test_bad_inputs(tmp_path, name, text, kwargs, error, phrase):
    src = _write(tmp_path, name, text)
    with pytest.raises(error, match=phrase):
        convert(src, tmp_path / "out.zarr", **kwargs)
    _only(tmp_path, name)


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        convert(tmp_path / "nope.csv", tmp_path / "out.zarr")
    _only(tmp_path)


def test_bad_npy_inputs(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros(5))
    with pytest.raises(DataError, match="2-D"):
        convert(tmp_path / "v.npy", tmp_path / "o.zarr")
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(DataError, match="features must be numbers"):
        convert(tmp_path / "s.npy", tmp_path / "o.zarr")
    np.save(tmp_path / "n.npy", np.array([[1.0, 2.0], [np.nan, 1.0]]))
    with pytest.raises(DataError, match="'column 0' .* row 1 "):
        convert(tmp_path / "n.npy", tmp_path / "o.zarr", target=1)
    with pytest.raises(DataError, match="'column 0' .* row 1 "):  # source column numbers
        convert(tmp_path / "n.npy", tmp_path / "o.zarr", features=["1", "0"])
    with pytest.raises(InputError, match="column index"):
        convert(tmp_path / "n.npy", tmp_path / "o.zarr", target="label")
    np.savez(tmp_path / "z.npz", X=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(InputError, match="has an array 'y'"):
        convert(tmp_path / "z.npz", tmp_path / "o.zarr", target=0)
    np.savez(tmp_path / "w.npz", features=np.zeros((3, 2)))
    with pytest.raises(DataError, match="no array 'X'"):
        convert(tmp_path / "w.npz", tmp_path / "o.zarr")
    _only(tmp_path, "v.npy", "s.npy", "n.npy", "z.npz", "w.npz")


def test_existing_output_needs_overwrite(tmp_path, frame):
    src = tmp_path / "d.csv"
    frame.to_csv(src, index=False)
    convert(src, tmp_path / "d.zarr", target="value", features="a")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        convert(src, tmp_path / "d.zarr", target="value", features="a,b")
    assert open_dataset(tmp_path / "d.zarr").n_features == 1
    assert convert(src, tmp_path / "d.zarr", target="value", features="a,b", overwrite=True).n_features == 2
    _only(tmp_path, "d.csv", "d.zarr")


# -- the command line ------------------------------------------------------------------------


def test_cli_convert_and_info(tmp_path, frame):
    src = tmp_path / "d.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "d.zarr"
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", str(src), str(out), "--target", "label", "--features", "a,b,c", "--val-fraction", "0.2", "--dtype", "float64"])
    assert res.exit_code == 0, res.output
    assert "Wrote" in res.stdout and "validation rows" in res.stdout

    res = runner.invoke(cli, ["info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    val = info["validation"]
    assert info["rows"] + val["rows"] == 500
    assert (info["features"], info["dtype"], info["feature_names"]) == (3, "float64", ["a", "b", "c"])
    assert info["bytes_on_disk"] > info["rows"] * 3 * 8 * 0.9
    assert info["bytes_in_memory"] == info["rows"] * 3 * 8
    assert info["target"]["classes"] == ["cat", "dog", "emu"]
    assert sum(info["target"]["counts"]) + sum(val["target"]["counts"]) == 500

    res = runner.invoke(cli, ["info", str(out)])
    assert res.exit_code == 0, res.output
    assert "rows" in res.stdout and "cat:" in res.stdout and "validation" in res.stdout


def test_cli_info_regression_target(tmp_path, frame):
    src = tmp_path / "d.parquet"
    frame.to_parquet(src)
    ds = convert(src, tmp_path / "d.zarr", target="value", features="a")
    res = CliRunner().invoke(cli, ["info", ds.path, "--json"])
    target = json.loads(res.stdout)["target"]
    assert target["mean"] == pytest.approx(frame["value"].mean()) and target["std"] == pytest.approx(frame["value"].std(ddof=0))


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    src = _write(tmp_path, "c.csv", "a,b,t\n1,x,3\n")
    res = CliRunner().invoke(cli, ["convert", str(src), str(tmp_path / "o.zarr"), "--target", "t"])
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: ") and "--one-hot" in res.stderr and "Traceback" not in res.stderr
    _only(tmp_path, "c.csv")
    res = CliRunner().invoke(cli, ["info", str(tmp_path / "nope.zarr")])
    assert res.exit_code == 2 and "does not exist" in res.stderr
    res = CliRunner().invoke(cli, ["--debug", "convert", str(src), str(tmp_path / "o.zarr"), "--target", "t"])
    assert isinstance(res.exception, DataError)  # --debug lets the traceback through
