"""Patch features for Fashion-MNIST: which PatchFeatures setting and bandwidth? A validation-only screen.

Run from the repository root (dataset: ``apt-get install -y dataset-fashion-mnist``)::

    python benchmarks/fashion_patches.py            # ~6 minutes on a quiet 2-core machine
    python benchmarks/fashion_patches.py --filters 64 --pools 4 --sizes 5 --bandwidths 160

For every (patch_size, n_filters, pool) of the grid, ``bigrfm.PatchFeatures(
image_shape=(28, 28), random_state=0, ...)`` is fitted on the 50k training rows
(it reads a seeded sample of 5,000 images), the seeded ``--rows`` training
subsample and the 10k validation rows are transformed, and the plain kernel
``RFMClassifier(iters=0, solver="exact", dtype="float32", random_state=0)``
(features standardized) is fitted for every bandwidth and scored on validation.
The first row is the same kernel on raw pixels (bandwidth 20, not standardized:
bench_fashion.py's choice). The test set is not read; the best row is what
``run.py --suite full`` uses for Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import datasets  # noqa: E402
from common import screen_report  # noqa: E402


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",")]


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=5000, help="training rows (seeded subsample; default 5000)")
    p.add_argument("--sizes", type=_ints, default=[5], help="patch sizes, comma-separated (default 5)")
    p.add_argument("--filters", type=_ints, default=[64, 128], help="n_filters values (default 64,128)")
    p.add_argument("--pools", type=_ints, default=[3, 4], help="pool values (default 3,4)")
    p.add_argument("--bandwidths", type=_floats, default=[40.0, 160.0, 640.0], help="default 40,160,640")
    p.add_argument("--reg", type=float, default=1e-3)
    p.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"), help="markdown file to append to ('' = none)")
    args = p.parse_args(argv)

    import bigrfm

    d, about = datasets.fashion_mnist_sample(args.rows)
    X, y, X_val, y_val = d["X_sample"], d["y_sample"], d["X_val"], d["y_val"]
    t_all = time.perf_counter()

    def score(F: np.ndarray, F_val: np.ndarray, bandwidth: float, standardize: bool) -> float:
        est = bigrfm.RFMClassifier(bandwidth=bandwidth, reg=args.reg, iters=0, solver="exact", standardize=standardize,
                                   dtype="float32", random_state=0)
        return float(np.mean(est.fit(F, y).predict(F_val) == y_val))

    rows = [("raw pixels", 784, 0.0, {20.0: score(X, X_val, 20.0, False)})]
    print(f"{'raw pixels':<34} bandwidth 20: {rows[0][3][20.0]:.4f}", flush=True)
    for size, filters, pool in itertools.product(args.sizes, args.filters, args.pools):
        label = f"patch_size={size}, n_filters={filters}, pool={pool}"
        t0 = time.perf_counter()
        pf = bigrfm.PatchFeatures((28, 28), patch_size=size, n_filters=filters, pool=pool, random_state=0)
        pf.fit(d["X_train"])
        F, F_val = pf.transform(X), pf.transform(X_val)
        feat_s = time.perf_counter() - t0
        accs = {b: score(F, F_val, b, True) for b in args.bandwidths}
        rows.append((label, pf.n_features_out_, feat_s, accs))
        print(f"{label:<34} " + ", ".join(f"bandwidth {b:g}: {a:.4f}" for b, a in accs.items()), flush=True)
    best = max(rows[1:], key=lambda r: max(r[3].values()), default=None)
    head = ("| features | dims | fit + transform s | validation accuracy by bandwidth (plain kernel, exact) |\n"
            "|---|---|---|---|")
    body = [f"| {lab}{' **(best)**' if r is best else ''} | {dims} | {fs:.0f} | "
            + ", ".join(f"{b:g}: {a:.4f}" for b, a in accs.items()) + " |"
            for r in rows for lab, dims, fs, accs in [r]]
    about += ("`PatchFeatures((28, 28), random_state=0, ...)` fitted on the 50k training rows (5,000 sampled images), "
              f"then `RFMClassifier(iters=0, solver=\"exact\", reg={args.reg:g}, dtype=\"float32\", random_state=0)` "
              "on the standardized features.\n")
    screen_report("fashion_patches", argv, time.perf_counter() - t_all, about, "\n".join([head] + body),
                  args.results or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
