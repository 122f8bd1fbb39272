"""Streamed prediction and evaluation of a fitted model over a dataset on disk.

Owns the predict and evaluate passes of the CLI (block functions and their
reductions); fits nothing and never holds more than a block of rows.

Both run through the engine: each block is standardized, predicted, and
either written to its rows of the output Zarr group (prediction) or reduced
to a few sums (evaluation). Peak memory is one block, whatever the rows.

Predictions are written by the workers themselves into the output's
temporary folder (an absolute path), which appears at ``out`` whole when the
pass is done (:mod:`bigrfm.io.atomic`): on a remote cluster, ``out`` must be
on a filesystem every worker can write. R^2 comes from the targets' streaming
moments (:class:`bigrfm.io.stats.Moments`), exact for targets with a large mean.

:class:`BlockPredict` is the same per-block prediction as one picklable
callable, which the estimators map over a Dask collection lazily (and over the
blocks of a zarr array).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import DataError, InputError, SolverError
from .io.atomic import atomic_folder
from .io.stats import Moments, check_finite
from .io.missing import Imputation
from .model.predictors import scores_to_proba
from .model.prepare import Prepare
from .numerics.backend import resolve_device, resolve_dtype, to_numpy

__all__ = ["OutputMap", "BlockPredict", "prepare_of", "predict_dataset", "evaluate_dataset"]

#: What :class:`BlockPredict` returns: standardized scores, predictions, probabilities, decision values.
KINDS = ("scores", "predict", "proba", "decision")


@dataclasses.dataclass(frozen=True, eq=False)
class OutputMap:
    """Model scores (standardized units) to predictions in the user's units."""

    classes: np.ndarray | None
    y_mean: np.ndarray | None
    y_scale: np.ndarray | None
    y_ndim: int = 1

    @classmethod
    def of(cls, est: Any) -> "OutputMap":
        return cls(getattr(est, "classes_", None), est._y_mean, est._y_scale, int(getattr(est, "_y_ndim", 1)))

    def __call__(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None)."""
        if self.classes is not None:
            proba = scores_to_proba(scores)
            return self.classes[np.argmax(proba, axis=1)], proba
        pred = scores * self.y_scale + self.y_mean
        return (pred.ravel() if self.y_ndim == 1 else pred), None


def prepare_of(est: Any, dtype: str | None = None, device: str | None = None) -> Prepare:
    """How a fitted estimator prepares raw rows: imputation, standardization, cast to the block dtype.

    Where and in which dtype a pass runs is the engine's choice (the command line's, for
    ``bigrfm predict``), not the saved model's: a model fitted on a GPU predicts on a
    CPU-only machine, and ``--device cuda`` moves a CPU-fitted model's passes to the GPU.
    ``dtype`` / ``device`` default to the estimator's own settings.
    """
    device = resolve_device(device or est.device)
    dtype = dtype or resolve_dtype(est.dtype, device)
    impute = Imputation.of(getattr(est, "impute_values_", None), getattr(est, "indicator_features_", None))
    return Prepare(est.x_mean_, est.x_scale_, dtype, raw_y=True, device=device, impute=impute)


@dataclasses.dataclass(frozen=True, eq=False)
class BlockPredict:
    """Raw rows (b, d) -> the model's output for them, as one picklable callable.

    Holds the model's small arrays (centers, coefficients, metric factor: what a
    pass broadcasts), prepared once, so mapping it over many blocks sends them once.

    Attributes
    ----------
    prepare : Prepare
    predict_fn : callable
        The predictor's block function.
    broadcast : dict
        Its arrays (numpy, block dtype).
    output : OutputMap
    n_outputs : int
        Columns of the scores (classes, or regression targets).
    kind : {"scores", "predict", "proba", "decision"}
        Standardized one-hot or regression scores (b, c); predictions in the
        user's units or labels; class probabilities (b, k); decision values
        ((b,) for two classes, else (b, k)).
    """

    prepare: Prepare
    predict_fn: Any
    broadcast: dict
    output: OutputMap
    n_outputs: int
    kind: str

    @classmethod
    def of(cls, est: Any, kind: str) -> "BlockPredict":
        if kind not in KINDS:
            raise InputError(f"kind must be one of {list(KINDS)}. Got {kind!r} instead.")
        pred = est.predictor_
        prep = prepare_of(est)
        return cls(prep, pred.predict_fn, pred.broadcast(np, prep.dtype), OutputMap.of(est), pred.n_outputs, kind)

    @property
    def n_out(self) -> int | None:
        """Columns of the output; None when it is one value per row."""
        c = self.n_outputs
        if self.kind == "scores" or self.kind == "proba":
            return c
        if self.kind == "decision":
            return None if c == 2 else c
        return None if self.output.classes is not None or self.output.y_ndim == 1 else c

    @property
    def dtype(self) -> np.dtype:
        """Of the output: the labels' for class predictions, else float64."""
        if self.kind == "predict" and self.output.classes is not None:
            return np.asarray(self.output.classes).dtype
        return np.dtype(np.float64)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        Xp, _ = self.prepare(X, None, 0, X.shape[0])
        s = _scores(Xp, self.broadcast, self.predict_fn, 0, None)
        if self.kind == "scores":
            return s
        if self.kind == "decision":
            return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s
        pred, proba = self.output(s)
        return proba if self.kind == "proba" else pred


