"""Streaming statistics of row blocks: feature moments, target moments or class counts, finiteness.

Pure per-block summaries that merge associatively; no I/O of their own.

Each block is summarized on its own and summaries merge associatively, so the
statistics pass runs through the engine like any other pass and equals numpy
on the whole array (see :class:`Moments` for the numerics).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..exceptions import DataError

__all__ = ["Moments", "NanMoments", "combine", "ClassCounts", "BlockStats", "block_stats", "combine_stats", "check_finite"]

# -- streaming statistics ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Moments:
    """Count, mean and sum of squared deviations of each column, mergeable across blocks.

    Attributes
    ----------
    count : int
        Rows seen.
    shift : ndarray (d,) float64
        A reference row (the first row seen); the mean is kept relative to it.
    offset : ndarray (d,) float64
        ``mean - shift``, kept separately so that it carries full precision.
    m2 : ndarray (d,) float64
        Sum over rows of (x - mean)².
    mean, var, std : ndarray (d,)
        Derived (see the properties).

    Notes
    -----
    Each block is summarized with a two-pass formula on rows shifted by the
    block's first row, and blocks are merged with Chan, Golub & LeVeque's
    parallel update

        n = n_a + n_b,  δ = mean_b − mean_a,
        mean = mean_a + δ n_b / n,  m2 = m2_a + m2_b + δ² n_a n_b / n.

    δ is computed as ``offset_b + (shift_b − shift_a) − offset_a``: the shifts
    are nearby data values, so their difference is exact, and every other
    term is of the size of the spread, not of the mean. That keeps the result
    accurate to ~1e-15 for data like 1e6 ± 1 merged one row at a time, where
    the naive E[x²] − E[x]² loses every digit and a plain running mean loses
    five.
    """

    count: int
    shift: np.ndarray
    offset: np.ndarray
    m2: np.ndarray

    @classmethod
    def of_block(cls, X: np.ndarray) -> Moments:
        """Moments of the rows of X, shape (b, d) or (b,) (treated as one column)."""
        X = np.asarray(X)
        X = X.reshape(X.shape[0], int(np.prod(X.shape[1:])))  # (b, d); -1 fails when b == 0
        if X.shape[0] == 0:
            zeros = np.zeros(X.shape[1])
            return cls(0, zeros, zeros, zeros)
        shift = X[0].astype(np.float64)  # (d,)
        dev = X - shift  # (b, d) float64
        offset = dev.mean(axis=0)  # (d,)
        dev -= offset
        return cls(int(X.shape[0]), shift, offset, np.einsum("ij,ij->j", dev, dev))

    def __add__(self, other: Moments) -> Moments:
        return combine(self, other)

    @property
    def mean(self) -> np.ndarray:
        """Column means; zeros when no row was seen."""
        return self.shift + self.offset

    @property
    def var(self) -> np.ndarray:
        """Population variance (ddof=0); zeros when no row was seen."""
        return self.m2 / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0) for standardizing: constant columns get 1.0.

        A constant column (its rows equal the shift exactly, so its spread is
        exactly 0) would make ``(x - mean) / std`` divide by zero; with 1.0 it
        becomes a column of zeros, which no kernel distance sees.
        """
        std = np.sqrt(self.var)
        return np.where(std == 0, 1.0, std)


def combine(a: Moments, b: Moments) -> Moments:
    """Moments of the union of the rows summarized by ``a`` and ``b`` (see :class:`Moments`)."""
    if a.count == 0 or b.count == 0:
        return b if a.count == 0 else a
    n = a.count + b.count
    delta = b.offset + (b.shift - a.shift) - a.offset  # mean_b - mean_a, see the Notes
    offset = a.offset + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta**2 * (a.count * b.count / n)
    return Moments(n, a.shift, offset, m2)


