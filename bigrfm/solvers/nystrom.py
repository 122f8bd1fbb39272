"""Nystrom kernel ridge regression solved by Falkon-preconditioned conjugate gradient.

Owns the preconditioner, the operator and the per-block product; every pass
goes through ``ctx.engine``, and no file is read here.

Objective (ALGORITHM.md 3): (K_nm^T K_nm + reg K_mm) alpha = K_nm^T Y with m
centers. With lambda = reg / n, T = chol(K_mm) (upper, K_mm = T^T T) and
A = chol(T T^T / m + lambda I), CG runs in beta (alpha = T^-1 A^-1 beta) on

    beta -> A^-T ( T^-T K_nm^T K_nm T^-1 A^-1 beta / n + lambda A^-1 beta ),
    rhs   = A^-T T^-T K_nm^T Y / n.

One CG iteration is one pass over the data computing sum_b K_b^T (K_b v): one
kernel block per row block, used for both products. The right-hand side (and
the residual of a warm start) come from one pass of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np

from ..exceptions import SolverError
from ..model.predictors import KernelPredictor
from ..numerics import fused_cpu, linalg
from ..numerics.backend import REDUCE_DTYPE, array_module, get_xp, jitter, on_device, row_tiles, to_numpy
from ..numerics.cuda_kernels import fused_ktu, fused_kv, fused_supported
from ..numerics.kernels import Kernel, augment_centers, map_rows
from ..numerics.linalg import kernel_matrix
from .cg import cg

__all__ = ["FalkonPreconditioner", "NystromSolver", "gram_matvec_block"]


def gram_matvec_block(
    X: Any, Y: Any = None, *, kernel: Kernel, S: Any, Zt: Any, zsq: Any, v: Any = None, with_rhs: bool = False,
    metric_token: str | None = None, **_: Any
) -> dict:
    """One block's share of K_nm^T (K_nm v) (m x c) and, with ``with_rhs``, of K_nm^T Y; float64.

    The block is processed in row tiles: each kernel tile is computed once and
    used for both products (and the right-hand side).
    """
    xp = array_module(X)
    S, Zt, zsq, v = (on_device(a, X) for a in (S, Zt, zsq, v))
    m = Zt.shape[0]
    KtKv = KtY = None
    Xt = map_rows(X, S, metric_token)  # (b, r)
    if with_rhs:
        Y = xp.asarray(Y, dtype=X.dtype)
    c = (v if v is not None else Y).shape[1]
    if fused_cpu.applies(X):
        # CPU: distances, kernel values and both products tile by tile in cache (fused_cpu.py)
        KtKv, KtY = fused_cpu.gram_matvec(Xt, Zt, v, Y if with_rhs else None, **fused_cpu.params_of(kernel))
        return {**({"KtKv": KtKv} if v is not None else {}), **({"KtY": KtY} if with_rhs else {})}
    if fused_supported(kernel, X, Xt.shape[1], c):
        # GPU: both products in fused kernels, K never materialized (cuda_kernels.py)
        out = {}
        if v is not None:
            out["KtKv"] = to_numpy(fused_ktu(kernel, Xt, Zt, fused_kv(kernel, Xt, Zt, v)))
        if with_rhs:
            out["KtY"] = to_numpy(fused_ktu(kernel, Xt, Zt, Y))
        return out
    Za = augment_centers(Zt, zsq)  # once per block, not per tile
    for t in row_tiles(X.shape[0], m, X.dtype.itemsize, xp=xp):
        K = kernel.block(Xt[t], Zt, zsq, Za)  # (tile, m)
        if v is not None:
            part = (K.T @ (K @ v)).astype(REDUCE_DTYPE)
            KtKv = part if KtKv is None else KtKv + part
        if with_rhs:
            part = (K.T @ Y[t]).astype(REDUCE_DTYPE)
            KtY = part if KtY is None else KtY + part
    out = {}
    if v is not None:
        out["KtKv"] = to_numpy(KtKv)
    if with_rhs:
        out["KtY"] = to_numpy(KtY)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class FalkonPreconditioner:
    """The two triangular factors of Falkon's preconditioner (float64, numpy or CuPy).

    ``apply(beta) = T^-1 A^-1 beta`` maps CG coordinates to alpha;
    ``apply_t(u) = A^-T T^-T u`` is its transpose. Built from a CuPy K_mm the
    factors stay on the GPU and every triangular solve of CG runs there: no
    m x m work returns to the host.
    """

    T: Any  # (m, m) upper, K_mm + jitter = T^T T
    A: Any  # (m, m) upper, T T^T / m + lambda I = A^T A
    lam: float

    @classmethod
    def build(cls, Kmm: Any, lam: float, dtype: str, *, overwrite_k: bool = False) -> "FalkonPreconditioner":
        """Factor K_mm (float64, m x m; overwritten when ``overwrite_k``: one m x m array less at peak)."""
        return cls.build_many(Kmm, [lam], dtype, overwrite_k=overwrite_k)[0]

    @classmethod
    def build_many(cls, Kmm: Any, lams: list[float], dtype: str, *,
                   overwrite_k: bool = False) -> list["FalkonPreconditioner"]:
        """One preconditioner per ridge in ``lams``, all sharing T: 1 + len(lams) arrays of m x m at peak
        (with ``overwrite_k``), see :func:`ridges_that_fit`."""
        xp = array_module(Kmm)
        m = Kmm.shape[0]
        K = xp.asarray(Kmm, dtype=REDUCE_DTYPE) if overwrite_k else xp.array(Kmm, dtype=REDUCE_DTYPE)
        diag = xp.arange(m)
        K[diag, diag] += jitter(K, dtype)
        out = []
        try:
            T = linalg.cholesky(K, lower=False, overwrite_a=True)
            del K
            B = linalg.gram_rows(T, upper=True)  # T T^T from the triangle only (dsyrk crashes at m=16,000)
            B /= m
            for i, lam in enumerate(lams):
                Bl = B if i == len(lams) - 1 else B.copy()  # the last ridge factors B itself
                Bl[diag, diag] += lam
                out.append(cls(T, linalg.cholesky(Bl, lower=False, overwrite_a=True), lam))
        except np.linalg.LinAlgError as exc:
            raise SolverError(
                f"Falkon preconditioner: Cholesky factorization failed for m={m} centers ({exc}). "
                "Duplicate centers or a very small bandwidth make K_mm singular; "
                "increase reg or the bandwidth, or deduplicate the data."
            ) from None
        return out

    def _solve(self, R: Any, b: Any, trans: str = "N") -> Any:
        return linalg.solve_triangular(R, b, trans=trans, lower=False)

    def apply(self, beta: np.ndarray) -> np.ndarray:
        return self._solve(self.T, self._solve(self.A, beta))

    def apply_t(self, u: np.ndarray) -> np.ndarray:
        return self._solve(self.A, self._solve(self.T, u, "T"), "T")

    def reg_term(self, beta: np.ndarray) -> np.ndarray:
        """lambda A^-T A^-1 beta: the ridge part of the preconditioned operator."""
        return self.lam * self._solve(self.A, self._solve(self.A, beta), "T")

    def operator(self, beta: np.ndarray, gram: Any, n: int) -> np.ndarray:
        """A^-T (T^-T G(T^-1 A^-1 beta) / n + lambda A^-1 beta) with ``G(u) = K_nm^T K_nm u``.

        Four triangular solves instead of the six of ``apply_t(G(apply(beta)) / n) +
        reg_term(beta)``: A^-1 beta is shared by both terms and the outer A^-T is applied once.
        """
        w, u = self.before_pass(beta)
        return self.after_pass(gram(u), w, n)

    def before_pass(self, beta: Any) -> tuple[Any, Any]:
        """(w, u) = (A^-1 beta, T^-1 w): u is what :meth:`operator` sends through the data."""
        w = self._solve(self.A, beta)
        return w, self._solve(self.T, w)

    def after_pass(self, KtKv: Any, w: Any, n: int) -> Any:
        """A^-T (T^-T KtKv / n + lambda w): :meth:`operator` once the pass returned ``KtKv = G(u)``."""
        return self._solve(self.A, self._solve(self.T, KtKv / n, "T") + self.lam * w, "T")

    def to_beta(self, alpha: Any) -> Any:
        """Inverse of :meth:`apply` (beta = A T alpha), for warm starts."""
        xp = array_module(self.T)
        alpha = xp.asarray(alpha)
        with linalg.blas_threads_for(self.T.shape[0]) if xp is np else contextlib.nullcontext():
            return self.A @ (self.T @ alpha)


#: Default relative CG tolerance |b - A beta| <= tol |b|, for fits without validation rows
#: (with them, the validation rule below usually stops CG first). Measured on flights-3m
#: (200k rows, 8,000 centers, float32) and diamonds (8,000 centers, float64): the
#: validation RMSE of the CG iterates stops moving (within 0.05%) once the residual is
#: below about 1e-1 and 2e-3 respectively (benchmarks/RESULTS.md, "bench_cg"); float32
#: blocks reach a floor near 2e-4, so a much tighter float32 tolerance is never met.
DEFAULT_TOL = 1e-3
#: CG iterations without halving the best residual after which a solve counts as stalled.
DEFAULT_STALL_ITERS = 5
#: Validation rows that score the CG iterates (the first ones of the seeded validation split).
VAL_ROWS = 2048
#: CG stops when the validation MSE of its iterate improved by less than this fraction
#: over the last VAL_WINDOW iterations: early stopping of CG is itself regularization,
#: and the passes after that point fit nothing the validation rows can see.
VAL_RTOL = 1e-3
VAL_WINDOW = 2


def ridges_that_fit(m: int, memory_budget: int | None) -> int:
    """How many ridges one solve can run side by side with m centers: T and one A per ridge (m x m,
    float64) within 90% of ``memory_budget`` (at least 1; None: no limit known, 1)."""
    if memory_budget is None:
        return 1
    return max(1, int(0.9 * memory_budget // (8 * m * m)) - 1)


class _ValidationStop:
    """CG callback: the validation MSE of each iterate, and whether it has stopped improving.

    K(X_val, Z) of up to :data:`VAL_ROWS` validation rows is computed once per solve
    (VAL_ROWS x m, in the block dtype); each iterate then costs two triangular solves
    (alpha = T^-1 A^-1 beta) and one (VAL_ROWS x m) product, against a full pass over
    the training rows for the CG iteration itself. With several ridges (one group of
    ``width`` columns each) every group is scored, and CG stops when none improves.
    """

    def __init__(self, kernel: Kernel, M: np.ndarray, ctx: Any, pres: list["FalkonPreconditioner"], Z: Any,
                 width: int) -> None:
        xp = array_module(Z)  # where the factors live: the validation products run there too
        Xv = xp.asarray(ctx.X_val[:VAL_ROWS])
        self.Kv = kernel_matrix(kernel, M, Xv, Z).astype(ctx.dtype)  # (v, m)
        self.Yv = xp.asarray(ctx.Y_val[:VAL_ROWS], dtype=np.float64)
        self.pres, self.width = pres, width
        self.mse: list[np.ndarray] = []  # per iterate: (groups,)

    def group_mse(self, beta: Any) -> np.ndarray:
        """The validation MSE of each ridge's coefficients in the CG iterate ``beta`` (m, width * groups)."""
        w = self.width
        out = []
        for g, pre in enumerate(self.pres):
            alpha = pre.apply(beta[:, g * w:(g + 1) * w]).astype(self.Kv.dtype)
            out.append(float(((self.Kv @ alpha - self.Yv) ** 2).mean()))
        return np.array(out)

    def __call__(self, k: int, beta: Any, rel: np.ndarray) -> bool:
        self.mse.append(self.group_mse(beta))
        if k <= VAL_WINDOW:
            return False
        history = np.array(self.mse)  # (k, groups)
        before, now = history[:-VAL_WINDOW].min(axis=0), history.min(axis=0)
        return bool(np.all(now > before * (1 - VAL_RTOL)))


