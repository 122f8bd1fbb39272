"""Validation-only hyper-parameter search for bigrfm, used by ``benchmarks/run.py``.

:func:`search_rfm` fits one RFM per grid point on the training split with
``fit(X_tr, y_tr, X_val, y_val)`` (so each fit also picks its best iteration
t = 0..iters on the validation split) and keeps the configuration with the
best validation score. The test split is never seen here.

Score of a fitted configuration (the record of its selected iteration):

* classification: validation accuracy, ties broken by the lower validation
  MSE of the one-hot scores;
* regression: the lower validation MSE.

Remaining ties go to the earlier grid point (grid order is deterministic).

The plain kernel (``iters=0``) comes out of the same grid for free: iteration
0 of every RFM fit *is* the plain kernel ridge model with M = I (same solver,
same seed, same centers), so the plain-kernel configuration is chosen by the
iteration-0 records (``history_[0]``) with the same rule, and
:func:`refit` fits that one configuration with ``iters=0`` to get a model.

benchmarks/ is not a package: ``sys.path.insert(0, "benchmarks"); import search``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import numpy as np

#: bandwidth (standardized units) x ridge x metric shape: the full grid (12 or 24 points).
FULL_GRID: dict[str, list] = {"bandwidth": [1.0, 3.0, 10.0, 30.0], "reg": [1e-4, 1e-2, 1.0], "diag": [False]}
#: The quick suite's grid (4 points; keeps ``run.py --suite quick`` under 10 minutes on 2 cores).
QUICK_GRID: dict[str, list] = {"bandwidth": [3.0, 10.0], "reg": [1e-3, 1.0], "diag": [False]}
#: Largest training split fitted with the exact solver; above it, Nystrom.
EXACT_MAX_ROWS = 20_000


def grid_points(grid: dict[str, list]) -> list[dict]:
    """The grid as a list of dicts, in a fixed order (last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def choose_solver(n_train: int) -> str:
    return "exact" if n_train <= EXACT_MAX_ROWS else "nystrom"


def record_key(task: str, rec: dict) -> tuple:
    """Sort key of one iteration record of ``history_`` (larger is better)."""
    mse = rec["val_mse"] if rec["val_mse"] is not None else np.inf
    if task == "classification":
        acc = rec["val_accuracy"] if rec["val_accuracy"] is not None else -np.inf
        return (acc, -mse)
    return (-mse,)


@dataclasses.dataclass
class Trial:
    """One grid point: its configuration, the selected iteration and its validation metrics."""

    params: dict
    best_iter: int | None
    val_accuracy: float | None
    val_mse: float | None
    key: tuple
    key_iter0: tuple
    val_accuracy_iter0: float | None
    val_mse_iter0: float | None
    fit_seconds: float
    error: str | None = None


@dataclasses.dataclass
class SearchResult:
    """What :func:`search_rfm` found.

    Attributes
    ----------
    model : fitted RFMClassifier / RFMRegressor of the best configuration
    params : its grid point (bandwidth, reg, diag, ...)
    fit_seconds : seconds of that one fit
    kernel_params : the grid point whose iteration 0 (plain kernel) scored best
    trials : one :class:`Trial` per grid point, in grid order
    seconds : wall time of the whole search
    solver : solver used for every fit
    """

    model: Any
    params: dict
    fit_seconds: float
    kernel_params: dict
    trials: list[Trial]
    seconds: float
    solver: str

    @property
    def best(self) -> Trial:
        return next(t for t in self.trials if t.params == self.params)


def make_model(task: str, params: dict, seed: int, *, iters: int, solver: str, **fixed: Any) -> Any:
    from bigrfm import RFMClassifier, RFMRegressor

    cls = RFMClassifier if task == "classification" else RFMRegressor
    return cls(iters=iters, solver=solver, random_state=seed, **{**fixed, **params})


def search_rfm(task: str, X_tr: np.ndarray, y_tr: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
               grid: dict[str, list], seed: int, *, iters: int = 5, solver: str | None = None,
               **fixed: Any) -> SearchResult:
    """Grid search over ``grid`` (a dict of lists, e.g. :data:`FULL_GRID`) using
    the validation split only.

    Parameters
    ----------
    task : "classification" or "regression"
    X_tr, y_tr, X_val, y_val : arrays (raw features; bigrfm standardizes internally)
    grid : dict name -> list of values of RFMClassifier/RFMRegressor parameters
    seed : random_state of every fit
    iters : RFM iterations of each fit (each fit keeps its best t = 0..iters on validation)
    solver : None picks "exact" up to :data:`EXACT_MAX_ROWS` training rows, else "nystrom"
    fixed : further estimator parameters shared by all grid points

    Returns
    -------
    SearchResult (the best model is kept; the others are dropped as the search goes).
    """
    solver = solver or choose_solver(len(y_tr))
    t_start = time.perf_counter()
    trials: list[Trial] = []
    best_model, best_key = None, None
    for params in grid_points(grid):
        model = make_model(task, params, seed, iters=iters, solver=solver, **fixed)
        t0 = time.perf_counter()
        try:
            model.fit(X_tr, y_tr, X_val, y_val)
        except Exception as e:  # noqa: BLE001 - one failing grid point must not end the search
            trials.append(Trial(params, None, None, None, (-np.inf,), (-np.inf,), None, None,
                                time.perf_counter() - t0, f"{type(e).__name__}: {e}"))
            continue
        seconds = time.perf_counter() - t0
        hist = model.history_
        rec = hist[model.best_iter_]
        key, key0 = record_key(task, rec), record_key(task, hist[0])
        trials.append(Trial(params, int(model.best_iter_), rec["val_accuracy"], rec["val_mse"], key, key0,
                            hist[0]["val_accuracy"], hist[0]["val_mse"], seconds))
        if best_key is None or key > best_key:
            best_model, best_key = model, key
    ok = [t for t in trials if t.error is None]
    if not ok:
        raise RuntimeError("every grid point failed: " + "; ".join(f"{t.params}: {t.error}" for t in trials))
    best = max(ok, key=lambda t: t.key)  # max keeps the first of equal keys
    kernel = max(ok, key=lambda t: t.key_iter0)
    return SearchResult(best_model, best.params, best.fit_seconds, kernel.params, trials,
                        time.perf_counter() - t_start, solver)


def refit(task: str, X_tr: np.ndarray, y_tr: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
          params: dict, seed: int, *, iters: int, solver: str, **fixed: Any) -> tuple[Any, float]:
    """Fit one configuration; returns (model, fit seconds)."""
    model = make_model(task, params, seed, iters=iters, solver=solver, **fixed)
    t0 = time.perf_counter()
    model.fit(X_tr, y_tr, X_val, y_val)
    return model, time.perf_counter() - t0


def format_params(params: dict) -> str:
    """Short label of a grid point: ``L=10 reg=1e-02`` (+ `` diag`` when diag=True)."""
    parts = []
    for k, v in params.items():
        if k == "bandwidth":
            parts.append(f"L={v:g}")
        elif k == "reg":
            parts.append(f"reg={v:.0e}")
        elif k == "diag":
            if v:
                parts.append("diag")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)