def _scores(X: Any, predictor_bc: dict, predict_fn: Any, start: int, source: str | None) -> np.ndarray:
    """Model scores (b, c) of a prepared block on the host; a row whose score is not finite raises.

    Only such rows are copied back to check them (a GPU block stays on the GPU):
    NaN or inf in X is bad input (a DataError naming the row); finite rows with
    non-finite scores mean damaged coefficients (a SolverError).
    """
    scores = to_numpy(predict_fn(X, None, **predictor_bc)).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(scores.reshape(scores.shape[0], -1)).all(axis=1))
    if bad.size:
        rows = to_numpy(X[bad])
        nonfinite = bad[~np.isfinite(rows.reshape(rows.shape[0], -1)).all(axis=1)]
        where = f" of {source}" if source else ""
        if nonfinite.size:
            raise DataError(
                f"'X'{where} contains NaN or inf in row {start + int(nonfinite[0])} ({nonfinite.size} row(s) in rows "
                f"{start}–{start + scores.shape[0]}). Clean or drop these rows first, e.g. "
                "`bigrfm convert SRC OUT.zarr --drop-nonfinite`."
            )
        raise SolverError(
            f"The model predicts NaN or inf for row {start + int(bad[0])}{where}, whose values are finite: its "
            "coefficients are damaged. Refit the model."
        )
    return scores


def predict_write_block(
    X: np.ndarray, y: Any = None, *, block_range: tuple[int, int], out: str, output: OutputMap, proba: bool, predict_fn: Any,
    source: str | None = None, **bc: Any
) -> int:
    """Predict one block and write it to rows [start, stop) of the output group; returns the row count.

    Rows holding NaN or inf (after the model's preparation) raise a DataError naming the first one.
    """
    import zarr  # noqa: PLC0415

    start, stop = block_range
    pred, p = output(_scores(X, bc, predict_fn, start, source))
    if not os.path.isdir(out):
        raise DataError(
            f"The prediction folder {out} being written does not exist on {socket.gethostname()}: the Dask "
            "workers write predictions themselves, so on a remote cluster --out must be on a filesystem every "
            "worker can write (shared, mounted at the same path)."
        )
    group = zarr.open_group(out, mode="r+")
    group["y_pred"][start:stop] = pred
    if proba:
        group["proba"][start:stop] = p
    return stop - start


def evaluate_block(X: np.ndarray, y: np.ndarray, *, block_range: tuple[int, int], output: OutputMap, predict_fn: Any,
                   source: str | None = None, **bc: Any) -> dict:
    """Sums for accuracy (classifiers) or RMSE and R^2 (regressors) over one block (rows with NaN or inf raise)."""
    if output.classes is None:
        check_finite(None, y, block_range[0], source=source)
    pred, _ = output(_scores(X, bc, predict_fn, block_range[0], source))
    if output.classes is not None:
        return {"n": y.shape[0], "correct": int(np.sum(pred == y))}
    yt = np.asarray(y, dtype=np.float64).reshape(pred.shape)
    err = yt - pred
    return {"n": yt.shape[0], "sse": (err**2).sum(axis=0), "y": Moments.of_block(yt)}


