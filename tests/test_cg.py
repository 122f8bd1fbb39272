"""Multi-column preconditioned CG against dense solves and scipy's cg, column by column."""

import numpy as np
import pytest
import scipy.sparse.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from bigrfm.exceptions import InputError, SolverError
from bigrfm.solvers.cg import CGResult, cg
from closeness import assert_close


def random_spd(rng, n, cond=100.0):
    """A symmetric positive definite matrix with eigenvalues spread over [1, cond]."""
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (Q * np.geomspace(1.0, cond, n)) @ Q.T


class Counting:
    """A matvec that records the shapes it was called with."""

    def __init__(self, A):
        self.A = A
        self.shapes = []

    def __call__(self, V):
        self.shapes.append(V.shape)
        return self.A @ V


@pytest.fixture
def system():
    rng = np.random.default_rng(0)
    A = random_spd(rng, 50)
    B = rng.normal(size=(50, 3))
    return A, B


def test_matches_dense_solve(system):
    A, B = system
    res = cg(lambda V: A @ V, B, tol=1e-12, maxiter=500)
    assert isinstance(res, CGResult) and res.converged
    np.testing.assert_allclose(res.x, np.linalg.solve(A, B), rtol=0, atol=1e-8)
    assert len(res.residuals) == res.n_iter
    assert res.residuals[-1] <= 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_each_column_equals_scipy_cg(seed):
    # cond 10: few enough iterations that finite-precision CG stays close to exact CG,
    # so the iteration counts are comparable
    rng = np.random.default_rng(seed)
    A = random_spd(rng, 50, cond=10.0)
    B = rng.normal(size=(50, 3))
    tol = 1e-8
    res = cg(lambda V: A @ V, B, tol=tol, maxiter=500)
    assert res.converged
    iters = []
    for j in range(B.shape[1]):
        count = []
        x, info = scipy.sparse.linalg.cg(A, B[:, j], rtol=tol, atol=0.0, maxiter=500, callback=count.append)
        assert info == 0
        iters.append(len(count))
        np.testing.assert_allclose(res.x[:, j], x, rtol=0, atol=1e-7 * np.abs(x).max())
        single = cg(lambda V: A @ V, B[:, j], tol=tol, maxiter=500)
        assert abs(single.n_iter - len(count)) <= 1
    # the solve runs until its slowest column stops
    assert abs(res.n_iter - max(iters)) <= 1


def test_frozen_columns_match_single_column_solves(system):
    A, B = system
    B = B * np.array([1.0, 1e-3, 1e3])  # scaling does not change a relative rule

    res = cg(lambda V: A @ V, B, tol=1e-6, maxiter=500)
    singles = [cg(lambda V: A @ V, B[:, j], tol=1e-6, maxiter=500) for j in range(3)]
    assert abs(res.n_iter - max(s.n_iter for s in singles)) <= 1
    for j, single in enumerate(singles):
        # equal up to rounding (GEMM and GEMV round differently; CG amplifies it)
        np.testing.assert_allclose(res.x[:, j], single.x, rtol=0, atol=1e-6 * np.abs(single.x).max())


def test_maxiter_is_respected(system):
    A, B = system
    op = Counting(A)
    res = cg(op, B, tol=1e-14, maxiter=5)
    assert res.n_iter == 5 and not res.converged
    assert len(res.residuals) == 5 and len(op.shapes) == res.n_matvec == 5
    assert res.residuals[-1] > 1e-14


def test_x0_is_untouched_and_an_exact_x0_needs_at_most_one_iteration(system):
    A, B = system
    x0 = np.linalg.solve(A, B)
    before = x0.copy()
    res = cg(lambda V: A @ V, B, x0=x0, tol=1e-8)
    np.testing.assert_array_equal(x0, before)
    assert res.x is not x0
    assert res.converged and res.n_iter <= 1
    np.testing.assert_allclose(res.x, x0, atol=1e-10)


def test_warm_start_from_a_nearby_point_is_faster(system):
    A, B = system
    cold = cg(lambda V: A @ V, B, tol=1e-8, maxiter=500)
    x0 = np.linalg.solve(A, B) + 1e-4 * np.random.default_rng(1).normal(size=B.shape)
    warm = cg(lambda V: A @ V, B, x0=x0, tol=1e-8, maxiter=500)
    assert warm.converged and warm.n_iter < cold.n_iter


def test_zero_rhs_returns_zero_without_matvec(system):
    A, _ = system
    op = Counting(A)
    x0 = np.ones((50, 2))
    res = cg(op, np.zeros((50, 2)), x0=x0)
    assert op.shapes == [] and res.n_matvec == 0 and res.n_iter == 0
    assert res.converged and res.residuals == ()
    np.testing.assert_array_equal(res.x, 0.0)


