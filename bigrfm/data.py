"""Datasets read block by block: in-memory arrays or a Zarr group on disk.

A dataset is a small, picklable description (a path and array names, or a
reference to in-memory arrays) with one job: ``read(start, stop)`` returns the
raw rows ``X[start:stop]`` and ``y[start:stop]``. Workers of a Dask cluster
receive the description and open the store themselves, so no data goes
through the client.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .exceptions import DataError

__all__ = [
    "Dataset",
    "ArrayDataset",
    "row_blocks",
]


@runtime_checkable
class Dataset(Protocol):
    """What the engine and the RFM loop need from a dataset."""

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
class ArrayDataset:
    """In-memory arrays seen through the dataset interface (tests, small data, estimators).

    Parameters
    ----------
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,) or (n, c), or None
    feature_names : sequence of str, optional
    """

    X: np.ndarray
    y: np.ndarray | None = None
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
