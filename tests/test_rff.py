"""Random Fourier features: gradients, blocked AGOP, kernel approximation, ridge solve."""

import numpy as np
import pytest

from bigrfm.numerics.agop import agop_from_sums
from bigrfm.exceptions import InputError, SolverError
from bigrfm.numerics.kernels import ExpPowerKernel, GaussianKernel, LaplaceKernel
from bigrfm.numerics.linalg import metric_factor
from bigrfm.numerics.random_features import (
    GramSums,
    RFFMap,
    rff_agop_block,
    rff_features,
    rff_grad_block,
    rff_gram_block,
    rff_predict_block,
    rff_solve,
    sample_rff,
)
from closeness import assert_close

KERNELS = [LaplaceKernel(2.0), GaussianKernel(1.5)]
KIDS = ["laplace", "gaussian"]


def random_spd(rng, d):
    A = rng.normal(size=(d, d))
    return A @ A.T / d + 0.1 * np.eye(d)


def metric(rng, d, diag):
    """A random metric M and its factor S (a (d,) vector for a diagonal metric)."""
    M = rng.uniform(0.3, 1.5, size=d) if diag else random_spd(rng, d)
    return M, metric_factor(M)


def setup(kernel, diag, d=5, c=3, D=64, seed=0):
    rng = np.random.default_rng(seed)
    _, S = metric(rng, d, diag)
    rank = d if diag else S.shape[1]
    rffmap = sample_rff(kernel, D, rank, np.random.default_rng(seed + 1))
    w = rng.normal(size=(D, c))
    return rng, S, rffmap, w


def naive_gradients(X, S, rffmap, w):
    """g_c(x) = -sqrt(2/D) S Omega (sin(Omega^T S^T x + b) o w_c), row by row; (n, c, d)."""
    Sm = np.diag(S) if S.ndim == 1 else S
    D = rffmap.omega.shape[1]
    out = []
    for x in X:
        s = np.sin(rffmap.omega.T @ (Sm.T @ x) + rffmap.phase)
        out.append([-np.sqrt(2.0 / D) * Sm @ (rffmap.omega @ (s * w[:, k])) for k in range(w.shape[1])])
    return np.array(out)


# -- sampling -----------------------------------------------------------------------


def test_sample_shapes_and_seed():
    a = sample_rff(LaplaceKernel(2.0), 16, 3, np.random.default_rng(0))
    b = sample_rff(LaplaceKernel(2.0), 16, 3, np.random.default_rng(0))
    assert isinstance(a, RFFMap) and a.kernel_name == "laplace"
    assert a.omega.shape == (3, 16) and a.phase.shape == (16,) and a.omega.dtype == np.float64
    np.testing.assert_array_equal(a.omega, b.omega)
    assert np.all((a.phase >= 0) & (a.phase < 2 * np.pi))


def test_gaussian_frequencies_have_variance_one_over_L_squared():
    m = sample_rff(GaussianKernel(0.5), 20000, 2, np.random.default_rng(0))
    assert np.var(m.omega) == pytest.approx(1 / 0.25, rel=0.03)


@pytest.mark.parametrize(
    "args",
    [(ExpPowerKernel(1.0, q=0.5), 8, 2), (LaplaceKernel(1.0), 0, 2), (LaplaceKernel(1.0), 8, 0)],
)
def test_sample_rejects_bad_input(args):
    with pytest.raises(InputError) as err:
        sample_rff(*args, np.random.default_rng(0))
    if isinstance(args[0], ExpPowerKernel):
        assert "laplace" in str(err.value) and "gaussian" in str(err.value)


# -- (a) gradients against finite differences ------------------------------------


