"""CuPy paths against the numpy paths on the same inputs (run with ``pytest -m gpu`` on a machine with a GPU)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _gpu():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # no CuPy, or no driver / device
        return None


cp = _gpu()
needs_gpu = pytest.mark.skipif(cp is None, reason="needs CuPy and a CUDA device")

from bigrfm import RFMClassifier, RFMRegressor  # noqa: E402
from bigrfm.numerics.agop import kernel_agop_block  # noqa: E402
from bigrfm.numerics.kernels import GaussianKernel, LaplaceKernel  # noqa: E402
from bigrfm.model.predictors import KernelPredictor, kernel_predict_block  # noqa: E402
from bigrfm.solvers.nystrom import gram_matvec_block  # noqa: E402


def problem(d, m=300, b=2000, c=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(b, d)).astype(np.float32)
    Z = rng.normal(size=(m, d))
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    M = A @ A.T + 0.5 * np.eye(d)
    return X, Z, M, rng.normal(size=(m, c)), rng.normal(size=(b, c)).astype(np.float32)


@needs_gpu
@pytest.mark.parametrize("kernel", [LaplaceKernel(4.0), GaussianKernel(3.0)], ids=["laplace", "gaussian"])
@pytest.mark.parametrize("d", [9, 32, 100])  # 100 > MAX_RANK: the unfused GPU path
def test_gram_matvec_and_predict_match_numpy(kernel, d):
    X, Z, M, v, Y = problem(d)
    bc = KernelPredictor(kernel, M, Z, v).broadcast(np, "float32")
    args = {k: bc[k] for k in ("kernel", "S", "Zt", "zsq")}
    ref = gram_matvec_block(X, Y, v=v.astype(np.float32), with_rhs=True, **args)
    got = gram_matvec_block(cp.asarray(X), cp.asarray(Y), v=v.astype(np.float32), with_rhs=True, **args)
    for key in ("KtKv", "KtY"):
        assert np.all(np.isfinite(got[key]))
        np.testing.assert_allclose(got[key], ref[key], rtol=2e-4, atol=2e-4 * np.abs(ref[key]).max())
    p_ref = kernel_predict_block(X, None, **bc)
    p_gpu = cp.asnumpy(kernel_predict_block(cp.asarray(X), None, **bc))
    np.testing.assert_allclose(p_gpu, p_ref, rtol=2e-4, atol=2e-4 * np.abs(p_ref).max())


@needs_gpu
@pytest.mark.parametrize("diag", [False, True])
def test_agop_block_matches_numpy(diag):
    X, Z, M, alpha, _ = problem(16)
    M = np.diag(M).copy() if diag else M
    bc = KernelPredictor(LaplaceKernel(4.0), M, Z, alpha).broadcast(np, "float32")
    ref = kernel_agop_block(X, None, diag=diag, **bc)
    got = kernel_agop_block(cp.asarray(X), None, diag=diag, **bc)
    assert np.all(np.isfinite(got.gram))
    np.testing.assert_allclose(got.gram, ref.gram, rtol=1e-3, atol=1e-4 * np.abs(ref.gram).max())
    np.testing.assert_allclose(got.grad_sum, ref.grad_sum, rtol=1e-3, atol=1e-4 * np.abs(ref.grad_sum).max())


@needs_gpu
@pytest.mark.parametrize("solver", ["nystrom", "rff"])
def test_fit_on_gpu_matches_cpu(solver):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 8))
    y = X[:, 0] * X[:, 1] + 0.05 * rng.normal(size=3000)
    kw = dict(iters=2, solver=solver, n_centers=500, n_components=1024, dtype="float32", random_state=0)
    cpu = RFMRegressor(device="cpu", **kw).fit(X, y)
    gpu = RFMRegressor(device="cuda", **kw).fit(X, y)
    np.testing.assert_allclose(gpu.M_, cpu.M_, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(gpu.predict(X[:200]), cpu.predict(X[:200]), rtol=1e-2, atol=1e-2)


@needs_gpu
def test_classifier_on_gpu():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    clf = RFMClassifier(iters=1, device="cuda", dtype="float32", solver="nystrom", n_centers=800, random_state=0).fit(X[:1500], y[:1500])
    assert clf.score(X[1500:], y[1500:]) > 0.93


@needs_gpu
def test_patch_features_on_cupy_blocks_match_numpy():
    from bigrfm import PatchFeatures

    X = np.random.default_rng(0).random((300, 28 * 28)).astype(np.float32)
    pf = PatchFeatures((28, 28), n_filters=16, pool=4, n_fit_images=200, random_state=0).fit(X)
    ref = pf.transform(X)
    got = pf.transform(cp.asarray(X))
    assert isinstance(got, cp.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(cp.asnumpy(got), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@needs_gpu
def test_falkon_factors_and_exact_solver_on_the_device_match_numpy():
    from bigrfm.numerics.linalg import cholesky_solve, kernel_matrix
    from bigrfm.solvers.nystrom import FalkonPreconditioner

    X, Z, M, alpha, _ = problem(9, m=400)
    K = kernel_matrix(LaplaceKernel(4.0), M, Z, Z)
    Kg = kernel_matrix(LaplaceKernel(4.0), M, cp.asarray(Z), cp.asarray(Z))
    assert isinstance(Kg, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(Kg), K, rtol=1e-12, atol=1e-12)
    ref = FalkonPreconditioner.build(K, 1e-6, "float32")
    got = FalkonPreconditioner.build(Kg, 1e-6, "float32")
    assert isinstance(got.T, cp.ndarray) and isinstance(got.A, cp.ndarray)
    beta = np.random.default_rng(0).normal(size=(400, 2))
    for fn in ("apply", "apply_t"):
        np.testing.assert_allclose(cp.asnumpy(getattr(got, fn)(cp.asarray(beta))), getattr(ref, fn)(beta), rtol=1e-8, atol=1e-10)
    A = K + 1e-3 * np.eye(400)
    np.testing.assert_allclose(cp.asnumpy(cholesky_solve(cp.asarray(A), beta, what="t", fix="t")),
                               cholesky_solve(A.copy(), beta, what="t", fix="t"), rtol=1e-8, atol=1e-10)


@needs_gpu
def test_fused_kernels_accept_empty_blocks():
    from bigrfm.numerics.cuda_kernels import fused_ktu, fused_kv

    Xt, Zt = cp.zeros((0, 9), cp.float32), cp.ones((50, 9), cp.float32)
    assert fused_kv(LaplaceKernel(1.0), Xt, Zt, cp.ones((50, 2), cp.float32)).shape == (0, 2)
    assert float(abs(fused_ktu(LaplaceKernel(1.0), Xt, Zt, cp.ones((0, 2), cp.float32))).sum()) == 0.0


@needs_gpu
def test_pinned_copies_and_resident_blocks_give_the_same_fit_on_two_threads():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20000, 6))
    y = np.sin(X[:, 0]) * X[:, 1]
    kw = dict(iters=1, solver="nystrom", n_centers=1000, dtype="float32", random_state=0, block_rows=2500)
    a = RFMRegressor(device="cuda", **kw).fit(X, y)
    b = RFMRegressor(device="cuda", n_workers=1, **kw).fit(X, y)  # the same on one GPU, other thread layout
    np.testing.assert_allclose(a.predict(X[:500]), b.predict(X[:500]), rtol=1e-4, atol=1e-4)


@needs_gpu
def test_cli_predicts_a_cpu_fitted_model_on_the_gpu(tmp_path):
    import zarr
    from click.testing import CliRunner

    from bigrfm.io.convert import create_dataset
    from bigrfm_cli.main import cli

    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 5)).astype(np.float32)
    y = X[:, 0] * X[:, 1]
    with create_dataset(tmp_path / "d.zarr", 5) as w:
        w.append(X, y)
    model = RFMRegressor(iters=1, dtype="float32", random_state=0).fit(X, y)
    model.save(tmp_path / "m")
    r = CliRunner().invoke(cli, ["predict", str(tmp_path / "m"), str(tmp_path / "d.zarr"), "--out", str(tmp_path / "p.zarr"),
                                 "--device", "cuda", "--scheduler", "threads"])
    assert r.exit_code == 0, r.output
    got = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["y_pred"][:]
    np.testing.assert_allclose(got, model.predict(X), rtol=1e-3, atol=1e-3)
