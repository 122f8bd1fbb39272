"""Kernel-pass throughput next to the GEMM rate of the same process.

Run from the repository root::

    python benchmarks/bench_kernel.py --quick        # ~3 minutes: b=16384, m=2000
    python benchmarks/bench_kernel.py                # d in 9,32,128,784; m in 2000,8000; b=65536

For each thread mode, dtype (float32, float64), d and m, one block of b rows
(standard normal, a random full-rank metric M, Laplace kernel, bandwidth 10)
is pushed through the three block functions of a pass:

- ``gram``: ``bigrfm.solvers.nystrom.gram_matvec_block(X, None, kernel, S, Zt, zsq, v)``,
  i.e. K_b^T (K_b v) with v of c columns (one CG iteration's work for a block);
- ``agop``: ``bigrfm.numerics.agop.kernel_agop_block`` (the AGOP partial sums);
- ``predict``: ``bigrfm.model.predictors.kernel_predict_block`` (K_b alpha).

The arguments come from ``KernelPredictor(kernel, M, Z, alpha).broadcast(np, dtype)``.
Each is timed ``--repeats`` times (median). Reported: kernel entries per second
(b*m / seconds) and the fraction of the GEMM rate measured in the same process
that the flop count would need. The machine is shared and its load swings
within minutes, so every run of a block function is paired with a GEMM-rate
measurement right before it (a 2048^3 matmul, run the way the mode runs
blocks); the fraction is the median over the pairs. The 4096^3 rate (median of
3) before and after each section is reported in the header as well.

    gram    2bmd + 4bmc                 (+ 2bd^2 for the metric map X S)
    predict 2bmd + 2bmc                 (+ 2bd^2)
    agop    2bmd + 2bmc + 2bmcd + 2bcd^2 (+ 2bd^2)

"fraction" = (flops / GEMM rate) / measured seconds, without and with the
metric map (which the brief's formula leaves out but the code does: X @ S is a
b x d x d GEMM for a full metric).

Thread modes:

- ``1``: ``threadpoolctl.threadpool_limits(1)``: one block on one thread.
- ``2``: the same b rows as two blocks of b/2 on two Python threads, BLAS
  limited to one thread each: how the engine's thread backend runs a pass
  (numpy releases the GIL in GEMMs and ufuncs). Its GEMM rate is two
  concurrent single-thread matmuls.
- ``2blas`` (optional): one block, BLAS with 2 threads (element-wise work stays
  on one thread).

Prints a markdown table and appends it to benchmarks/RESULTS.md with the
command, machine, BLAS and date, and writes the rows as JSON (``--json``,
default benchmarks/_data/kernel-<date>.json) for ``plots.py --throughput``::

    {"meta": {"date", "command", "seconds", "machine", "nproc", "python", "numpy", "blas",
              "loadavg_end", "rows", "outputs", "repeats", "gemm_n", "pair_gemm_n",
              "gemm_sections": [{"mode", "dtype", "before", "after"}], "note"},
     "records": [{"mode", "threads", "dtype", "d", "m", "op", "rows", "outputs", "median_s",
                  "entries_per_s", "gflops_incl_xs", "gemm_gflops", "fraction", "fraction_incl_xs"}]}

one record per table row (fractions as fractions, not percent; GFLOP/s in 1e9 flop/s).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bigrfm.numerics.agop import kernel_agop_block
from bigrfm.numerics.kernels import make_kernel
from bigrfm.model.predictors import KernelPredictor, kernel_predict_block
from bigrfm.solvers.nystrom import gram_matvec_block

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import append_report, machine_facts, machine_line, median_time  # noqa: E402
GEMM_N = 4096


def gemm_rate(dtype, mode: str, repeats: int = 3, n: int = GEMM_N) -> float:
    """GFLOP/s of n^3 matmuls (median of ``repeats``), run the way ``mode`` runs blocks."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((n, n)).astype(dtype)
    B = rng.standard_normal((n, n)).astype(dtype)
    flops = 2.0 * n**3
    if mode == "2":
        with cf.ThreadPoolExecutor(2) as pool, threadpool_limits(1, user_api="blas"):
            A2, B2 = A.copy(), B.copy()
            s = median_time(lambda: list(pool.map(lambda ab: ab[0] @ ab[1], [(A, B), (A2, B2)])), repeats)
        return 2 * flops / s / 1e9
    with threadpool_limits(2 if mode == "2blas" else 1, user_api="blas"):
        A @ B  # warm-up (thread pool start)
        s = median_time(lambda: A @ B, repeats)
    return flops / s / 1e9