def _side_by_side(parts: list, xp: Any) -> Any:
    """The parts' columns in one array; one part is returned as it is (no copy, its memory order kept)."""
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=1)


def _ridges_operator(pres: list["FalkonPreconditioner"], width: int, gram: Any, n: int, xp: Any) -> Any:
    """:meth:`FalkonPreconditioner.operator` of several ridges at once, for ``cg(..., matvec_columns=True)``:
    column j belongs to ridge j // width, and the ridges' vectors go through one pass (``gram``) per call."""

    def operator(beta: Any, cols: np.ndarray) -> Any:
        groups = np.asarray(cols) // width  # ascending (cols do): each ridge's columns are one run of beta's
        runs = [(g, slice(np.searchsorted(groups, g), np.searchsorted(groups, g, "right"))) for g in np.unique(groups)]
        halves = [pres[g].before_pass(beta[:, r]) for g, r in runs]
        KtKv = gram(_side_by_side([u for _, u in halves], xp))
        if len(runs) == 1:
            return pres[runs[0][0]].after_pass(KtKv, halves[0][0], n)
        out = xp.empty_like(beta)  # in beta's memory order, as CG's column products expect to round
        for (g, r), (w, _) in zip(runs, halves):
            out[:, r] = pres[g].after_pass(KtKv[:, r], w, n)
        return out

    return operator


