"""Exact kernel ridge regression: (K + reg I) alpha = Y by a float64 Cholesky factorization."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .. import linalg
from ..backend import REDUCE_DTYPE
from ..exceptions import SolverError
from ..kernels import Kernel, apply_metric, metric_factor
from ..predictors import KernelPredictor

__all__ = ["kernel_matrix", "solve_exact", "cholesky_solve", "ExactSolver"]


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


def solve_exact(kernel: Kernel, M: np.ndarray, X: np.ndarray, Y: np.ndarray, reg: float) -> np.ndarray:
    """Dual coefficients alpha (n x c) of kernel ridge regression with all rows as centers.

    Solves (K_M(X, X) + reg I) alpha = Y with a float64 Cholesky factorization.

    Raises
    ------
    SolverError
        When the system is not numerically positive definite (instead of
        returning NaNs), with the fix: a larger ``reg``.
    """
    K = kernel_matrix(kernel, M, X, X)
    K[np.diag_indices_from(K)] += reg
    return cholesky_solve(K, Y, what=f"K + reg*I (n={X.shape[0]}, reg={reg:g})", fix="increase reg (e.g. by 10x) or use solver='nystrom'")


def cholesky_solve(A: np.ndarray, B: np.ndarray, *, what: str, fix: str) -> np.ndarray:
    """Solve A X = B for a symmetric positive definite A by a float64 Cholesky factorization.

    ``A`` is overwritten. A failed factorization or non-finite solution raises
    SolverError naming ``what`` and the ``fix``, instead of returning NaNs.
    """
    try:
        # thread limits for small and very large n: see bigrfm/linalg.py
        L = linalg.cholesky(A, lower=True, overwrite_a=True)
        with linalg.blas_threads_for(A.shape[0]):
            X = scipy.linalg.cho_solve((L, True), np.asarray(B, dtype=REDUCE_DTYPE), check_finite=False)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise SolverError(
            f"Cholesky factorization of {what} failed: {exc}. The system is not numerically "
            f"positive definite; {fix}."
        ) from None
    if not np.all(np.isfinite(X)):
        raise SolverError(f"The solve of {what} produced non-finite values; {fix}, or check the data for extreme values.")
    return X


class ExactSolver:
    """All training rows are the centers; one Cholesky solve per RFM iteration.

    Parameters
    ----------
    reg : float
        Ridge term added to the kernel matrix's diagonal.
    """

    name = "exact"

    def __init__(self, reg: float) -> None:
        self.reg = reg

    def fit(self, kernel: Kernel, M: np.ndarray, ctx, warm):  # noqa: ANN001 - see bigrfm.rfm.Solver
        alpha = solve_exact(kernel, M, ctx.centers, ctx.center_targets, self.reg)
        return KernelPredictor(kernel, np.array(M), ctx.centers, alpha), {}, None