@pytest.mark.parametrize("kernel", KERNELS, ids=KIDS)
@pytest.mark.parametrize("diag", [False, True], ids=["full", "diag"])
def test_gradient_equals_finite_differences(kernel, diag):
    rng, S, rffmap, w = setup(kernel, diag)
    X = rng.normal(size=(7, 5))
    G = rff_grad_block(X, None, S=S, rffmap=rffmap, w=w)
    assert G.shape == (7, 3, 5)
    h = 1e-6
    fd = np.empty_like(G)
    for j in range(5):
        E = np.zeros(5)
        E[j] = h
        up = rff_predict_block(X + E, None, S=S, rffmap=rffmap, w=w)
        down = rff_predict_block(X - E, None, S=S, rffmap=rffmap, w=w)
        fd[:, :, j] = (up - down) / (2 * h)
    # Laplace frequencies are heavy-tailed (Cauchy): the h^2 truncation error scales
    # with the largest |omega|^3, so compare on the scale of the gradients
    np.testing.assert_allclose(G, fd, rtol=1e-6, atol=1e-7 * np.abs(G).max())
    # summation order differs from the naive loop: compare on the scale of the gradients
    np.testing.assert_allclose(G, naive_gradients(X, S, rffmap, w), rtol=1e-10, atol=1e-10 * np.abs(G).max())


def test_rank_deficient_metric():
    # M of rank 2 in d = 4: omega lives in r = 2 coordinates, gradients in d = 4
    rng = np.random.default_rng(3)
    A = rng.normal(size=(4, 2))
    S = metric_factor(A @ A.T)
    assert S.shape == (4, 2)
    rffmap = sample_rff(LaplaceKernel(1.0), 32, 2, rng)
    w = rng.normal(size=(32, 2))
    X = rng.normal(size=(6, 4))
    G = rff_grad_block(X, None, S=S, rffmap=rffmap, w=w)
    # summation order differs from the naive loop: compare on the scale of the gradients
    np.testing.assert_allclose(G, naive_gradients(X, S, rffmap, w), rtol=1e-10, atol=1e-10 * np.abs(G).max())


# -- (b) blocked AGOP ----------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS, ids=KIDS)
@pytest.mark.parametrize("diag_metric", [False, True], ids=["full", "diag"])
@pytest.mark.parametrize("diag", [False, True], ids=["gram", "gram_diag"])
def test_blocked_agop_equals_naive_loop(kernel, diag_metric, diag):
    rng, S, rffmap, w = setup(kernel, diag_metric)
    n = 41
    X = rng.normal(size=(n, 5))
    G = naive_gradients(X, S, rffmap, w)  # (n, c, d)
    gram = np.einsum("ncd,nce->de", G, G)
    expected = np.diag(gram) if diag else gram
    one = rff_agop_block(X, None, S=S, rffmap=rffmap, w=w, diag=diag)
    assert_close(one.gram, expected, 1e-10)
    assert_close(one.grad_sum, G.sum(axis=0), 1e-10, scale=np.abs(G).sum(axis=0).max())
    assert one.count == n and one.gram.dtype == np.float64
    for block in (1, 6, 17):
        sums = None
        for s in range(0, n, block):
            part = rff_agop_block(X[s : s + block], None, S=S, rffmap=rffmap, w=w, diag=diag)
            sums = part if sums is None else sums + part
        assert sums.count == n
        assert_close(sums.gram, one.gram, 1e-10)
        assert_close(sums.grad_sum, one.grad_sum, 1e-10, scale=np.abs(G).sum(axis=0).max())
    # the sums hold gradients: finishing them needs no metric
    agop = agop_from_sums(one, None, centering=True, diag=diag)
    Gc = G - G.mean(axis=0)
    centered = np.einsum("ncd,nce->de", Gc, Gc) / n
    assert_close(agop, np.diag(centered) if diag else centered, 1e-9)


def test_float32_blocks_give_float64_sums():
    rng, S, rffmap, w = setup(GaussianKernel(1.5), False)
    X = rng.normal(size=(20, 5))
    Y = rng.normal(size=(20, 3))
    sums64 = rff_agop_block(X, None, S=S, rffmap=rffmap, w=w)
    sums32 = rff_agop_block(X.astype(np.float32), None, S=S, rffmap=rffmap, w=w)
    assert sums32.gram.dtype == np.float64
    np.testing.assert_allclose(sums32.gram, sums64.gram, rtol=1e-4, atol=1e-4 * np.abs(sums64.gram).max())
    assert rff_predict_block(X.astype(np.float32), None, S=S, rffmap=rffmap, w=w).dtype == np.float32
    gram32, rhs32 = rff_gram_block(X.astype(np.float32), Y, S=S, rffmap=rffmap)
    assert gram32.dtype == rhs32.dtype == np.float64


def test_gram_block_sums_over_blocks():
    rng, S, rffmap, _ = setup(LaplaceKernel(2.0), False)
    X = rng.normal(size=(30, 5))
    Y = rng.normal(size=(30, 2))
    gram, rhs = rff_gram_block(X, Y, S=S, rffmap=rffmap)
    Phi = rff_features(X @ S, rffmap)
    assert_close(gram, Phi.T @ Phi, 1e-12)
    assert_close(rhs, Phi.T @ Y, 1e-12)
    parts = [rff_gram_block(X[s : s + 8], Y[s : s + 8], S=S, rffmap=rffmap) for s in range(0, 30, 8)]
    total = sum(parts[1:], parts[0])
    assert isinstance(total, GramSums)
    assert_close(total.gram, gram, 1e-12)
    assert_close(total.rhs, rhs, 1e-12)


# -- (c) kernel approximation ----------------------------------------------------------


def exact_kernel(kernel, Xt, Zt):
    R = np.sqrt(np.maximum(((Xt[:, None, :] - Zt[None, :, :]) ** 2).sum(-1), 0))
    L = kernel.bandwidth
    return np.exp(-R / L) if isinstance(kernel, LaplaceKernel) else np.exp(-(R**2) / (2 * L**2))


def median_distance(Xt):
    R = np.sqrt(((Xt[:, None, :] - Xt[None, :, :]) ** 2).sum(-1))
    return float(np.median(R[np.triu_indices(len(Xt), 1)]))


@pytest.mark.parametrize("name", ["laplace", "gaussian"])
def test_features_approximate_the_kernel(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    S = metric_factor(random_spd(rng, 4))
    Xt = X @ S
    kernel = (LaplaceKernel if name == "laplace" else GaussianKernel)(median_distance(Xt))
    K = exact_kernel(kernel, Xt, Xt)
    errors = []
    for D in (200, 2000, 20000):
        Phi = rff_features(Xt, sample_rff(kernel, D, S.shape[1], np.random.default_rng(D)))
        errors.append(np.abs(Phi @ Phi.T - K).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


@pytest.mark.parametrize("name", ["laplace", "gaussian"])
def test_rff_ridge_approaches_exact_kernel_ridge(name):
    rng = np.random.default_rng(1)
    n, d, reg = 80, 4, 1.0
    X = rng.normal(size=(n, d))
    Xtest = rng.normal(size=(40, d))
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1] * X[:, 2], np.cos(X[:, 3])], axis=1)  # (n, 2)
    S = metric_factor(random_spd(rng, d))
    Xt, Tt = X @ S, Xtest @ S
    kernel = (LaplaceKernel if name == "laplace" else GaussianKernel)(median_distance(Xt))
    K = exact_kernel(kernel, Xt, Xt)
    exact = exact_kernel(kernel, Tt, Xt) @ np.linalg.solve(K + reg * np.eye(n), Y)
    errors = []
    # a D x D Cholesky per size: 3000 keeps the trend at a fraction of the time of 10^4
    for D in (60, 500, 3000):
        rffmap = sample_rff(kernel, D, S.shape[1], np.random.default_rng(D))
        gram, rhs = rff_gram_block(X, Y, S=S, rffmap=rffmap)
        w = rff_solve(gram, rhs, reg)
        pred = rff_predict_block(Xtest, None, S=S, rffmap=rffmap, w=w)
        errors.append(np.linalg.norm(pred - exact) / np.linalg.norm(exact))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1


# -- (d) the solve -----------------------------------------------------------------------


def test_solve_matches_dense_ridge_and_leaves_gram_untouched():
    rng = np.random.default_rng(4)
    Phi = rng.normal(size=(50, 10))
    Y = rng.normal(size=(50, 2))
    gram = Phi.T @ Phi
    before = gram.copy()
    w = rff_solve(gram, Phi.T @ Y, 0.5)
    assert_close(w, np.linalg.solve(gram + 0.5 * np.eye(10), Phi.T @ Y), 1e-10)
    np.testing.assert_array_equal(gram, before)


def test_indefinite_system_raises_solver_error():
    rng, S, rffmap, _ = setup(LaplaceKernel(2.0), False)
    X = rng.normal(size=(30, 5))
    gram, rhs = rff_gram_block(X, rng.normal(size=(30, 1)), S=S, rffmap=rffmap)
    with pytest.raises(SolverError, match="increase reg"):
        rff_solve(gram, rhs, -1e3)


def test_block_functions_share_the_engine_signature():
    # block_fn(X_block, y_block, **broadcast): X and Y positional, the rest keyword-only
    import inspect

    for fn in (rff_gram_block, rff_predict_block, rff_grad_block, rff_agop_block):
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:2]] == ["X", "Y"]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:])


def test_several_ridges_from_one_pass_keep_the_validation_best():
    """RFFSolver.fit(regs=...): one pass, each ridge solved on its sums; the kept weights are those of a
    fit with the winning ridge alone, and each reported MSE is that ridge's on the validation rows."""
    import dataclasses

    from bigrfm.config import ExecConfig
    from bigrfm.engine import Engine
    from bigrfm.io.datasets import ArrayDataset
    from bigrfm.model.predictors import predict_in_blocks
    from bigrfm.model.prepare import Prepare
    from bigrfm.model.rfm import FitContext
    from bigrfm.numerics.kernels import LaplaceKernel
    from bigrfm.solvers.rff import RFFSolver

    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(300, 3)), rng.normal(size=(70, 3))
    f = lambda A: np.stack([np.sin(A[:, 0]) + A[:, 1] * A[:, 2]], axis=1)  # noqa: E731
    Y, Yv = f(X) + 0.3 * rng.normal(size=(300, 1)), f(Xv)
    with Engine(ExecConfig()) as engine:
        ctx = FitContext(engine=engine, train=ArrayDataset(X, Y), prepare=Prepare(None, None, "float64"),
                         agop_prepare=Prepare(None, None, "float64"), n_train=300, centers=np.zeros((0, 3)),
                         center_targets=None, X_val=Xv, Y_val=Yv, block_rows=64)
        kernel, M, regs = LaplaceKernel(2.0), np.eye(3), [1e-3, 1e2, 1.0]
        got, info, _ = RFFSolver(1.0, 128, np.random.default_rng(1)).fit(kernel, M, ctx, None, regs=regs)
        assert info["passes"] == 1 and [r for r, _ in info["reg_candidates"]] == regs
        for r, mse in info["reg_candidates"]:
            one, one_info, _ = RFFSolver(1.0, 128, np.random.default_rng(1)).fit(kernel, M, ctx, None, reg=r)
            assert mse == pytest.approx(float(np.mean((predict_in_blocks(one, Xv, 64) - Yv) ** 2)), rel=1e-10)
            if r == info["reg"]:
                np.testing.assert_array_equal(got.w, one.w)
        assert info["reg"] == min(info["reg_candidates"], key=lambda c: c[1])[0]
        plain, plain_info, _ = RFFSolver(1.0, 128, np.random.default_rng(1)).fit(
            kernel, M, dataclasses.replace(ctx, X_val=None, Y_val=None), None, regs=regs)
        assert "reg_candidates" not in plain_info
