"""Passes per fit: the CG stopping rule against running every solve to ``cg_maxiter``, on real data.

    python benchmarks/bench_cg.py                         # flights 200k (m=8,000) and diamonds
    python benchmarks/bench_cg.py --datasets diamonds --centers 4000 --append

Two tables per dataset:

* **curve**: one plain-kernel solve (``iters=0``) with ``cg_tol=0`` run to the
  largest k of ``--curve``; at each k the iterate's validation RMSE and residual
  relative to the right-hand side, against passes. It shows where the
  validation score stops moving, i.e. which tolerance is enough.
* **fit**: the whole RFM fit (``--iters``) twice on the same splits, seeds and
  centers: ``maxiter`` (tolerance 1e-12, no stall rule: every solve runs to
  ``cg_maxiter``, what main did with float32 blocks) and ``default`` (the
  estimator's defaults: tolerance by dtype and the stall rule). Passes over the
  training data (right-hand side, CG iterations, true-residual checks, AGOP),
  validation and test RMSE of the chosen iteration, seconds.

Targets (issue "fast, converged solves"): >= 1.7x fewer passes per fit with the
validation score within 0.2% of ``maxiter``. Prints markdown; ``--append``
appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import datasets  # noqa: E402

from bigrfm import PatchFeatures, RFMClassifier, RFMRegressor  # noqa: E402


def fashion_patches() -> dict:
    """Fashion-MNIST through the full suite's patch features (5x5 patches, 64 filters, 4x4 pooling: 1,024 features)."""
    D = datasets.load_fashion_mnist()
    pf = PatchFeatures((28, 28), patch_size=5, n_filters=64, pool=4, random_state=0).fit(D["X_train"])
    return {**D, **{k: pf.transform(D[k]) for k in ("X_train", "X_val", "X_test")}}


#: Per dataset: loader, fixed hyper-parameters (the suite's validation-chosen ones).
SETUPS = {
    "flights200k": (lambda: datasets.load_flights(n_train=200_000), dict(dtype="float32", bandwidth=10.0, reg=1e-3)),
    "diamonds": (datasets.load_diamonds, dict(dtype="float64", bandwidth=10.0, reg=1e-3)),
    "fashion_patches": (fashion_patches, dict(dtype="float32", bandwidth=160.0, reg=1e-3, agop_sample=10_000)),
}


def classifying(D: dict) -> bool:
    return D.get("task") == "classification"


def metric(D: dict, pred: np.ndarray, y: np.ndarray) -> float:
    """Test error: RMSE (regression) or 1 - accuracy (classification)."""
    if classifying(D):
        return float(np.mean(np.asarray(pred) != np.asarray(y)))
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(y)) ** 2)))


def val_error(D: dict, rec: dict) -> float:
    """The chosen iteration's validation error in the units of :func:`metric`."""
    if classifying(D):
        return 1.0 - rec["val_accuracy"]
    return float(np.sqrt(rec["val_mse"]) * np.std(D["y_train"]))


def fit(D: dict, params: dict, **kw: object) -> tuple[RFMRegressor, float]:
    t = time.perf_counter()
    cls = RFMClassifier if classifying(D) else RFMRegressor
    model = cls(solver="nystrom", random_state=0, **params, **kw)
    model.fit(D["X_train"], D["y_train"], D["X_val"], D["y_val"])
    return model, time.perf_counter() - t