def _block_rows(engine: Any, dataset: Any) -> int:
    return engine.block_rows(dataset.n_features, getattr(dataset, "chunk_rows", None), dataset.n_rows)


def _check_features(est: Any, dataset: Any) -> None:
    if dataset.n_features != est.n_features_in_:
        raise InputError(
            f"The dataset has {dataset.n_features} features but the model was fitted on {est.n_features_in_}; "
            "predict on data with the training columns, in the same order."
        )


def predict_dataset(est: Any, dataset: Any, out: str | Path, engine: Any, *, proba: bool = False, overwrite: bool = False, progress: Any = None) -> Path:
    """Write predictions (``y_pred``, and ``proba`` for classifiers when asked) to a new Zarr group ``out``."""
    _check_features(est, dataset)
    if proba and not hasattr(est, "classes_"):
        raise InputError("--proba is only for classifiers; this model is a regressor.")
    output = OutputMap.of(est)
    n = dataset.n_rows
    block_rows = _block_rows(engine, dataset)
    import zarr  # noqa: PLC0415

    with atomic_folder(out, overwrite) as tmp:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        c = est.dual_coef_.shape[1]
        if output.classes is not None:
            g.create_array("y_pred", shape=(n,), dtype=np.asarray(output.classes).dtype if output.classes.dtype.kind != "U" else str, chunks=(block_rows,))
            if proba:
                g.create_array("proba", shape=(n, c), dtype="float64", chunks=(block_rows, c))
                g.attrs["classes"] = [str(k) if isinstance(k, str) else k.item() for k in output.classes]
        else:
            shape = (n,) if output.y_ndim == 1 else (n, c)
            g.create_array("y_pred", shape=shape, dtype="float64", chunks=(block_rows,) + shape[1:])
        engine.map_reduce(
            predict_write_block,
            dataset,
            broadcast={**est.predictor_.broadcast(np, engine.config.dtype), "predict_fn": est.predictor_.predict_fn, "out": str(tmp),
                       "output": output, "proba": proba, "source": getattr(dataset, "path", None)},
            prepare=prepare_of(est, engine.config.dtype, engine.config.device),
            block_rows=block_rows,
            with_range=True,
            progress=progress,
        )
    return Path(out)


def evaluate_dataset(est: Any, dataset: Any, engine: Any, *, progress: Any = None) -> dict:
    """Accuracy (classifiers) or RMSE and R^2 (regressors) of the model on a dataset, streamed."""
    _check_features(est, dataset)
    if not dataset.has_y:
        raise InputError("The dataset has no targets to evaluate against.")
    output = OutputMap.of(est)
    sums = engine.map_reduce(
        evaluate_block,
        dataset,
        broadcast={**est.predictor_.broadcast(np, engine.config.dtype), "predict_fn": est.predictor_.predict_fn, "output": output,
                   "source": getattr(dataset, "path", None)},
        prepare=prepare_of(est, engine.config.dtype, engine.config.device),
        block_rows=_block_rows(engine, dataset),
        with_range=True,
        progress=progress,
    )
    n = sums["n"]
    if output.classes is not None:
        return {"rows": int(n), "accuracy": sums["correct"] / n}
    sst = sums["y"].m2.reshape(np.shape(sums["sse"]))  # sum of squared deviations, from merged moments
    rmse = np.sqrt(sums["sse"] / n)
    r2 = 1 - sums["sse"] / np.where(sst > 0, sst, np.nan)
    as_num = (lambda a: float(a)) if np.ndim(rmse) == 0 or np.size(rmse) == 1 else (lambda a: np.asarray(a).tolist())
    return {"rows": int(n), "rmse": as_num(np.squeeze(rmse)), "r2": as_num(np.squeeze(r2))}
