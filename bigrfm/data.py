"""Datasets read block by block: in-memory arrays or a Zarr group on disk.

A dataset is a small, picklable description (a path and array names, or a
reference to in-memory arrays) with one job: ``read(start, stop)`` returns the
raw rows ``X[start:stop]`` and ``y[start:stop]``. Workers of a Dask cluster
receive the description and open the store themselves, so no data goes
through the client.

On-disk layout (DESIGN.md, "The on-disk dataset"): a Zarr group (format 3, or
format 2) holding ``X`` (n, d) float32/float64 chunked along rows only, an
optional ``y`` (n,) or (n, c), an optional ``feature_names`` group attribute
(list of d strings) and optional ``X_val``/``y_val`` arrays. String class
labels are stored as a Zarr string array (format 3 ``"string"`` data type)
and read back as fixed-width numpy unicode arrays.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from .exceptions import DataError, InputError

__all__ = [
    "Dataset",
    "ArrayDataset",
    "ZarrDataset",
    "open_dataset",
    "row_blocks",
    "iter_blocks",
    "default_block_rows",
    "as_labels",
]

_FLOAT_DTYPES = ("float32", "float64")

log = logging.getLogger("bigrfm.data")


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


# -- Zarr datasets ----------------------------------------------------------------------

# Opened zarr arrays, per process, keyed by (path, array name). Kept out of the
# dataclass so that pickling a ZarrDataset sends a few strings and ints, and a
# Dask worker opens the store itself on its first read.
_OPEN_ARRAYS: dict[tuple[str, str], Any] = {}
_OPEN_LOCK = threading.Lock()


def _open_array(path: str, name: str, shape: tuple[int, ...]) -> Any:
    """The zarr array ``name`` of the group at ``path``, opened once per process.

    A cached array whose shape differs from ``shape`` was opened before the
    store was rewritten (``convert --overwrite`` in the same process); it is
    opened again rather than read with stale metadata.
    """
    key = (path, name)
    arr = _OPEN_ARRAYS.get(key)
    if arr is not None and tuple(arr.shape) == shape:
        return arr
    import zarr  # noqa: PLC0415  (imported lazily: keeps `import bigrfm` light)

    with _OPEN_LOCK:
        arr = zarr.open_group(path, mode="r")[name]
        _OPEN_ARRAYS[key] = arr
    return arr


def as_labels(y: np.ndarray) -> np.ndarray:
    """Zarr string arrays read as numpy StringDType (format 3) or object (format 2);
    turn both into fixed-width unicode, which every numpy and scikit-learn routine sorts
    and compares."""
    if y.dtype.kind in ("O", "T"):
        # StringDType refuses astype(str) without a width; np.array of the list finds it
        return np.array(y.tolist(), dtype=str).reshape(y.shape)
    return y


@dataclasses.dataclass(frozen=True)
class ZarrDataset:
    """A dataset stored in a Zarr group, read lazily block by block.

    Build one with :func:`open_dataset`, which validates the store and fills
    in the metadata; the object itself holds no open file or array, so it
    pickles to a few bytes and every process opens the store on first read.

    Parameters
    ----------
    path : str
        Local path or fsspec URL of the Zarr group.
    x_name, y_name : str
        Names of the feature and target arrays in the group.
    n_rows, n_features : int
        Shape of X.
    dtype : str
        dtype of X (``"float32"`` or ``"float64"``).
    chunk_rows : int
        Rows per stored chunk of X (per shard when the array is sharded);
        reading whole chunks is fastest.
    feature_names : tuple of str or None
        From the group attribute ``feature_names``.
    y_shape : tuple of int or None
        Shape of y; None when the group has no target array.
    y_dtype : str or None
        dtype of y as stored (``"string"`` for a Zarr string array).
    validation_split : ZarrDataset or None
        The ``X_val``/``y_val`` pair when the group has one (see :meth:`validation`).

    Examples
    --------
    >>> ds = open_dataset("data.zarr")  # doctest: +SKIP
    >>> X, y = ds.read(0, 1000)         # doctest: +SKIP
    """

    path: str
    x_name: str = "X"
    y_name: str = "y"
    n_rows: int = 0
    n_features: int = 0
    dtype: str = "float32"
    chunk_rows: int = 0
    feature_names: tuple[str, ...] | None = None
    y_shape: tuple[int, ...] | None = None
    y_dtype: str | None = None
    validation_split: ZarrDataset | None = dataclasses.field(default=None, repr=False)

    @property
    def has_y(self) -> bool:
        return self.y_shape is not None

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [start, stop): X (b, d) in the stored dtype, y (b,) / (b, c) or None."""
        if not 0 <= start <= stop <= self.n_rows:
            raise DataError(
                f"Row range [{start}, {stop}) is outside the {self.n_rows} rows of "
                f"{self.x_name!r} in {self.path}."
            )
        X = _open_array(self.path, self.x_name, (self.n_rows, self.n_features))[start:stop]
        if self.y_shape is None:
            return X, None
        y = _open_array(self.path, self.y_name, self.y_shape)[start:stop]
        return X, as_labels(y)

    def validation(self) -> ZarrDataset | None:
        """The validation split stored next to the data (``X_val``/``y_val``), or None."""
        return self.validation_split