def flops_of(op: str, b: int, m: int, d: int, c: int) -> tuple[float, float]:
    """(flops of the brief's formula, flops of the metric map X S)."""
    base = {
        "gram": 2 * b * m * d + 4 * b * m * c,
        "predict": 2 * b * m * d + 2 * b * m * c,
        "agop": 2 * b * m * d + 2 * b * m * c + 2 * b * m * c * d + 2 * b * c * d * d,
    }[op]
    return float(base), float(2 * b * d * d)


def make_args(d: int, m: int, c: int, dtype, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    M = A @ A.T / d + 0.1 * np.eye(d)  # full rank, like a learned AGOP metric
    M /= M.max()
    Z = rng.standard_normal((m, d))
    alpha = rng.standard_normal((m, c)) / m
    bc = KernelPredictor(make_kernel("laplace", 10.0), M, Z, alpha).broadcast(np, dtype)
    v = rng.standard_normal((m, c)).astype(dtype)
    return {"bc": bc, "v": v}


def run_op(op: str, X: np.ndarray, a: dict):
    bc = a["bc"]
    if op == "gram":
        return gram_matvec_block(X, None, kernel=bc["kernel"], S=bc["S"], Zt=bc["Zt"], zsq=bc["zsq"], v=a["v"])
    if op == "agop":
        return kernel_agop_block(X, None, **bc)
    return kernel_predict_block(X, None, **bc)


PAIR_N = 2048


def time_op(op: str, X: np.ndarray, a: dict, mode: str, repeats: int, pool, flops: float,
            pair_n: int = PAIR_N) -> tuple[float, float, float]:
    """(median seconds, median adjacent GEMM GFLOP/s, median fraction flops/GEMM-rate/seconds)."""
    if mode == "2":
        half = X.shape[0] // 2
        parts = [X[:half], X[half:]]
        fn = lambda: list(pool.map(lambda P: run_op(op, P, a), parts))  # noqa: E731
    else:
        fn = lambda: run_op(op, X, a)  # noqa: E731
    ts, gs, fs = [], [], []
    for _ in range(repeats):
        g = gemm_rate(X.dtype, mode, repeats=1, n=pair_n)
        t = time.perf_counter()
        fn()
        t = time.perf_counter() - t
        ts.append(t)
        gs.append(g)
        fs.append(flops / (g * 1e9) / t)
    return statistics.median(ts), statistics.median(gs), statistics.median(fs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", default="9,32,128,784")
    p.add_argument("--centers", default="2000,8000")
    p.add_argument("--rows", type=int, default=65536, help="rows b of the block")
    p.add_argument("--outputs", type=int, default=1, help="c: columns of v / alpha")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--modes", default="1,2", help="comma list of 1, 2, 2blas")
    p.add_argument("--ops", default="gram,agop,predict")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="b=16384, m=2000 only")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--no-append", action="store_true")
    p.add_argument("--note", default="")
    p.add_argument("--json", default=None,
                   help="rows as JSON for plots.py --throughput (default benchmarks/_data/kernel-<date>.json; '' = none)")
    p.add_argument("--gemm-n", type=int, default=GEMM_N, help="size of the before/after GEMM-rate matmul")
    p.add_argument("--pair-n", type=int, default=PAIR_N, help="size of the GEMM-rate matmul paired with each timed run")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.quick:
        args.rows, args.centers = 16384, "2000"
    dims = [int(x) for x in args.dims.split(",")]
    centers = [int(x) for x in args.centers.split(",")]
    modes = args.modes.split(",")
    ops = args.ops.split(",")
    b, c = args.rows, args.outputs
    t_start = time.perf_counter()

    rows = []
    gemm_notes = []
    gemm_sections = []
    pool = cf.ThreadPoolExecutor(2)
    for mode in modes:
        for dtname in args.dtypes.split(","):
            dtype = np.dtype(dtname)
            g0 = gemm_rate(dtype, mode, n=args.gemm_n)
            for d in dims:
                X = np.random.default_rng(2).standard_normal((b, d)).astype(dtype)
                for m in centers:
                    a = make_args(d, m, c, dtype)
                    limit = 2 if mode == "2blas" else 1
                    with threadpool_limits(limit, user_api="blas"):
                        run_op("predict", X[:256], a)  # warm-up
                        for op in ops:
                            base, xs = flops_of(op, b, m, d, c)
                            s, g, f1 = time_op(op, X, a, mode, args.repeats, pool, base + xs, args.pair_n)
                            f0 = f1 * base / (base + xs)
                            rows.append((mode, dtname, d, m, op, s, b * m / s, (base + xs) / s / 1e9, g, f0, f1))
                            print(f"mode={mode} {dtname} d={d} m={m} {op}: {s:.3f} s  {b * m / s:.3g} entries/s  "
                                  f"GEMM {g:.1f} GFLOP/s  fraction {f0:.0%} / {f1:.0%}", flush=True)
            g1 = gemm_rate(dtype, mode, n=args.gemm_n)
            gemm_notes.append(f"mode {mode}, {dtname}: {g0:.1f} GFLOP/s before, {g1:.1f} after")
            gemm_sections.append({"mode": mode, "dtype": dtname, "before": g0, "after": g1})
            print(gemm_notes[-1], flush=True)
    pool.shutdown()
    wall = time.perf_counter() - t_start

    mode_name = {"1": "1 thread", "2": "2 threads (2 blocks of b/2, BLAS 1 each)", "2blas": "1 block, BLAS 2 threads"}
    lines = [
        "| threads | dtype | d | m | block function | median s | kernel entries/s | GFLOP/s (incl. XS) | GEMM GFLOP/s (paired) | fraction of GEMM (brief flops) | fraction (incl. XS) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (mode, dtn, d, m, op, s, eps, gfl, g, f0, f1) in rows:
        lines.append(f"| {mode_name[mode]} | {dtn} | {d} | {m:,} | {op} | {s:.3f} | {eps:.3g} | {gfl:.1f} | {g:.1f} | {f0:.0%} | {f1:.0%} |")
    table = "\n".join(lines)
    print()
    print(table)

    cmd = "python benchmarks/bench_kernel.py " + " ".join(argv)
    mach = machine_facts()  # one reading for the report's line and the JSON record
    report = (
        f"\n## bench_kernel — {datetime.date.today().isoformat()}\n\n"
        f"Command: `{cmd.strip()}` ({wall:.0f}s)  \n"
        + machine_line(mach)
        + f"Block: b={b:,} rows, c={c} output(s), Laplace kernel (bandwidth 10), random full-rank metric M; "
        f"median of {args.repeats} runs. \"GEMM GFLOP/s\": a {args.pair_n}³ matmul run right before each timed run "
        f"(median over the runs); fractions are medians over those pairs. {args.gemm_n}³ matmul, median of 3, "
        f"before and after each section: {'; '.join(gemm_notes)}.  \n"
        "Flops: gram 2bmd+4bmc, predict 2bmd+2bmc, agop 2bmd+2bmc+2bmcd+2bcd²; "
        "\"incl. XS\" adds the metric map X·S (2bd²). Fraction = time those flops need at the GEMM rate / measured time.\n"
    )
    append_report(report, table, note=args.note, path=None if args.no_append else args.results)

    json_path = args.json if args.json is not None else str(HERE / "_data" / f"kernel-{datetime.date.today().isoformat()}.json")
    if json_path:
        meta = {
            "date": datetime.date.today().isoformat(), "command": cmd.strip(), "seconds": wall, "machine": mach["uname"],
            "nproc": mach["nproc"], "python": mach["python"], "numpy": mach["versions"]["numpy"], "blas": mach["blas"],
            "loadavg_end": mach["loadavg"], "rows": b, "outputs": c, "repeats": args.repeats, "gemm_n": args.gemm_n,
            "pair_gemm_n": args.pair_n, "gemm_sections": gemm_sections, "note": args.note,
        }
        records = [
            {"mode": mode, "threads": mode_name[mode], "dtype": dtn, "d": d, "m": m, "op": op, "rows": b, "outputs": c,
             "median_s": s, "entries_per_s": eps, "gflops_incl_xs": gfl, "gemm_gflops": g, "fraction": f0,
             "fraction_incl_xs": f1}
            for (mode, dtn, d, m, op, s, eps, gfl, g, f0, f1) in rows
        ]
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
            f.write("\n")
        print(f"records -> {json_path}")


if __name__ == "__main__":
    main()
