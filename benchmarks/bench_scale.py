"""flights-3m scale curve: bigrfm vs HistGradientBoosting (and xRFM where it fits), fit seconds,
peak RSS of the whole process tree, test RMSE.

Run from the repository root (datasets: see benchmarks/README.md)::

    python benchmarks/bench_scale.py --sizes 200000,1000000,2850000
    python benchmarks/bench_scale.py --sizes 200000 --xrfm /work/venv-xrfm/bin/python

Every fit runs as its own subprocess (``bigrfm fit`` on an in-process
LocalCluster with 2 workers; HGB and xRFM through small python -c programs),
so peak memory is measured the same way for all: psutil samples the RSS of the
child and all its descendants (the Dask workers) every 50 ms. The test split
is the fixed 100,000 rows of the protocol; the validation split the fixed
50,000 rows. Appends a table to benchmarks/RESULTS.md and writes the rows as
JSON (``--json``, default benchmarks/_data/scale-<date>.json, rewritten after
every fit) for ``plots.py --scale``::

    {"meta": {"date", "command", "bigrfm_args", "machine", "sizes", "timeout", "peak_rss"},
     "records": [{"method", "n", "fit_s", "wall_s", "peak_rss_gb", "rmse",
                  ["best_iter", "cg_iters"] (bigrfm), ["error"] (failed: fit_s and rmse null)}]}

peak_rss_gb is bytes / 2**30 (the "GB" of the table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import PeakRSS  # noqa: E402
import datasets  # noqa: E402

PEER = r"""
import sys, time, json, numpy as np
sys.path.insert(0, {here!r}); import datasets
d = datasets.load_flights(n_train={n})
t = time.perf_counter()
if {kind!r} == "hgb":
    from sklearn.ensemble import HistGradientBoostingRegressor
    m = HistGradientBoostingRegressor(max_iter=500, random_state=0).fit(d["X_train"], d["y_train"])
    fit = time.perf_counter() - t
    pred = m.predict(d["X_test"])
else:
    from sklearn.preprocessing import StandardScaler
    from xrfm import xRFM
    s = StandardScaler().fit(d["X_train"])
    m = xRFM(device="cpu", random_state=0, verbose=False)
    m.fit(s.transform(d["X_train"]), d["y_train"], s.transform(d["X_val"]), d["y_val"])
    fit = time.perf_counter() - t
    pred = np.asarray(m.predict(s.transform(d["X_test"]))).ravel()