def _is_url(path: str) -> bool:
    return "://" in path


def _open_group(path: str) -> Any:
    import zarr  # noqa: PLC0415

    if not _is_url(path) and not os.path.exists(path):
        raise DataError(
            f"Dataset {path} does not exist; check the path, or build the dataset with "
            "`bigrfm convert SRC OUT.zarr`."
        )
    try:
        return zarr.open_group(path, mode="r")
    except Exception as exc:  # zarr raises several types (not found, array not group, bad JSON)
        raise DataError(
            f"{path} is not a Zarr group ({type(exc).__name__}: {exc}); point to the folder "
            "holding zarr.json (format 3) or .zgroup (format 2), or build one with "
            "`bigrfm convert SRC OUT.zarr`."
        ) from exc


def _get_array(group: Any, path: str, name: str, role: str) -> Any:
    import zarr  # noqa: PLC0415

    present = sorted(group.array_keys())
    if name not in present:
        raise DataError(
            f"{path} has no array {name!r} ({role}); arrays present: {present or 'none'}. "
            f"Pass the right name (--x-name/--y-name) or rebuild with `bigrfm convert`."
        )
    arr = group[name]
    if not isinstance(arr, zarr.Array):
        raise DataError(f"{name!r} in {path} is a group, not an array ({role}).")
    return arr


def _chunk_rows(arr: Any) -> int:
    shards = getattr(arr, "shards", None)
    return int(shards[0] if shards else arr.chunks[0])


def _check_features(arr: Any, path: str, name: str) -> None:
    if arr.ndim != 2:
        raise DataError(
            f"{name!r} in {path} must be 2-D (rows, features); it has shape {tuple(arr.shape)}. "
            "Store one row per sample, e.g. reshape to (n, -1) before writing."
        )
    if str(arr.dtype) not in _FLOAT_DTYPES:
        raise DataError(
            f"{name!r} in {path} has dtype {arr.dtype}; features must be float32 or float64. "
            f"Rewrite it with `bigrfm convert {path} OUT.zarr --dtype float32` or cast before writing."
        )
    n, d = (int(s) for s in arr.shape)
    if n == 0 or d == 0:
        raise DataError(f"{name!r} in {path} is empty (shape {(n, d)}); it needs at least one row and one column.")
    if int(arr.chunks[1]) != d:
        raise DataError(
            f"{name!r} in {path} is chunked along columns (chunks {tuple(arr.chunks)} for shape "
            f"{(n, d)}); every chunk must hold whole rows. Rechunk along rows only, e.g. "
            f"chunks=({arr.chunks[0]}, {d}), or rebuild with `bigrfm convert`."
        )


def _check_target(arr: Any, path: str, name: str, x_name: str, n: int) -> None:
    if arr.ndim not in (1, 2):
        raise DataError(
            f"{name!r} in {path} has {arr.ndim} dimensions (shape {tuple(arr.shape)}); targets "
            "must be (n,) or (n, c)."
        )
    if int(arr.shape[0]) != n:
        raise DataError(
            f"{name!r} in {path} has {arr.shape[0]} rows but {x_name!r} has {n}; "
            "they must have one target per row."
        )


