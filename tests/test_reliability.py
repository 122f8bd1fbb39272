"""Model and data safety: NaN scores, damaged or future model folders, any random_state saved,
the open-array cache keyed by the store's identity, resumes that redraw nothing, the
checkpoint fingerprint, capped validation rows, and R^2 for targets with a large mean."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import zarr
from sklearn.base import clone
from sklearn.metrics import r2_score

from bigrfm import RFMClassifier, RFMRegressor, load_model
from bigrfm.config import ExecConfig
from bigrfm.engine import Engine
from bigrfm.exceptions import DataError, InputError, ModelFormatError, SolverError
from bigrfm.inference import evaluate_dataset
from bigrfm.io.convert import create_dataset
from bigrfm.io.datasets import ArrayDataset
from bigrfm.io.model_folder import read_checkpoint
from bigrfm.io.zarr_store import open_dataset
from bigrfm.model import validation as validation_mod
from bigrfm.model.checkpoint import load_checkpoint, save_checkpoint
from bigrfm.model.fit import FitSettings, fit_dataset
from bigrfm.model.prepare import Prepare
from bigrfm.model.rfm import FitContext, IterationRecord, RFMParams, initial_state, run, step
from bigrfm.numerics.kernels import make_kernel
from bigrfm.solvers.exact import ExactSolver
from bigrfm_cli.resume import fit_fingerprint


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 4))
    return X, X[:, 0] * X[:, 1] + 0.1 * rng.normal(size=300)


# -- NaN and inf validation scores -------------------------------------------------------------


def _ctx(xy, engine):
    X, y = xy
    prep = Prepare(None, None, "float64", y_mean=np.zeros(1), y_scale=np.ones(1))
    return FitContext(engine=engine, train=ArrayDataset(X[:200], y[:200]), prepare=prep, agop_prepare=prep, n_train=200,
                      centers=X[:200], center_targets=y[:200, None], X_val=X[200:], Y_val=y[200:, None], block_rows=64)


class _NaNSolver(ExactSolver):
    """The exact solver, with NaN coefficients (what a diverged solve gives)."""

    def fit(self, kernel, M, ctx, warm, reg=None):
        pred, info, w = super().fit(kernel, M, ctx, warm, reg=reg)
        return dataclasses.replace(pred, alpha=np.full_like(pred.alpha, np.nan)), info, w


def test_a_finite_score_beats_a_nan_best(xy):
    params = RFMParams(kernel=make_kernel("laplace", 3.0, 1.0), reg=1e-3, iters=1)
    with Engine(ExecConfig(n_workers=1)) as engine:
        ctx = _ctx(xy, engine)
        nan_record = IterationRecord(0, float("nan"), float("nan"), None, 0.0)
        start = dataclasses.replace(initial_state(4, False), t=1, history=(nan_record,), best_iter=0,
                                    best_score=float("nan"), best_M=np.eye(4))
        state = step(start, ctx, params, ExactSolver(1e-3))
    assert state.best_iter == 1 and np.isfinite(state.best_score)
    # and the other way round: a NaN never replaces a finite best
    with Engine(ExecConfig(n_workers=1)) as engine:
        later = step(dataclasses.replace(state, t=1), _ctx(xy, engine), params, _NaNSolver(1e-3))
    assert later.best_iter == 1 and np.isnan(later.history[-1].score)


def test_an_all_nan_history_is_an_error(xy):
    params = RFMParams(kernel=make_kernel("laplace", 3.0, 1.0), reg=1e-3, iters=1)
    with Engine(ExecConfig(n_workers=1)) as engine, pytest.raises(SolverError, match="NaN or infinite.*--reg"):
        run(_ctx(xy, engine), params, _NaNSolver(1e-3))


# -- model folders ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(xy, tmp_path_factory):
    X, y = xy
    folder = tmp_path_factory.mktemp("saved") / "m"
    RFMRegressor(iters=1, random_state=0).fit(X, y).save(folder)
    return folder


OPTIONAL_KEYS = {"checksums", "provenance", "feature_names", "y_ndim"}


@pytest.mark.parametrize("key", ["format", "format_version", "estimator", "params", "kernel", "predictor", "solver",
                                 "best_iter", "history", "n_features_in"])
def test_a_model_json_without_a_key_names_it(saved, tmp_path, key):
    folder = shutil.copytree(saved, tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    assert set(meta) - OPTIONAL_KEYS == {"format", "format_version", "estimator", "params", "kernel", "predictor", "solver",
                                         "best_iter", "history", "n_features_in"}
    del meta[key]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError) as info:
        load_model(folder)
    assert key in str(info.value) or (key == "format" and "not a bigrfm model" in str(info.value))


@pytest.mark.parametrize("array", ["M", "centers", "dual_coef", "x_mean", "x_scale", "y_mean", "y_scale"])
def test_a_missing_array_is_named(saved, tmp_path, array):
    folder = shutil.copytree(saved, tmp_path / "m")
    shutil.rmtree(folder / array)
    with pytest.raises(ModelFormatError, match=array):
        load_model(folder)


@pytest.mark.parametrize("change, match", [
    (lambda m: m.update(format_version=2), "version 2; .*Upgrade bigrfm"),
    (lambda m: m["params"].update(bandwidth=-1), "bandwidth"),
    (lambda m: m["params"].update(unknown_option=1), "unknown_option"),
    (lambda m: m.update(best_iter="first"), "best_iter|first"),
    (lambda m: m.update(kernel={"name": "laplace"}), "damaged"),
])
def test_a_future_or_inconsistent_model_json_is_a_model_format_error(saved, tmp_path, change, match):
    folder = shutil.copytree(saved, tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match=match):
        load_model(folder)


def test_a_damaged_checkpoint_is_a_model_format_error(xy, tmp_path):
    state = initial_state(4, False)
    save_checkpoint(state, tmp_path / "c", {"a": 1})
    meta = json.loads((tmp_path / "c" / "checkpoint.json").read_text())
    del meta["history"]
    (tmp_path / "c" / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="history"):
        load_checkpoint(tmp_path / "c", {"a": 1})


@pytest.mark.parametrize("random_state", [np.random.RandomState(3), None, 11])
def test_save_works_with_any_random_state(xy, tmp_path, random_state):
    X, y = xy
    model = RFMClassifier(iters=1, random_state=random_state).fit(X, X[:, 0] > 0)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    if isinstance(random_state, np.random.RandomState):
        # saved as the seed the fit drew: a clone of the loaded model refits the same model
        assert isinstance(loaded.random_state, int)
        np.testing.assert_allclose(clone(loaded).fit(X, X[:, 0] > 0).decision_function(X), model.decision_function(X))
    else:
        assert loaded.random_state == random_state


# -- the open-array cache and a store rewritten in place ------------------------------------------


def test_a_store_rewritten_with_other_chunks_and_dtype_is_not_read_with_stale_metadata(tmp_path):
    path = str(tmp_path / "d.zarr")
    A = np.arange(400, dtype=np.float64).reshape(100, 4)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.create_array("X", data=A, chunks=(10, 4))
    old = open_dataset(path)
    np.testing.assert_array_equal(old.read(0, 100)[0], A)  # cached in this process
    B = (A[::-1] * 0.5).astype(np.float32)  # same shape, other dtype, chunks and values
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.create_array("X", data=B, chunks=(33, 4))
    new = open_dataset(path)
    assert new.token != old.token
    np.testing.assert_array_equal(new.read(0, 100)[0], B)
    with pytest.raises(DataError, match="changed after it was opened"):
        old.read(0, 100)


# -- resume ----------------------------------------------------------------------------------


def _store(tmp_path, X, y, name="d.zarr", **kw):
    with create_dataset(tmp_path / name, X.shape[1], dtype="float64", **kw) as w:
        w.append(X, y)
    return open_dataset(tmp_path / name)


def test_a_python_resume_with_random_state_none_redraws_nothing(xy, tmp_path):
    X, y = xy
    ds = _store(tmp_path, X, y)
    states = []
    full = RFMRegressor(iters=3, solver="nystrom", n_centers=80, random_state=None).fit_dataset(
        ds, on_iteration=states.append)
    save_checkpoint(states[1], tmp_path / "ckpt", {"run": 1})  # after iteration 1
    state = load_checkpoint(tmp_path / "ckpt", {"run": 1})
    assert state.seed == states[1].seed is not None
    resumed = RFMRegressor(iters=3, solver="nystrom", n_centers=80, random_state=None).fit_dataset(ds, state=state)
    np.testing.assert_array_equal(resumed.centers_, full.centers_)
    np.testing.assert_allclose(resumed.predict(X), full.predict(X), rtol=1e-10)
    with pytest.raises(InputError, match=f"seed {state.seed}"):
        RFMRegressor(iters=3, solver="nystrom", n_centers=80, random_state=state.seed + 1).fit_dataset(ds, state=state)


def test_the_fingerprint_holds_the_data_and_the_model_not_where_it_runs(xy, tmp_path):
    X, y = xy
    ds = _store(tmp_path, X, y)
    a = RFMRegressor(bandwidth=3.0, solver="exact", scheduler="local", n_workers=1, block_rows=64, device="cpu")
    b = clone(a).set_params(scheduler="tcp://10.0.0.1:8786", n_workers=8, block_rows=None, memory_budget="16GB")
    cfg = ExecConfig()
    assert fit_fingerprint(a, ds, "regression", cfg) == fit_fingerprint(b, ds, "regression", cfg)
    assert fit_fingerprint(clone(a).set_params(bandwidth=4.0), ds, "regression", cfg) != fit_fingerprint(a, ds, "regression", cfg)
    fp = fit_fingerprint(a, ds, "regression", cfg)["data"]
    assert fp["path"] == str(tmp_path / "d.zarr") and fp["shape"] == [300, 4] and len(fp["metadata_sha256"]) == 64
    rechunked = _store(tmp_path, X, y, name="d2.zarr", chunk_rows=50)
    assert fit_fingerprint(a, rechunked, "regression", cfg)["data"]["metadata_sha256"] != fp["metadata_sha256"]
    # the memory budget counts when it picks the solver or the number of centers
    auto = RFMRegressor(solver="auto")
    assert fit_fingerprint(auto, ds, "regression", cfg) != fit_fingerprint(auto, ds, "regression", ExecConfig(memory_budget=2**20))


def test_checkpoints_keep_the_seed(tmp_path):
    save_checkpoint(dataclasses.replace(initial_state(3, True), seed=2**100 + 7), tmp_path / "c", {})
    assert load_checkpoint(tmp_path / "c", {}).seed == 2**100 + 7
    assert read_checkpoint(tmp_path / "c").get("seed") == 2**100 + 7


# -- validation rows ------------------------------------------------------------------------------


def test_a_stored_validation_split_is_capped_and_sampled(xy, tmp_path, monkeypatch):
    X, y = xy
    with create_dataset(tmp_path / "v.zarr", 4, dtype="float64") as w:
        w.append(X[:200], y[:200])
        w.append(X[200:], y[200:], validation=True)
    ds = open_dataset(tmp_path / "v.zarr")
    monkeypatch.setattr(validation_mod, "VALIDATION_CAP", 40)
    from bigrfm.model.rfm import RFMParams as P
    params = P(kernel=make_kernel("laplace", 3.0, 1.0), iters=0)
    with Engine(ExecConfig(n_workers=2)) as engine:
        result = fit_dataset(ds, params=params, settings=FitSettings(solver="exact", seed=0), config=ExecConfig(),
                             engine=engine, validation=ds.validation())
    assert result.preprocessing.n_val == 40


def test_validation_predictions_through_the_engine_equal_the_client_s(xy):
    X, y = xy
    a = RFMRegressor(iters=2, random_state=0, n_workers=1, block_rows=50).fit(X, y)
    b = RFMRegressor(iters=2, random_state=0, n_workers=2, block_rows=50).fit(X, y)
    assert [h["score"] for h in a.history_] == [h["score"] for h in b.history_]


# -- R^2 ---------------------------------------------------------------------------------------------


def test_r2_is_exact_for_targets_with_a_large_mean(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3))
    y = 1e9 + X[:, 0] + 0.1 * rng.normal(size=3000)  # syy - sy^2/n loses every digit here
    model = RFMRegressor(iters=0, random_state=0).fit(X[:2000], y[:2000])
    ds = _store(tmp_path, X[2000:], y[2000:], chunk_rows=128)
    with Engine(ExecConfig(n_workers=2, block_rows=100)) as engine:
        metrics = evaluate_dataset(model, ds, engine)
    expected = r2_score(y[2000:], model.predict(X[2000:]))
    assert metrics["r2"] == pytest.approx(expected, rel=1e-9) and 0.5 < expected < 1
