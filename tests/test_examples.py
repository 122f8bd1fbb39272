"""The examples run end to end (as a newcomer would run them) and print what they promise."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(args, cwd, env=None, timeout=300):
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # the `bigrfm` script lives next to this interpreter
    full_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), full_env.get("PATH", "")])
    res = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"exit {res.returncode}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
    return res.stdout


def test_01_sklearn_pipeline_quick(tmp_path):
    out = run([sys.executable, str(EXAMPLES / "01_sklearn_pipeline.py"), "--quick"], tmp_path)
    assert "best params: {'rfm__bandwidth'" in out
    accuracy = float(out.split("test accuracy:")[1].split()[0])
    assert accuracy > 0.9


@pytest.mark.slow
def test_01_sklearn_pipeline_full(tmp_path):
    out = run([sys.executable, str(EXAMPLES / "01_sklearn_pipeline.py")], tmp_path)
    assert "grid search: 19 fits" in out and "test accuracy:" in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_02_out_of_core_cli(tmp_path):
    pytest.importorskip("pandas")  # bigrfm convert reads CSV with pandas
    work = tmp_path / "work"
    out = run(["bash", str(EXAMPLES / "02_out_of_core_cli.sh")], tmp_path, env={"BIGRFM_WORKDIR": str(work), "PYTHON": sys.executable})
    assert "Wrote data.zarr: 392 rows, 10 features (float64), 50 validation rows" in out
    assert "wrote predictions for 392 rows to pred.zarr" in out
    assert "Features ranked by diag(M)" in out
    assert out.count("rmse:") == 2 and "r2:" in out
    assert (work / "model" / "model.json").is_file() and (work / "pred.zarr").is_dir()


@pytest.mark.slow
def test_03_dask_cluster_quick(tmp_path):
    out = run([sys.executable, str(EXAMPLES / "03_dask_cluster.py"), "--quick", "--workdir", str(tmp_path)], tmp_path)
    assert "Dask scheduler: tcp://" in out and "<- chosen" in out
    rmse = float(out.split("test RMSE:")[1].split()[0])
    assert rmse < 0.5  # the target's sd is about 1.25; plain kernel ridge gets about 0.6
    top = out.split("most important features:")[1]
    assert {"x0", "x1", "x2"} == {part.split()[0] for part in top.strip().split(", ")}


def test_04_what_the_rfm_learned(tmp_path):
    pytest.importorskip("pandas")  # the example passes a DataFrame
    png = tmp_path / "M.png"
    out = run([sys.executable, str(EXAMPLES / "04_what_the_rfm_learned.py"), "--out", str(png)], tmp_path)
    assert "Top 10 features by diag(M)" in out and "worst" in out
    if _has_matplotlib():
        assert f"wrote the heatmap of M to {png}" in out
        assert png.read_bytes()[:4] == b"\x89PNG"
    else:
        assert "skipped the heatmap: matplotlib is needed" in out


def test_04_without_matplotlib_skips_the_plot(tmp_path):
    pytest.importorskip("pandas")
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    pythonpath = os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])
    out = run([sys.executable, str(EXAMPLES / "04_what_the_rfm_learned.py"), "--out", str(tmp_path / "M.png")], tmp_path, env={"PYTHONPATH": pythonpath})
    assert "skipped the heatmap: matplotlib is needed for --plot: pip install 'bigrfm[plot]'" in out
    assert not (tmp_path / "M.png").exists()


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_05_images_patch_features(tmp_path):
    out = run([sys.executable, str(EXAMPLES / "05_images_patch_features.py")], tmp_path)
    acc = {name: float(line.split("test accuracy ")[1].split()[0])
           for line in out.splitlines() if "test accuracy" in line for name in [line.split(" test")[0].strip()]}
    assert set(acc) == {"raw pixels", "patch features"} and min(acc.values()) > 0.95
    assert "lazy features: (540, 128), 6 chunks of rows" in out
    assert "streamed predictions agree with the in-memory pipeline: True" in out
    assert "reloaded transformer gives the same features: True" in out


def test_06_your_data(tmp_path):
    pytest.importorskip("dask.dataframe")
    out = run([sys.executable, str(EXAMPLES / "06_your_data.py")], tmp_path)
    assert "DataFrame: features ['age', 'income', 'visits', 'noise'], income imputed with" in out
    assert "lazy predictions: Array of 6 chunks, nothing computed yet" in out
    rmse, sd = (float(v) for v in out.split("train RMSE ")[1].split(")")[0].replace("(target sd ", "").split())
    assert rmse < 0.5 * sd
    assert "lazy Dask array: fitted on 40,000 rows" in out
    assert float(out.split("uint8 zarr array: ")[1].split("accuracy ")[1].split()[0]) > 0.9
