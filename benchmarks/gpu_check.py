"""One-shot GPU check for a lent machine: the gpu tests, then one table.

    python benchmarks/gpu_check.py [--quick]

1. ``pytest -m gpu tests/test_gpu.py`` (every CuPy path against numpy).
2. Kernel-pass throughput (kernel entries/s of sum_b K_b^T (K_b v)) of the fused
   CUDA kernels and of the unfused GPU path (GEMM + elementwise) at d = 9, 32,
   128, 784, next to the card's fp32 GEMM rate measured in the same process,
   and the numpy path on this machine's CPU for the ratio.
3. flights-3m fits on one GPU at n = 2e5 and all 2.85e6 training rows (seconds,
   test RMSE, peak GPU memory) and the same 2e5 fit on the CPU.

Sized to finish in under 8 minutes on an H100/H200. Exits 2 without a GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def median_time(fn, repeat=3) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 2.85M-row fit")
    ap.add_argument("--centers", type=int, default=8000)
    a = ap.parse_args()
    try:
        import cupy as cp

        assert cp.cuda.runtime.getDeviceCount() > 0
    except Exception as exc:  # noqa: BLE001
        print(f"no usable GPU ({exc}); nothing to check", file=sys.stderr)
        sys.exit(2)
    from bigrfm import RFMRegressor, cuda_kernels
    from bigrfm.numerics.kernels import LaplaceKernel
    from bigrfm.model.predictors import KernelPredictor
    from bigrfm.solvers.nystrom import gram_matvec_block

    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(HERE.parent / "tests" / "test_gpu.py"), "-p", "no:cacheprovider"],
                       capture_output=True, text=True)
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:])

    A = cp.random.standard_normal((8192, 8192), dtype=cp.float32)
    A @ A
    cp.cuda.Device().synchronize()
    gemm = 2 * 8192**3 / median_time(lambda: (A @ A, cp.cuda.Device().synchronize()))
    A = None  # free the GEMM operands
    rows = [f"GPU: {name}; fp32 GEMM {gemm / 1e12:.1f} TFLOP/s (same process)", "",
            "| d | m | fused entries/s | unfused GPU entries/s | numpy CPU entries/s | fused / GEMM-bound |", "|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    m, b = 4096, 1 << 18
    for d in (9, 32, 128, 784):
        X = rng.normal(size=(b, d)).astype(np.float32)
        Z = rng.normal(size=(m, d))
        v = rng.normal(size=(m, 1)).astype(np.float32)
        bc = KernelPredictor(LaplaceKernel(10.0), np.eye(d), Z, v).broadcast(np, "float32")
        args = {k: bc[k] for k in ("kernel", "S", "Zt", "zsq")}
        Xg = cp.asarray(X)
        res = {}
        for label, enabled in (("fused", True), ("unfused", False)):
            cuda_kernels.ENABLED = enabled
            gram_matvec_block(Xg, None, v=v, **args)
            res[label] = b * m / median_time(lambda: (gram_matvec_block(Xg, None, v=v, **args), cp.cuda.Device().synchronize()))
        cuda_kernels.ENABLED = True
        nb = 1 << 14
        res["cpu"] = nb * m / median_time(lambda: gram_matvec_block(X[:nb], None, v=v, **args), repeat=1)
        bound = gemm / (2 * d + 4)  # entries/s if only the distance GEMM and the two products counted
        rows.append(f"| {d} | {m} | {res['fused']:.2e} | {res['unfused']:.2e} | {res['cpu']:.2e} | {res['fused'] / bound:.2f} |")

    sys.path.insert(0, str(HERE))
    import datasets

    rows += ["", "| flights-3m | device | train rows | fit s | test RMSE | peak GPU memory GB |", "|---|---|---|---|---|---|"]
    for n, device in [(200_000, "cuda"), (200_000, "cpu")] + ([] if a.quick else [(2_850_000, "cuda")]):
        d = datasets.load_flights(n_train=n)
        pool = cp.get_default_memory_pool()
        pool.free_all_blocks()
        est = RFMRegressor(iters=3, solver="nystrom", n_centers=a.centers if device == "cuda" else 2000, dtype="float32",
                           device=device, random_state=0, cg_maxiter=20)
        t = time.perf_counter()
        est.fit(d["X_train"], d["y_train"], d["X_val"], d["y_val"])
        fit = time.perf_counter() - t
        rmse = float(np.sqrt(np.mean((est.predict(d["X_test"]) - d["y_test"]) ** 2)))
        rows.append(f"| | {device} | {n:,} | {fit:.1f} | {rmse:.2f} | {pool.total_bytes() / 1e9:.2f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
