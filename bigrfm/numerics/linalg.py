"""Dense float64 linear algebra of the solvers: the metric factor, kernel matrices, Cholesky, T T^T.

Owns every dense factorization and its BLAS thread rule; takes and returns
numpy arrays (the metric factor also CuPy) and imports neither zarr nor dask.
Two measured facts about OpenBLAS (scipy-openblas 0.3.31, the BLAS that numpy
and scipy wheels bundle) on the project's 2-core VM shape this module:

* small factorizations on busy cores are slow with threads (spinning waiters):
  below :data:`SMALL_DENSE` rows they run on one BLAS thread;
* threaded level-3 calls on matrices of about 2 GB and more crash the process
  with a segmentation fault: ``scipy.linalg.cholesky`` at n = 16,000 and
  17,000, ``T @ T.T`` at 16,000 and ``dsyrk`` at 16,000 did, while n = 15,000
  ran (Cholesky 16 s, GEMM 31 s) and n = 16,000 on one thread ran (34 s). It is
  OpenBLAS's threaded code path (see OpenMathLib/OpenBLAS issues 2562, 2821),
  not bigrfm's. Above :data:`THREADED_DENSE_MAX` rows the Cholesky factorization
  is blocked (:func:`blocked_cholesky`: LAPACK on 1,024-row diagonal blocks,
  threaded triangular solves and GEMMs on row panels of at most
  :data:`PANEL_ROWS` rows) and ``T T^T`` is assembled from row panels; every
  BLAS call stays far below the crashing size and uses every thread.

A solver that dies with SIGSEGV loses the whole fit (and a Dask worker), so the
slower safe path is taken whenever the size is in the crashing range.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import scipy.linalg
from threadpoolctl import ThreadpoolController

from ..exceptions import SolverError
from .backend import REDUCE_DTYPE, array_module
from .kernels import Kernel, apply_metric, sq_distances

__all__ = [
    "SMALL_DENSE",
    "THREADED_DENSE_MAX",
    "PANEL_ROWS",
    "blas_threads_for",
    "blocked_cholesky",
    "one_blas_thread",
    "cholesky",
    "cholesky_solve",
    "gram_rows",
    "kernel_matrix",
    "metric_factor",
    "solve_triangular",
    "sq_distance_matrix",
]

#: Factorizations with fewer rows run on one BLAS thread (spinning threads on busy cores).
SMALL_DENSE = 3000
#: Largest n for which n x n factorizations and products run with threaded BLAS.
THREADED_DENSE_MAX = 15_000
#: Rows of one panel of :func:`gram_rows` and of :func:`blocked_cholesky`'s trailing updates.
PANEL_ROWS = 4096
#: Rows of a diagonal block of :func:`blocked_cholesky`.
BLOCK_ROWS = 1024


_CONTROLLER: ThreadpoolController | None = None


def one_blas_thread() -> contextlib.AbstractContextManager:
    """A context limiting BLAS to one thread.

    The controller that finds the loaded BLAS libraries is built once per process:
    building it scans the process's libraries (about 0.8 ms), twice the time of a
    2,000-row triangular solve, and the CG loop limits threads four times an iteration.
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def blas_threads_for(n: int) -> contextlib.AbstractContextManager:
    """The BLAS thread limit for a dense n x n factorization (a context manager)."""
    if n < SMALL_DENSE or n > THREADED_DENSE_MAX:
        return one_blas_thread()
    return contextlib.nullcontext()


def cholesky(A: Any, *, lower: bool = False, overwrite_a: bool = False) -> Any:
    """Cholesky factor of a symmetric positive definite float64 matrix (numpy, or CuPy on the GPU).

    Reads only the ``lower`` (or upper) triangle. With ``overwrite_a`` the factor takes
    A's memory (C or Fortran order): no second n x n array at the peak. Raises ``numpy.linalg.LinAlgError``
    when A is not numerically positive definite or holds non-finite values (checked on
    the factor, not by a scan of A). A CuPy matrix is factored on its device (cuSOLVER;
    the whole matrix is read there, as it is symmetric).
    """
    xp = array_module(A)
    if xp is not np:
        L = xp.linalg.cholesky(A)
        if overwrite_a:
            del A
        if not bool(xp.isfinite(xp.trace(L))):
            raise np.linalg.LinAlgError("non-finite values in the factor")
        return L if lower else L.T.copy()
    n = A.shape[0]
    if n > THREADED_DENSE_MAX and A.flags.c_contiguous and overwrite_a:
        # blocked, from threaded BLAS calls of bounded size (see blocked_cholesky)
        U = blocked_cholesky(A, block=BLOCK_ROWS, panel=PANEL_ROWS)
        if not np.isfinite(np.trace(U)):
            raise np.linalg.LinAlgError("non-finite values in the factor")
        return U.T if lower else U
    with blas_threads_for(n):
        if A.flags.c_contiguous and not A.flags.f_contiguous:
            # LAPACK works in place only on Fortran order; A^T is A's memory in Fortran
            # order, its `not lower` triangle is A's `lower` triangle, and the factor
            # of A^T in that triangle is the transpose of the one asked for.
            F = scipy.linalg.cholesky(A.T, lower=not lower, overwrite_a=overwrite_a, check_finite=False).T
        else:
            F = scipy.linalg.cholesky(A, lower=lower, overwrite_a=overwrite_a, check_finite=False)
    if not np.isfinite(np.trace(F)):
        raise np.linalg.LinAlgError("non-finite values in the factor")
    return F