print(json.dumps({{"fit_s": fit, "rmse": float(np.sqrt(np.mean((pred - d["y_test"]) ** 2)))}}))
"""


def run_measured(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run cmd; return (result, wall seconds, peak RSS bytes of the process tree)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRSS(pid=proc.pid) as rss:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    peak = rss.peak
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), time.perf_counter() - t0, peak


def bigrfm_run(n: int, args: list[str], out: Path, timeout: float) -> dict:
    train, test = datasets.cache("flights", n_train=None if n >= 2_850_000 else n)
    cmd = [sys.executable, "-m", "bigrfm_cli.main", "fit", train, "--out", str(out), "--overwrite", "--json", *args]
    res, wall, peak = run_measured(cmd, timeout)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}", "wall_s": wall}
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    ev = subprocess.run([sys.executable, "-m", "bigrfm_cli.main", "evaluate", str(out), test, "--json", "--scheduler", "threads"],
                        capture_output=True, text=True, check=True)
    metrics = json.loads(ev.stdout.strip().splitlines()[-1])
    cg = [h["solver"].get("cg_iters") for h in summary["history"]]
    return {"fit_s": summary["seconds"], "wall_s": wall, "peak_rss": peak, "rmse": metrics["rmse"],
            "best_iter": summary["best_iter"], "cg_iters": cg}


def peer_run(kind: str, n: int, python: str, timeout: float) -> dict:
    res, wall, peak = run_measured([python, "-c", PEER.format(here=str(HERE), n=n, kind=kind)], timeout)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode} (killed?)"
        return {"error": tail, "wall_s": wall, "peak_rss": peak}
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "wall_s": wall, "peak_rss": peak}


def record(name: str, n: int, r: dict) -> dict:
    """One JSON record (the schema of benchmarks/results/scale-*.json) from a (method, n, result) row."""
    rec = {"method": name, "n": n, "fit_s": r.get("fit_s"), "wall_s": r.get("wall_s"),
           "peak_rss_gb": r["peak_rss"] / 2**30 if r.get("peak_rss") else None, "rmse": r.get("rmse")}
    if "error" in r:
        rec["fit_s"] = rec["rmse"] = None
        rec["error"] = r["error"]
    for k in ("best_iter", "cg_iters"):
        if k in r:
            rec[k] = r[k]
    return rec


def write_json(path: str, meta: dict, rows: list) -> None:
    """Write {"meta", "records"} to path (atomically: a run cut short keeps the last complete file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "records": [record(*row) for row in rows]}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200000,1000000,2850000")
    ap.add_argument("--bigrfm-args", default="--iters 3 --solver nystrom --centers 2000 --cg-maxiter 20 --bandwidth 10 --reg 1e-3 --workers 2",
                    help="arguments of bigrfm fit (one string)")
    ap.add_argument("--xrfm", default=None, help="python of a venv with xrfm, to run it at the sizes it fits")
    ap.add_argument("--xrfm-max", type=int, default=200_000)
    ap.add_argument("--no-hgb", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--json", default=None,
                    help="rows as JSON for plots.py --scale (default benchmarks/_data/scale-<date>.json; '' = none)")
    a = ap.parse_args()
    json_path = a.json if a.json is not None else str(HERE / "_data" / f"scale-{datetime.date.today()}.json")
    meta = {"date": str(datetime.date.today()), "command": f"python benchmarks/bench_scale.py {' '.join(sys.argv[1:])}",
            "bigrfm_args": a.bigrfm_args,
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                       f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
            "sizes": [int(s) for s in a.sizes.split(",")], "timeout": a.timeout,
            "peak_rss": "whole process tree (psutil, 50 ms)"}
    rows = []
    for n in [int(s) for s in a.sizes.split(",")]:
        r = bigrfm_run(n, a.bigrfm_args.split(), HERE / "_out" / f"flights-{n}", a.timeout)
        rows.append(("bigrfm", n, r))
        print("bigrfm", n, r, flush=True)
        if json_path:
            write_json(json_path, meta, rows)
        if not a.no_hgb:
            r = peer_run("hgb", n, sys.executable, a.timeout)
            rows.append(("HistGradientBoosting", n, r))
            print("hgb", n, r, flush=True)
            if json_path:
                write_json(json_path, meta, rows)
        if a.xrfm and n <= a.xrfm_max:
            r = peer_run("xrfm", n, a.xrfm, a.timeout)
            rows.append(("xRFM (CPU)", n, r))
            print("xrfm", n, r, flush=True)
            if json_path:
                write_json(json_path, meta, rows)
    lines = ["| method | train rows | fit s | wall s | peak RSS GB | test RMSE | notes |", "|---|---|---|---|---|---|---|"]
    for name, n, r in rows:
        if "error" in r:
            lines.append(f"| {name} | {n:,} | - | {r['wall_s']:.0f} | - | - | failed: {r['error'][:80]} |")
            continue
        notes = f"best iter {r['best_iter']}, CG iters {r['cg_iters']}" if "best_iter" in r else ""
        lines.append(f"| {name} | {n:,} | {r['fit_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss'] / 2**30:.2f} | {r['rmse']:.2f} | {notes} |")
    table = "\n".join(lines)
    print(table)
    header = (f"\n## flights-3m scale ({datetime.date.today()})\n\n"
              f"`python benchmarks/bench_scale.py {' '.join(sys.argv[1:])}`  \n"
              f"bigrfm args: `{a.bigrfm_args}`  \n"
              f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
              f"Python {platform.python_version()}; peak RSS = whole process tree (psutil, 50 ms)\n\n")
    with open(a.results, "a") as f:
        f.write(header + table + "\n")
    if json_path:
        print(f"records -> {json_path}")


if __name__ == "__main__":
    main()