class NystromSolver:
    """Nystrom centers + Falkon preconditioned CG, streaming one pass per CG iteration.

    Parameters
    ----------
    reg : float
        Ridge term of the objective (lambda = reg / n in Falkon's scaling).
    tol : float or None
        CG stops when every output's residual, relative to the right-hand side,
        is below ``tol`` (also after a warm start). None: :data:`DEFAULT_TOL`; 0 runs
        every solve to ``maxiter`` (no stall or validation rule either).
    maxiter : int
        Most CG iterations (= passes over the data) per solve.
    stall_iters : int or None
        CG also stops when the residual has not halved in this many iterations
        (the accuracy floor of the block dtype); None turns that off.
    val_stop : bool
        With validation rows in the context, also stop when the validation MSE
        of the iterate has stopped improving (:data:`VAL_RTOL` over
        :data:`VAL_WINDOW` iterations, on up to :data:`VAL_ROWS` rows).
    """

    name = "nystrom"
    #: ``fit(..., regs=[...])`` solves this many ridges in the same passes (the solvers that can say so).
    ridges_that_fit = staticmethod(ridges_that_fit)

    def __init__(self, reg: float, tol: float | None = None, maxiter: int = 20,
                 stall_iters: int | None = DEFAULT_STALL_ITERS, val_stop: bool = True) -> None:
        self.reg, self.tol, self.maxiter, self.stall_iters, self.val_stop = reg, tol, maxiter, stall_iters, val_stop

    def fit(self, kernel: Kernel, M: np.ndarray, ctx: Any, warm: Any, reg: float | None = None,
            regs: list[float] | None = None) -> tuple[KernelPredictor, dict, np.ndarray]:
        """See :class:`bigrfm.model.rfm.Solver`; ``warm`` is the previous iteration's alpha; ``reg`` replaces
        the solver's own for this fit.

        ``regs`` (several ridges; needs validation rows and no warm start, else its first is used): one
        CG solve per ridge, all sharing the passes over the data (T is shared, each ridge has its own A),
        and the ridge whose coefficients score best on the validation rows is kept; ``info`` then holds
        ``reg`` (the winner) and ``reg_candidates`` ([ridge, validation MSE] each, ties to the earlier).
        """
        n = ctx.n_train
        Z = ctx.centers
        has_val = ctx.X_val is not None and ctx.X_val.shape[0] > 0
        regs = [self.reg if reg is None else reg] if not regs else list(regs)
        if warm is not None or not has_val:
            regs = regs[:1]
        many = len(regs) > 1
        tol = DEFAULT_TOL if self.tol is None else self.tol
        # the factors, CG's vectors and the validation products live where the blocks are
        # computed: on a GPU nothing m x m comes back to the host
        xp = get_xp(ctx.device)
        Zx = xp.asarray(Z)
        pres = FalkonPreconditioner.build_many(kernel_matrix(kernel, M, Zx, Zx), [r / n for r in regs], ctx.dtype,
                                               overwrite_k=True)
        pre = pres[0]
        bc = KernelPredictor(kernel, M, Z, np.zeros((Z.shape[0], 1))).broadcast(np, ctx.dtype)
        bc = {k: bc[k] for k in ("kernel", "S", "Zt", "zsq", "metric_token")}
        passes = 0

        def data_pass(v: np.ndarray | None, with_rhs: bool = False) -> dict:
            nonlocal passes
            passes += 1
            return ctx.engine.map_reduce(
                gram_matvec_block,
                ctx.train,
                broadcast={**bc, "v": None if v is None else v.astype(ctx.dtype), "with_rhs": with_rhs},
                prepare=ctx.prepare,
                block_rows=ctx.block_rows,
                progress=ctx.progress,
            )

        def gram(u: Any) -> Any:
            return xp.asarray(data_pass(to_numpy(u))["KtKv"])

        # Warm start: the previous iteration's alpha, in this iteration's CG coordinates.
        beta0 = None if warm is None else pre.to_beta(warm)
        first = data_pass(None if warm is None else to_numpy(pre.apply(beta0)), with_rhs=True)
        KtY = xp.asarray(first["KtY"]) / n
        c = KtY.shape[1]
        B = _side_by_side([p.apply_t(KtY) for p in pres], xp)  # (m, c * ridges)
        R0 = None
        if beta0 is not None:
            # the warm start's residual comes from the same pass as the rhs: the pass ran at
            # u = apply(beta0), the vector the operator would send to the data
            R0 = B - pre.operator(beta0, lambda _u: xp.asarray(first["KtKv"]), n)
        # tol=0 asks for every iteration up to maxiter: no stall or validation rule either
        stall = None if tol == 0 else self.stall_iters
        watch = None
        if has_val and (many or (self.val_stop and tol > 0)):
            watch = _ValidationStop(kernel, M, ctx, pres, Zx, c)
        res = cg(_ridges_operator(pres, c, gram, n, xp), B, x0=beta0, r0=R0, tol=tol, maxiter=self.maxiter,
                 stall_iters=stall, callback=watch if self.val_stop and tol > 0 else None, matvec_columns=True)
        best, extra = 0, {}
        if many:
            scores = watch.group_mse(res.x)
            best = int(np.argmin(scores))  # the first of equal scores: the order of ``regs``
            extra = {"reg": float(regs[best]), "reg_candidates": [[float(r), float(s)] for r, s in zip(regs, scores)]}
        alpha = to_numpy(pres[best].apply(res.x[:, best * c:(best + 1) * c]))
        if not np.all(np.isfinite(alpha)):
            raise SolverError("Nystrom CG produced non-finite coefficients; increase reg or check the data.")
        stop = "validation" if res.status == "stopped" else res.status
        info = {"cg_iters": res.n_iter, "cg_residual": res.residual, "cg_stop": stop, "passes": passes,
                "centers": Z.shape[0], **extra}
        return KernelPredictor(kernel, np.array(M), Z, alpha), info, alpha
