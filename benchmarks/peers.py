"""The compared methods on one loader split, each returning plain records: bigrfm's validation-only grid
search (``rfm`` and ``kernel``), xRFM and HistGradientBoosting, with their scoring, timing and patch features.
Fits and scores only: no suite choices (suites.py), no tables (tables.py), no printing or files (run.py).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import search


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Test accuracy (classification) or RMSE (regression); a 2-D ``y_pred`` counts by its first column."""
    y_pred = np.asarray(y_pred).reshape(len(y_true), -1)[:, 0] if np.ndim(y_pred) > 1 else np.asarray(y_pred)
    if task == "classification":
        return float(np.mean(y_pred == y_true))
    return float(np.sqrt(np.mean((y_pred.astype(np.float64) - y_true) ** 2)))


def timed_predict(model: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
    """``model.predict(X)`` and its wall seconds."""
    t0 = time.perf_counter()
    pred = model.predict(X)
    return pred, time.perf_counter() - t0


def patch_features(d: dict, seed: int, spec: dict) -> tuple[dict, dict]:
    """``d`` with every split replaced by ``bigrfm.PatchFeatures(**spec, random_state=seed)`` features
    (fitted on the training split), and what :func:`on_features` adds to a record: the spec, the
    seconds of fit + training/validation transform and of the test transform, the feature count."""
    import bigrfm

    t0 = time.perf_counter()
    pf = bigrfm.PatchFeatures(**spec, random_state=seed).fit(d["X_train"])
    out = {**d, "X_train": pf.transform(d["X_train"]), "X_val": pf.transform(d["X_val"])}
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["X_test"] = pf.transform(d["X_test"])
    info = {"features": "patches", "patches": spec, "features_fit_s": fit_s,
            "features_predict_s": time.perf_counter() - t0, "d_features": pf.n_features_out_}
    return out, info


def on_features(rec: dict, info: dict | None) -> dict:
    """A method's record with the features' ``info`` added and their seconds counted in fit_s / predict_s."""
    if not info or "test" not in rec:
        return rec
    return {**rec, **info, "fit_s": rec["fit_s"] + info["features_fit_s"],
            "predict_s": rec["predict_s"] + info["features_predict_s"]}


def trial_record(t: search.Trial) -> dict:
    """One grid point of the search as it is kept in the ``rfm`` record's ``grid`` list."""
    return {"params": t.params, "best_iter": t.best_iter, "val_accuracy": t.val_accuracy, "val_mse": t.val_mse,
            "val_accuracy_iter0": t.val_accuracy_iter0, "val_mse_iter0": t.val_mse_iter0,
            "fit_s": t.fit_seconds, "error": t.error}


def run_bigrfm(d: dict, seed: int, grid: dict, iters: int, want_kernel: bool, patches: dict | None = None,
               featured: tuple[dict, dict] | None = None) -> list[dict]:
    """bigrfm's ``rfm`` (and ``kernel``) records. With ``patches`` (PatchFeatures parameters) both
    models see patch features (``featured``: :func:`patch_features`' result when the caller has it
    already), and the features' fit / transform seconds count in fit_s / predict_s."""
    task = d["task"]
    info = None
    if patches:
        d, info = featured or patch_features(d, seed, patches)
    res = search.search_rfm(task, d["X_train"], d["y_train"], d["X_val"], d["y_val"], grid, seed, iters=iters)
    pred, pred_s = timed_predict(res.model, d["X_test"])
    best = res.best
    tag = " patches(" + ",".join(f"{k}={v}" for k, v in patches.items() if k != "image_shape") + ")" if patches else ""
    out = [{
        "method": "rfm", "test": score(task, d["y_test"], pred), "fit_s": res.fit_seconds, "predict_s": pred_s,
        "search_s": res.seconds, "config": search.format_params(res.params) + tag, "params": res.params,
        "best_iter": best.best_iter, "val_accuracy": best.val_accuracy, "val_mse": best.val_mse, "solver": res.solver,
        "grid": [trial_record(t) for t in res.trials],
    }]
    if want_kernel:
        model, fit_s = search.refit(task, d["X_train"], d["y_train"], d["X_val"], d["y_val"], res.kernel_params, seed,
                                    iters=0, solver=res.solver)
        pred, pred_s = timed_predict(model, d["X_test"])
        h0 = model.history_[0]
        out.append({
            "method": "kernel", "test": score(task, d["y_test"], pred), "fit_s": fit_s, "predict_s": pred_s,
            "search_s": res.seconds, "config": search.format_params(res.kernel_params) + tag, "params": res.kernel_params,
            "best_iter": 0, "val_accuracy": h0["val_accuracy"], "val_mse": h0["val_mse"], "solver": res.solver,
        })
    return [on_features(r, info) for r in out]


def run_defaults(d: dict, seed: int, params: dict, method: str = "defaults") -> dict:
    """bigrfm fitted once with its defaults and no search: ``RFMClassifier`` / ``RFMRegressor``
    ``(random_state=seed, **params).fit(X_train, y_train, X_val, y_val)`` (``params`` empty: the estimator's
    own defaults). The record keeps what the fit chose: the selected iteration, the iterations it ran and why
    it stopped, and the bandwidth and ridge of each iteration (from ``history_``)."""
    from bigrfm import RFMClassifier, RFMRegressor

    task = d["task"]
    cls = RFMClassifier if task == "classification" else RFMRegressor
    model = cls(random_state=seed, **params)
    t0 = time.perf_counter()
    model.fit(d["X_train"], d["y_train"], d["X_val"], d["y_val"])
    fit_s = time.perf_counter() - t0
    pred, pred_s = timed_predict(model, d["X_test"])
    hist = model.history_
    best = hist[model.best_iter_]
    bw = [h.get("bandwidth", model.bandwidth) for h in hist]
    regs = [h.get("reg", model.reg) for h in hist]
    stop = hist[-1].get("stop")
    config = f"L={bw[model.best_iter_]:.3g} reg={regs[model.best_iter_]:.0e} ran {len(hist)}" + (f" ({stop})" if stop else "")
    return {"method": method, "test": score(task, d["y_test"], pred), "fit_s": fit_s, "predict_s": pred_s,
            "params": params, "config": config, "best_iter": int(model.best_iter_), "iters_run": len(hist),
            "stop": stop, "bandwidths": bw, "regs": regs, "solver": model.solver_,
            "val_accuracy": best["val_accuracy"], "val_mse": best["val_mse"],
            "val_scores": [h["score"] for h in hist], "iter_seconds": [h["seconds"] for h in hist],
            # the ridges a shared-pass solver tried on all rows at t = 0 ([ridge, validation MSE] each)
            "reg_candidates": (hist[0].get("solver") or {}).get("reg_candidates")}


def xrfm_available() -> str | None:
    """None when xrfm imports, else the reason it does not."""
    try:
        import xrfm  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def run_xrfm(d: dict, seed: int) -> dict:
    """The ``xrfm`` record: ``xRFM(device="cpu", random_state=seed)`` on standardized inputs
    (StandardScaler fitted on the training split), validation split passed to ``fit``."""
    from sklearn.preprocessing import StandardScaler
    from xrfm import xRFM

    sc = StandardScaler().fit(d["X_train"])
    Xtr, Xva, Xte = (sc.transform(d[k]).astype(np.float32) for k in ("X_train", "X_val", "X_test"))
    if d["task"] == "classification":
        ytr, yva = d["y_train"].astype(np.int64), d["y_val"].astype(np.int64)
    else:
        ytr, yva = d["y_train"].astype(np.float32), d["y_val"].astype(np.float32)
    model = xRFM(device="cpu", random_state=seed, verbose=False)
    t0 = time.perf_counter()
    model.fit(Xtr, ytr, Xva, yva)
    fit_s = time.perf_counter() - t0
    pred, pred_s = timed_predict(model, Xte)
    pred = np.asarray(pred).reshape(len(Xte), -1)[:, 0]
    return {"method": "xrfm", "test": score(d["task"], d["y_test"], pred), "fit_s": fit_s, "predict_s": pred_s}


def run_hgb(d: dict, seed: int) -> dict:
    """The ``hgb`` record: ``HistGradientBoosting{Classifier,Regressor}(max_iter=500, random_state=seed)``
    on the raw training split."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if d["task"] == "classification" else HistGradientBoostingRegressor
    model = cls(max_iter=500, random_state=seed)
    t0 = time.perf_counter()
    model.fit(d["X_train"], d["y_train"])
    fit_s = time.perf_counter() - t0
    pred, pred_s = timed_predict(model, d["X_test"])
    return {"method": "hgb", "test": score(d["task"], d["y_test"], pred), "fit_s": fit_s, "predict_s": pred_s,
            "n_iter": int(model.n_iter_)}


def warm_up(methods: list[str]) -> None:
    """One tiny fit per method, so imports, thread pools and Dask start-up are not timed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    d = {"task": "classification", "X_train": X[:40], "y_train": y[:40], "X_val": X[40:], "y_val": y[40:],
         "X_test": X[40:], "y_test": y[40:]}
    if any(m in ("rfm", "kernel") or m.startswith("defaults") for m in methods):
        search.refit("classification", X[:40], y[:40], X[40:], y[40:], {"bandwidth": 3.0}, 0, iters=1, solver="exact")
    if "xrfm" in methods:
        run_xrfm(d, 0)
    if "hgb" in methods:
        from sklearn.ensemble import HistGradientBoostingClassifier

        HistGradientBoostingClassifier(max_iter=5).fit(X, y)
