"""Exact kernel ridge regression: (K + reg I) alpha = Y by a float64 Cholesky factorization.

Every training row is a center; the n x n kernel matrix is the one array of
size n a fit may hold (only while n fits the memory budget). Reads no files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.predictors import KernelPredictor
from ..numerics.backend import array_module, get_xp, to_numpy
from ..numerics.kernels import Kernel
from ..numerics.linalg import cholesky_solve, kernel_matrix

__all__ = ["solve_exact", "ExactSolver"]


def solve_exact(kernel: Kernel, M: np.ndarray, X: Any, Y: np.ndarray, reg: float) -> np.ndarray:
    """Dual coefficients alpha (n x c, numpy) of kernel ridge regression with all rows as centers.

    Solves (K_M(X, X) + reg I) alpha = Y with a float64 Cholesky factorization, on the
    array module of X (a CuPy X is solved on its GPU).

    Raises
    ------
    SolverError
        When the system is not numerically positive definite (instead of
        returning NaNs), with the fix: a larger ``reg``.
    """
    K = kernel_matrix(kernel, M, X, X)
    diag = array_module(K).arange(K.shape[0])
    K[diag, diag] += reg
    alpha = cholesky_solve(K, Y, what=f"K + reg*I (n={X.shape[0]}, reg={reg:g})", fix="increase reg (e.g. by 10x) or use solver='nystrom'")
    return to_numpy(alpha)


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

    def fit(self, kernel: Kernel, M: np.ndarray, ctx: Any, warm: Any) -> tuple[KernelPredictor, dict, None]:
        """See :class:`bigrfm.model.rfm.Solver`."""
        # on a GPU the n x n matrix is built and factored on the device (float64)
        X = get_xp(ctx.device).asarray(ctx.centers)
        alpha = solve_exact(kernel, M, X, ctx.center_targets, self.reg)
        return KernelPredictor(kernel, np.array(M), ctx.centers, alpha), {}, None
