"""The :class:`Dataset` protocol, in-memory datasets, and reading any dataset block by block.

A dataset is a small, picklable description (a path and array names, or a
reference to in-memory arrays) with one job: ``read(start, stop)`` returns the
raw rows ``X[start:stop]`` and ``y[start:stop]``. Workers of a Dask cluster
receive the description and read the rows themselves, so no data goes through
the client. Zarr stores are :mod:`bigrfm.io.zarr_store`; nothing here imports
zarr or dask.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from ..exceptions import DataError, InputError

__all__ = ["Dataset", "PairDataset", "ArrayDataset", "row_blocks", "block_bounds", "iter_blocks", "default_block_rows"]


@runtime_checkable
class Dataset(Protocol):
    """What the engine and the RFM loop need from a dataset.

    X may come back in any numeric dtype (a compact uint8 store, say); the
    preparation of each block casts it. Optional attributes: ``chunk_rows``
    (rows per stored chunk, to align reads), ``row_chunks`` (rows of each chunk
    when they differ, see :func:`block_bounds`), ``feature_names``, ``y_shape``.
    """

    @property
    def n_rows(self) -> int: ...

    @property
    def n_features(self) -> int: ...

    @property
    def has_y(self) -> bool: ...

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw rows [start, stop): X (b, d) and y (b,) / (b, c) or None."""
        ...


@dataclasses.dataclass(frozen=True, eq=False)
class PairDataset:
    """An X array and an optional y array (numpy, zarr or Dask) with the shape part of the dataset
    interface; :class:`ArrayDataset`, ``ZarrArrayDataset`` and ``DaskDataset`` add how they are read."""

    X: Any
    y: Any = None
    feature_names: tuple[str, ...] | None = None

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def has_y(self) -> bool:
        return self.y is not None


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset(PairDataset):
    """In-memory arrays seen through the dataset interface (tests, small data, estimators).

    Parameters
    ----------
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,) or (n, c), or None
    feature_names : sequence of str, optional
    """


    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        y = None if self.y is None else self.y[start:stop]
        return self.X[start:stop], y


def row_blocks(n_rows: int, block_rows: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of at most ``block_rows`` rows covering ``n_rows``."""
    if block_rows < 1:
        raise DataError(f"block_rows must be >= 1. Got {block_rows} instead.")
    return [(s, min(s + block_rows, n_rows)) for s in range(0, n_rows, block_rows)]


def block_bounds(dataset: Dataset, block_rows: int) -> list[tuple[int, int]]:
    """The [start, stop) row ranges of one pass over ``dataset``.

    ``row_blocks(n_rows, block_rows)``, unless the dataset has ``row_chunks``
    (the row counts of its chunks, e.g. a Dask array's ``chunks[0]``, which may
    differ from each other): then each block is a run of whole consecutive
    chunks of at most ``block_rows`` rows, or one chunk when a chunk is larger,
    so no chunk is computed for two blocks. With equal chunks of ``block_rows``
    rows both rules give the same ranges.
    """
    chunks = getattr(dataset, "row_chunks", None)
    if not chunks:
        return row_blocks(dataset.n_rows, block_rows)
    if block_rows < 1:
        raise DataError(f"block_rows must be >= 1. Got {block_rows} instead.")
    bounds: list[tuple[int, int]] = []
    start = stop = 0
    for c in chunks:
        if stop > start and stop - start + c > block_rows:
            bounds.append((start, stop))
            start = stop
        stop += int(c)
    if stop > start:
        bounds.append((start, stop))
    return bounds


# -- reading blocks -----------------------------------------------------------------------


def default_block_rows(n_features: int, itemsize: int, target_bytes: int = 32 * 2**20) -> int:
    """Rows of a block holding about ``target_bytes`` of features (at least one row).

    Parameters
    ----------
    n_features : int
        Columns of X.
    itemsize : int
        Bytes per value (4 for float32, 8 for float64).
    target_bytes : int
        Wanted size of one block of X; 32 MiB keeps Dask tasks well above their
        ≈1–2 ms overhead while a few blocks per worker stay small.
    """
    if n_features < 1 or itemsize < 1 or target_bytes < 1:
        raise InputError(
            f"default_block_rows needs positive sizes. Got n_features={n_features}, "
            f"itemsize={itemsize}, target_bytes={target_bytes} instead."
        )
    return max(1, int(target_bytes // (n_features * itemsize)))


def iter_blocks(dataset: Dataset, block_rows: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """Stream a dataset as consecutive blocks ``(start, stop, X, y)`` of ``block_rows`` rows.

    Blocks have exactly ``block_rows`` rows (the last one fewer) whatever the
    stored chunking, while every read from a Zarr store covers whole chunks
    (reads start on a chunk boundary and span at least ``block_rows`` rows),
    so no chunk is decoded twice. For local, in-process use; the engine reads
    its blocks itself.

    Parameters
    ----------
    dataset : Dataset
    block_rows : int
    """
    n = dataset.n_rows
    if block_rows < 1:
        raise InputError(f"block_rows must be >= 1. Got {block_rows} instead.")
    chunk = int(getattr(dataset, "chunk_rows", 0) or 0)
    read_rows = block_rows if chunk < 1 else -(-block_rows // chunk) * chunk
    X_left: np.ndarray | None = None  # rows read but not yet yielded
    y_left: np.ndarray | None = None
    start = 0  # first row of X_left
    for lo, hi in row_blocks(n, read_rows):
        Xr, yr = dataset.read(lo, hi)
        if X_left is not None and X_left.shape[0]:
            Xr = np.concatenate([X_left, Xr])
            yr = None if yr is None else np.concatenate([y_left, yr])
        pos = 0
        while Xr.shape[0] - pos >= block_rows or (hi == n and pos < Xr.shape[0]):
            b = min(block_rows, Xr.shape[0] - pos)
            yield start, start + b, Xr[pos : pos + b], None if yr is None else yr[pos : pos + b]
            start += b
            pos += b
        X_left, y_left = Xr[pos:], None if yr is None else yr[pos:]
