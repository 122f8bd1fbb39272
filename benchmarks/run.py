"""Accuracy benchmark: bigrfm against xRFM and HistGradientBoosting on the same splits.

Command line only (options, the loop over datasets and seeds, merging runs, writing the report and
JSON); it fits nothing and formats no table: suites.py holds the suites, peers.py the methods, tables.py
the report text, common.py the machine facts (benchmarks/ is not a package: this folder goes on sys.path).

    python benchmarks/run.py --suite quick                       # < 10 min on 2 cores
    python benchmarks/run.py --suite full --only keel            # the 40 KEEL sets
    python benchmarks/run.py --suite quick --only breast_cancer --seeds 0 --bandwidths 10 --regs 1e-2
    python benchmarks/run.py --suite full --only keel --methods defaults,defaults+fixed \
        --variant fixed:bandwidth=10,reg=1e-3,patience=None      # the defaults against fixed values, no search

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

On request (not in the default ``--methods``), bigrfm as a new user runs it, with no search:

* ``defaults``: ``RFMClassifier/RFMRegressor(random_state=seed, **SET).fit(X_tr, y_tr, X_val, y_val)``,
  the estimator's own defaults plus the parameters of ``--set`` (e.g. ``n_centers=15000`` on diamonds);
* ``defaults+NAME``: the same with the parameters of ``--variant NAME:k=v,...`` on top, so a variant
  (today's fixed values, ``diag=True``, ...) runs in the same process on the same splits; the report then
  compares every variant with the first defaults method listed, set by set (accuracy and fit seconds).

It records test accuracy (classification) or test RMSE (regression), fit and
predict seconds, prints per-dataset tables of medians over seeds (and for KEEL
the mean accuracy and bigrfm's wins/ties/losses against each peer), appends them
to ``--results`` (default benchmarks/RESULTS.md), and writes every record as JSON
(``--json``, default benchmarks/_data/run-<suite>.json) for ``plots.py``.

Run it with the xRFM venv's interpreter so all peers share one process (and one
set of cores): ``/work/venv-xrfm/bin/python benchmarks/run.py ...`` (bigrfm is
installed there with ``pip install -e .``).
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
import sys
import time
import warnings
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datasets  # noqa: E402
import peers  # noqa: E402
import search  # noqa: E402
import tables  # noqa: E402
from common import machine_facts  # noqa: E402
from suites import (  # noqa: E402
    LARGE_GRID, METHODS, SUITES, XRFM_MAX_TRAIN, build_grid, is_defaults, label, load, parse_params, resolve_only,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="quick")
    p.add_argument("--only", default=None, help="comma-separated datasets of the suite; 'keel' = its KEEL sets")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}, plus 'defaults' and 'defaults+NAME' "
                        "(bigrfm with its defaults, no search; NAME from --variant)")
    p.add_argument("--set", default="", metavar="K=V,...",
                   help="estimator parameters of every defaults method, e.g. n_centers=15000,dtype=float32")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:K=V,...",
                   help="defines method defaults+NAME: the defaults with these parameters on top (repeatable)")
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


def run_one(name: str, seed: int, methods: list[str], grid: dict, iters: int, log: Any,
            xrfm_max_train: int | None = XRFM_MAX_TRAIN, large_grid: dict | None = None,
            peers_on_patches: bool = False, defaults_params: dict[str, dict] | None = None) -> list[dict]:
    """All methods on one (dataset, seed); a failing method gives a record with ``error``.
    ``peers_on_patches``: where the grid names ``_patches``, xRFM and HistGB see the same patch
    features as bigrfm (their seconds include the features'); records get ``features="patches"``.
    ``defaults_params``: the estimator parameters of each ``defaults`` method (none: its defaults)."""
    d = load(name, seed)
    info = {"dataset": name, "seed": seed, "task": d["task"], "n_train": len(d["y_train"]), "n_val": len(d["y_val"]),
            "n_test": len(d["y_test"]), "d": int(d["X_train"].shape[1]),
            "n_classes": len(d["classes"]) if "classes" in d else None}
    n_train = info["n_train"]
    grid_here = grid if n_train <= search.EXACT_MAX_ROWS or grid.get("_fixed") else (large_grid or LARGE_GRID)
    patches = grid_here.get("_patches")
    grid_here = {k: v for k, v in grid_here.items() if not k.startswith("_")}
    recs: list[dict] = []
    peers_featured = bool(patches) and peers_on_patches and ("xrfm" in methods or "hgb" in methods)
    featured: list = []

    def features() -> tuple[dict, dict]:
        # one PatchFeatures fit and transform serves bigrfm and the peers alike; called inside each
        # method's try, so a failure becomes that method's error record
        if not featured:
            featured.append(peers.patch_features(d, seed, patches))
        return featured[0]

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
            elif is_defaults(rec["method"]):
                msg += f"  [{rec['config']}, t={rec['best_iter']}]"
        print(f"{name:<24} seed {seed}  {rec['method']:<7} {msg}", file=log, flush=True)

    if "rfm" in methods or "kernel" in methods:
        try:
            out = peers.run_bigrfm(d, seed, grid_here, iters, want_kernel="kernel" in methods, patches=patches,
                             featured=features() if patches else None)
            for r in out:
                if r["method"] in methods:
                    add(r)
        except Exception as e:  # noqa: BLE001
            for m in ("rfm", "kernel"):
                if m in methods:
                    add({"method": m, "error": f"{type(e).__name__}: {e}"})
    for m in (m for m in methods if is_defaults(m)):
        try:
            add(peers.run_defaults(d, seed, (defaults_params or {}).get(m, {}), method=m))
        except Exception as e:  # noqa: BLE001
            add({"method": m, "error": f"{type(e).__name__}: {e}"})
    # looked up here, not at import, so a test can replace peers.run_xrfm / peers.run_hgb
    for m, run_peer in (("xrfm", peers.run_xrfm), ("hgb", peers.run_hgb)):
        if m not in methods:
            continue
        if m == "xrfm" and xrfm_max_train and n_train > xrfm_max_train:
            add({"method": m, "skipped": f"{n_train:,} training rows > --xrfm-max-train {xrfm_max_train:,}"})
            continue
        try:
            d_peers, peer_info = features() if peers_featured else (d, None)
            add(peers.on_features(run_peer(d_peers, seed), peer_info))
        except Exception as e:  # noqa: BLE001
            add({"method": m, "error": f"{type(e).__name__}: {e}"})
    return recs


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
    meta["methods"] = list(dict.fromkeys(m for mm in metas for m in mm["methods"]))  # first seen, in order
    records = [r for rs in by_ds.values() for r in rs]
    meta["seeds"] = sorted({r["seed"] for r in records})
    # "<name>: seed N only" notes of a part are stale once another part adds seeds of <name>
    many = {ds for ds in {r["dataset"] for r in records} if len({r["seed"] for r in records if r["dataset"] == ds}) > 1}
    meta["notes"] = [n for n in meta["notes"] if not (" only in this suite" in n and n.split(":")[0] in many)]
    return records, meta


def write_run(records: list[dict], meta: dict, argv: list[str], *, only: str | None, iters: int,
              results: str | None, json_path: str | None) -> str:
    """Print the run's report (:func:`tables.report`), append it to ``results`` and write ``{"meta", "records"}``
    to ``json_path`` (each skipped when empty or None); return the report."""
    text = tables.report(records, meta["methods"], meta, suite=meta["suite"], only=only, iters=iters, argv=argv)
    print(text)
    if results:
        with open(results, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1, default=float)
        print(f"records -> {json_path}", file=sys.stderr)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.merge:
        records, meta = merge_runs(args.merge)
        meta["date"] = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        write_run(records, meta, argv, only=None, iters=meta.get("iters", args.iters), results=args.results,
                  json_path=args.json)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    variants = {}
    for v in args.variant:
        vname, sep, vparams = v.partition(":")
        if not sep or not vname:
            raise SystemExit(f"--variant {v!r}: expected NAME:K=V,...")
        variants[f"defaults+{vname}"] = parse_params(vparams)
    bad = [m for m in methods if m not in METHODS and m != "defaults" and m not in variants]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choose from {METHODS}, 'defaults' or "
                         f"{sorted(variants) or 'defaults+NAME with --variant NAME:...'}.")
    base_params = parse_params(args.set)
    defaults_params = {m: {**base_params, **variants.get(m, {})} for m in methods if is_defaults(m)}
    notes = []
    if args.peers_on_patches:
        notes.append("--peers-on-patches: xRFM and HistGB saw the same PatchFeatures as bigrfm where the grid names "
                     "_patches (their fit / predict seconds include the features').")
    if "xrfm" in methods:
        why = peers.xrfm_available()
        if why is not None:
            methods.remove("xrfm")
            notes.append(f"xRFM skipped: not importable in {sys.executable} ({why}).")
            print(notes[-1], file=sys.stderr)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = resolve_only(args.suite, args.only)
    grid = build_grid(args.suite, args.grid, args.bandwidths, args.regs, args.diag)
    warnings.filterwarnings("ignore", category=FutureWarning)
    t_start = time.perf_counter()
    peers.warm_up(methods)
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
                                   large_grids.get(name, LARGE_GRID), peers_on_patches=args.peers_on_patches,
                                   defaults_params=defaults_params)
            except datasets.DatasetMissing as e:
                notes.append(f"{name}: not run, data missing ({e}).")
                print(notes[-1], file=sys.stderr)
                break
    if skipped:
        notes.append(f"Skipped (--max-train {args.max_train:,}): {', '.join(skipped)}.")
    for r in records:
        if "skipped" in r and r["seed"] == seeds[0]:
            notes.append(f"{r['dataset']}: {label(r['method'])} skipped ({r['skipped']}).")
    records = [r for r in records if "skipped" not in r]
    for name in names:
        if len(seeds) > cap.get(name, len(seeds)):
            notes.append(f"{name}: seed {seeds[0]} only in this suite (its Nystrom fits take minutes on 2 cores).")
    machine = machine_facts()
    meta = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "seconds": time.perf_counter() - t_start,
        "machine": machine,
        "loadavg": machine["loadavg"],  # also beside "machine", where plots.py and older records have it
        "seeds": seeds, "grid": grid, "large_grid": LARGE_GRID, "large_grids": large_grids, "methods": methods, "suite": args.suite,
        "argv": argv, "notes": notes, "iters": args.iters, "defaults_params": defaults_params,
    }
    json_path = args.json if args.json is not None else os.path.join(datasets.DATA_DIR, f"run-{args.suite}.json")
    write_run(records, meta, argv, only=args.only, iters=args.iters, results=args.results, json_path=json_path)
    if args.plot:
        import plots

        plots.plot_accuracy([{"meta": meta, "records": records}], args.plot)
        print(f"plot -> {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
