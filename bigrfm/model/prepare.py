"""Turning raw rows into what the maths sees: row selection, standardization, target encoding.

Small picklable callables applied to every raw block; they hold O(d + k)
numbers and never read data themselves.

``Prepare`` is a small picklable callable that the engine applies to every raw
block ``(X, y, start, stop)`` before the block function: it keeps the rows of
one split (training rows, the validation rows, an AGOP sample), imputes missing
features (``missing="mean"``), standardizes X with the training statistics,
casts the stored dtype (float, or a compact uint8/int16/bool...) to the block
dtype, and encodes y (one-hot classes, or standardized regression targets).
It holds only O(d + k) numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..numerics.backend import array_module, to_numpy
from ..numerics.gpu import to_device_pinned

__all__ = ["RowSelect", "Prepare", "sample_rows", "encode_targets"]

#: Bytes of the float64 temporaries of one standardization step (a slab of rows of a block).
_SLAB_BYTES = 2**20


@dataclasses.dataclass(frozen=True, eq=False)
class RowSelect:
    """A set of global row indices, kept (``include``) or dropped (``exclude``).

    ``idx`` is sorted int64 and small (validation rows, centers, an AGOP
    sample), so a block's mask costs two binary searches.
    """

    idx: np.ndarray
    include: bool

    def mask(self, start: int, stop: int) -> np.ndarray | None:
        """Boolean mask of the rows of [start, stop) that are selected; None means all."""
        lo, hi = np.searchsorted(self.idx, [start, stop])
        if not self.include and lo == hi:
            return None
        m = np.zeros(stop - start, dtype=bool)
        m[self.idx[lo:hi] - start] = True
        return m if self.include else ~m

    def count(self, n_rows: int) -> int:
        return int(self.idx.size) if self.include else n_rows - int(self.idx.size)


def sample_rows(rng: np.random.Generator, n_rows: int, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """k distinct row indices drawn uniformly from [0, n_rows) minus ``exclude``; sorted int64.

    Memory is O(k + |exclude|), never O(n_rows) unless k is close to n_rows.
    """
    ex = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
    pool = n_rows - ex.size
    k = min(k, pool)
    pos = np.sort(rng.choice(pool, size=k, replace=False).astype(np.int64))
    if ex.size:
        # the p-th kept row is p plus the number of excluded rows at or before it
        shifted = ex - np.arange(ex.size)
        pos = pos + np.searchsorted(shifted, pos, side="right")
    return pos


def encode_targets(y: np.ndarray, classes: np.ndarray | None, y_mean: np.ndarray | None, y_scale: np.ndarray | None) -> np.ndarray:
    """Raw targets to the float64 (b, c) matrix the solvers fit: one-hot, or standardized values."""
    if classes is not None:
        codes = np.searchsorted(classes, y)
        onehot = np.zeros((y.shape[0], classes.size), dtype=np.float64)
        onehot[np.arange(y.shape[0]), codes] = 1.0
        return onehot
    Y = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
    if y_mean is not None:
        Y = (Y - y_mean) / y_scale
    return Y


@dataclasses.dataclass(frozen=True, eq=False)
class Prepare:
    """Raw block -> (standardized X in ``dtype``, encoded Y or None), or None when no row is kept.

    Attributes
    ----------
    mean, scale : ndarray (d,) or None
        Standardization of X (training rows' mean and std); None leaves X as is.
    dtype : str
        Block dtype.
    classes : ndarray or None
        Sorted class labels (classification): y becomes one-hot.
    y_mean, y_scale : ndarray (c,) or None
        Standardization of regression targets.
    select : RowSelect or None
        Rows of the split; None keeps every row.
    raw_y : bool
        Pass y through unencoded (evaluation compares predictions with raw labels).
    device : {"cpu", "cuda"}
        Where the prepared X (and encoded Y) go: blocks are moved to the
        worker's GPU here, once, right after they are read.
    impute : Imputation or None
        Replaces NaN features by their training means (and appends indicator
        columns) before standardization; ``mean``/``scale`` then have d + k entries.
    cache_token : str or None
        Names this preparation of this dataset within a fit: blocks prepared with
        the same token are interchangeable, so the engine may keep them between
        passes (:mod:`bigrfm.numerics.block_cache`). None: never cached.
    """

    mean: np.ndarray | None
    scale: np.ndarray | None
    dtype: str = "float64"
    classes: np.ndarray | None = None
    y_mean: np.ndarray | None = None
    y_scale: np.ndarray | None = None
    select: RowSelect | None = None
    raw_y: bool = False
    device: str = "cpu"
    cache_token: str | None = None
    impute: Any = None

    def with_select(self, select: RowSelect | None) -> "Prepare":
        return dataclasses.replace(self, select=select)

    def cached(self, token: str) -> "Prepare":
        """The same preparation, cacheable under ``token`` (one token per distinct selection of a fit)."""
        return dataclasses.replace(self, cache_token=token)

    def transform_X(self, X: Any) -> Any:
        """Raw rows (any numeric dtype, NaN allowed with an imputation) to standardized rows in ``dtype``,
        on the array module of X (numpy, or CuPy for a block already on the GPU)."""
        xp = array_module(X)
        if xp is not np:
            if self.impute is not None:  # imputation is a host step (a rare path: NaN data on a GPU)
                X = xp.asarray(self.impute.apply(to_numpy(X)))
            X = xp.asarray(X, dtype=np.float64 if self.mean is not None else self.dtype)
            if self.mean is not None:
                X = ((X - xp.asarray(self.mean)) / xp.asarray(self.scale)).astype(self.dtype, copy=False)
            return X
        if self.impute is not None:
            X = self.impute.apply(X)
        if self.mean is None:
            return np.asarray(X, dtype=self.dtype)
        # (X - mean) / scale in float64 from any stored dtype, cast to the block dtype slab by
        # slab: the float64 temporaries stay about 1 MiB whatever the block size
        X = np.asarray(X)
        out = np.empty(X.shape, dtype=self.dtype)  # (b, d)
        slab = max(1, _SLAB_BYTES // (8 * max(1, X.shape[1])))
        for s in range(0, X.shape[0], slab):
            Z = np.subtract(X[s : s + slab], self.mean, dtype=np.float64)
            Z /= self.scale
            out[s : s + slab] = Z
        return out

    def __call__(self, X: np.ndarray, y: np.ndarray | None, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        if self.select is not None:
            keep = self.select.mask(start, stop)
            if keep is not None:
                if not keep.any():
                    return None
                X = X[keep]
                y = None if y is None else y[keep]
        if y is not None and not self.raw_y:
            y = encode_targets(y, self.classes, self.y_mean, self.y_scale)
        if self.device == "cuda":
            # the raw block goes to the GPU through pinned memory on this thread's stream,
            # and is standardized there: the host only reads
            X = to_device_pinned(np.asarray(X))
            if y is not None and not self.raw_y:
                y = to_device_pinned(np.asarray(y, dtype=self.dtype))
        return self.transform_X(X), y
