"""The RFM loop: solve, score, AGOP, update M; keep the best iteration (ALGORITHM.md 2).

Owns the loop state and its history; knows nothing of zarr or dask (passes go
through the context's engine) and nothing of any one solver.

The loop advances an explicit, immutable :class:`RFMState` one iteration at a
time (:func:`step`), so a checkpoint is just a saved state and ``--resume``
continues from it. Data access goes through a :class:`FitContext` (an engine,
the training dataset and how to prepare its blocks, the centers, the
validation rows); this module knows nothing of zarr or dask.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Protocol

import numpy as np

from ..exceptions import SolverError
from ..numerics.agop import AgopSums, agop_from_sums, normalize_metric
from ..numerics.kernels import Kernel
from .validation import predict_validation, rank
from .scale import ScreenRows, choose_scale, ridges_at_full_scale, score_predictions

__all__ = ["RFMParams", "FitContext", "Solver", "IterationRecord", "RFMState", "initial_state", "step", "run", "score_predictions"]

log = logging.getLogger("bigrfm.model.rfm")


@dataclasses.dataclass(frozen=True)
class RFMParams:
    """Hyper-parameters of the loop (see the estimators' docstrings).

    ``auto_bandwidth`` / ``auto_reg``: choose the bandwidth / ridge on validation in every iteration
    (:mod:`bigrfm.model.scale`); ``kernel`` then gives only the kernel family. ``patience``: stop after
    this many iterations in a row without a better validation score (None: run all ``iters``).
    """

    kernel: Kernel
    reg: float = 1e-3
    iters: int = 5
    diag: bool = False
    centering: bool = False
    agop_power: float = 1.0
    classification: bool = False
    auto_bandwidth: bool = False
    auto_reg: bool = False
    patience: int | None = None

    @property
    def auto_scale(self) -> bool:
        return self.auto_bandwidth or self.auto_reg


@dataclasses.dataclass(frozen=True, eq=False)
class FitContext:
    """Everything a solve or an AGOP pass reads.

    Attributes
    ----------
    engine : bigrfm.engine.Engine
        Runs passes over ``train``.
    train : Dataset
        The dataset holding the training rows (maybe among others).
    prepare : Prepare
        Selects the training rows of ``train`` and standardizes/encodes them.
    agop_prepare : Prepare
        Selects the AGOP evaluation rows (all training rows, or a sample).
    n_train : int
        Number of training rows.
    centers : ndarray (m, d)
        Prepared centers (all training rows for the exact solver).
    center_targets : ndarray (m, c) or None
        Encoded targets of the centers (needed by the exact solver only).
    X_val, Y_val : ndarray or None
        Prepared validation rows and encoded targets (small: capped).
    block_rows : int
    dtype : str
    screen : ScreenRows or None
        The rows that choose the bandwidth / ridge (only with ``bandwidth="auto"`` or ``reg="auto"``).
    memory_budget : int or None
        Bytes the solver may hold (how many ridges a solve can run side by side).
    """

    engine: Any
    train: Any
    prepare: Any
    agop_prepare: Any
    n_train: int
    centers: np.ndarray
    center_targets: np.ndarray | None
    X_val: np.ndarray | None
    Y_val: np.ndarray | None
    block_rows: int
    dtype: str = "float64"
    progress: Callable[..., None] | None = None
    device: str = "cpu"
    screen: ScreenRows | None = None
    memory_budget: int | None = None


class Solver(Protocol):
    """Fits the kernel ridge step for a fixed metric M."""

    name: str

    def fit(self, kernel: Kernel, M: np.ndarray, ctx: FitContext, warm: Any, reg: float | None = None) -> tuple[Any, dict, Any]:
        """Return (predictor, info for the history, warm-start state for the next iteration); ``reg``
        replaces the solver's own ridge for this fit."""
        ...


@dataclasses.dataclass(frozen=True)
class IterationRecord:
    """One row of ``history_``: iteration t, its validation metrics and cost.

    ``passes`` counts the passes over the training data of this iteration: the
    solver's (for Nystrom: one for the right-hand side, one per CG iteration and
    true-residual check) plus the AGOP pass; ``solver`` holds the solver's own
    record (CG iterations, final residual relative to the right-hand side, why
    CG stopped, centers). ``bandwidth`` and ``reg`` are the kernel's of this
    iteration; ``scale`` is the screen's record when they were chosen on
    validation (:class:`bigrfm.model.scale.ScaleChoice`). ``stop`` is set on the
    last iteration: ``"iters"`` (the maximum was reached) or ``"patience"`` (it
    ended earlier: no better validation score in ``patience`` iterations).
    """

    iter: int
    score: float | None
    val_mse: float | None
    val_accuracy: float | None
    seconds: float
    solver: dict = dataclasses.field(default_factory=dict)
    passes: int = 0
    bandwidth: float | None = None
    reg: float | None = None
    scale: dict = dataclasses.field(default_factory=dict)
    stop: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, eq=False)
class RFMState:
    """Where the loop stands after ``t`` iterations.

    ``M`` is the metric the next solve uses (M_t); ``best_*`` describe the
    iteration with the best validation score so far, or the latest one when
    there is no validation set. ``seed`` is the fit's resolved seed (of the
    validation split, centers, AGOP sample), saved with checkpoints so that a
    resumed fit draws the same rows.
``stop`` is why the loop has ended (``"patience"``
    or ``"iters"``), None while it goes on.
    """

    t: int
    M: np.ndarray
    warm: Any
    history: tuple[IterationRecord, ...]
    best_iter: int | None
    best_score: float | None
    best_M: np.ndarray | None
    best_predictor: Any
    seed: int | None = None
    stop: str | None = None