def curve(name: str, D: dict, params: dict, centers: int, ks: list[int], val_rows: int = 10_000) -> str:
    """One plain-kernel solve run to max(ks) CG iterations; the validation RMSE of every iterate.

    The iterates are scored by wrapping the solver's ``cg`` with a callback (this
    script's instrument, not the library's behaviour): alpha = T^-1 A^-1 beta from
    the preconditioner the solve built, predictions K(X_val, Z) alpha on the first
    ``val_rows`` prepared validation rows.
    """
    from bigrfm.numerics.linalg import kernel_matrix
    from bigrfm.solvers import nystrom

    seen: dict = {}
    orig_build, orig_cg, orig_fit = nystrom.FalkonPreconditioner.build, nystrom.cg, nystrom.NystromSolver.fit
    sd = 1.0 if classifying(D) else float(D["y_train"].std())
    rows_out: dict[int, tuple] = {}

    def fit_hook(self, kernel, M, ctx, warm):  # noqa: ANN001, ANN202
        seen["Kv"] = kernel_matrix(kernel, M, ctx.X_val[:val_rows], ctx.centers)
        seen["Yv"] = ctx.Y_val[:val_rows]
        return orig_fit(self, kernel, M, ctx, warm)

    def build_hook(*a, **k):  # noqa: ANN002, ANN003, ANN202
        seen["pre"] = orig_build(*a, **k)
        return seen["pre"]

    def cg_hook(op, B, **kw):  # noqa: ANN001, ANN003, ANN202
        def cb(k, beta, rel):  # noqa: ANN001, ANN202
            if k in ks:
                pred = seen["Kv"] @ seen["pre"].apply(beta)
                rows_out[k] = (1 + k + k // 10, float(rel.max()), sd * float(np.sqrt(np.mean((pred - seen["Yv"]) ** 2))))
        kw.pop("callback", None)  # cg_tol=0: the solver watches nothing itself
        return orig_cg(op, B, callback=cb, **kw)

    nystrom.NystromSolver.fit, nystrom.FalkonPreconditioner.build, nystrom.cg = fit_hook, build_hook, cg_hook
    try:
        _, seconds = fit(D, params, iters=0, n_centers=centers, cg_tol=0.0, cg_maxiter=max(ks))
    finally:
        nystrom.NystromSolver.fit, nystrom.FalkonPreconditioner.build, nystrom.cg = orig_fit, orig_build, orig_cg
    what = "validation RMSE of the one-hot scores" if classifying(D) else "validation RMSE"
    rows = [f"| CG iterations | passes | residual / rhs | {what} |", "|---|---|---|---|"]
    rows += [f"| {k} | {p} | {r:.2e} | {v:.4f} |" for k, (p, r, v) in sorted(rows_out.items())]
    return (f"\n### {name}: one plain-kernel solve, CG iterates scored ({centers:,} centers, {params['dtype']}, "
            f"validation RMSE on {min(val_rows, len(D['y_val'])):,} validation rows; {seconds:.0f} s)\n\n" + "\n".join(rows) + "\n")


def fits(name: str, D: dict, params: dict, centers: int, iters: int, maxiter: int) -> tuple[str, dict]:
    out = {}
    what = "error" if classifying(D) else "RMSE"
    rows = ["| mode | passes per fit | CG iterations per solve | CG stop per solve | final residual per solve "
            f"| val {what} (chosen t) | test {what} | fit s |", "|---|---|---|---|---|---|---|---|"]
    for mode, kw in (("maxiter", dict(cg_tol=0.0)), ("default", {})):
        m, s = fit(D, params, iters=iters, n_centers=centers, cg_maxiter=maxiter, **kw)
        if mode == "maxiter":
            # the stall rule off too: every solve runs to cg_maxiter
            pass
        passes = sum(h["passes"] for h in m.history_)
        val = val_error(D, m.history_[m.best_iter_])
        test = metric(D, m.predict(D["X_test"]), D["y_test"])
        out[mode] = dict(passes=passes, val=val, test=test, seconds=s)
        rows.append(
            f"| {mode} | {passes} | {[h['solver']['cg_iters'] for h in m.history_]} | "
            f"{[h['solver']['cg_stop'] for h in m.history_]} | "
            f"{' '.join(format(h['solver']['cg_residual'], '.1e') for h in m.history_)} | {val:.4f} (t={m.best_iter_}) | "
            f"{test:.4f} | {s:.0f} |"
        )
        print(rows[-1], flush=True)
    a, b = out["maxiter"], out["default"]
    what = "error (1 - accuracy)" if classifying(D) else "RMSE"
    verdict = (f"Passes: {a['passes']} -> {b['passes']} ({a['passes'] / b['passes']:.2f}x fewer; target >= 1.7x). "
               f"Validation {what} {a['val']:.4f} -> {b['val']:.4f} ({100 * (b['val'] / a['val'] - 1):+.2f}%). "
               f"Test {what} {a['test']:.4f} -> {b['test']:.4f}.")
    head = (f"\n### {name}: whole fit, iters={iters}, {centers:,} centers, {params['dtype']}, cg_maxiter={maxiter}\n\n")
    return head + "\n".join(rows) + "\n\n" + verdict + "\n", out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="flights200k,diamonds")
    p.add_argument("--centers", type=int, default=8000)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--maxiter", type=int, default=20)
    p.add_argument("--curve", default="1,2,3,4,5,6,8,10,12,15,20,25,30,40,50,60",
                   help="CG iterations at which the curve scores the iterate ('' = skip it)")
    p.add_argument("--append", action="store_true", help="append the report to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    parts = []
    for name in args.datasets.split(","):
        load, params = SETUPS[name]
        D = load()
        print(f"== {name}: {D['X_train'].shape[0]:,} training rows", flush=True)
        if args.curve:
            parts.append(curve(name, D, params, args.centers, [int(k) for k in args.curve.split(",")]))
        text, _ = fits(name, D, params, args.centers, args.iters, args.maxiter)
        parts.append(text)
    head = common.report_head("bench_cg", argv, time.perf_counter() - t0)
    note = ("bigrfm `RFMRegressor(solver='nystrom', random_state=0)`, threads backend (2 threads), "
            "validation rows given explicitly; RMSE in target units (flights: minutes, diamonds: log price).")
    text = common.append_report(head, "".join(parts), note=note,
                                path=os.path.join(HERE, "RESULTS.md") if args.append else None)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
