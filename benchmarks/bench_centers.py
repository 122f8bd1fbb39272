"""Centers against memory and time: flights-3m Nystrom fits at m = 8k, 15k, 30k on this machine.

    python benchmarks/bench_centers.py                                  # 200k training rows, m = 8000,15000,30000
    python benchmarks/bench_centers.py --centers 8000 --iters 0 --append

One fit per m (each in its own process, so its peak RSS is its own): seconds,
peak RSS of the process tree (sampled every 50 ms), the largest m x m float64
arrays the client may hold (two: Falkon's T and A), passes over the data, and
validation / test RMSE in minutes. The memory budget is raised to what the
factors need (``--memory-budget``, default 16GB: m = 30,000 needs 14.4 GB).
Prints markdown; ``--append`` appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402


def one_fit(args: argparse.Namespace) -> dict:
    """The child: load, fit, score; print one JSON line."""
    import numpy as np

    import datasets
    from bigrfm import RFMRegressor

    D = datasets.load_flights(n_train=args.rows)
    t = time.perf_counter()
    m = RFMRegressor(solver="nystrom", n_centers=args.m, iters=args.iters, dtype="float32", random_state=0,
                     memory_budget=args.memory_budget, bandwidth=10.0, reg=1e-3)
    m.fit(D["X_train"], D["y_train"], D["X_val"], D["y_val"])
    seconds = time.perf_counter() - t
    sd = float(D["y_train"].std())
    test = float(np.sqrt(np.mean((m.predict(D["X_test"]) - D["y_test"]) ** 2)))
    return {"m": args.m, "seconds": seconds, "passes": sum(h["passes"] for h in m.history_), "best_iter": m.best_iter_,
            "val": float(np.sqrt(m.history_[m.best_iter_]["val_mse"]) * sd), "test": test,
            "cg": [h["solver"].get("cg_iters") for h in m.history_]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--centers", default="8000,15000,30000")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--memory-budget", default="16GB")
    p.add_argument("--append", action="store_true")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        args.m = args.child
        print(json.dumps(one_fit(args)), flush=True)
        return 0
    t0 = time.perf_counter()
    rows = ["| centers m | two m x m factors GB | fit s | peak RSS GB | passes | CG iterations per solve | best t "
            "| val RMSE | test RMSE |", "|---|---|---|---|---|---|---|---|---|"]
    for m in [int(v) for v in args.centers.split(",")]:
        cmd = [sys.executable, __file__, "--child", str(m), "--rows", str(args.rows), "--iters", str(args.iters),
               "--memory-budget", args.memory_budget]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        with common.PeakRSS(pid=proc.pid) as peak:
            out, _ = proc.communicate()
        if proc.returncode != 0:
            rows.append(f"| {m:,} | {2 * 8 * m * m / 1e9:.1f} | failed (exit {proc.returncode}) | {peak.peak / 1e9:.1f} | | | | | |")
        else:
            r = json.loads(out.strip().splitlines()[-1])
            rows.append(f"| {m:,} | {2 * 8 * m * m / 1e9:.1f} | {r['seconds']:.0f} | {peak.peak / 1e9:.2f} | {r['passes']} | "
                        f"{r['cg']} | {r['best_iter']} | {r['val']:.2f} | {r['test']:.2f} |")
        print(rows[-1], flush=True)
    head = common.report_head("bench_centers", argv, time.perf_counter() - t0)
    note = (f"flights-3m, first {args.rows:,} training rows of the fixed split, validation 50,000 rows, test 100,000; "
            f"`RFMRegressor(solver='nystrom', n_centers=m, iters={args.iters}, dtype='float32', bandwidth=10, reg=1e-3, "
            f"memory_budget='{args.memory_budget}', random_state=0)`, threads backend; each fit in its own process.")
    text = common.append_report(head, "\n".join(rows), note=note,
                                path=os.path.join(HERE, "RESULTS.md") if args.append else None)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
