"""The command line end to end: fit, predict, evaluate, exit codes, resume after a crash."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from bigrfm import load_model
from bigrfm.io.convert import create_dataset
from bigrfm_cli.main import cli
from closeness import assert_close

BIGRFM = [sys.executable, "-m", "bigrfm_cli.main"]


def write(path, X, y, Xv=None, yv=None, dtype="float64"):
    with create_dataset(path, X.shape[1], dtype=dtype, feature_names=[f"f{i}" for i in range(X.shape[1])]) as w:
        w.append(X, y)
        if Xv is not None:
            w.append(Xv, yv, validation=True)
    return str(path)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 5))
    y = X[:, 0] * X[:, 1] + 0.1 * rng.normal(size=700)
    d = tmp_path_factory.mktemp("reg")
    return write(d / "train.zarr", X[:500], y[:500], X[500:600], y[500:600]), write(d / "test.zarr", X[600:], y[600:]), X, y


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3))
    y = np.where(X[:, 0] + X[:, 1] > 0, "up", "down")
    d = tmp_path_factory.mktemp("cls")
    return write(d / "train.zarr", X[:300], y[:300]), write(d / "test.zarr", X[300:], y[300:]), X, y


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def test_fit_predict_evaluate_regression(tmp_path, regression):
    train, test, X, y = regression
    r = run("fit", train, "--out", tmp_path / "m", "--iters", 2, "--scheduler", "threads", "--block-rows", 128, "--dtype", "float64")
    assert r.exit_code == 0, r.output
    assert "chose iteration" in r.output and "val rmse" in r.output
    assert "bandwidth" in r.output and "x median distance" in r.output  # bandwidth="auto" by default
    model = load_model(tmp_path / "m")
    assert model.get_params()["bandwidth"] == "auto" and model.bandwidth_ == model.history_[model.best_iter_]["bandwidth"]
    assert list(model.feature_names_in_) == [f"f{i}" for i in range(5)]
    assert len(model.history_) == 3 and model.model_metadata_["provenance"]["rows"] == 500
    r = run("predict", tmp_path / "m", test, "--out", tmp_path / "p.zarr", "--scheduler", "threads", "--block-rows", 33)
    assert r.exit_code == 0, r.output
    pred = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["y_pred"][:]
    assert_close(pred, model.predict(X[600:]), 1e-10)
    r = run("evaluate", tmp_path / "m", test, "--json", "--scheduler", "threads")
    metrics = json.loads(r.output.strip().splitlines()[-1])
    rmse = float(np.sqrt(np.mean((model.predict(X[600:]) - y[600:]) ** 2)))
    assert metrics["rows"] == 100 and metrics["rmse"] == pytest.approx(rmse, rel=1e-9)
    assert metrics["r2"] > 0.5


def test_fit_with_fixed_values_and_no_patience(tmp_path, regression):
    train = regression[0]
    r = run("fit", train, "--out", tmp_path / "m", "--iters", 2, "--bandwidth", 10, "--reg", "1e-3", "--patience", 0,
            "--scheduler", "threads", "--dtype", "float64")
    assert r.exit_code == 0, r.output
    model = load_model(tmp_path / "m")
    assert [(h["bandwidth"], h["reg"], h["stop"]) for h in model.history_] == [(10.0, 1e-3, None), (10.0, 1e-3, None),
                                                                              (10.0, 1e-3, "iters")]
    assert model.get_params()["patience"] is None and "x median distance" not in r.output
    r = CliRunner().invoke(cli, ["fit", train, "--out", str(tmp_path / "x"), "--bandwidth", "-1"])
    assert r.exit_code == 2 and "must be 'auto' or a number > 0" in r.output


def test_fit_on_local_cluster_classification_with_proba(tmp_path, classification):
    train, test, X, y = classification
    r = run("fit", train, "--out", tmp_path / "c", "--iters", 1, "--workers", 2, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["task"] == "classification" and summary["solver"] == "exact"
    r = run("predict", tmp_path / "c", test, "--out", tmp_path / "p.zarr", "--proba", "--scheduler", "threads")
    assert r.exit_code == 0, r.output
    g = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    labels = np.array(g["y_pred"][:].tolist(), dtype=str)
    proba = g["proba"][:]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.mean(labels == y[300:]) > 0.9
    r = run("evaluate", tmp_path / "c", test, "--scheduler", "threads")
    assert "accuracy" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "missing.zarr", "--out", "m"], "Error:"),
        (["evaluate", ".", "missing.zarr"], "Error:"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    r = subprocess.run(BIGRFM + args, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_existing_model_folder_is_not_overwritten(tmp_path, regression):
    train = regression[0]
    (tmp_path / "m").mkdir()
    r = subprocess.run(BIGRFM + ["fit", train, "--out", str(tmp_path / "m"), "--scheduler", "threads"], capture_output=True, text=True)
    assert r.returncode == 2 and "already exists; pass --overwrite" in r.stderr


def test_resume_after_kill_reaches_the_same_model(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4000, 6))
    y = X[:, 0] * X[:, 1] + 0.1 * rng.normal(size=4000)
    data = write(tmp_path / "d.zarr", X, y)
    args = ["fit", data, "--iters", "3", "--solver", "nystrom", "--centers", "300", "--scheduler", "threads",
            "--block-rows", "500", "--dtype", "float64", "--seed", "7"]
    ref = subprocess.run(BIGRFM + args + ["--out", str(tmp_path / "ref")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "m"
    ckpt = Path(f"{out}.checkpoint") / "checkpoint.json"
    proc = subprocess.Popen(BIGRFM + args + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and json.loads(ckpt.read_text())["t"] >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the fit finished before it could be killed"
    assert json.loads(ckpt.read_text())["t"] < 4

    r = subprocess.run(BIGRFM + args + ["--out", str(out), "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = load_model(tmp_path / "ref"), load_model(out)
    assert a.best_iter_ == b.best_iter_
    assert_close(b.M_, a.M_, 1e-10)
    assert_close(b.predict(X[:100]), a.predict(X[:100]), 1e-9)
    assert not Path(f"{out}.checkpoint").exists()


def test_patches_command_train_then_test_with_the_same_transformer(tmp_path):
    from sklearn.datasets import load_digits

    from bigrfm import PatchFeatures
    from bigrfm.io.zarr_store import open_dataset

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    train, test = write(tmp_path / "tr.zarr", X[:1400], y[:1400]), write(tmp_path / "te.zarr", X[1400:], y[1400:])
    r = run("patches", train, tmp_path / "trf.zarr", "--image-shape", "8x8", "--patch-size", 3, "--filters", 8,
            "--pool", 2, "--fit-images", 500)
    assert r.exit_code == 0, r.output
    assert "1,400 rows x 32 features (float32)" in r.output and "fitted on 500 sampled images" in r.output
    r = run("patches", test, tmp_path / "tef.zarr", "--features", tmp_path / "trf.zarr")
    assert r.exit_code == 0, r.output
    assert "transformer from" in r.output
    pf = PatchFeatures.load(tmp_path / "trf.zarr")
    F, _ = open_dataset(str(tmp_path / "tef.zarr")).read(0, 397)
    np.testing.assert_allclose(F, pf.transform(X[1400:]), rtol=1e-5, atol=1e-5)
    r = run("fit", tmp_path / "trf.zarr", "--out", tmp_path / "m", "--iters", 1, "--bandwidth", 20)
    assert r.exit_code == 0, r.output
    r = run("evaluate", tmp_path / "m", tmp_path / "tef.zarr", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["accuracy"] > 0.9
    # bad input: one Error line, nothing written
    for args, msg in ((("--image-shape", "8,9"), "needs 72"), ((), "Give --image-shape"),
                      (("--features", train), "holds no PatchFeatures")):
        r = run("patches", test, tmp_path / "bad.zarr", *args)
        assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "bad.zarr").exists()
