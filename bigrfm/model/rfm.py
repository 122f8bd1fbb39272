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

__all__ = ["RFMParams", "FitContext", "Solver", "IterationRecord", "RFMState", "initial_state", "step", "run", "score_predictions"]

log = logging.getLogger("bigrfm.model.rfm")


@dataclasses.dataclass(frozen=True)
class RFMParams:
    """Hyper-parameters of the loop (see the estimators' docstrings)."""

    kernel: Kernel
    reg: float = 1e-3
    iters: int = 5
    diag: bool = False
    centering: bool = False
    agop_power: float = 1.0
    classification: bool = False


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


class Solver(Protocol):
    """Fits the kernel ridge step for a fixed metric M."""

    name: str

    def fit(self, kernel: Kernel, M: np.ndarray, ctx: FitContext, warm: Any) -> tuple[Any, dict, Any]:
        """Return (predictor, info for the history, warm-start state for the next iteration)."""
        ...


@dataclasses.dataclass(frozen=True)
class IterationRecord:
    """One row of ``history_``: iteration t, its validation metrics and cost.

    ``passes`` counts the passes over the training data of this iteration: the
    solver's (for Nystrom: one for the right-hand side, one per CG iteration and
    true-residual check) plus the AGOP pass; ``solver`` holds the solver's own
    record (CG iterations, final residual relative to the right-hand side, why
    CG stopped, centers).
    """

    iter: int
    score: float | None
    val_mse: float | None
    val_accuracy: float | None
    seconds: float
    solver: dict = dataclasses.field(default_factory=dict)
    passes: int = 0

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


def initial_state(n_features: int, diag: bool) -> RFMState:
    """t = 0: the plain kernel, M = I."""
    M = np.ones(n_features) if diag else np.eye(n_features)
    return RFMState(0, M, None, (), None, None, None, None)


def score_predictions(pred: np.ndarray, Y: np.ndarray, classification: bool) -> tuple[float, float, float | None]:
    """(score, mse, accuracy) of predictions against encoded targets; higher score is better."""
    mse = float(np.mean((pred - Y) ** 2))
    if classification:
        acc = float(np.mean(np.argmax(pred, axis=1) == np.argmax(Y, axis=1)))
        # accuracy first; the MSE of the scores breaks ties between iterations
        return acc - 1e-9 * mse, mse, acc
    return -mse, mse, None


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


def step(state: RFMState, ctx: FitContext, params: RFMParams, solver: Solver) -> RFMState:
    """Iteration t: fit at M_t, score on the validation rows, and (if t < iters) M_{t+1} = AGOP."""
    t0 = time.perf_counter()
    predictor, info, warm = solver.fit(params.kernel, state.M, ctx, state.warm)
    score = mse = acc = None
    if ctx.X_val is not None and ctx.X_val.shape[0] > 0:
        pred = predict_validation(predictor, ctx)
        score, mse, acc = score_predictions(pred, ctx.Y_val, params.classification)
    # with no validation rows every iteration replaces the previous one (no selection);
    # a NaN or infinite score ranks below every finite one
    better = state.best_iter is None or score is None or rank(score) > rank(state.best_score)
    next_M = state.M
    passes = int(info.get("passes", 0))
    if state.t < params.iters:
        next_M = _agop_pass(predictor, ctx, params)
        passes += 1
    record = IterationRecord(state.t, score, mse, acc, time.perf_counter() - t0, info, passes)
    log.info("iteration %d: score=%s seconds=%.2f %s", state.t, score, record.seconds, info)
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
    )


def run(
    ctx: FitContext,
    params: RFMParams,
    solver: Solver,
    state: RFMState | None = None,
    *,
    on_iteration: Callable[[RFMState], None] | None = None,
) -> RFMState:
    """Iterations t = state.t .. iters; ``on_iteration`` is called after each (checkpoints, progress)."""
    d = ctx.centers.shape[1]
    state = initial_state(d, params.diag) if state is None else state
    while state.t <= params.iters:
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
