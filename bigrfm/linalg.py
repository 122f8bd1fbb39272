"""Dense float64 factorizations of the solvers, safe at the sizes they reach.

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

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

__all__ = ["SMALL_DENSE", "THREADED_DENSE_MAX", "PANEL_ROWS", "blas_threads_for", "cholesky", "gram_rows"]

#: Factorizations with fewer rows run on one BLAS thread (spinning threads on busy cores).
SMALL_DENSE = 3000
#: Largest n for which n x n factorizations and products run with threaded BLAS.
THREADED_DENSE_MAX = 15_000
#: Rows of one panel of :func:`gram_rows` above THREADED_DENSE_MAX.
PANEL_ROWS = 4096


def blas_threads_for(n: int) -> contextlib.AbstractContextManager:
    """The BLAS thread limit for a dense n x n factorization (a context manager)."""
    if n < SMALL_DENSE or n > THREADED_DENSE_MAX:
        return threadpool_limits(1)
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
