"""Validation rows: gathered through the engine (capped, seeded), predicted through the engine, and ranked.

Owns where the validation rows of a fit come from and how an iteration's
predictor is run on them; knows nothing of zarr or dask (both go through the
engine of the fit) and holds no scoring formula (that is
:func:`bigrfm.model.rfm.score_predictions`).

The validation rows are at most :data:`VALIDATION_CAP`: a stored split with
more rows is sampled (seeded) in one pass that also checks every value is
finite, so the client never reads a whole stored ``X_val``. Every iteration
predicts them as a pass over an in-memory dataset, so on a cluster the work
runs on the workers (the rows are sent to them once per fit) and the client
only concatenates (n_val, c) predictions, in block order: the same bits as
predicting block by block on the client.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any

import numpy as np

from ..io import stats as stats_mod
from ..io.datasets import ArrayDataset
from ..numerics.backend import get_xp, to_numpy
from .prepare import RowSelect, sample_rows

__all__ = ["VALIDATION_CAP", "gather_validation", "predict_validation", "rank", "ToBlock"]

#: Most validation rows a fit keeps (held out of the training rows, or sampled from a stored split).
VALIDATION_CAP = 50_000


def rank(score: float | None) -> float:
    """A validation score for comparisons: NaN and infinite scores rank below every finite one."""
    return score if score is not None and math.isfinite(score) else -math.inf


# -- gathering the rows of a stored split ------------------------------------------------


def gather_block(
    X: np.ndarray, y: np.ndarray | None, *, block_range: tuple[int, int], select: RowSelect | None,
    source: str | None, x_name: str, y_name: str, allow_nan: bool = False,
) -> tuple[list, list]:
    """The selected rows of one raw block (all of them when ``select`` is None), after a finiteness check
    (NaN features allowed with ``allow_nan``: the model imputes them)."""
    start, stop = block_range
    stats_mod.check_finite(X, y, start, source=source, x_name=x_name, y_name=y_name, allow_nan=allow_nan)
    keep = None if select is None else select.mask(start, stop)
    if keep is None:
        return [X], [y]
    return [X[keep]], [None if y is None else y[keep]]


def _concat(a: tuple[list, list], b: tuple[list, list]) -> tuple[list, list]:
    return a[0] + b[0], a[1] + b[1]


def gather_validation(validation: Any, engine: Any, rng: np.random.Generator, *, block_rows: int | None = None,
                      progress: Any = None, allow_nan: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw rows of a validation dataset, at most :data:`VALIDATION_CAP` (a seeded sample beyond), in row order.

    One pass through ``engine``; a NaN or inf raises a DataError naming the
    array (``X_val``/``y_val`` for a stored split) and the row (NaN features
    pass with ``allow_nan``).
    """
    n = validation.n_rows
    select = None if n <= VALIDATION_CAP else RowSelect(sample_rows(rng, n, VALIDATION_CAP), include=True)
    Xs, ys = engine.map_reduce(
        gather_block,
        validation,
        broadcast={"select": select, "source": getattr(validation, "path", None),
                   "x_name": getattr(validation, "x_name", "X_val"), "y_name": getattr(validation, "y_name", "y_val"),
                   "allow_nan": allow_nan},
        reduce=_concat,
        block_rows=block_rows,
        with_range=True,
        progress=progress,
    )
    X = np.concatenate(Xs)
    y = None if not ys or ys[0] is None else np.concatenate(ys)
    return X, y


# -- predicting them every iteration ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToBlock:
    """Prepared rows to a block: cast to ``dtype`` and moved to ``device`` (what a training block gets)."""

    dtype: str
    device: str = "cpu"

    def __call__(self, X: np.ndarray, y: Any, start: int, stop: int) -> tuple[Any, None]:
        X = np.asarray(X, dtype=self.dtype)
        return (X if self.device == "cpu" else get_xp(self.device).asarray(X)), None


def predict_rows_block(X: Any, y: Any = None, *, predict_fn: Any, **bc: Any) -> list[np.ndarray]:
    """Predictions of one block of prepared rows, as a one-element list (lists concatenate in block order)."""
    return [to_numpy(predict_fn(X, None, **bc)).astype(np.float64, copy=False)]


def _append(a: list, b: list) -> list:
    return a + b


# One in-memory dataset per fit context (dropped with it), so that the engine sends
# the validation rows to the workers once per fit and not once per iteration.
_DATASETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _dataset_of(ctx: Any) -> ArrayDataset:
    ds = _DATASETS.get(ctx)
    if ds is None or ds.X is not ctx.X_val:
        ds = _DATASETS[ctx] = ArrayDataset(ctx.X_val)
    return ds


def predict_validation(predictor: Any, ctx: Any) -> np.ndarray:
    """Predictions (n_val, c), float64, of ``predictor`` on the fit's prepared validation rows, through its engine.

    Blocks of ``ctx.block_rows`` rows in the block dtype on ``ctx.device``, as
    a training pass; reduced in block order.
    """
    parts = ctx.engine.map_reduce(
        predict_rows_block,
        _dataset_of(ctx),
        broadcast={**predictor.broadcast(np, ctx.dtype), "predict_fn": predictor.predict_fn},
        prepare=ToBlock(str(ctx.dtype), ctx.device),
        reduce=_append,
        block_rows=ctx.block_rows,
    )
    return np.concatenate(parts)