def _feature_names(group: Any, path: str, d: int) -> tuple[str, ...] | None:
    names = group.attrs.get("feature_names")
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(s, str) for s in names) or len(names) != d:
        raise DataError(
            f"The 'feature_names' attribute of {path} must be a list of {d} strings (one per "
            f"column of X); got {str(names)[:80]}. Fix or delete the attribute."
        )
    return tuple(names)


def _describe(group: Any, path: str, x_name: str, y_name: str, require_y: bool) -> ZarrDataset:
    X = _get_array(group, path, x_name, "features")
    _check_features(X, path, x_name)
    n, d = (int(s) for s in X.shape)
    y_shape = y_dtype = None
    if y_name in group.array_keys() or require_y:
        y = _get_array(group, path, y_name, "targets")
        _check_target(y, path, y_name, x_name, n)
        y_shape = tuple(int(s) for s in y.shape)
        y_dtype = "string" if y.dtype.kind in ("O", "T", "U") else str(y.dtype)
    return ZarrDataset(
        path=path,
        x_name=x_name,
        y_name=y_name,
        n_rows=n,
        n_features=d,
        dtype=str(X.dtype),
        chunk_rows=_chunk_rows(X),
        y_shape=y_shape,
        y_dtype=y_dtype,
    )


def open_dataset(path: str | os.PathLike, x_name: str = "X", y_name: str = "y", *, require_y: bool = False) -> ZarrDataset:
    """Open and validate a dataset stored in a Zarr group.

    Only metadata is read: shapes, dtypes, chunking and attributes. Each
    problem raises one :class:`~bigrfm.exceptions.DataError` saying what is
    wrong, where, and how to fix it.

    Parameters
    ----------
    path : str or PathLike
        Local path or fsspec URL of a Zarr group (format 3 or 2).
    x_name, y_name : str
        Names of the feature and target arrays. The validation split, when
        present, is ``{x_name}_val``/``{y_name}_val`` (``X_val``/``y_val``).
    require_y : bool
        Raise when the target array is missing (otherwise ``has_y`` is False).

    Returns
    -------
    ZarrDataset

    Examples
    --------
    >>> ds = open_dataset("data.zarr")  # doctest: +SKIP
    >>> ds.n_rows, ds.n_features, ds.has_y  # doctest: +SKIP
    (1000000, 28, True)
    """
    path = os.fspath(path)
    group = _open_group(path)
    ds = _describe(group, path, x_name, y_name, require_y)
    ds = dataclasses.replace(ds, feature_names=_feature_names(group, path, ds.n_features))

    xv, yv = f"{x_name}_val", f"{y_name}_val"
    keys = set(group.array_keys())
    if yv in keys and xv not in keys:
        raise DataError(f"{path} has {yv!r} but no {xv!r}; store both arrays of the validation split, or neither.")
    if xv in keys:
        if not ds.has_y and yv in keys:
            raise DataError(f"{path} has {yv!r} but no {y_name!r}; store the training targets too, or drop {yv!r}.")
        if ds.has_y and yv not in keys:
            raise DataError(f"{path} has {xv!r} but no {yv!r}; store the validation targets too, or drop {xv!r}.")
        val = _describe(group, path, xv, yv, require_y=ds.has_y)
        if val.n_features != ds.n_features:
            raise DataError(
                f"{xv!r} in {path} has {val.n_features} columns but {x_name!r} has {ds.n_features}; "
                "the validation split must have the same features."
            )
        if ds.has_y and val.y_shape[1:] != ds.y_shape[1:]:
            raise DataError(
                f"{yv!r} in {path} has shape {val.y_shape} but {y_name!r} has {ds.y_shape}; "
                "targets of both splits need the same number of columns."
            )
        ds = dataclasses.replace(ds, validation_split=dataclasses.replace(val, feature_names=ds.feature_names))
    return ds


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