def test_mixed_rhs_keeps_zero_column_out_of_matvec(system):
    A, B = system
    B = B.copy()
    B[:, 1] = 0.0
    op = Counting(A)
    res = cg(op, B, tol=1e-10, maxiter=500)
    assert res.converged
    assert all(shape[1] <= 2 for shape in op.shapes)
    np.testing.assert_array_equal(res.x[:, 1], 0.0)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, B), atol=1e-8)


def test_exact_preconditioner_converges_at_once(system):
    A, B = system
    Ainv = np.linalg.inv(A)
    res = cg(lambda V: A @ V, B, precond=lambda R: Ainv @ R, tol=1e-10)
    assert res.converged and res.n_iter <= 2
    np.testing.assert_allclose(res.x, np.linalg.solve(A, B), atol=1e-8)


def test_jacobi_preconditioner_helps_a_badly_scaled_system():
    rng = np.random.default_rng(2)
    D = np.geomspace(1.0, 1e4, 40)
    A = D[:, None] * random_spd(rng, 40, cond=10.0) * D[None, :]
    b = rng.normal(size=40)
    plain = cg(lambda V: A @ V, b, tol=1e-8, maxiter=1000)
    jacobi = cg(lambda V: A @ V, b, precond=lambda R: R / np.diag(A)[:, None], tol=1e-8, maxiter=1000)
    assert jacobi.converged and jacobi.n_iter < plain.n_iter
    np.testing.assert_allclose(A @ jacobi.x, b, atol=1e-6 * np.linalg.norm(b))


def test_one_dimensional_rhs(system):
    A, B = system
    res = cg(lambda V: A @ V, B[:, 0], tol=1e-12, maxiter=500)
    assert res.x.shape == (50,)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, B[:, 0]), atol=1e-8)


def test_float32_input_runs_in_float64(system):
    A, B = system
    res = cg(lambda V: A @ V, B.astype(np.float32), tol=1e-12, maxiter=500)
    assert res.x.dtype == np.float64 and res.converged


def test_callback_once_per_iteration(system):
    A, B = system
    calls = []
    res = cg(lambda V: A @ V, B, tol=1e-8, maxiter=500, callback=lambda k, x, rel: calls.append((k, x, rel)))
    assert [k for k, _, _ in calls] == list(range(1, res.n_iter + 1))
    assert all(x.shape == B.shape and rel.shape == (3,) for _, x, rel in calls)
    assert [float(rel.max()) for _, _, rel in calls] == list(res.residuals)
    np.testing.assert_array_equal(calls[-1][1], res.x)


def test_true_residual_recomputation_is_counted(system):
    A, B = system
    res = cg(lambda V: A @ V, B, tol=1e-14, maxiter=25, true_residual_every=10)
    # 25 iterations, true residual after iterations 10 and 20
    assert res.n_iter == 25 and res.n_matvec == 27
    rel = np.linalg.norm(B - A @ res.x, axis=0) / np.linalg.norm(B, axis=0)
    assert rel.max() == pytest.approx(res.residuals[-1], rel=1e-3)


def test_indefinite_operator_raises():
    A = np.diag([1.0, -1.0, 2.0])
    with pytest.raises(SolverError, match="not positive definite"):
        cg(lambda V: A @ V, np.array([0.0, 1.0, 0.0]), maxiter=10)


def test_semidefinite_direction_freezes_the_column():
    # b lies partly in the null space: p^T A p = 0 breakdown, no convergence, no NaN
    A = np.diag([1.0, 0.0])
    res = cg(lambda V: A @ V, np.array([0.0, 1.0]), maxiter=10)
    assert not res.converged and res.n_iter == 1
    assert np.all(np.isfinite(res.x))


def test_non_finite_operator_output_raises(system):
    _, B = system
    with pytest.raises(SolverError, match="non-finite"):
        cg(lambda V: V * np.nan, B)


@pytest.mark.parametrize(
    "kwargs",
    [{"tol": -1.0}, {"maxiter": -1}, {"true_residual_every": 0}, {"x0": np.zeros((50, 2))}],
)
def test_bad_parameters_raise(system, kwargs):
    A, B = system
    with pytest.raises(InputError):
        cg(lambda V: A @ V, B, **kwargs)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 8),
    c=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    tol=st.sampled_from([1e-2, 1e-5, 1e-8]),
)
def test_converged_exit_satisfies_the_stopping_rule(n, c, seed, tol):
    rng = np.random.default_rng(seed)
    A = random_spd(rng, n, cond=1e3)
    B = rng.normal(size=(n, c))
    res = cg(lambda V: A @ V, B, tol=tol, maxiter=10 * n + 10)
    assert res.converged
    rel = np.linalg.norm(B - A @ res.x, axis=0) / np.linalg.norm(B, axis=0)
    # the rule is checked on the recurrence residual, which tracks the true one
    # to rounding (cond(A) * eps)
    assert np.all(rel <= tol * (1 + 1e-6) + 1e3 * 1e3 * np.finfo(float).eps)