def gram_rows(T: Any, *, panel_rows: int | None = None, upper: bool = False) -> Any:
    """T T^T (m x m, float64): one GEMM, or row panels above :data:`THREADED_DENSE_MAX` rows.

    ``upper``: T is upper triangular (a Cholesky factor). Then row panels are used
    from :data:`SMALL_DENSE` rows on, each block product only over the columns where
    both panels can be non-zero, and only one triangle of blocks is multiplied:
    about m^3/3 flops instead of a full GEMM's 2 m^3. ``panel_rows`` forces the panel
    path (tests use it on small matrices). A CuPy T is multiplied on its device in one GEMM.
    """
    if array_module(T) is not np:
        return T @ T.T
    m = T.shape[0]
    if panel_rows is None:
        if m <= (SMALL_DENSE if upper else THREADED_DENSE_MAX):
            return T @ T.T
        panel_rows = PANEL_ROWS
    starts = range(0, m, panel_rows)
    panels = [np.ascontiguousarray(T[s : s + panel_rows]) for s in starts]  # views when T is C-ordered
    B = np.empty((m, m), dtype=np.result_type(T.dtype, np.float64))
    for i, (si, Pi) in enumerate(zip(starts, panels)):
        for sj, Pj in zip(starts[i:], panels[i:]):
            k0 = sj if upper else 0  # an upper T's rows sj.. are zero left of column sj
            blk = Pi[:, k0:] @ Pj[:, k0:].T
            B[si : si + Pi.shape[0], sj : sj + Pj.shape[0]] = blk
            if sj != si:
                B[sj : sj + Pj.shape[0], si : si + Pi.shape[0]] = blk.T
    return B


def blocked_cholesky(A: np.ndarray, *, block: int = BLOCK_ROWS, panel: int = PANEL_ROWS) -> np.ndarray:
    """The upper Cholesky factor U of a symmetric positive definite C-ordered float64 A = U^T U, in place.

    Right-looking and blocked: each diagonal block of ``block`` rows is factored by
    LAPACK, the block row to its right by one triangular solve, and the trailing
    matrix updated in row panels of ``panel`` rows by GEMMs. Every BLAS call then
    works on well under 2 GB, so the calls can use every thread (OpenBLAS 0.3.31's
    threaded Cholesky crashes on the whole matrix from 16,000 rows on, see the
    module docstring). Reads the upper triangle of A (callers pass symmetric
    matrices); the strictly lower triangle of the result is zero. Raises
    ``numpy.linalg.LinAlgError`` when A is not numerically positive definite.
    """
    n = A.shape[0]
    for s in range(0, n, block):
        e = min(s + block, n)
        U_kk = scipy.linalg.cholesky(A[s:e, s:e], lower=False, check_finite=False)  # (nb, nb), a copy
        A[s:e, s:e] = U_kk
        if e == n:
            break
        R = A[s:e, e:]  # (nb, n - e): becomes U's block row
        R[...] = scipy.linalg.solve_triangular(U_kk, R, trans="T", lower=False, check_finite=False)
        for r0 in range(e, n, panel):
            r1 = min(r0 + panel, n)
            # the Schur complement's rows r0..r1, from column r0 on (its upper part and a little more)
            A[r0:r1, r0:] -= R[:, r0 - e : r1 - e].T @ R[:, r0 - e :]
    for r0 in range(0, n, panel):  # zero the strictly lower triangle, one row panel at a time
        r1 = min(r0 + panel, n)
        A[r0:r1, :r0] = 0.0
        A[r0:r1, r0:r1] = np.triu(A[r0:r1, r0:r1])
    return A


def solve_triangular(R: Any, b: Any, *, trans: str = "N", lower: bool = False) -> Any:
    """op(R)^-1 b for a triangular R (numpy with the thread rule, or CuPy on its device)."""
    if array_module(R) is not np:
        from cupyx.scipy.linalg import solve_triangular as device_solve  # noqa: PLC0415

        return device_solve(R, b, trans=trans, lower=lower)
    # the factors are finite by construction and right-hand sides are checked by the
    # callers, so scipy's per-call NaN scan (an O(m^2) pass each) is skipped
    with blas_threads_for(R.shape[0]):
        return scipy.linalg.solve_triangular(R, b, trans=trans, lower=lower, check_finite=False)


