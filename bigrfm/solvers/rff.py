"""The random-feature solver: one streamed pass of Phi^T Phi and Phi^T Y per RFM iteration.

Draws fresh frequencies in each iteration's metric (a seeded stream per
iteration, so a resumed fit draws the same ones) and solves the D x D ridge
system on the client. The feature maths lives in :mod:`bigrfm.numerics.random_features`;
this module only orchestrates a pass and reads no files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.predictors import RFFPredictor, predict_in_blocks
from ..numerics.backend import REDUCE_DTYPE
from ..numerics.kernels import Kernel
from ..numerics.linalg import metric_factor
from ..numerics.random_features import GramSums, rff_gram_block, rff_solve, sample_rff

__all__ = ["RFFSolver", "DEFAULT_COMPONENTS"]

#: Random features when ``n_components`` is not given.
DEFAULT_COMPONENTS = 4096


class RFFSolver:
    """Random Fourier features in the metric of each iteration; one streamed pass per solve.

    Parameters
    ----------
    reg : float
        Ridge term: (Phi^T Phi + reg I) w = Phi^T Y.
    n_components : int or None
        Number of features D (None: 4096).
    rng : numpy Generator
        Seeds the frequencies; iteration k draws from its own stream, so a
        resumed fit draws the same frequencies as an uninterrupted one.
    """

    name = "rff"
    @staticmethod
    def ridges_that_fit(m: int, memory_budget: int | None) -> int:
        """``fit(..., regs=[...])`` solves any number of ridges from its one pass (one D x D solve each)."""
        return 1 << 20

    def __init__(self, reg: float, n_components: int | None = None, rng: np.random.Generator | None = None) -> None:
        self.reg = reg
        self.n_components = int(n_components or DEFAULT_COMPONENTS)
        self.seed = int((rng or np.random.default_rng()).integers(2**63 - 1))

    def fit(self, kernel: Kernel, M: np.ndarray, ctx: Any, warm: Any, reg: float | None = None,
            regs: list[float] | None = None) -> tuple[RFFPredictor, dict, int]:
        """See :class:`bigrfm.model.rfm.Solver`; ``warm`` counts the solves so far; ``reg`` replaces the
        solver's own for this fit.

        ``regs`` (several ridges; needs validation rows, else its first is used): each is solved on the
        sums of the one pass and the one whose weights score best on the validation rows is kept; ``info``
        then holds ``reg`` and ``reg_candidates`` ([ridge, validation MSE] each, ties to the earlier).
        """
        solves = 0 if warm is None else int(np.asarray(warm))  # warm state = solves done so far
        S = metric_factor(np.asarray(M, dtype=REDUCE_DTYPE))
        rank = S.shape[0] if S.ndim == 1 else S.shape[1]
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(solves,)))
        rffmap = sample_rff(kernel, self.n_components, rank, rng)
        sums: GramSums = ctx.engine.map_reduce(
            rff_gram_block,
            ctx.train,
            broadcast={"S": S.astype(ctx.dtype), "rffmap": rffmap},
            prepare=ctx.prepare,
            block_rows=ctx.block_rows,
            progress=ctx.progress,
        )
        info: dict[str, Any] = {"features": self.n_components, "passes": 1}
        regs = [self.reg if reg is None else reg] if not regs else list(regs)
        if len(regs) > 1 and ctx.X_val is not None and ctx.X_val.shape[0] > 0:
            fits = [RFFPredictor(kernel, np.array(M), rffmap, rff_solve(sums.gram, sums.rhs, r)) for r in regs]
            mses = [float(np.mean((predict_in_blocks(p, ctx.X_val, ctx.block_rows, ctx.dtype) - ctx.Y_val) ** 2))
                    for p in fits]
            best = int(np.argmin(mses))  # the first of equal scores: the order of ``regs``
            info.update(reg=float(regs[best]), reg_candidates=[[float(r), m] for r, m in zip(regs, mses)])
            return fits[best], info, solves + 1
        w = rff_solve(sums.gram, sums.rhs, regs[0])
        return RFFPredictor(kernel, np.array(M), rffmap, w), info, solves + 1
