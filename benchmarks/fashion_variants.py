"""Which RFM variant learns useful features on Fashion-MNIST? A validation-only screen.

Run from the repository root (dataset: ``apt-get install -y dataset-fashion-mnist``)::

    python benchmarks/fashion_variants.py                 # ~3 minutes on a quiet 2-core machine
    python benchmarks/fashion_variants.py --rows 10000    # ~4 times longer

Every variant is ``bigrfm.RFMClassifier(solver="exact", dtype="float32",
standardize=False, random_state=0, ...)`` fitted on the same seeded subsample of
the 50k training rows with ``iters=3``, scored on the 10k validation rows after
each iteration. Iteration 0 is the plain kernel, so a row whose later
accuracies fall below its first one is a variant whose learned metric hurts.
The test set is not read. The variants cover the loop's options
(ALGORITHM.md 2): ``agop_power`` 1 and 0.5, ``diag``, ``centering``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import datasets  # noqa: E402
from common import screen_report  # noqa: E402

#: (label, estimator parameters); bandwidth 20 without standardization is bench_fashion.py's choice
VARIANTS: list[tuple[str, dict]] = [
    ("full M, power 1 (default)", {"agop_power": 1.0}),
    ("full M, power 0.5", {"agop_power": 0.5}),
    ("diagonal M, power 1", {"diag": True}),
    ("diagonal M, power 0.5", {"diag": True, "agop_power": 0.5}),
    ("centered AGOP, power 1", {"centering": True}),
    ("centered AGOP, power 0.5", {"centering": True, "agop_power": 0.5}),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=5000, help="training rows (seeded subsample; default 5000)")
    p.add_argument("--bandwidth", type=float, default=20.0)
    p.add_argument("--reg", type=float, default=1e-3)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"), help="markdown file to append to ('' = none)")
    args = p.parse_args(argv)

    import bigrfm

    d, about = datasets.fashion_mnist_sample(args.rows)
    X, y = d["X_sample"], d["y_sample"]
    rows = []
    t_all = time.perf_counter()
    for label, params in VARIANTS:
        est = bigrfm.RFMClassifier(bandwidth=args.bandwidth, reg=args.reg, iters=args.iters, solver="exact",
                                   standardize=False, dtype="float32", random_state=0, **params)
        t0 = time.perf_counter()
        est.fit(X, y, d["X_val"], d["y_val"])
        accs = [h["val_accuracy"] for h in est.history_]
        rows.append((label, accs, est.best_iter_, time.perf_counter() - t0))
        print(f"{label:<28} val accuracy per iteration {', '.join(f'{a:.4f}' for a in accs)}", flush=True)
    head = ("| variant | val accuracy per iteration (t = 0 is the plain kernel) | best t | change t=0 → best later t | fit s |\n"
            "|---|---|---|---|---|")
    body = [f"| {lab} | {', '.join(f'{a:.4f}' for a in accs)} | {best} | {max(accs[1:]) - accs[0]:+.4f} | {s:.0f} |"
            for lab, accs, best, s in rows]
    about += (f"`RFMClassifier(solver=\"exact\", bandwidth={args.bandwidth:g}, reg={args.reg:g}, iters={args.iters}, "
              "standardize=False, dtype=\"float32\", random_state=0, ...)`.\n")
    screen_report("fashion_variants", argv, time.perf_counter() - t_all, about, "\n".join([head] + body),
                  args.results or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
