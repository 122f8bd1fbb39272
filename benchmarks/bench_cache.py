"""Passes with and without the block cache (prepared blocks and their rows mapped through the metric).

    python benchmarks/bench_cache.py            # d = 9 and 784, synthetic rows, m = 2,000
    python benchmarks/bench_cache.py --append

One Nystrom solve of 10 CG iterations (``cg_tol=0``: every solve runs to ``cg_maxiter``)
after a first RFM update, so the metric is a full d x d matrix and every pass maps its
blocks through it: once per RFM iteration with the cache (``cache_bytes`` 1 GiB), on
every pass without it (``cache_bytes=0``). Median seconds of 3 fits each, interleaved,
on the threads backend (2 threads). Prints markdown; ``--append`` appends to RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

from bigrfm.config import ExecConfig  # noqa: E402
from bigrfm.engine import Engine  # noqa: E402
from bigrfm.io.datasets import ArrayDataset  # noqa: E402
from bigrfm.model.fit import FitSettings, fit_dataset  # noqa: E402
from bigrfm.model.rfm import RFMParams  # noqa: E402
from bigrfm.numerics.kernels import LaplaceKernel  # noqa: E402


def one_fit(X: np.ndarray, y: np.ndarray, cache: int, m: int) -> tuple[float, int]:
    config = ExecConfig(dtype="float32", cache_bytes=cache)
    params = RFMParams(kernel=LaplaceKernel(2.0 * np.sqrt(X.shape[1])), iters=1)
    settings = FitSettings(solver="nystrom", n_centers=m, cg_tol=0.0, cg_maxiter=10, validation_fraction=0.02, seed=0)
    t = time.perf_counter()
    with Engine(config) as engine:
        res = fit_dataset(ArrayDataset(X, y), params=params, settings=settings, config=config, engine=engine)
    return time.perf_counter() - t, sum(r.passes for r in res.state.history)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", default="9,784")
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--centers", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--append", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    rows = ["| d | rows | centers | passes per fit | fit s, no cache | fit s, cache | ratio |", "|---|---|---|---|---|---|---|"]
    for d in (int(v) for v in args.dims.split(",")):
        X = rng.normal(size=(args.rows, d)).astype(np.float32)
        y = np.sin(X[:, 0]) * X[:, 1] + 0.1 * rng.normal(size=args.rows)
        times: dict[int, list[float]] = {0: [], 2**30: []}
        for _ in range(args.repeats):
            for cache in times:  # interleaved: both see the same machine load
                s, passes = one_fit(X, y, cache, args.centers)
                times[cache].append(s)
        off, on = statistics.median(times[0]), statistics.median(times[2**30])
        rows.append(f"| {d} | {args.rows:,} | {args.centers:,} | {passes} | {off:.1f} | {on:.1f} | {off / on:.2f}x |")
        print(rows[-1], flush=True)
    head = common.report_head("bench_cache", argv, time.perf_counter() - t0)
    text = common.append_report(head, "\n".join(rows), note="Synthetic standard-normal rows; fit = first pass, "
                                "one Nystrom solve at M = I, one AGOP pass, one solve in the learned metric "
                                "(10 CG iterations each); float32 blocks; median of the repeats.",
                                path=os.path.join(HERE, "RESULTS.md") if args.append else None)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
