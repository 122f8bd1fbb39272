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
  not bigrfm's. Above :data:`THREADED_DENSE_MAX` rows the Cholesky runs on one
  BLAS thread and ``T T^T`` is assembled from row panels of at most
  :data:`PANEL_ROWS` rows, each product a threaded GEMM of moderate size.

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
    "one_blas_thread",
    "cholesky",
    "cholesky_solve",
    "gram_rows",
    "kernel_matrix",
    "metric_factor",
    "sq_distance_matrix",
]

#: Factorizations with fewer rows run on one BLAS thread (spinning threads on busy cores).
SMALL_DENSE = 3000
#: Largest n for which n x n factorizations and products run with threaded BLAS.
THREADED_DENSE_MAX = 15_000
#: Rows of one panel of :func:`gram_rows` above THREADED_DENSE_MAX.
PANEL_ROWS = 4096


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


def cholesky(A: np.ndarray, *, lower: bool = False, overwrite_a: bool = False) -> np.ndarray:
    """Cholesky factor of a symmetric positive definite float64 matrix.

    Reads only the ``lower`` (or upper) triangle. With ``overwrite_a`` the factor takes
    A's memory (C or Fortran order): no second n x n array at the peak. Raises ``numpy.linalg.LinAlgError``
    when A is not numerically positive definite or holds non-finite values (checked on
    the factor, not by a scan of A).
    """
    with blas_threads_for(A.shape[0]):
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


def gram_rows(T: np.ndarray, *, panel_rows: int | None = None) -> np.ndarray:
    """T T^T (m x m, float64): one GEMM, or row panels above :data:`THREADED_DENSE_MAX` rows.

    ``panel_rows`` forces the panel path (tests use it on small matrices).
    """
    m = T.shape[0]
    if panel_rows is None:
        if m <= THREADED_DENSE_MAX:
            return T @ T.T
        panel_rows = PANEL_ROWS
    starts = range(0, m, panel_rows)
    panels = [np.ascontiguousarray(T[s : s + panel_rows]) for s in starts]
    B = np.empty((m, m), dtype=np.result_type(T.dtype, np.float64))
    for i, (si, Pi) in enumerate(zip(starts, panels)):
        for sj, Pj in zip(starts[i:], panels[i:]):
            blk = Pi @ Pj.T
            B[si : si + Pi.shape[0], sj : sj + Pj.shape[0]] = blk
            if sj != si:
                B[sj : sj + Pj.shape[0], si : si + Pi.shape[0]] = blk.T
    return B


def cholesky_solve(A: np.ndarray, B: np.ndarray, *, what: str, fix: str) -> np.ndarray:
    """Solve A X = B for a symmetric positive definite A by a float64 Cholesky factorization.

    ``A`` is overwritten. A failed factorization or non-finite solution raises
    SolverError naming ``what`` and the ``fix``, instead of returning NaNs.
    """
    try:
        # thread limits for small and very large n: see the module docstring
        L = cholesky(A, lower=True, overwrite_a=True)
        with blas_threads_for(A.shape[0]):
            X = scipy.linalg.cho_solve((L, True), np.asarray(B, dtype=REDUCE_DTYPE), check_finite=False)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise SolverError(
            f"Cholesky factorization of {what} failed: {exc}. The system is not numerically "
            f"positive definite; {fix}."
        ) from None
    if not np.all(np.isfinite(X)):
        raise SolverError(f"The solve of {what} produced non-finite values; {fix}, or check the data for extreme values.")
    return X


def kernel_matrix(kernel: Kernel, M: np.ndarray, X: np.ndarray, Z: np.ndarray, block_rows: int = 4096) -> np.ndarray:
    """K_M(X, Z) in float64, built block by block (n x m: the exact solver's one big array)."""
    S = metric_factor(M)
    Xt = apply_metric(np.asarray(X, dtype=REDUCE_DTYPE), S)
    Zt = Xt if Z is X else apply_metric(np.asarray(Z, dtype=REDUCE_DTYPE), S)
    zsq = np.einsum("ij,ij->i", Zt, Zt)
    K = np.empty((Xt.shape[0], Zt.shape[0]), dtype=REDUCE_DTYPE)
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