@dataclasses.dataclass(frozen=True, eq=False)
class NanMoments:
    """:class:`Moments` of each column over its non-NaN values, mergeable across blocks.

    What ``missing="mean"`` needs from the first pass: each feature's mean
    ignoring NaN (the value imputed), and the spread of the imputed column.
    The formulas are those of :class:`Moments` applied per column with its own
    count, so on data without NaN both give the same bits.

    Attributes
    ----------
    rows : int
        Rows seen (with or without NaN).
    count : ndarray (d,) int64
        Non-NaN values per column.
    shift, offset, m2 : ndarray (d,) float64
        As in :class:`Moments`, over each column's non-NaN values (the shift is
        the column's first non-NaN value; 0 for a column with none).
    """

    rows: int
    count: np.ndarray
    shift: np.ndarray
    offset: np.ndarray
    m2: np.ndarray

    @classmethod
    def of_block(cls, X: np.ndarray) -> NanMoments:
        """Moments of the non-NaN values of each column of X (b, d)."""
        X = np.asarray(X)
        X = X.reshape(X.shape[0], int(np.prod(X.shape[1:])))  # (b, d)
        b, d = X.shape
        nan = np.isnan(X) if X.dtype.kind in "fc" and b else None
        if nan is None or not nan.any():
            m = Moments.of_block(X)
            return cls(b, np.full(d, b, np.int64), m.shift, m.offset, m.m2)
        seen = ~nan
        count = seen.sum(axis=0)  # (d,)
        first = np.argmax(seen, axis=0)  # first non-NaN row of each column (0 when none)
        shift = np.where(count > 0, X[first, np.arange(d)], 0.0).astype(np.float64)  # (d,)
        dev = np.where(seen, X - shift, 0.0)  # (b, d) float64
        with np.errstate(invalid="ignore", divide="ignore"):
            offset = np.where(count > 0, dev.sum(axis=0) / count, 0.0)
        dev = np.where(seen, dev - offset, 0.0)
        return cls(b, count.astype(np.int64), shift, offset, np.einsum("ij,ij->j", dev, dev))

    def __add__(self, other: NanMoments) -> NanMoments:
        a, b = self, other
        n = a.count + b.count
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = b.offset + (b.shift - a.shift) - a.offset
            offset = a.offset + delta * (b.count / n)
            m2 = a.m2 + b.m2 + delta**2 * (a.count * b.count / n)
        # a column empty on one side takes the other side's values as they are
        only_b, only_a = a.count == 0, b.count == 0
        shift = np.where(only_b, b.shift, a.shift)
        offset = np.where(only_b, b.offset, np.where(only_a, a.offset, offset))
        m2 = np.where(only_b, b.m2, np.where(only_a, a.m2, m2))
        return NanMoments(a.rows + b.rows, n, shift, offset, m2)

    @property
    def mean(self) -> np.ndarray:
        """Mean of each column's non-NaN values (0 for a column without any)."""
        return self.shift + self.offset

    @property
    def missing(self) -> np.ndarray:
        """NaN values per column, int64 (d,)."""
        return self.rows - self.count

    @property
    def imputed_std(self) -> np.ndarray:
        """Standard deviation (ddof=0) of each column after its NaN are replaced by its mean; 0 becomes 1.0.

        The imputed values add nothing to the sum of squared deviations but
        count as rows: var = m2 / rows.
        """
        std = np.sqrt(self.m2 / max(self.rows, 1))
        return np.where(std == 0, 1.0, std)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassCounts:
    """Distinct labels (sorted) and how often each occurs; mergeable across blocks."""

    labels: np.ndarray
    counts: np.ndarray  # int64, same length as labels

    @classmethod
    def of_block(cls, y: np.ndarray) -> ClassCounts:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(
                f"Classification targets must be one label per row; got shape {y.shape}. "
                "Store y as (n,) class labels (ints or strings)."
            )
        labels, counts = np.unique(y, return_counts=True)
        return cls(labels, counts.astype(np.int64))

    def __add__(self, other: ClassCounts) -> ClassCounts:
        if self.labels.size == 0 or other.labels.size == 0:
            return other if self.labels.size == 0 else self
        labels, inverse = np.unique(np.concatenate([self.labels, other.labels]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([self.counts, other.counts]), minlength=labels.size)
        return ClassCounts(labels, counts.astype(np.int64))

    @property
    def count(self) -> int:
        return int(self.counts.sum())


@dataclasses.dataclass(frozen=True, eq=False)
class BlockStats:
    """First-pass statistics of some rows: X moments, and y moments (regression) or
    class counts (classification), or None without targets."""

    x: Moments | NanMoments
    y: Moments | ClassCounts | None

    def __add__(self, other: BlockStats) -> BlockStats:
        return combine_stats(self, other)


def block_stats(X: np.ndarray, y: np.ndarray | None, *, classification: bool, skip_nan: bool = False) -> BlockStats:
    """Statistics of one raw block (a pure function the engine maps over row blocks).

    Parameters
    ----------
    X : ndarray (b, d)
    y : ndarray (b,) or (b, c), or None
    classification : bool
        Count class labels of y instead of taking its moments.
    skip_nan : bool
        Take X's moments over its non-NaN values (:class:`NanMoments`).
    """
    ys: Moments | ClassCounts | None = None
    if y is not None and not classification and y.dtype.kind not in "biuf":
        raise DataError(
            f"Regression targets must be numbers; y holds {y.dtype} values (e.g. {y.ravel()[:3].tolist()}). "
            "Fit a classifier (--task classification), or store numeric targets."
        )
    if y is not None:
        ys = ClassCounts.of_block(y) if classification else Moments.of_block(y)
    return BlockStats(NanMoments.of_block(X) if skip_nan else Moments.of_block(X), ys)


def combine_stats(a: BlockStats, b: BlockStats) -> BlockStats:
    """Statistics of the union of two disjoint sets of rows (associative, any order)."""
    y = b.y if a.y is None else a.y if b.y is None else a.y + b.y
    return BlockStats(a.x + b.x, y)


def check_finite(
    X: np.ndarray | None,
    y: np.ndarray | None,
    start: int,
    *,
    source: str | None = None,
    x_name: str = "X",
    y_name: str = "y",
    allow_nan: bool = False,
) -> None:
    """Raise DataError naming the first row of the block holding NaN or ±inf.

    Parameters
    ----------
    X : ndarray (b, d) or None
    y : ndarray or None
        Checked only when it holds floats (labels cannot be NaN).
    start : int
        Global index of the block's first row, so the message names global rows.
    source : str, optional
        Where the rows come from (a path), for the message.
    x_name, y_name : str
        Array names for the message.
    allow_nan : bool
        NaN in X is a missing value (``missing="mean"``): only ±inf in X is an error.
    """
    for arr, name in ((X, x_name), (y, y_name)):
        if arr is None or arr.dtype.kind not in "fc":
            continue
        arr2 = arr.reshape(arr.shape[0], -1)
        # a row sum is NaN/inf whenever the row holds one, and costs no (b, d) temporary;
        # sums that overflow from large finite values are re-checked exactly below
        with np.errstate(over="ignore", invalid="ignore"):
            candidates = np.flatnonzero(~np.isfinite(arr2.sum(axis=1)))
        if candidates.size == 0:
            continue
        nan_ok = allow_nan and arr is X
        bad_values = np.isinf(arr2[candidates]) if nan_ok else ~np.isfinite(arr2[candidates])
        bad = candidates[bad_values.any(axis=1)]
        if bad.size == 0:
            continue
        where = f" of {source}" if source else ""
        stop = start + arr.shape[0]
        more = f" and {bad.size - 1} more row(s) in rows {start}–{stop}" if bad.size > 1 else f" (block rows {start}–{stop})"
        if nan_ok:
            raise DataError(
                f"{name!r}{where} contains inf in row {start + int(bad[0])}{more}. missing='mean' imputes NaN "
                "only: replace inf by NaN or drop these rows (`bigrfm convert SRC OUT.zarr --drop-nonfinite`)."
            )
        fix = "drop these rows (`bigrfm convert SRC OUT.zarr --drop-nonfinite`)"
        if name == x_name:
            fix += ", or impute NaN with each feature's training mean: missing='mean' (`bigrfm fit --missing mean`)"
        raise DataError(f"{name!r}{where} contains NaN or inf in row {start + int(bad[0])}{more}. Clean or {fix}.")
