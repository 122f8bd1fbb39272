"""One run on a lent GPU machine gives every number the GPU issue asks for, row by row.

    python benchmarks/gpu_check.py               # on the GPU machine (about 6-8 minutes on an H100/H200)
    python benchmarks/gpu_check.py --quick       # skip the 2.85M-row fit
    python benchmarks/gpu_check.py --no-gpu-ok   # here, without a GPU: every CPU step, GPU steps reported as skipped

Steps, each in its own try/except (a failure prints its error and the run goes on);
every row is printed and flushed the moment it is measured:

1. versions: CuPy, CUDA runtime and driver, NVRTC, the card, numpy/scipy/dask;
2. ``pytest -m gpu tests/test_gpu.py -rfE`` (every CuPy path against numpy), last 4 KB of its output;
3. fp32 and TF32 GEMM rates of the card, in this process;
4. kernel-pass throughput (entries/s of sum_b K_b^T (K_b v)), fused CUDA kernels and the unfused
   GPU path at d = 9, 32, 128, 784, the compiled kernels' registers and local memory, and the
   numpy path on this machine's CPUs for the ratio;
5. flights-3m fits (seconds, test RMSE, peak GPU memory from memGetInfo) at 2e5 and all 2.85e6
   training rows on one GPU, and the 2e5 fit on the CPUs;
6. ``bigrfm fit/predict/evaluate --device cuda --gpus 1`` through the CLI.

flights-3m is read from ``benchmarks/_data/vega-datasets-3.2.1`` (carry that folder to the
machine: the training parquet is about 27 MB); without it the fits run on synthetic data of the
same shape, with a note. Exit code 0 when every step that could run passed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FAILED: list[str] = []


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def step(name: str):  # noqa: ANN201
    """Run the decorated step at once, in its own try/except."""
    def run(fn):  # noqa: ANN001, ANN202
        say("", f"## {name}", "")
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a failed step must not lose the others
            FAILED.append(name)
            say(f"FAILED: {type(exc).__name__}: {exc}", *traceback.format_exc().splitlines()[-6:])
        say(f"({name}: {time.perf_counter() - t:.1f} s)")
        return fn
    return run


def median_time(fn, repeat: int = 3, sync=None) -> float:  # noqa: ANN001
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def gpu_module():  # noqa: ANN201
    try:
        import cupy as cp

        return cp if cp.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device
        return None


def flights(n_train: int) -> tuple[dict, str]:
    """flights-3m from the carried folder, or synthetic data of the same shape (and a note saying so)."""
    import datasets

    try:
        return datasets.load_flights(n_train=n_train), "flights-3m"
    except Exception as exc:  # noqa: BLE001 - the GPU machine cannot download
        rng = np.random.default_rng(0)
        n = n_train + 150_000
        X = rng.normal(size=(n, 9)).astype(np.float32)
        y = 30 * np.sin(X[:, 0]) * X[:, 1] + 10 * X[:, 2] ** 2 + 25 * rng.standard_normal(n)
        d = {"X_train": X[:n_train], "y_train": y[:n_train], "X_val": X[n_train:n_train + 50_000],
             "y_val": y[n_train:n_train + 50_000], "X_test": X[n_train + 50_000:], "y_test": y[n_train + 50_000:]}
        return d, f"synthetic data of flights-3m's shape (flights-3m not found: {type(exc).__name__})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 2.85M-row fit")
    ap.add_argument("--centers", type=int, default=8000)
    ap.add_argument("--no-gpu-ok", action="store_true", help="exit 0 without a GPU (GPU steps report 'skipped')")
    a = ap.parse_args(argv)
    cp = gpu_module()
    if cp is None:
        say("no usable GPU (CuPy missing or no device): GPU steps are skipped")
        if not a.no_gpu_ok:
            return 2

    @step("1. versions")
    def _versions() -> None:
        import dask
        import scipy

        say(f"numpy {np.__version__}, scipy {scipy.__version__}, dask {dask.__version__}, Python {sys.version.split()[0]}")
        if cp is None:
            say("skipped: no GPU")
            return
        props = cp.cuda.runtime.getDeviceProperties(0)
        free, total = cp.cuda.Device(0).mem_info
        say(f"CuPy {cp.__version__}; CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, driver "
            f"{cp.cuda.runtime.driverGetVersion()}, NVRTC {cp.cuda.nvrtc.getVersion()}",
            f"GPU 0: {props['name'].decode()}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), "
            f"{cp.cuda.runtime.getDeviceCount()} device(s)")

    @step("2. GPU tests")
    def _tests() -> None:
        if cp is None:
            say("skipped: no GPU")
            return
        r = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-rfE", "-q", "-p", "no:cacheprovider",
                            str(HERE.parent / "tests" / "test_gpu.py")], capture_output=True, text=True)
        say((r.stdout + r.stderr)[-4096:])
        if r.returncode != 0:
            raise RuntimeError(f"the GPU tests failed (exit {r.returncode})")

    rates: dict[str, float] = {}

    @step("3. GEMM rates")
    def _gemm() -> None:
        if cp is None:
            say("skipped: no GPU")
            return
        A = cp.random.standard_normal((8192, 8192), dtype=cp.float32)
        sync = cp.cuda.Device().synchronize
        for label, mode in (("fp32", "0"), ("tf32", "1")):
            os.environ["CUPY_TF32"] = mode  # read by cuBLAS calls made after it is set
            A @ A
            sync()
            rates[label] = 2 * 8192**3 / median_time(lambda: A @ A, sync=sync)
            say(f"{label} GEMM 8192^3: {rates[label] / 1e12:.1f} TFLOP/s")
        os.environ["CUPY_TF32"] = "0"

    @step("4. kernel-pass throughput")
    def _throughput() -> None:
        from bigrfm.model.predictors import KernelPredictor
        from bigrfm.numerics import cuda_kernels
        from bigrfm.numerics.kernels import LaplaceKernel
        from bigrfm.solvers.nystrom import gram_matvec_block

        rng = np.random.default_rng(0)
        m, b, nb = 4096, 1 << 20, 1 << 13
        say("| d | m | fused entries/s | unfused GPU entries/s | numpy CPU entries/s | fused regs / local bytes |",
            "|---|---|---|---|---|---|")
        for d in (9, 32, 128, 784):
            X = rng.normal(size=(b if cp is not None else nb, d)).astype(np.float32)
            Z = rng.normal(size=(m, d))
            v = rng.normal(size=(m, 1)).astype(np.float32)
            bc = KernelPredictor(LaplaceKernel(10.0), np.eye(d), Z, v).broadcast(np, "float32")
            args = {k: bc[k] for k in ("kernel", "S", "Zt", "zsq")}
            cpu = nb * m / median_time(lambda: gram_matvec_block(X[:nb], None, v=v, **args), repeat=1)
            res, regs = {"fused": float("nan"), "unfused": float("nan")}, "-"
            if cp is not None:
                Xg, sync = cp.asarray(X), cp.cuda.Device().synchronize
                for label, enabled in (("fused", True), ("unfused", False)):
                    cuda_kernels.ENABLED = enabled
                    gram_matvec_block(Xg, None, v=v, **args)
                    res[label] = b * m / median_time(lambda: gram_matvec_block(Xg, None, v=v, **args), sync=sync)
                cuda_kernels.ENABLED = True
                if d <= cuda_kernels.MAX_RANK:
                    fns = [cuda_kernels._module(d, 1, False).get_function(n) for n in ("kv", "ktu")]
                    regs = ", ".join(f"{f.num_regs} / {f.local_size_bytes}" for f in fns)
            say(f"| {d} | {m} | {res['fused']:.2e} | {res['unfused']:.2e} | {cpu:.2e} | {regs} |")

    @step("5. flights-3m fits")
    def _flights() -> None:
        from bigrfm import RFMRegressor

        say("| data | device | train rows | centers | fit s | test RMSE | peak GPU memory GB |", "|---|---|---|---|---|---|---|")
        runs = [(200_000, "cuda"), (200_000, "cpu")] + ([] if a.quick else [(2_850_000, "cuda")])
        for n, device in runs:
            if device == "cuda" and cp is None:
                say(f"| | cuda | {n:,} | | skipped: no GPU | | |")
                continue
            D, what = flights(n)
            m = a.centers if device == "cuda" else 2000
            if cp is not None:
                cp.get_default_memory_pool().free_all_blocks()
            est = RFMRegressor(iters=3, solver="nystrom", n_centers=m, dtype="float32", device=device, random_state=0,
                               memory_budget="32GB")
            t = time.perf_counter()
            est.fit(D["X_train"], D["y_train"], D["X_val"], D["y_val"])
            fit = time.perf_counter() - t
            # CuPy's pool keeps what it allocated: memGetInfo's used bytes after the fit are its peak
            used = (lambda free, total: total - free)(*cp.cuda.Device().mem_info) if cp is not None else 0
            rmse = float(np.sqrt(np.mean((est.predict(D["X_test"]) - D["y_test"]) ** 2)))
            say(f"| {what} | {device} | {n:,} | {m:,} | {fit:.1f} | {rmse:.2f} | {used / 1e9:.2f} |")

    @step("6. the CLI on one GPU")
    def _cli() -> None:
        if cp is None:
            say("skipped: no GPU")
            return
        from bigrfm.io.convert import create_dataset

        D, what = flights(200_000)
        with tempfile.TemporaryDirectory() as tmp:
            with create_dataset(f"{tmp}/train.zarr", 9) as w:
                w.append(D["X_train"], D["y_train"])
                w.append(D["X_val"], D["y_val"], validation=True)
            with create_dataset(f"{tmp}/test.zarr", 9) as w:
                w.append(D["X_test"], D["y_test"])
            for args in (["fit", f"{tmp}/train.zarr", "--out", f"{tmp}/m", "--device", "cuda", "--gpus", "1",
                          "--scheduler", "threads", "--iters", "2", "--centers", str(a.centers)],
                         ["predict", f"{tmp}/m", f"{tmp}/test.zarr", "--out", f"{tmp}/p.zarr", "--device", "cuda",
                          "--scheduler", "threads"],
                         ["evaluate", f"{tmp}/m", f"{tmp}/test.zarr", "--device", "cuda", "--scheduler", "threads"]):
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "bigrfm_cli.main", *args], capture_output=True, text=True)
                say(f"bigrfm {args[0]} ({what}): exit {r.returncode}, {time.perf_counter() - t:.1f} s",
                    *(r.stdout.strip().splitlines()[-3:]), *(r.stderr.strip().splitlines()[-3:] if r.returncode else []))
                if r.returncode != 0:
                    raise RuntimeError(f"bigrfm {args[0]} failed")

    say("", f"failed steps: {FAILED or 'none'}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    raise SystemExit(main())
