"""The kernel's scale chosen on validation in every RFM iteration: ``bandwidth="auto"`` and ``reg="auto"``.

Owns the candidate sets, the screen that scores them and the record it leaves in ``history_``;
holds rows in memory only (no passes over the data) and knows nothing of zarr or dask.

A fixed bandwidth means a different kernel on every dataset and in every iteration: distances
grow with the number of features, and each AGOP update (M normalized by its largest entry)
changes the metric's scale. The bandwidth candidates are therefore multiples of the median
pairwise distance ||x - z||_M of a seeded sample of training rows (at most :data:`MEDIAN_ROWS`)
in the iteration's metric: :data:`RATIOS` at t = 0, then (:data:`RECHOOSE` ``"narrow"``)
:data:`NARROW` times the ratio chosen in the previous iteration. The ridge candidates of
``reg="auto"`` are :data:`REGS` at t = 0; later iterations keep the chosen ridge. Each candidate
(bandwidth, reg) is fitted by exact kernel ridge regression on the screening rows and ranked
(:data:`SELECT` ``"mse"``) by the mean squared error of its predictions on validation rows (the
one-hot scores of a classifier: a smoother criterion than accuracy on small validation sets);
ties go to the earlier candidate (bandwidths in ratio order, then ridges in :data:`REGS` order).
benchmarks/scale_screen.py holds the measurements behind these choices.

* Exact solver with at most :data:`SCREEN_ROWS` training rows: the screening rows are all of
  them. The candidates share the distance matrices (only phi and the Cholesky factorization
  differ, :func:`~bigrfm.solvers.exact.solve_exact_candidates`) and the winner's coefficients
  are the iteration's fit: nothing is refitted.
* Otherwise (more rows, nystrom, rff): a seeded sample of :data:`SCREEN_ROWS` training rows
  (from the rows in memory: all rows, the centers, or rows read in the first pass for rff) is
  screened the same way, scored on at most :data:`SCREEN_VAL_ROWS` validation rows; the solver
  then fits the winner on all rows. A screen on few rows leans towards a stronger ridge than all
  the rows need; a solver that runs several ridges from the same passes (one with a
  ``ridges_that_fit``: nystrom, rff) therefore solves :func:`ridges_at_full_scale` at t = 0 on
  all rows and keeps the one its validation rows prefer.

With no validation rows there is nothing to choose on: the bandwidth is :data:`DEFAULT_RATIO`
times the median distance and the ridge :data:`DEFAULT_REG`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ..numerics.kernels import Kernel
from ..numerics.linalg import sq_distance_matrix
from ..solvers.exact import solve_exact_candidates
from .predictors import KernelPredictor

__all__ = [
    "RATIOS",
    "REGS",
    "DEFAULT_RATIO",
    "DEFAULT_REG",
    "MEDIAN_ROWS",
    "SCREEN_ROWS",
    "SCREEN_VAL_ROWS",
    "RECHOOSE",
    "NARROW",
    "SELECT",
    "ScreenRows",
    "ScaleChoice",
    "median_distance",
    "choose_scale",
    "score_predictions",
    "ridges_at_full_scale",
]

#: Bandwidth candidates of ``bandwidth="auto"``, as multiples of the median pairwise distance.
RATIOS = (0.5, 1.0, 2.0, 4.0)
#: Ridge candidates of ``reg="auto"``.
REGS = (1e-3, 1e-1, 1.0)
#: Bandwidth ratio when there are no validation rows to choose on.
DEFAULT_RATIO = 2.0
#: Ridge of ``reg="auto"`` when there are no validation rows to choose on.
DEFAULT_REG = 1e-3
#: Rows of the seeded sample whose median pairwise distance sets the candidates' scale.
MEDIAN_ROWS = 1000
#: Most training rows screened: the exact solver screens all of them up to this many (the winner is its
#: fit); above it, and for nystrom and rff, a seeded sample of this many is screened and the winner refitted.
SCREEN_ROWS = 4000
#: Most validation rows scoring the candidates.
SCREEN_VAL_ROWS = 4_000
#: Candidates after the first iteration: "narrow" (the previous ratio times NARROW, the previous
#: ridge), "all" (RATIOS and REGS again) or "keep" (the previous ratio and ridge, no screen).
RECHOOSE = "narrow"
#: Factors of the previous ratio screened after the first iteration.
NARROW = (0.5, 1.0, 2.0)
#: What ranks the candidates: "mse" (validation MSE) or "score" (the loop's: accuracy, ties by MSE).
SELECT = "mse"


def score_predictions(pred: np.ndarray, Y: np.ndarray, classification: bool) -> tuple[float, float, float | None]:
    """(score, mse, accuracy) of predictions against encoded targets; higher score is better."""
    mse = float(np.mean((pred - Y) ** 2))
    if classification:
        acc = float(np.mean(np.argmax(pred, axis=1) == np.argmax(Y, axis=1)))
        # accuracy first; the MSE of the scores breaks ties between iterations
        return acc - 1e-9 * mse, mse, acc
    return -mse, mse, None


@dataclasses.dataclass(frozen=True, eq=False)
class ScreenRows:
    """The rows a screen reads: prepared, float64, held on the client.

    Attributes
    ----------
    X, Y : ndarray (s, d), (s, c)
        Screening rows and their encoded targets.
    X_val, Y_val : ndarray (v, d), (v, c) or None
        Validation rows scoring the candidates (None: no validation rows).
    X_median : ndarray (<= MEDIAN_ROWS, d)
        The sample whose median pairwise distance sets the candidates' scale.
    all_rows : bool
        The screening rows are all the training rows (exact solver): the winner's fit is the iteration's.
    share_distances : bool
        Keep the s x s and v x s distance matrices for all candidates (when they fit the memory budget).
    """

    X: np.ndarray
    Y: np.ndarray
    X_val: np.ndarray | None
    Y_val: np.ndarray | None
    X_median: np.ndarray
    all_rows: bool
    share_distances: bool = True

    @classmethod
    def sample(
        cls, X: np.ndarray, Y: np.ndarray, X_val: np.ndarray | None, Y_val: np.ndarray | None,
        rng: np.random.Generator, *, all_rows: bool, memory_budget: int,
    ) -> "ScreenRows":
        """The screen's rows, from the rows a fit holds in memory.

        ``all_rows`` (exact solver): X are all the training rows and all are screened; otherwise a seeded
        sample of at most :data:`SCREEN_ROWS` of them. At most :data:`SCREEN_VAL_ROWS` validation rows
        (seeded) score the candidates, and :data:`MEDIAN_ROWS` screening rows set the scale. The distance
        matrices are shared between candidates when two of each (distances and kernel values, float64)
        take at most 80% of ``memory_budget``.
        """

        def pick(n: int, k: int) -> np.ndarray | slice:
            return slice(None) if n <= k else np.sort(rng.choice(n, size=k, replace=False))

        if not all_rows:
            keep = pick(X.shape[0], SCREEN_ROWS)
            X, Y = X[keep], Y[keep]
        if X_val is not None:
            keep = pick(X_val.shape[0], SCREEN_VAL_ROWS)
            X_val, Y_val = X_val[keep], Y_val[keep]
        s, v = X.shape[0], 0 if X_val is None else X_val.shape[0]
        share = 2 * 8 * s * (s + v) <= 0.8 * memory_budget
        return cls(X, Y, X_val, Y_val, X[pick(s, MEDIAN_ROWS)], all_rows=all_rows, share_distances=share)


@dataclasses.dataclass(frozen=True, eq=False)
class ScaleChoice:
    """The kernel and ridge of one iteration, what the screen saw, and the winner's fit when it is final.

    ``record`` goes to the iteration's history: ``median`` (the median distance), ``ratio`` (bandwidth /
    median), ``candidates`` ([bandwidth, reg, validation score] each; score None where the system was
    singular), ``rows`` (screening rows), ``seconds``.
    """

    kernel: Kernel
    reg: float
    record: dict
    predictor: KernelPredictor | None = None


def ridges_at_full_scale(chosen: float, k: int) -> list[float]:
    """The ridges a solver that shares its passes between ridges tries on all rows after a subsample
    screen chose ``chosen``: at most ``k`` of ``chosen`` and :data:`REGS`, ``chosen`` first, then the
    smaller ridges (nearest first: a screen on fewer rows errs towards a stronger ridge), then the larger.
    """
    smaller = sorted((r for r in REGS if r < chosen), reverse=True)
    larger = sorted(r for r in REGS if r > chosen)
    return ([chosen] + smaller + larger)[:max(1, k)]


def median_distance(M: np.ndarray, X: np.ndarray) -> float:
    """Median of the positive pairwise distances ||x_i - x_j||_M (i < j) among the rows of X.

    Exact duplicates (frequent with coded categories) are left out; with no positive distance at all
    (M = 0, or one distinct row) the scale is 1.
    """
    D2 = sq_distance_matrix(M, X, X)  # (k, k)
    d2 = D2[np.triu_indices(X.shape[0], k=1)]
    d2 = d2[d2 > 0]
    return float(np.sqrt(np.median(d2))) if d2.size else 1.0


def choose_scale(
    template: Kernel,
    reg: float,
    M: np.ndarray,
    screen: ScreenRows,
    *,
    auto_bandwidth: bool,
    auto_reg: bool,
    classification: bool,
    previous: tuple[float, float] | None = None,
) -> ScaleChoice:
    """Choose the bandwidth (``auto_bandwidth``) and/or the ridge (``auto_reg``) of the metric M on validation.

    ``template`` gives the kernel family (its bandwidth is used when ``auto_bandwidth`` is False) and
    ``reg`` the ridge when ``auto_reg`` is False.
    """
    t0 = time.perf_counter()
    med = median_distance(M, screen.X_median)
    bandwidths = [r * med for r in RATIOS] if auto_bandwidth else [template.bandwidth]
    regs = list(REGS) if auto_reg else [reg]
    if previous is not None and RECHOOSE != "all":
        ratio0, reg0 = previous
        factors = (1.0,) if RECHOOSE == "keep" else NARROW
        bandwidths = [f * ratio0 * med for f in factors] if auto_bandwidth else bandwidths
        regs = [reg0] if auto_reg else regs
        if len(bandwidths) * len(regs) == 1 and not screen.all_rows:
            record = {"median": med, "rows": 0, "ratio": bandwidths[0] / med, "candidates": [],
                      "seconds": time.perf_counter() - t0}
            return ScaleChoice(dataclasses.replace(template, bandwidth=bandwidths[0]), regs[0], record)
    record: dict[str, Any] = {"median": med, "rows": int(screen.X.shape[0])}
    if screen.X_val is None or screen.X_val.shape[0] == 0:
        L = DEFAULT_RATIO * med if auto_bandwidth else template.bandwidth
        r = DEFAULT_REG if auto_reg else reg
        record.update(ratio=L / med, candidates=[], seconds=time.perf_counter() - t0)
        return ScaleChoice(dataclasses.replace(template, bandwidth=L), r, record)
    kernels = [dataclasses.replace(template, bandwidth=L) for L in bandwidths]
    best: tuple | None = None
    candidates = []
    for kernel, r, alpha, pred in solve_exact_candidates(
        kernels, regs, M, screen.X, screen.Y, screen.X_val, share=screen.share_distances
    ):
        score = None if alpha is None else score_predictions(pred, screen.Y_val, classification and SELECT == "score")[0]
        candidates.append([kernel.bandwidth, r, score])
        if score is not None and (best is None or score > best[0]):
            best = (score, kernel, r, alpha)
    if best is None:  # every candidate singular: the middle bandwidth, the largest ridge (the solver reports)
        best = (None, kernels[len(kernels) // 2], max(regs), None)
    _, kernel, r, alpha = best
    record.update(ratio=kernel.bandwidth / med, candidates=candidates, seconds=time.perf_counter() - t0)
    predictor = None
    if screen.all_rows and alpha is not None:
        predictor = KernelPredictor(kernel, np.array(M), screen.X, alpha)
    return ScaleChoice(kernel, r, record, predictor)