def test_a_given_initial_residual_replaces_the_first_matvec_and_gives_the_same_iterates(system):
    A, B = system
    x0 = np.linalg.solve(A, B) + 1e-3 * np.random.default_rng(2).normal(size=B.shape)
    plain_op, given_op = Counting(A), Counting(A)
    plain = cg(plain_op, B, x0=x0, tol=1e-10, maxiter=200)
    given = cg(given_op, B, x0=x0, r0=B - A @ x0, tol=1e-10, maxiter=200)
    assert given.n_matvec == plain.n_matvec - 1 and given.n_iter == plain.n_iter
    assert_close(given.x, plain.x, 1e-12)
    # residuals are relative to B, not to the warm start's residual
    assert given.residuals == pytest.approx(plain.residuals, rel=1e-9)
    np.testing.assert_array_less(np.linalg.norm(B - A @ given.x, axis=0), 1.1e-10 * np.linalg.norm(B, axis=0))


def test_status_and_final_residual_say_why_the_solve_ended(system):
    A, B = system
    done = cg(lambda V: A @ V, B, tol=1e-6, maxiter=500)
    capped = cg(lambda V: A @ V, B, tol=1e-14, maxiter=3)
    assert (done.status, capped.status) == ("converged", "maxiter")
    assert done.residual == done.residuals[-1] <= 1e-6
    # a warm start that already meets the tolerance runs no iteration but reports its residual
    warm = cg(lambda V: A @ V, B, x0=done.x, tol=1e-4)
    assert warm.n_iter == 0 and warm.status == "converged" and 0 < warm.residual <= 1e-6


def test_a_noisy_operator_stalls_at_its_accuracy_floor_instead_of_running_to_maxiter(system):
    A, B = system
    rng = np.random.default_rng(3)

    def noisy(V):  # like float32 kernel blocks: a relative error of ~1e-5 per product
        out = A @ V
        return out + 1e-5 * np.abs(out).max() * rng.normal(size=out.shape)

    unstopped = cg(noisy, B, tol=1e-12, maxiter=60)
    stopped = cg(noisy, B, tol=1e-12, maxiter=60, stall_iters=5)
    assert unstopped.n_iter == 60 and unstopped.status == "maxiter"
    assert stopped.status == "stalled" and stopped.n_iter < 57
    # it stopped at the floor: running to maxiter bought at most a factor of two
    assert stopped.residual < 2 * min(unstopped.residuals) + 1e-3 and stopped.residual < 1e-2


def test_stall_rule_never_stops_a_converging_solve_early(system):
    A, B = system
    ref = cg(lambda V: A @ V, B, tol=1e-10, maxiter=500)
    with_rule = cg(lambda V: A @ V, B, tol=1e-10, maxiter=500, stall_iters=5)
    assert with_rule.status == "converged" and with_rule.n_iter == ref.n_iter


@pytest.mark.parametrize("kwargs", [{"stall_iters": 0}, {"stall_iters": 2.5}, {"stall_gain": 1.0}, {"r0": np.ones((50, 2))}])
def test_bad_stall_and_r0_arguments(system, kwargs):
    A, B = system
    with pytest.raises(InputError):
        cg(lambda V: A @ V, B, **kwargs)


def test_a_callback_can_end_the_solve(system):
    A, B = system
    seen = []
    res = cg(lambda V: A @ V, B, tol=1e-12, maxiter=100, callback=lambda k, x, rel: seen.append(k) or k == 4)
    assert res.status == "stopped" and res.n_iter == 4 and seen == [1, 2, 3, 4] and not res.converged


def test_a_matvec_per_column_solves_each_column_s_own_system():
    """matvec_columns: matvec(V, cols) gets the columns' indices, so column j may follow A_j; each column
    then equals a solve of its own system, and frozen columns leave the calls."""
    rng = np.random.default_rng(5)
    As = [random_spd(rng, 40, cond) for cond in (10.0, 1e3, 1e2)]
    B = rng.normal(size=(40, 3))
    calls = []

    def matvec(V, cols):
        calls.append(tuple(cols))
        return np.stack([As[j] @ V[:, i] for i, j in enumerate(cols)], axis=1)

    res = cg(matvec, B, tol=1e-10, maxiter=500, matvec_columns=True)
    assert res.converged
    for j in range(3):
        assert_close(res.x[:, j], np.linalg.solve(As[j], B[:, j]), 1e-8)
    assert calls[0] == (0, 1, 2) and len(calls[-1]) < 3  # the easy system finished first and left