def initial_state(n_features: int, diag: bool) -> RFMState:
    """t = 0: the plain kernel, M = I."""
    M = np.ones(n_features) if diag else np.eye(n_features)
    return RFMState(0, M, None, (), None, None, None, None)


def _agop_pass(predictor: Any, ctx: FitContext, params: RFMParams) -> np.ndarray:
    sums: AgopSums = ctx.engine.map_reduce(
        predictor.agop_fn,
        ctx.train,
        broadcast={**predictor.broadcast(np, ctx.dtype), "diag": params.diag},
        prepare=ctx.agop_prepare,
        block_rows=ctx.block_rows,
        progress=ctx.progress,
    )
    M = None if predictor.agop_premultiplied else predictor.M
    agop = agop_from_sums(sums, M, centering=params.centering, diag=params.diag)
    return normalize_metric(agop, params.agop_power)


def _stop_reason(state: RFMState, params: RFMParams, score: float | None, best_iter: int) -> str | None:
    """Why the loop ends after iteration ``state.t`` (None: it goes on); "patience" only when it ends it early."""
    if state.t >= params.iters:
        return "iters"
    if score is not None and params.patience is not None and state.t - best_iter >= params.patience:
        return "patience"
    return None


def step(state: RFMState, ctx: FitContext, params: RFMParams, solver: Solver) -> RFMState:
    """Iteration t: fit at M_t (choosing the kernel's scale first when asked), score on the validation
    rows, and M_{t+1} = AGOP unless the loop stops here (``iters`` reached, or ``patience`` spent)."""
    t0 = time.perf_counter()
    kernel, reg, scale, predictor = params.kernel, params.reg, {}, None
    regs = None
    if params.auto_scale:
        last = state.history[-1] if state.history else None
        first = last is None or not last.scale
        choice = choose_scale(
            params.kernel, params.reg, state.M, ctx.screen, auto_bandwidth=params.auto_bandwidth,
            auto_reg=params.auto_reg, classification=params.classification,
            previous=None if first else (last.scale["ratio"], last.reg),
        )
        kernel, reg, scale, predictor = choice.kernel, choice.reg, choice.record, choice.predictor
        ridges_that_fit = getattr(solver, "ridges_that_fit", None)  # solvers that share passes between ridges
        if params.auto_reg and first and scale["candidates"] and not ctx.screen.all_rows and ridges_that_fit:
            # The ridge a subsample screen chose was the best for its few rows; a solver that runs
            # several ridges in the same passes chooses again among them on all rows (the first
            # choice only: later iterations keep the ridge, as they do after the screen).
            regs = ridges_at_full_scale(reg, ridges_that_fit(ctx.centers.shape[0], ctx.memory_budget))
    if predictor is not None:  # exact solver: the screen's winner is the fit
        info, warm = {}, state.warm
    else:
        more = {"regs": regs} if regs else {}  # only solvers with ridges_that_fit take them
        predictor, info, warm = solver.fit(kernel, state.M, ctx, state.warm, reg=reg, **more)
        reg = info.get("reg", reg)
    score = mse = acc = None
    if ctx.X_val is not None and ctx.X_val.shape[0] > 0:
        pred = predict_validation(predictor, ctx)
        score, mse, acc = score_predictions(pred, ctx.Y_val, params.classification)
    # with no validation rows every iteration replaces the previous one (no selection);
    # a NaN or infinite score ranks below every finite one
    better = state.best_iter is None or score is None or rank(score) > rank(state.best_score)
    stop = _stop_reason(state, params, score, state.t if better else state.best_iter)
    next_M = state.M
    passes = int(info.get("passes", 0))
    if stop is None:
        next_M = _agop_pass(predictor, ctx, params)
        passes += 1
    record = IterationRecord(state.t, score, mse, acc, time.perf_counter() - t0, info, passes,
                             float(kernel.bandwidth), float(reg), scale, stop)
    log.info("iteration %d: score=%s bandwidth=%.4g reg=%.3g seconds=%.2f %s", state.t, score, kernel.bandwidth, reg,
             record.seconds, info)
    return RFMState(
        t=state.t + 1,
        M=next_M,
        warm=warm,
        history=state.history + (record,),
        best_iter=state.t if better else state.best_iter,
        best_score=score if better else state.best_score,
        best_M=state.M if better else state.best_M,
        best_predictor=predictor if better else state.best_predictor,
        seed=state.seed,
        stop=stop,
    )


def run(
    ctx: FitContext,
    params: RFMParams,
    solver: Solver,
    state: RFMState | None = None,
    *,
    on_iteration: Callable[[RFMState], None] | None = None,
) -> RFMState:
    """Iterations t = state.t .. iters, or fewer when ``params.patience`` stops the loop; ``on_iteration``
    is called after each (checkpoints, progress)."""
    d = ctx.centers.shape[1]
    state = initial_state(d, params.diag) if state is None else state
    while state.t <= params.iters and state.stop is None:
        state = step(state, ctx, params, solver)
        if on_iteration is not None:
            on_iteration(state)
    scores = [r.score for r in state.history if r.score is not None]
    if scores and not np.isfinite(scores).any():
        raise SolverError(
            f"The validation score of every iteration (0 to {state.t - 1}) is NaN or infinite: the kernel "
            "solves diverged. Raise the regularization (--reg / reg), change the bandwidth (--bandwidth), "
            "or compute in float64 (--dtype float64)."
        )
    return state
