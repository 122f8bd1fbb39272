"""Fused CPU kernel passes (bigrfm.numerics.fused_cpu, Numba) against today's numpy block functions.

Run from the repository root (hold the machine-wide lock: the machine is shared)::

    flock /tmp/bigrfm-heavy.lock python benchmarks/bench_fused.py --quick      # ~1-2 minutes
    flock /tmp/bigrfm-heavy.lock python benchmarks/bench_fused.py              # d 9,32,128,784; m 2000,8000
    ... --append                                                                # also append to RESULTS.md

For each thread mode, dtype, d and m, one block of b rows (standard normal, a
random full-rank metric M, Laplace kernel, bandwidth 10, c = 1 output; the
arguments of ``bench_kernel.make_args``) goes through the library's own block
function twice, timed alternately (median of ``--repeats``): on the fused path
(``fused_cpu.ENABLED``, the default) and on the numpy reference path (switched off):

- ``gram``: ``bigrfm.solvers.nystrom.gram_matvec_block`` (K^T (K v), one CG iteration's block);
- ``predict``: ``bigrfm.model.predictors.kernel_predict_block`` (K alpha);
- ``agop``: ``bigrfm.numerics.agop.kernel_agop_block`` (fused: the gradient weights
  from ``fused_cpu.gradient_weights``, the products stay BLAS);
- ``weights``: the elementwise part alone, ``Kernel.block_and_weights`` vs
  ``fused_cpu.gradient_weights``, over the same row tiles.

Both sides include the metric map X S. Reported: kernel entries per second
(b m / seconds) of each, their ratio, and in the header the rates measured
in the same process: the GEMM rate (2048^3 matmuls run the way the mode runs
blocks), numpy's exp and sqrt (float values per second) and the fused
polynomial exp, each with 1 thread and with 2 threads (two halves of the
array on two Python threads).

Thread modes: ``1`` = one block on one thread (BLAS limited to 1 thread);
``2`` = the same b rows as two blocks of b/2 on two Python threads, BLAS
limited to 1 thread each (the engine's thread backend).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bigrfm.model.predictors import kernel_predict_block
from bigrfm.numerics import fused_cpu
from bigrfm.numerics.agop import kernel_agop_block
from bigrfm.numerics.backend import row_tiles
from bigrfm.numerics.kernels import apply_metric
from bigrfm.solvers.nystrom import gram_matvec_block

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_kernel import gemm_rate, make_args  # noqa: E402
from common import append_report, machine_line  # noqa: E402


def weights(X, a):
    """The elementwise part of an AGOP block alone: W over the block's row tiles (fused or numpy)."""
    bc = a["bc"]
    Xt = apply_metric(X, bc["S"])
    tiles = row_tiles(X.shape[0], bc["Zt"].shape[0], X.dtype.itemsize)
    if not fused_cpu.applies(X):
        for t in tiles:
            bc["kernel"].block_and_weights(Xt[t], bc["Zt"], bc["zsq"])
        return
    buf = np.empty((tiles[0].stop - tiles[0].start, bc["Zt"].shape[0]), X.dtype)
    for t in tiles:
        fused_cpu.gradient_weights(Xt[t], bc["Zt"], out=buf[: t.stop - t.start], **fused_cpu.params_of(bc["kernel"]))


def run(op: str, impl: str, X: np.ndarray, a: dict):
    """One block through the library's block function, on the fused path or the numpy reference path."""
    bc = a["bc"]
    fused_cpu.ENABLED = impl == "fused"
    try:
        if op == "gram":
            return gram_matvec_block(X, None, kernel=bc["kernel"], S=bc["S"], Zt=bc["Zt"], zsq=bc["zsq"], v=a["v"])
        if op == "predict":
            return kernel_predict_block(X, None, **bc)
        if op == "agop":
            return kernel_agop_block(X, None, **bc)
        return weights(X, a)
    finally:
        fused_cpu.ENABLED = True


def timed(fn, mode: str, pool, X: np.ndarray) -> float:
    """Seconds of one call: the whole block (mode 1) or its two halves on two threads (mode 2)."""
    if mode == "2":
        half = X.shape[0] // 2
        parts = [X[:half], X[half:]]
        t = time.perf_counter()
        list(pool.map(fn, parts))
        return time.perf_counter() - t
    t = time.perf_counter()
    fn(X)
    return time.perf_counter() - t


