"""Exact kernel ridge regression: (K + reg I) alpha = Y by a float64 Cholesky factorization.

Every training row is a center; the n x n kernel matrix is the one array of
size n a fit may hold (only while n fits the memory budget). Reads no files.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from ..exceptions import SolverError
from ..model.predictors import KernelPredictor
from ..numerics.backend import array_module, get_xp, to_numpy
from ..numerics.kernels import Kernel
from ..numerics.linalg import cholesky_solve, kernel_matrix, sq_distance_matrix

__all__ = ["solve_exact", "solve_exact_candidates", "ExactSolver"]


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


def solve_exact_candidates(
    kernels: Sequence[Kernel], regs: Sequence[float], M: np.ndarray, X: np.ndarray, Y: np.ndarray,
    X_val: np.ndarray, *, share: bool = True,
) -> Iterator[tuple[Kernel, float, np.ndarray | None, np.ndarray | None]]:
    """Exact kernel ridge regression on the rows X for every (kernel, reg) pair, with validation predictions.

    Yields ``(kernel, reg, alpha (n, c), K_M(X_val, X) alpha (v, c))`` in the order kernels x regs, or
    ``(kernel, reg, None, None)`` when the system is not numerically positive definite for that pair.
    With ``share`` the squared distances X-X and X_val-X are computed once (two float64 arrays of n x n and
    v x n) and every candidate costs one elementwise phi and one Cholesky factorization; without it each
    kernel matrix is built anew (less memory). For a given pair, alpha is bit for bit :func:`solve_exact`'s.
    """
    D2 = sq_distance_matrix(M, X, X) if share else None  # (n, n)
    D2v = sq_distance_matrix(M, X_val, X) if share else None  # (v, n)
    for kernel in kernels:
        Kv = kernel.phi_sq(D2v.copy()) if share else kernel_matrix(kernel, M, X_val, X)  # (v, n)
        for reg in regs:
            K = kernel.phi_sq(D2.copy()) if share else kernel_matrix(kernel, M, X, X)  # (n, n)
            K[np.diag_indices_from(K)] += reg
            try:
                alpha = cholesky_solve(K, Y, what="K + reg*I", fix="")
            except SolverError:
                yield kernel, reg, None, None
                continue
            del K
            yield kernel, reg, alpha, Kv @ alpha


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

    def fit(self, kernel: Kernel, M: np.ndarray, ctx: Any, warm: Any, reg: float | None = None) -> tuple[KernelPredictor, dict, None]:
        """See :class:`bigrfm.model.rfm.Solver`; ``reg`` replaces the solver's own for this fit."""
        # on a GPU the n x n matrix is built and factored on the device (float64)
        X = get_xp(ctx.device).asarray(ctx.centers)
        alpha = solve_exact(kernel, M, X, ctx.center_targets, self.reg if reg is None else reg)
        return KernelPredictor(kernel, np.array(M), ctx.centers, alpha), {}, None
