"""The CLI's bad-input battery: every case exits 2 with exactly one ``Error:`` line on stderr, no
traceback, a message that names the option or the array (and the rows when there are some), and
nothing written.

Cases run in-process through click's runner (the same ``main`` the console script runs), a few
as real processes. Execution is on threads wherever a case reaches a pass: the LocalCluster path
of an error is the fault module's job (tests/test_faults.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from bigrfm import RFMRegressor
from bigrfm.model.checkpoint import save_checkpoint
from bigrfm_cli.main import cli

BIGRFM = [sys.executable, "-m", "bigrfm_cli.main"]
THREADS = ["--scheduler", "threads"]


def _store(path, X, y=None, *, Xv=None, yv=None, chunks=None, **arrays):
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("X", data=X, chunks=chunks or (max(1, X.shape[0] // 4),) + X.shape[1:])
    if y is not None:
        g.create_array("y", data=y, chunks=(max(1, y.shape[0] // 4),) + y.shape[1:])
    for name, a in {"X_val": Xv, "y_val": yv, **arrays}.items():
        if a is not None:
            g.create_array(name, data=a)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every input the cases refer to, by name."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X[:, 0] - X[:, 1]
    labels = np.where(y > 0, "up", "down")
    f = {"dir": str(d)}
    f["good"] = _store(d / "good.zarr", X, y)
    f["cls"] = _store(d / "cls.zarr", X, labels)
    g = zarr.open_group(str(d / "nox.zarr"), mode="w", zarr_format=3)
    g.create_array("y", data=y)
    f["nox"] = str(d / "nox.zarr")
    g = zarr.open_group(str(d / "x1d.zarr"), mode="w", zarr_format=3)
    g.create_array("X", data=X[:, 0])
    g.create_array("y", data=y)
    f["x1d"] = str(d / "x1d.zarr")
    f["xcomplex"] = _store(d / "xcomplex.zarr", X.astype(np.complex128), y)
    f["short_y"] = _store(d / "short_y.zarr", X, y[:150])
    Xn = X.copy()
    Xn[123, 2] = np.nan
    f["nan_x"] = _store(d / "nan_x.zarr", Xn, y)
    yi = y.copy()
    yi[77] = np.inf
    f["inf_y"] = _store(d / "inf_y.zarr", X, yi)
    f["xval_only"] = _store(d / "xval_only.zarr", X, y, Xv=X[:20])
    f["xval_width"] = _store(d / "xval_width.zarr", X, y, Xv=X[:20, :3], yv=y[:20])
    Xv = X[:30].copy()
    Xv[5, 0] = np.nan
    f["nan_xval"] = _store(d / "nan_xval.zarr", X, y, Xv=Xv, yv=y[:30])
    f["one_class"] = _store(d / "one_class.zarr", X, np.full(200, "same"))
    f["no_y"] = _store(d / "no_y.zarr", X)
    f["bad_names"] = _store(d / "bad_names.zarr", X, y)
    zarr.open_group(f["bad_names"], mode="r+").attrs["feature_names"] = ["a", "b"]
    f["wide"] = _store(d / "wide.zarr", np.hstack([X, X]), y)
    (d / "plain.txt").write_text("not a store")
    f["file"] = str(d / "plain.txt")
    (d / "empty_dir").mkdir()
    f["empty_dir"] = str(d / "empty_dir")
    np.save(d / "arr.npy", np.hstack([X, y[:, None]]))
    f["npy"] = str(d / "arr.npy")
    (d / "data.xyz").write_text("1,2\n")
    f["xyz"] = str(d / "data.xyz")
    (d / "t.csv").write_text("a,b\n1,2\n3,4\n")
    f["csv"] = str(d / "t.csv")

    # models: a good one, one from the future, a damaged one, not a model
    reg = RFMRegressor(iters=0, random_state=0).fit(X, y)
    f["model"] = str(reg.save(d / "model"))
    future = reg.save(d / "future")
    meta = json.loads((future / "model.json").read_text())
    meta["format_version"] = 99
    (future / "model.json").write_text(json.dumps(meta))
    f["future"] = str(future)
    damaged = reg.save(d / "damaged")
    meta = json.loads((damaged / "model.json").read_text())
    del meta["kernel"]
    (damaged / "model.json").write_text(json.dumps(meta))
    f["damaged"] = str(damaged)
    f["exists"] = str(reg.save(d / "exists"))

    # a checkpoint of an interrupted fit next to an --out, and one made with other options
    from bigrfm.model.rfm import initial_state
    save_checkpoint(initial_state(4, False), d / "ckpt_out.checkpoint", {"other": "fit"})
    f["ckpt_out"] = str(d / "ckpt_out")
    # a PatchFeatures-free store for `patches --features`
    f["images"] = _store(d / "images.zarr", rng.random((40, 64)), rng.integers(0, 2, 40))
    return f


# (case id, command line with {placeholders}, a substring the Error line must hold)
CASES = [
    # -- fit: the dataset ---------------------------------------------------------------------
    ("fit-missing-store", "fit {dir}/missing.zarr --out {dir}/o", "does not exist"),
    ("fit-file-not-store", "fit {file} --out {dir}/o", "is not a Zarr group"),
    ("fit-empty-dir", "fit {empty_dir} --out {dir}/o", "is not a Zarr group"),
    ("fit-no-X", "fit {nox} --out {dir}/o", "has no array 'X'"),
    ("fit-X-1d", "fit {x1d} --out {dir}/o", "must be 2-D"),
    ("fit-X-complex", "fit {xcomplex} --out {dir}/o", "'X'"),
    ("fit-y-rows", "fit {short_y} --out {dir}/o", "has 150 rows"),
    ("fit-nan-in-X", "fit {nan_x} --out {dir}/o --scheduler threads", "row 123"),
    ("fit-inf-in-y", "fit {inf_y} --out {dir}/o --scheduler threads", "row 77"),
    ("fit-X_val-without-y_val", "fit {xval_only} --out {dir}/o", "'y_val'"),
    ("fit-X_val-width", "fit {xval_width} --out {dir}/o", "'X_val'"),
    ("fit-nan-in-X_val", "fit {nan_xval} --out {dir}/o --scheduler threads", "'X_val'"),
    ("fit-one-class", "fit {one_class} --out {dir}/o --scheduler threads", "single class"),
    ("fit-no-targets", "fit {no_y} --out {dir}/o", "'y'"),
    ("fit-wrong-x-name", "fit {good} --out {dir}/o --x-name features", "'features'"),
    ("fit-wrong-y-name", "fit {good} --out {dir}/o --y-name target", "'target'"),
    ("fit-feature-names", "fit {bad_names} --out {dir}/o", "feature_names"),
    ("fit-regression-on-strings", "fit {cls} --out {dir}/o --task regression --scheduler threads", "--task"),
    # -- fit: hyper-parameters (scikit-learn's validation, reworded with the option) -------------
    ("fit-bandwidth-negative", "fit {good} --out {dir}/o --bandwidth -1", "'--bandwidth': '-1' must be 'auto' or a number > 0"),
    ("fit-bandwidth-zero", "fit {good} --out {dir}/o --bandwidth 0", "'--bandwidth': '0' must be 'auto' or a number > 0"),
    ("fit-reg-negative", "fit {good} --out {dir}/o --reg -1", "'--reg': '-1' must be 'auto' or a number > 0"),
    ("fit-agop-power-zero", "fit {good} --out {dir}/o --agop-power 0", "--agop-power must be"),
    ("fit-exponent-too-large", "fit {good} --out {dir}/o --kernel exp_power --exponent 3", "--exponent must be"),
    ("fit-cg-tol-negative", "fit {good} --out {dir}/o --cg-tol -1", "--cg-tol must be"),
    ("fit-centers-above-rows", "fit {good} --out {dir}/o --solver nystrom --centers 5000 --scheduler threads", "n_centers=5000"),
    ("fit-memory-budget-text", "fit {good} --out {dir}/o --memory-budget lots", "--memory-budget"),
    ("fit-memory-budget-zero", "fit {good} --out {dir}/o --memory-budget 0", "--memory-budget"),
    ("fit-bad-scheduler", "fit {good} --out {dir}/o --scheduler my-cluster", "scheduler"),
    # -- fit: click's own checks ----------------------------------------------------------------
    ("fit-iters-negative", "fit {good} --out {dir}/o --iters -1", "--iters"),
    ("fit-centers-zero", "fit {good} --out {dir}/o --centers 0", "--centers"),
    ("fit-cg-maxiter-zero", "fit {good} --out {dir}/o --cg-maxiter 0", "--cg-maxiter"),
    ("fit-agop-sample-zero", "fit {good} --out {dir}/o --agop-sample 0", "--agop-sample"),
    ("fit-val-fraction-one", "fit {good} --out {dir}/o --val-fraction 1.5", "--val-fraction"),
    ("fit-unknown-solver", "fit {good} --out {dir}/o --solver magic", "--solver"),
    ("fit-unknown-kernel", "fit {good} --out {dir}/o --kernel cosine", "--kernel"),
    ("fit-dtype-float16", "fit {good} --out {dir}/o --dtype float16", "--dtype"),
    ("fit-block-rows-zero", "fit {good} --out {dir}/o --block-rows 0", "--block-rows"),
    ("fit-workers-zero", "fit {good} --out {dir}/o --workers 0", "--workers"),
    ("fit-worker-timeout-zero", "fit {good} --out {dir}/o --worker-timeout 0", "--worker-timeout"),
    ("fit-seed-not-int", "fit {good} --out {dir}/o --seed abc", "--seed"),
    ("fit-unknown-option", "fit {good} --out {dir}/o --bandwith 3", "--bandwith"),
    ("fit-missing-out", "fit {good}", "--out"),
    ("fit-missing-data", "fit --out {dir}/o", "DATA"),
    # -- fit: the output folder and its checkpoint -------------------------------------------------
    ("fit-out-exists", "fit {good} --out {exists}", "--overwrite"),
    ("fit-out-parent-missing", "fit {good} --out {dir}/no/such/o", "does not exist"),
    ("fit-resume-without-checkpoint", "fit {good} --out {dir}/fresh --resume", "no checkpoint"),
    ("fit-resume-other-fit", "fit {good} --out {ckpt_out} --resume", "other data or settings"),
    ("fit-checkpoint-in-the-way", "fit {good} --out {ckpt_out}", "--restart"),
    ("fit-resume-and-restart", "fit {good} --out {ckpt_out} --resume --restart", "--restart"),
    # -- predict -------------------------------------------------------------------------------------
    ("predict-model-missing", "predict {dir}/nomodel {good} --out {dir}/p.zarr", "MODEL_DIR"),
    ("predict-not-a-model", "predict {empty_dir} {good} --out {dir}/p.zarr", "not a bigrfm model"),
    ("predict-future-model", "predict {future} {good} --out {dir}/p.zarr", "version 99"),
    ("predict-damaged-model", "predict {damaged} {good} --out {dir}/p.zarr", "'kernel'"),
    ("predict-feature-count", "predict {model} {wide} --out {dir}/p.zarr --scheduler threads", "8 features"),
    ("predict-proba-regressor", "predict {model} {good} --out {dir}/p.zarr --proba --scheduler threads", "--proba"),
    ("predict-out-exists", "predict {model} {good} --out {exists} --scheduler threads", "--overwrite"),
    ("predict-nan-rows", "predict {model} {nan_x} --out {dir}/p.zarr --scheduler threads", "row 123"),
    # -- evaluate ------------------------------------------------------------------------------------
    ("evaluate-no-targets", "evaluate {model} {no_y}", "'y'"),
    ("evaluate-no-validation-split", "evaluate {model} {good} --split val", "X_val"),
    ("evaluate-bad-split", "evaluate {model} {good} --split test", "--split"),
    # -- convert, info, features, patches -------------------------------------------------------------
    ("convert-missing-source", "convert {dir}/missing.csv {dir}/c.zarr", "missing.csv"),
    ("convert-unknown-format", "convert {xyz} {dir}/c.zarr", "xyz"),
    ("convert-missing-target-column", "convert {csv} {dir}/c.zarr --target price", "price"),
    ("convert-out-exists", "convert {npy} {good} --target 4", "--overwrite"),
    ("info-not-a-store", "info {file}", "is not a Zarr group"),
    ("features-not-a-model", "features {empty_dir}", "not a bigrfm model"),
    ("features-top-zero", "features {model} --top 0", "--top"),
    ("patches-shape-mismatch", "patches {images} {dir}/f.zarr --image-shape 8,9", "needs 72"),
    ("patches-no-shape", "patches {images} {dir}/f.zarr", "--image-shape"),
    ("patches-features-not-a-transformer", "patches {images} {dir}/f.zarr --features {good}", "holds no PatchFeatures"),
    # -- the group -------------------------------------------------------------------------------------
    ("unknown-command", "train {good}", "No such command"),
    ("unknown-global-option", "--quiet fit {good}", "--quiet"),
]


def _args(template: str, files: dict) -> list[str]:
    return template.format(**files).split()


@pytest.mark.parametrize("case, template, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_error_line(files, case, template, needle):
    before = sorted(p.name for p in Path(files["dir"]).iterdir())
    result = CliRunner().invoke(cli, _args(template, files), catch_exceptions=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Internal error" not in result.stderr, result.stderr
    assert needle in errors[0], errors[0]
    after = sorted(p.name for p in Path(files["dir"]).iterdir())
    assert after == before, "a failed command left something behind"


def test_the_battery_is_at_least_40_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", ["fit-bandwidth-negative", "fit-unknown-option", "predict-future-model", "fit-nan-in-X"])
def test_as_a_real_process_too(files, case):
    template = dict((c[0], c[1]) for c in CASES)[case]
    r = subprocess.run(BIGRFM + _args(template, files), capture_output=True, text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr


def test_debug_shows_the_traceback(files):
    r = subprocess.run(BIGRFM + ["--debug"] + _args("fit {good} --out {dir}/o --agop-power 0", files),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr
