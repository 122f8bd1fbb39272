"""Identities between the solvers: Nystrom with m = n is exact, PCG equals a dense solve, RFF approaches exact."""

import dataclasses

import numpy as np
import pytest

from bigrfm import RFMRegressor
from bigrfm.config import ExecConfig
from bigrfm.io.datasets import ArrayDataset
from bigrfm.engine import Engine
from bigrfm.numerics.kernels import LaplaceKernel
from bigrfm.model.prepare import Prepare
from bigrfm.model.rfm import FitContext
from bigrfm.numerics.linalg import kernel_matrix
from bigrfm.solvers.exact import ExactSolver
from bigrfm.solvers.nystrom import FalkonPreconditioner, NystromSolver
from closeness import assert_close


def make_data(n=120, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.stack([X[:, 0] * X[:, 1], np.sin(X[:, 2])], axis=1) + 0.05 * rng.normal(size=(n, 2))
    return X, Y


def context(X, Y, centers, engine, block_rows=17):
    return FitContext(
        engine=engine,
        train=ArrayDataset(X, Y),
        prepare=Prepare(None, None, "float64"),
        agop_prepare=Prepare(None, None, "float64"),
        n_train=X.shape[0],
        centers=centers,
        center_targets=None,
        X_val=None,
        Y_val=None,
        block_rows=block_rows,
    )


def small_problem(engine):
    """200 rows, 50 centers, the Laplace kernel in the plain metric: (X, Y, Z, kernel, M, ctx)."""
    X, Y = make_data(200)
    Z = X[::4]
    return X, Y, Z, LaplaceKernel(3.0), np.eye(4), context(X, Y, Z, engine)


@pytest.fixture(scope="module")
def engine():
    with Engine(ExecConfig()) as e:
        yield e


def test_nystrom_with_all_rows_as_centers_equals_exact(engine):
    X, Y = make_data()
    kernel, M = LaplaceKernel(2.0), np.eye(4)
    ctx = context(X, Y, X, engine)
    ny, info, _ = NystromSolver(1e-3, tol=1e-12, maxiter=200).fit(kernel, M, ctx, None)
    ex, _, _ = ExactSolver(1e-3).fit(kernel, M, FitContext(**{**ctx.__dict__, "center_targets": Y}), None)
    X_test = make_data(30, seed=1)[0]
    p_ny = kernel_matrix(kernel, M, X_test, X) @ ny.alpha
    p_ex = kernel_matrix(kernel, M, X_test, X) @ ex.alpha
    assert np.max(np.abs(p_ny - p_ex)) <= 1e-6 * np.max(np.abs(p_ex))


def test_preconditioned_cg_equals_dense_nystrom_solve(engine):
    X, Y = make_data(200)
    Z = X[::5]
    kernel, M, reg = LaplaceKernel(3.0), np.diag([1.0, 0.5, 0.2, 0.1]), 1e-2
    ny, info, _ = NystromSolver(reg, tol=1e-12, maxiter=100).fit(kernel, M, context(X, Y, Z, engine), None)
    Knm, Kmm = kernel_matrix(kernel, M, X, Z), kernel_matrix(kernel, M, Z, Z)
    alpha = np.linalg.solve(Knm.T @ Knm + reg * Kmm, Knm.T @ Y)
    np.testing.assert_allclose(Knm @ ny.alpha, Knm @ alpha, rtol=1e-6, atol=1e-8)
    # Falkon's preconditioner makes the system well conditioned: few passes
    assert info["cg_iters"] <= 30


def test_falkon_preconditioner_matches_the_formulas():
    """T, A and the operator of ALGORITHM.md 3, written naively with dense inverses."""
    X, _ = make_data(150)
    Z = X[::3]
    kernel, M = LaplaceKernel(2.0), np.eye(4)
    n, m, lam = X.shape[0], Z.shape[0], 1e-3 / X.shape[0]
    Kmm, Knm = kernel_matrix(kernel, M, Z, Z), kernel_matrix(kernel, M, X, Z)
    pre = FalkonPreconditioner.build(Kmm, lam, "float64")
    assert_close(pre.T.T @ pre.T, Kmm, 1e-10)
    assert_close(pre.A.T @ pre.A, pre.T @ pre.T.T / m + lam * np.eye(m), 1e-12)
    assert np.allclose(np.tril(pre.A, -1), 0) and np.allclose(np.tril(pre.T, -1), 0)
    Ti, Ai = np.linalg.inv(pre.T), np.linalg.inv(pre.A)
    beta = np.random.default_rng(2).normal(size=(m, 3))
    dense = Ai.T @ (Ti.T @ Knm.T @ Knm @ Ti @ Ai @ beta / n + lam * Ai @ beta)
    got = pre.operator(beta, lambda u: Knm.T @ (Knm @ u), n)
    np.testing.assert_allclose(got, dense, rtol=1e-7, atol=1e-9 * np.abs(dense).max())
    np.testing.assert_allclose(pre.apply_t(Knm.T @ (Knm @ pre.apply(beta))) / n + pre.reg_term(beta), dense,
                               rtol=1e-7, atol=1e-9 * np.abs(dense).max())
    np.testing.assert_allclose(pre.apply(pre.to_beta(beta)), beta, rtol=1e-6, atol=1e-8)


def test_falkon_preconditioner_rejects_non_finite_kernel():
    from bigrfm.exceptions import SolverError

    Kmm = np.eye(5)
    Kmm[2, 3] = Kmm[3, 2] = np.nan
    with pytest.raises(SolverError, match="Cholesky"):
        FalkonPreconditioner.build(Kmm, 1e-3, "float64")


def test_warm_start_reaches_the_same_solution_in_fewer_passes(engine):
    X, Y, Z, kernel, M, ctx = small_problem(engine)
    solver = NystromSolver(1e-3, tol=1e-9, maxiter=100)
    cold, info_cold, alpha = solver.fit(kernel, M, ctx, None)
    M2 = M * np.array([1.0, 0.99, 1.01, 1.0])
    warm, info_warm, _ = solver.fit(kernel, M2, ctx, alpha)
    ref, info_ref, _ = solver.fit(kernel, M2, ctx, None)
    np.testing.assert_allclose(kernel_matrix(kernel, M2, X, Z) @ warm.alpha, kernel_matrix(kernel, M2, X, Z) @ ref.alpha, rtol=1e-5, atol=1e-7)
    assert info_warm["cg_iters"] < info_ref["cg_iters"], (info_warm, info_ref)


def test_cg_residual_is_relative_to_the_right_hand_side_also_after_a_warm_start(engine):
    X, Y, Z, kernel, M, ctx = small_problem(engine)
    solver = NystromSolver(1e-3, tol=1e-6, maxiter=100)
    _, cold, alpha = solver.fit(kernel, M, ctx, None)
    M2 = M * np.array([1.0, 0.9, 1.1, 1.0])
    warm_pred, warm, _ = solver.fit(kernel, M2, ctx, alpha)
    for info in (cold, warm):
        assert info["cg_stop"] == "converged" and 0 < info["cg_residual"] <= 1e-6
        # one pass for the right-hand side, one per CG iteration, one per true-residual check (every 10)
        assert info["passes"] == 1 + info["cg_iters"] + info["cg_iters"] // 10
    # the reported residual is the true one of the normal equations, relative to their right-hand side
    pre = FalkonPreconditioner.build(kernel_matrix(kernel, M2, Z, Z), 1e-3 / 200, "float64")
    Knm = kernel_matrix(kernel, M2, X, Z)
    beta = pre.to_beta(warm_pred.alpha)
    b = pre.apply_t(Knm.T @ Y / 200)
    r = b - (pre.apply_t(Knm.T @ (Knm @ pre.apply(beta))) / 200 + pre.reg_term(beta))
    rel = np.linalg.norm(r, axis=0) / np.linalg.norm(b, axis=0)
    assert rel.max() == pytest.approx(warm["cg_residual"], rel=1e-3, abs=1e-9)


def test_float32_solves_stop_on_their_own_instead_of_running_to_maxiter(engine):
    X, Y = make_data(400)
    ctx = dataclasses.replace(context(X, Y, X[::5], engine), prepare=Prepare(None, None, "float32"), dtype="float32")
    _, info, _ = NystromSolver(1e-3, maxiter=50).fit(LaplaceKernel(3.0), np.eye(4), ctx, None)
    assert info["cg_stop"] in ("converged", "stalled") and info["cg_iters"] < 50
    assert info["cg_residual"] <= 1e-3


def test_rff_approaches_exact_as_features_grow():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X[:, 0] * X[:, 1]
    X_test = rng.normal(size=(100, 3))
    common = dict(bandwidth=3.0, reg=1e-2, validation_fraction=0, random_state=0)
    exact = RFMRegressor(solver="exact", iters=0, **common).fit(X, y).predict(X_test)
    errors = []
    for D in (100, 1000, 4000):
        approx = RFMRegressor(solver="rff", iters=0, n_components=D, **common).fit(X, y).predict(X_test)
        errors.append(np.sqrt(np.mean((approx - exact) ** 2)) / np.std(exact))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.15, errors
    # with feature learning on, the learned metric points at the same coordinates
    rff = RFMRegressor(solver="rff", iters=1, n_components=4000, **common).fit(X, y)
    ex = RFMRegressor(solver="exact", iters=1, **common).fit(X, y)
    assert set(np.argsort(np.diag(rff.M_))[-2:]) == set(np.argsort(np.diag(ex.M_))[-2:]) == {0, 1}


def test_nystrom_estimator_close_to_exact_with_enough_centers():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 4))
    y = X[:, 0] * X[:, 1] + 0.05 * rng.normal(size=600)
    common = dict(iters=2, validation_fraction=0, random_state=0)
    exact = RFMRegressor(solver="exact", **common).fit(X, y)
    ny = RFMRegressor(solver="nystrom", n_centers=600, cg_tol=1e-10, cg_maxiter=200, **common).fit(X, y)
    np.testing.assert_allclose(ny.M_, exact.M_, rtol=1e-4, atol=1e-6)
    assert ny.solver_ == "nystrom" and ny.history_[0]["solver"]["cg_iters"] >= 1


def test_cg_stops_when_the_validation_score_stops_improving(engine):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1500, 4))
    Y = (np.sin(X[:, :1] * 2) + X[:, 1:2] * X[:, 2:3] + 0.3 * rng.normal(size=(1500, 1)))
    Xv = rng.normal(size=(400, 4))
    Yv = np.sin(Xv[:, :1] * 2) + Xv[:, 1:2] * Xv[:, 2:3]
    ctx = dataclasses.replace(context(X, Y, X[::6], engine, block_rows=500), X_val=Xv, Y_val=Yv)
    kernel, M = LaplaceKernel(2.0), np.eye(4)
    watched, w_info, _ = NystromSolver(1e-4, tol=1e-12, maxiter=60).fit(kernel, M, ctx, None)
    full, f_info, _ = NystromSolver(1e-4, tol=0.0, maxiter=60).fit(kernel, M, ctx, None)
    assert w_info["cg_stop"] == "validation" and w_info["cg_iters"] < f_info["cg_iters"] == 60
    Kv = kernel_matrix(kernel, M, Xv, X[::6])
    mse = [float(np.mean((Kv @ p.alpha - Yv) ** 2)) for p in (watched, full)]
    # the passes it saved would not have improved the validation MSE by more than a few tenths of a percent
    assert mse[0] <= mse[1] * 1.005, mse


def test_several_ridges_in_one_solve_equal_one_solve_each_and_the_validation_best_is_kept(engine):
    """fit(regs=...): each ridge's columns follow their own CG (the same solution as a solve of their
    own), all in the same passes; the kept one is the validation argmin, its MSE the one reported."""
    X, Y = make_data(300)
    Xv, Yv = make_data(80, seed=3)
    Z = X[::5]
    kernel, M = LaplaceKernel(2.0), np.eye(4)
    ctx = dataclasses.replace(context(X, Y, Z, engine), X_val=Xv, Y_val=Yv)
    solver = NystromSolver(1e-3, tol=1e-12, maxiter=300, val_stop=False)
    regs = [1.0, 1e-1, 1e-3, 30.0]
    got, info, _ = solver.fit(kernel, M, ctx, None, regs=regs)
    Kv = kernel_matrix(kernel, M, Xv[:2048], Z)
    singles = {}
    for r in regs:
        one, one_info, _ = solver.fit(kernel, M, ctx, None, reg=r)
        singles[r] = (one, float(((Kv @ one.alpha - Yv) ** 2).mean()), one_info)
    assert [r for r, _ in info["reg_candidates"]] == regs
    for (r, mse) in info["reg_candidates"]:
        assert mse == pytest.approx(singles[r][1], rel=1e-8)
    best = min(regs, key=lambda r: singles[r][1])
    assert info["reg"] == best and best != regs[0]
    assert_close(got.alpha, singles[best][0].alpha, 1e-7)
    # the passes were shared: one solve's worth, not one per ridge
    assert info["passes"] <= max(one_info["passes"] for _, _, one_info in singles.values())


def test_several_ridges_need_validation_rows_and_a_cold_start(engine):
    X, Y, Z, kernel, M, ctx = small_problem(engine)
    solver = NystromSolver(1e-3, tol=1e-10, maxiter=100)
    ref, _, alpha = solver.fit(kernel, M, ctx, None, reg=0.5)
    got, info, _ = solver.fit(kernel, M, ctx, None, regs=[0.5, 1e-3])  # no validation rows: the first ridge
    assert "reg_candidates" not in info
    np.testing.assert_array_equal(got.alpha, ref.alpha)
    Xv, Yv = make_data(50, seed=4)
    ctx = dataclasses.replace(ctx, X_val=Xv, Y_val=Yv)
    warm_ref, _, _ = solver.fit(kernel, M, ctx, alpha, reg=0.5)
    warm, info, _ = solver.fit(kernel, M, ctx, alpha, regs=[0.5, 1e-3])  # warm start: the first ridge
    assert "reg_candidates" not in info
    np.testing.assert_array_equal(warm.alpha, warm_ref.alpha)


def test_falkon_preconditioners_of_several_ridges_share_t_and_equal_one_each():
    X, _ = make_data(120)
    Kmm = kernel_matrix(LaplaceKernel(2.0), np.eye(4), X[::2], X[::2])
    lams = [1e-2, 1e-5, 1.0]
    many = FalkonPreconditioner.build_many(Kmm, lams, "float64")
    for lam, pre in zip(lams, many):
        one = FalkonPreconditioner.build(Kmm, lam, "float64")
        assert pre.T is many[0].T and pre.lam == lam
        np.testing.assert_array_equal(pre.T, one.T)
        np.testing.assert_array_equal(pre.A, one.A)


def test_ridges_that_fit_counts_t_and_one_a_per_ridge():
    from bigrfm.solvers.nystrom import ridges_that_fit

    m = 1000
    assert ridges_that_fit(m, int(4 * 8 * m * m / 0.9) + 1) == 3  # T + 3 A
    assert ridges_that_fit(m, int(2 * 8 * m * m / 0.9) + 1) == 1
    assert ridges_that_fit(m, 10) == 1 and ridges_that_fit(m, None) == 1
