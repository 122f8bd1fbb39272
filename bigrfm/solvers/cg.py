"""Preconditioned conjugate gradient over several right-hand sides at once.

Sees only callables (an operator and a preconditioner), never data or files.

The solver only sees callables (a ``matvec`` and a preconditioner), never
data: in the Nystrom solver one ``matvec`` is one pass over the training rows
(ALGORITHM.md 3), so everything here is organised to call it exactly once per
iteration for all the columns that still need it. Each column of B runs its own
CG recurrence (its own step sizes), which is the same as solving the columns
one after the other (up to rounding), except that they share the passes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ..numerics.backend import REDUCE_DTYPE, array_module, to_numpy
from ..exceptions import InputError, SolverError

__all__ = ["CGResult", "cg"]

#: A curvature p^T A p (or r^T P r) below -BREAKDOWN * |p| |Ap| is beyond rounding:
#: the operator (or the preconditioner) is indefinite.
BREAKDOWN = float(np.sqrt(np.finfo(np.float64).eps))


@dataclasses.dataclass(frozen=True)
class CGResult:
    """What :func:`cg` returns.

    Attributes
    ----------
    x : array (n, c) or (n,)
        The solution, float64, on the array module of B; 1-D when B was.
    n_iter : int
        CG iterations run (each is one ``matvec`` call).
    residuals : tuple of float
        After each iteration, the largest relative residual |r_k| / |b| over the
        non-zero columns (frozen columns count with their last value).
    converged : bool
        Whether every column met the tolerance.
    n_matvec : int
        ``matvec`` calls in all: iterations, plus the initial residual of a
        non-zero ``x0`` (unless ``r0`` was given), plus the true-residual
        recomputations.
    residual : float
        The final largest relative residual |b_j - A x_j| / |b_j| over the
        non-zero columns, also when no iteration ran (a warm start that
        already met ``tol``).
    status : str
        Why the solve ended: ``"converged"`` (every column met ``tol``),
        ``"stalled"`` (some column stopped improving, see ``stall_iters``),
        ``"stopped"`` (the callback asked to stop),
        ``"breakdown"`` (a zero curvature left a column with no direction) or
        ``"maxiter"``.
    """

    x: Any
    n_iter: int
    residuals: tuple[float, ...]
    converged: bool
    n_matvec: int
    status: str = "converged"
    residual: float = 0.0


def _col_dot(xp: Any, U: Any, V: Any) -> Any:
    """Column-wise inner products u_j^T v_j, shape (c,)."""
    return xp.einsum("ij,ij->j", U, V)


def _col_norm(xp: Any, U: Any) -> Any:
    return xp.sqrt(_col_dot(xp, U, U))


def _apply(fn: Callable[[Any], Any], V: Any, xp: Any, what: str) -> Any:
    """Call the operator or preconditioner and check that it kept the shape and stayed finite."""
    out = xp.asarray(fn(V), dtype=REDUCE_DTYPE)
    if out.shape != V.shape:
        raise InputError(
            f"cg: {what} mapped an array of shape {V.shape} to shape {out.shape}; "
            "it must return an array of the shape it is given."
        )
    if not bool(xp.all(xp.isfinite(out))):
        raise SolverError(
            f"cg: {what} returned non-finite values; the operator is ill-conditioned "
            "or the data hold extreme values (increase reg, or check the inputs)."
        )
    return out


def _flat(xp: Any, curv: Any, U: Any, V: Any, cols: np.ndarray, k: int, what: str) -> np.ndarray:
    """Columns whose curvature u_j^T v_j is not positive (breakdown); raise if clearly negative.

    Returns a host boolean mask over ``cols``.
    """
    clearly_negative = to_numpy(curv < -BREAKDOWN * _col_norm(xp, U) * _col_norm(xp, V))
    if clearly_negative.any():
        raise SolverError(
            f"cg: the {what} is not positive definite (column {int(cols[clearly_negative][0])}, "
            f"iteration {k}: a negative curvature beyond rounding). For a kernel system "
            "increase reg (e.g. by 10x); for a custom operator check that it is symmetric "
            "positive definite."
        )
    return to_numpy(curv <= 0)


def cg(
    matvec: Callable[[Any], Any],
    B: Any,
    *,
    x0: Any = None,
    r0: Any = None,
    precond: Callable[[Any], Any] | None = None,
    tol: float = 1e-6,
    maxiter: int = 20,
    true_residual_every: int = 10,
    stall_iters: int | None = None,
    stall_gain: float = 0.5,
    callback: Callable[[int, Any, np.ndarray], bool | None] | None = None,
    matvec_columns: bool = False,
) -> CGResult:
    """Solve A X = B for a symmetric positive definite A given as ``matvec``.

    Parameters
    ----------
    matvec : callable
        ``matvec(V)`` returns A V for an (n, k) array V, k <= c: only the
        columns that still iterate are passed, all of them in one call.
    B : array (n, c) or (n,)
        Right-hand sides, numpy or cupy.
    x0 : array like B, optional
        Starting point (zeros by default); never modified.
    r0 : array like B, optional
        The residual B - A x0 when the caller already has it (for example from
        a pass that also computed B), which saves one ``matvec``. Residuals and
        the tolerance stay relative to B.
    precond : callable, optional
        ``precond(R)`` returns P R for a symmetric positive definite P close to
        A^-1, column by column like ``matvec``. ``None`` is the identity.
    tol : float
        Relative residual at which a column stops (see Notes).
    maxiter : int
        Most iterations (``matvec`` calls of the recurrence).
    true_residual_every : int
        Recompute the residual as b - A x every this many iterations (one extra
        ``matvec``), so that rounding in the recurrence cannot fake convergence.
    stall_iters : int, optional
        End the solve when the largest column residual has not fallen below
        ``stall_gain`` times its best earlier value within the last
        ``stall_iters`` iterations: it has reached the accuracy floor of an
        inexact operator (float32 blocks), and more passes would not move x.
        None never stops for stalling.
    stall_gain : float in (0, 1)
        Improvement that counts as progress for ``stall_iters``.
    callback : callable, optional
        ``callback(k, x, rel_residuals)`` after iteration k = 1, 2, ...: a copy
        of the iterate (shaped like B) and the (c,) relative residuals. A true
        return value ends the solve there (status ``"stopped"``): a caller can
        stop on a criterion of its own, such as a validation score.
    matvec_columns : bool
        Call ``matvec(V, cols)`` with the host indices (into B's columns) of V's
        columns: each column may then have an operator of its own (several
        systems, e.g. one per ridge, sharing the passes of one solve).

    Returns
    -------
    CGResult

    Raises
    ------
    InputError
        Bad shapes or parameters, non-finite B or x0.
    SolverError
        ``matvec`` or ``precond`` returned non-finite values, or showed a
        curvature clearly below zero (the system is not positive definite).

    Notes
    -----
    Stopping rule: column j stops as soon as |b_j - A x_j| <= tol |b_j| (Euclidean
    norms, the residual from the recurrence or, after every
    ``true_residual_every``-th iteration, recomputed; the recomputation is skipped
    after iteration ``maxiter``, where no further step could use it), or when
    it stalls (``stall_iters``). Stopped columns are frozen: their x no longer
    moves and they leave ``matvec``'s input. The solve ends when every column
    has stopped or after ``maxiter`` iterations; ``status`` says which.
    A zero column b_j = 0 gives x_j = 0 exactly and never reaches ``matvec``.

    Breakdown: a curvature p^T A p <= 0 (or r^T P r <= 0) within rounding of zero
    freezes that column where it is (it counts as converged only if it meets the
    rule); one clearly below zero, beyond sqrt(eps) |p| |Ap|, means the operator
    is indefinite and raises :class:`SolverError` rather than returning garbage.

    All recurrences run in float64 whatever the dtype of B.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> res = cg(lambda V: A @ V, np.array([1.0, 2.0]), tol=1e-12)
    >>> bool(np.allclose(A @ res.x, [1.0, 2.0])), res.converged
    (True, True)
    """
    xp = array_module(B)
    B = xp.asarray(B, dtype=REDUCE_DTYPE)
    if B.ndim not in (1, 2):
        raise InputError(f"cg: B must be 1-D or 2-D. Got shape {B.shape} instead.")
    vector = B.ndim == 1
    B = B[:, None] if vector else B  # (n, c)
    if not bool(xp.all(xp.isfinite(B))):
        raise InputError("cg: B holds NaN or infinite values.")
    if not (np.isfinite(tol) and tol >= 0):
        raise InputError(f"cg: tol must be a float >= 0. Got {tol!r} instead.")
    if int(maxiter) != maxiter or maxiter < 0:
        raise InputError(f"cg: maxiter must be an integer >= 0. Got {maxiter!r} instead.")
    if int(true_residual_every) != true_residual_every or true_residual_every < 1:
        raise InputError(
            f"cg: true_residual_every must be an integer >= 1. Got {true_residual_every!r} instead."
        )
    if stall_iters is not None and (int(stall_iters) != stall_iters or stall_iters < 1):
        raise InputError(f"cg: stall_iters must be an integer >= 1 or None. Got {stall_iters!r} instead.")
    if not 0 < stall_gain < 1:
        raise InputError(f"cg: stall_gain must be in (0, 1). Got {stall_gain!r} instead.")
    precond = precond if precond is not None else (lambda R: R)
    n, c = B.shape
    op = matvec if matvec_columns else (lambda V, _cols: matvec(V))

    # copying x0 is what keeps the caller's array untouched
    X = xp.zeros((n, c), dtype=REDUCE_DTYPE)
    if x0 is not None:
        x0 = xp.asarray(x0, dtype=REDUCE_DTYPE)
        if x0.shape != (B[:, 0].shape if vector else B.shape):
            raise InputError(f"cg: x0 has shape {x0.shape}, but B has shape {B.shape}.")
        if not bool(xp.all(xp.isfinite(x0))):
            raise InputError("cg: x0 holds NaN or infinite values.")
        X[...] = x0[:, None] if vector else x0
    bnorm = to_numpy(_col_norm(xp, B))  # (c,) on the host: decisions are made there
    zero = bnorm == 0
    X[:, xp.asarray(np.flatnonzero(zero))] = 0.0  # A x = 0 has the solution 0: no iteration
    n_matvec = 0

    stalled = np.zeros(c, dtype=bool)
    broken = np.zeros(c, dtype=bool)  # columns frozen by a zero curvature

    def _finish(k: int, residuals: list[float], rel: np.ndarray, status: str | None = None) -> CGResult:
        x = X[:, 0] if vector else X
        converged = bool(np.all(rel <= tol))
        if status is None:
            status = ("converged" if converged else "stalled" if stalled.any()
                      else "breakdown" if broken.any() else "maxiter")
        final = float(rel[~zero].max()) if (~zero).any() else 0.0
        return CGResult(x, k, tuple(residuals), converged, n_matvec, status, final)

    R = B.copy()  # (n, c) residuals
    cols = np.flatnonzero(~zero)  # host indices of the columns still iterating
    ca = xp.asarray(cols)
    if r0 is not None:
        r0 = xp.asarray(r0, dtype=REDUCE_DTYPE)
        r0 = r0[:, None] if r0.ndim == 1 else r0
        if r0.shape != B.shape:
            raise InputError(f"cg: r0 has shape {r0.shape}, but B has shape {B.shape}.")
        R[:, ca] = r0[:, ca]
    elif x0 is not None and cols.size and bool(xp.any(X[:, ca] != 0)):
        R[:, ca] -= _apply(lambda V: op(V, cols), X[:, ca], xp, "matvec")
        n_matvec += 1
    rel = np.zeros(c)  # (c,) relative residuals, 0 for zero columns
    rel[cols] = to_numpy(_col_norm(xp, R[:, ca])) / bnorm[cols]
    cols = cols[rel[cols] > tol]
    if cols.size == 0 or maxiter == 0:
        return _finish(0, [], rel)

    ca = xp.asarray(cols)
    P = xp.zeros_like(R)  # (n, c) search directions
    rz = xp.zeros(c, dtype=REDUCE_DTYPE)  # (c,) r^T P r per column
    Z = _apply(precond, R[:, ca], xp, "precond")
    rz[ca] = _col_dot(xp, R[:, ca], Z)
    flat = _flat(xp, rz[ca], R[:, ca], Z, cols, 0, "preconditioner")
    P[:, ca] = Z
    cols = cols[~flat]
    if cols.size == 0:
        return _finish(0, [], rel, "breakdown")

    residuals: list[float] = []
    k = 0
    for k in range(1, maxiter + 1):
        ca = xp.asarray(cols)
        Pa = P[:, ca]
        Q = _apply(lambda V: op(V, cols), Pa, xp, "matvec")  # (n, k): the one pass of this iteration
        n_matvec += 1
        pAp = _col_dot(xp, Pa, Q)
        flat = _flat(xp, pAp, Pa, Q, cols, k, "operator")
        # a zero-curvature column takes no step and is frozen below
        alpha = rz[ca] / xp.where(xp.asarray(flat), xp.inf, pAp)
        X[:, ca] += alpha * Pa
        R[:, ca] -= alpha * Q
        if k % true_residual_every == 0 and k < maxiter:
            R[:, ca] = B[:, ca] - _apply(lambda V: op(V, cols), X[:, ca], xp, "matvec")
            n_matvec += 1
        rel[cols] = to_numpy(_col_norm(xp, R[:, ca])) / bnorm[cols]
        residuals.append(float(rel[~zero].max()))
        if callback is not None and callback(k, (X[:, 0] if vector else X).copy(), rel.copy()):
            return _finish(k, residuals, rel, "stopped")
        if stall_iters is not None and k > stall_iters:
            # the largest residual, best before the window against best within it: a single
            # column may crawl for a while early on, but the solve as a whole has stalled
            # only when its worst column no longer improves (the first iterations of CG can
            # raise the residual, so the start itself is not a reference)
            before = min(residuals[: k - stall_iters])
            if min(residuals[k - stall_iters :]) > stall_gain * before:
                stalled[cols] = True
        broken[cols[flat]] = True
        cols = cols[(rel[cols] > tol) & ~flat & ~stalled[cols]]
        if cols.size == 0 or k == maxiter:
            break
        ca = xp.asarray(cols)
        Ra = R[:, ca]
        Z = _apply(precond, Ra, xp, "precond")
        rz_new = _col_dot(xp, Ra, Z)
        flat = _flat(xp, rz_new, Ra, Z, cols, k, "preconditioner")
        P[:, ca] = Z + (rz_new / rz[ca]) * P[:, ca]
        rz[ca] = rz_new
        # r^T P r <= 0 with r != 0: no descent direction is left for those columns
        broken[cols[flat]] = True
        cols = cols[~flat]
        if cols.size == 0:
            break
    return _finish(k, residuals, rel)