def elementwise_rates(dtype, pool, n: int = 1 << 15, loops: int = 1024, repeats: int = 5) -> dict:
    """Values per second of numpy exp, numpy sqrt and the fused polynomial exp: (1 thread, 2 threads).

    Each thread works on its own cache-resident array of ``n`` values, ``loops``
    times over (a kernel pass works on cache-resident tiles too).
    """
    from bigrfm.numerics import fastmath as J  # numba loads here
    xs = [-np.random.default_rng(s).random(n).astype(dtype) * 20 for s in (3, 4)]  # (n,) arguments <= 0
    outs = [np.empty_like(x) for x in xs]
    fns = {"numpy exp": lambda a, o: np.exp(a, out=o), "numpy sqrt": lambda a, o: np.sqrt(-a, out=o),
           "fused exp": J.exp_array}
    rates = {}
    for name, f in fns.items():
        f(xs[0], outs[0])

        def work(i, f=f):
            for _ in range(loops):
                f(xs[i], outs[i])

        one, two = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            work(0)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            list(pool.map(work, (0, 1)))
            two.append(time.perf_counter() - t)
        one, two = statistics.median(one), statistics.median(two)
        rates[name] = (n * loops / one, 2 * n * loops / two)
    return rates


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", default="9,32,128,784")
    p.add_argument("--centers", default="2000,8000")
    p.add_argument("--rows", type=int, default=32768, help="rows b of the block")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--modes", default="1,2", help="comma list of 1, 2")
    p.add_argument("--ops", default="gram,predict,agop,weights")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="b=8192, m=2000, d 9 and 784, gram and predict")
    p.add_argument("--append", action="store_true", help="append the report to --results")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.quick:
        args.rows, args.centers, args.dims, args.ops = 8192, "2000", "9,784", "gram,predict"
    if not fused_cpu.available():
        sys.exit("bench_fused: fused_cpu is not available (numba missing, or BIGRFM_FUSED_CPU=0)")
    dims = [int(x) for x in args.dims.split(",")]
    centers = [int(x) for x in args.centers.split(",")]
    b = args.rows
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    pool = cf.ThreadPoolExecutor(2)

    rows, head = [], []
    for dtname in args.dtypes.split(","):
        dtype = np.dtype(dtname)
        with threadpool_limits(1, user_api="blas"):
            er = elementwise_rates(dtype, pool)
        head.append(f"{dtname}: " + ", ".join(f"{k} {a:.3g} / {b2:.3g}" for k, (a, b2) in er.items()))
        print(head[-1], flush=True)
        for mode in args.modes.split(","):
            with threadpool_limits(1, user_api="blas"):
                g = gemm_rate(dtype, mode, n=2048)
            head.append(f"{dtname}, {mode} thread(s): GEMM {g:.1f} GFLOP/s")
            print(head[-1], flush=True)
            for d in dims:
                X = np.random.default_rng(2).standard_normal((b, d)).astype(dtype)
                for m in centers:
                    a = make_args(d, m, 1, dtype)
                    with threadpool_limits(1, user_api="blas"):
                        for op in args.ops.split(","):
                            for impl in ("numpy", "fused"):
                                run(op, impl, X[:256], a)  # warm-up (and compile)
                            ts = {"numpy": [], "fused": []}
                            for _ in range(args.repeats):  # alternate, so both see the same load
                                for impl in ("numpy", "fused"):
                                    ts[impl].append(timed(lambda P, i=impl: run(op, i, P, a), mode, pool, X))
                            tn, tf = statistics.median(ts["numpy"]), statistics.median(ts["fused"])
                            rows.append((mode, dtname, d, m, op, b * m / tn, b * m / tf, tn / tf))
                            print(f"threads={mode} {dtname} d={d} m={m} {op}: numpy {b * m / tn:.3g}  fused "
                                  f"{b * m / tf:.3g} entries/s  x{tn / tf:.2f}   (load {os.getloadavg()[0]:.2f})", flush=True)
    pool.shutdown()
    wall = time.perf_counter() - t_start
    load1 = os.getloadavg()

    lines = ["| threads | dtype | d | m | pass | numpy entries/s | fused entries/s | fused / numpy |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, dtn, d, m, op, en, ef, ratio in rows:
        lines.append(f"| {mode} | {dtn} | {d} | {m:,} | {op} | {en:.3g} | {ef:.3g} | {ratio:.2f} |")
    table = "\n".join(lines)
    print()
    print(table)
    report = (
        f"\n## bench_fused — {datetime.date.today().isoformat()}\n\n"
        f"Command: `python benchmarks/bench_fused.py {' '.join(argv)}`".rstrip() + f" ({wall:.0f}s)  \n"
        + machine_line()
        + f"Load average at the start {', '.join(f'{x:.2f}' for x in load0)}, at the end "
        f"{', '.join(f'{x:.2f}' for x in load1)}.  \n"
        f"Block: b={b:,} rows, c=1, Laplace kernel (bandwidth 10), random full-rank metric; numpy and fused runs "
        f"alternate, median of {args.repeats}. Threads 2 = two blocks of b/2 on two Python threads, BLAS 1 thread each. "
        "Entries/s = b·m / seconds, metric map X·S included on both sides. "
        "Elementwise rates (values/s, 1 thread / 2 threads) and GEMM in the same process: "
        + "; ".join(head) + ".\n"
    )
    append_report(report, table, note=args.note, path=args.results if args.append else None)


if __name__ == "__main__":
    main()