def cholesky_solve(A: Any, B: Any, *, what: str, fix: str) -> Any:
    """Solve A X = B for a symmetric positive definite A by a float64 Cholesky factorization.

    ``A`` is overwritten (numpy); a CuPy A is solved on its device. A failed factorization
    or non-finite solution raises SolverError naming ``what`` and the ``fix``, instead of
    returning NaNs.
    """
    xp = array_module(A)
    try:
        # thread limits for small and very large n: see the module docstring
        L = cholesky(A, lower=True, overwrite_a=True)
        if xp is np:
            with blas_threads_for(A.shape[0]):
                X = scipy.linalg.cho_solve((L, True), np.asarray(B, dtype=REDUCE_DTYPE), check_finite=False)
        else:
            B = xp.asarray(B, dtype=REDUCE_DTYPE)
            X = solve_triangular(L, solve_triangular(L, B, lower=True), trans="T", lower=True)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise SolverError(
            f"Cholesky factorization of {what} failed: {exc}. The system is not numerically "
            f"positive definite; {fix}."
        ) from None
    if not bool(xp.all(xp.isfinite(X))):
        raise SolverError(f"The solve of {what} produced non-finite values; {fix}, or check the data for extreme values.")
    return X


def kernel_matrix(kernel: Kernel, M: Any, X: Any, Z: Any, block_rows: int = 4096) -> Any:
    """K_M(X, Z) in float64, built block by block (n x m: the exact solver's one big array).

    On the array module of X (CuPy: built on its device; M may be a host array).
    """
    xp = array_module(X)
    S = metric_factor(xp.asarray(M))
    Xt = apply_metric(xp.asarray(X, dtype=REDUCE_DTYPE), S)
    Zt = Xt if Z is X else apply_metric(xp.asarray(Z, dtype=REDUCE_DTYPE), S)
    zsq = xp.einsum("ij,ij->i", Zt, Zt)
    K = xp.empty((Xt.shape[0], Zt.shape[0]), dtype=REDUCE_DTYPE)
    for s in range(0, Xt.shape[0], block_rows):
        K[s : s + block_rows] = kernel.block(Xt[s : s + block_rows], Zt, zsq)
    return K


def sq_distance_matrix(M: np.ndarray, X: np.ndarray, Z: np.ndarray, block_rows: int = 4096) -> np.ndarray:
    """Squared distances |x - z|_M^2 in float64 (n x m), built in the row blocks of :func:`kernel_matrix`.

    ``kernel.phi_sq`` of (a copy of) it is bit for bit ``kernel_matrix(kernel, M, X, Z, block_rows)``: kernels
    of several bandwidths share it and differ only in the elementwise phi.
    """
    S = metric_factor(M)
    Xt = apply_metric(np.asarray(X, dtype=REDUCE_DTYPE), S)
    Zt = Xt if Z is X else apply_metric(np.asarray(Z, dtype=REDUCE_DTYPE), S)
    zsq = np.einsum("ij,ij->i", Zt, Zt)
    D2 = np.empty((Xt.shape[0], Zt.shape[0]), dtype=REDUCE_DTYPE)
    for s in range(0, Xt.shape[0], block_rows):
        D2[s : s + block_rows] = sq_distances(Xt[s : s + block_rows], Zt, zsq)
    return D2


def metric_factor(M: Any, rtol: float = 1e-12) -> Any:
    """A factor S of the metric: M = S S^T.

    Parameters
    ----------
    M : array, shape (d, d) or (d,)
        Symmetric PSD matrix, or its diagonal (``diag=True`` models).

    Returns
    -------
    S : array, shape (d, r) or (d,)
        Eigen-factor with the non-positive eigenvalues dropped (r <= d), or
        ``sqrt(M)`` for a diagonal metric. Computed in float64.
    """
    xp = array_module(M)
    M = xp.asarray(M, dtype=np.float64)
    if M.ndim == 1:
        return xp.sqrt(xp.clip(M, 0.0, None))
    if xp is np:
        with blas_threads_for(M.shape[0]):  # d x d eigh: the same thread rule as every dense factorization
            evals, evecs = np.linalg.eigh((M + M.T) / 2)
    else:
        evals, evecs = xp.linalg.eigh((M + M.T) / 2)
    keep = evals > rtol * float(xp.max(xp.abs(evals)))
    if not bool(keep.any()):
        # M = 0 only happens when the predictor is constant; keep one zero column
        # so shapes stay valid and every distance is 0.
        return xp.zeros((M.shape[0], 1), dtype=np.float64)
    return evecs[:, keep] * xp.sqrt(evals[keep])
