"""The dense factorizations of bigrfm/linalg.py against scipy/numpy on small matrices."""

import numpy as np
import pytest

from bigrfm.numerics import linalg
from closeness import assert_close


def spd(n, seed=0):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T + n * np.eye(n)


@pytest.mark.parametrize("lower", [False, True])
def test_cholesky_matches_numpy_and_reads_one_triangle(lower):
    K = spd(50)
    ref = np.linalg.cholesky(K)
    half = np.tril(K) if lower else np.triu(K)  # the other triangle is garbage-free zeros
    F = linalg.cholesky(half, lower=lower)
    assert_close(F, ref if lower else ref.T, 1e-12)


def test_cholesky_raises_linalgerror_on_indefinite_and_nan():
    with pytest.raises(np.linalg.LinAlgError):
        linalg.cholesky(-np.eye(4))
    K = spd(6)
    K[3, 3] = np.nan
    with pytest.raises(np.linalg.LinAlgError):
        linalg.cholesky(K)


@pytest.mark.parametrize("panel", [None, 7, 16, 64])
def test_gram_rows_equals_t_t_transpose(panel):
    T = np.triu(np.random.default_rng(1).normal(size=(41, 41)))
    assert_close(linalg.gram_rows(T, panel_rows=panel), T @ T.T, 1e-13)


def test_blas_thread_limits_at_both_ends():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    for n in (10, linalg.THREADED_DENSE_MAX + 1):
        with linalg.blas_threads_for(n):
            assert blas_threads() == 1


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("lower", [False, True])
def test_cholesky_overwrite_works_in_place_in_both_orders(order, lower):
    K = spd(40, seed=3)
    ref = np.linalg.cholesky(K)
    A = np.array(np.tril(K) if lower else np.triu(K), order=order)
    F = linalg.cholesky(A, lower=lower, overwrite_a=True)
    assert np.shares_memory(F, A)
    assert_close(F, ref if lower else ref.T, 1e-12)


@pytest.mark.parametrize("n, block, panel", [(300, 64, 100), (257, 64, 64), (64, 64, 64), (5, 2, 3)])
def test_blocked_cholesky_matches_lapack(n, block, panel):
    K = spd(n, seed=n)
    ref = np.linalg.cholesky(K).T  # upper
    U = linalg.blocked_cholesky(K.copy(), block=block, panel=panel)
    np.testing.assert_allclose(U, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    assert np.all(np.tril(U, -1) == 0)


def test_large_factorizations_take_the_blocked_path(monkeypatch):
    monkeypatch.setattr(linalg, "THREADED_DENSE_MAX", 100)
    monkeypatch.setattr(linalg, "BLOCK_ROWS", 48)
    K = spd(240, seed=3)
    ref = np.linalg.cholesky(K)
    for lower in (False, True):
        F = linalg.cholesky(K.copy(), lower=lower, overwrite_a=True)
        np.testing.assert_allclose(F, ref if lower else ref.T, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    with pytest.raises(np.linalg.LinAlgError):
        linalg.cholesky(-np.eye(240), overwrite_a=True)


@pytest.mark.parametrize("panel", [7, 50, 128])
def test_gram_rows_of_an_upper_factor_uses_only_its_triangle(panel):
    T = np.triu(np.random.default_rng(4).normal(size=(130, 130)))
    np.testing.assert_allclose(linalg.gram_rows(T, panel_rows=panel, upper=True), T @ T.T, rtol=1e-12, atol=1e-10)
