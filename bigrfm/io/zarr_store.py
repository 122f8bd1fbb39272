"""Datasets stored in a Zarr group, opened lazily and read block by block (any fsspec URL).

On-disk layout (DESIGN.md, "The on-disk dataset"): a Zarr group (format 3, or
format 2) holding ``X`` (n, d) of any numeric dtype (float32/float64, or a compact
uint8/int8/int16/int32/float16/bool read as stored and cast per block), best
chunked along rows, an optional ``y`` (n,) or (n, c), an optional
``feature_names`` group attribute (list of d strings) and optional
``X_val``/``y_val`` arrays. String class labels are stored as a Zarr string
array (format 3 ``"string"`` data type) and read back as fixed-width numpy
unicode arrays. Also a dataset over ``zarr.Array`` objects a user already holds
(:func:`array_dataset`). Owns opening and validating stores; never writes one
(that is :mod:`bigrfm.io.convert`) and never imports dask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import threading
import warnings
from typing import Any

import numpy as np

from ..exceptions import DataError
from .datasets import PairDataset

__all__ = [
    "ZarrDataset",
    "ZarrArrayDataset",
    "open_dataset",
    "array_dataset",
    "open_array",
    "store_token",
    "as_labels",
    "is_url",
    "is_zarr_array",
    "chunking_warning",
    "SlowChunkingWarning",
    "STORAGE_DTYPES",
]

#: Feature dtypes ``bigrfm convert`` writes: the floats, and compact types read as
#: stored and cast per block (a store may hold any numeric or boolean dtype).
STORAGE_DTYPES = ("float32", "float64", "float16", "uint8", "int8", "uint16", "int16", "int32", "bool")

#: Column-chunked arrays warn when one chunk is smaller than this (many small reads per block)...
SMALL_CHUNK_BYTES = 256 * 2**10
#: ... or when one band of chunks (their rows, every column) is larger than this, so that each
#: block of rows decodes rows it does not use (blocks are 16-32 MiB).
BAND_BYTES = 64 * 2**20


class SlowChunkingWarning(UserWarning):
    """The stored chunking makes reading row blocks slow (see :func:`chunking_warning`)."""


# Opened zarr arrays, per process, keyed by (path, array name) and holding the
# identity they were opened for. Kept out of the dataclass so that pickling a
# ZarrDataset sends a few strings and ints, and a Dask worker opens the store
# itself on its first read.
_OPEN_ARRAYS: dict[tuple[str, str], tuple[Any, Any]] = {}
_OPEN_LOCK = threading.Lock()


def store_token(group: Any) -> str:
    """SHA-256 of a Zarr group's metadata: its attributes and every array's metadata
    (shape, dtype, chunks, codecs, fill value), not its data.

    Two opens of a store give the same token unless the store was rewritten with
    other arrays, shapes, chunking, dtypes or codecs.
    """
    arrays = {name: arr.metadata.to_dict() for name, arr in sorted(group.arrays())}
    doc = json.dumps({"attrs": dict(group.attrs), "arrays": arrays}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def _missing_here(path: str) -> DataError:
    return DataError(
        f"Dataset {path} does not exist on {socket.gethostname()}. Every Dask worker reads its blocks itself: "
        "a remote cluster needs a path that every worker can read (a shared filesystem mounted at the same "
        "place, or an fsspec URL such as s3://bucket/data.zarr)."
    )


def open_array(path: str, name: str, shape: tuple[int, ...] | None = None, token: str = "") -> Any:
    """The zarr array ``name`` of the group at ``path``, opened once per process and cached.

    The cache is keyed by the store's identity: the array's expected ``shape``
    and the group's ``token`` (:func:`store_token`, as recorded by
    :func:`open_dataset`). A cached array opened for another identity (the store
    was rewritten at the same path, with other chunks or another dtype) is
    opened again rather than read with stale metadata; when the reopened
    store's token differs from ``token``, the store changed after it was
    opened and a :class:`~bigrfm.exceptions.DataError` says so.
    """
    key = (path, name)
    identity = (None if shape is None else tuple(shape), token)
    entry = _OPEN_ARRAYS.get(key)
    if entry is not None and entry[0] == identity:
        return entry[1]
    import zarr  # noqa: PLC0415  (imported lazily: keeps `import bigrfm` light)

    with _OPEN_LOCK:
        if not is_url(path) and not os.path.exists(path):
            raise _missing_here(path)
        group = zarr.open_group(path, mode="r")
        if token and store_token(group) != token:
            raise DataError(
                f"The Zarr store {path} changed after it was opened (its arrays' shapes, chunks, dtypes or "
                "attributes differ): it was rewritten while in use. Run again on the new store."
            )
        arr = group[name]
        _OPEN_ARRAYS[key] = (identity, arr)
    return arr


def read_rows(arr: Any, path: str, name: str, start: int, stop: int) -> Any:
    """Rows [start, stop) of a zarr array; a chunk that cannot be read or decoded raises one DataError.

    The error names the array, the chunk's rows and the cause, and is raised at
    once (a bigrfm error is never retried by the engine: decoding fails the same
    way every time). Errors that may pass on their own (network and timeout
    errors of remote stores) are raised as they are, for the engine to retry.
    """
    try:
        return arr[start:stop]
    except Exception as exc:
        if is_url(path) and isinstance(exc, (ConnectionError, TimeoutError)):
            raise
        raise _unreadable(arr, path, name, start, stop, exc) from exc


def _unreadable(arr: Any, path: str, name: str, start: int, stop: int, exc: Exception) -> DataError:
    """A DataError naming the first chunk of rows [start, stop) that fails to read (found chunk by chunk)."""
    chunk = max(1, int(arr.chunks[0]))
    lo, hi, cause = start, stop, exc
    for c0 in range(start - start % chunk, stop, chunk):
        try:
            arr[max(c0, start):min(c0 + chunk, stop)]
        except Exception as e:  # noqa: BLE001 - reported below
            lo, hi, cause = c0, min(c0 + chunk, int(arr.shape[0])), e
            break
    return DataError(
        f"Cannot read rows [{lo}, {hi}) of {name!r} in {path} (chunk {lo // chunk}: {type(cause).__name__}: "
        f"{cause}). The store is damaged; rebuild it (`bigrfm convert ... --overwrite`) or copy it again."
    )


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
        dtype of X as stored (float32/float64, or a compact type cast per block).
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
    token : str
        :func:`store_token` of the group when it was opened: every process
        checks it on its first read, so a store rewritten meanwhile is never
        read with stale metadata.

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
    token: str = ""

    @property
    def has_y(self) -> bool:
        return self.y_shape is not None

    def fingerprint(self) -> dict:
        """The data's identity for a checkpoint: path, shape, chunking and the metadata token."""
        return {"path": self.path, "x": self.x_name, "y": self.y_name, "shape": [self.n_rows, self.n_features],
                "chunk_rows": self.chunk_rows, "metadata_sha256": self.token}

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [start, stop): X (b, d) in the stored dtype, y (b,) / (b, c) or None."""
        if not 0 <= start <= stop <= self.n_rows:
            raise DataError(
                f"Row range [{start}, {stop}) is outside the {self.n_rows} rows of "
                f"{self.x_name!r} in {self.path}."
            )
        X = open_array(self.path, self.x_name, (self.n_rows, self.n_features), self.token)
        X = read_rows(X, self.path, self.x_name, start, stop)
        if self.y_shape is None:
            return X, None
        y = read_rows(open_array(self.path, self.y_name, self.y_shape, self.token), self.path, self.y_name, start, stop)
        return X, as_labels(y)

    def validation(self) -> ZarrDataset | None:
        """The validation split stored next to the data (``X_val``/``y_val``), or None."""
        return self.validation_split


def is_zarr_array(obj: Any) -> bool:
    """Whether ``obj`` is a ``zarr.Array`` (checked without importing zarr: one exists only if zarr is loaded)."""
    import sys  # noqa: PLC0415

    zarr = sys.modules.get("zarr")
    return zarr is not None and isinstance(obj, zarr.Array)


def is_url(path: str) -> bool:
    """Whether ``path`` is an fsspec URL (``s3://...``, ``file://...``) rather than a local path."""
    return "://" in path


def _open_group(path: str) -> Any:
    import zarr  # noqa: PLC0415

    if not is_url(path) and not os.path.exists(path):
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
    if np.dtype(arr.dtype).kind not in "biuf":
        raise DataError(
            f"{name!r} in {path} has dtype {arr.dtype}; features must be numbers or booleans. "
            "Encode text columns first (`bigrfm convert SRC OUT.zarr --one-hot`)."
        )
    n, d = (int(s) for s in arr.shape)
    if n == 0 or d == 0:
        raise DataError(f"{name!r} in {path} is empty (shape {(n, d)}); it needs at least one row and one column.")
    message = chunking_warning(name, path, (n, d), tuple(int(c) for c in arr.chunks), np.dtype(arr.dtype).itemsize)
    if message:
        warnings.warn(message, SlowChunkingWarning, stacklevel=4)


def chunking_warning(name: str, path: str, shape: tuple[int, int], chunks: tuple[int, int], itemsize: int) -> str | None:
    """The warning for an array chunked along columns whose row blocks read slowly, or None.

    Row blocks of an array chunked along columns are read whole (zarr gathers
    the column chunks of the rows), and that is as fast as a row-chunked copy
    while the chunks are neither tiny nor tall. Measured here (200,000 x 100
    float32, blocks of 40,960 rows): 8 MiB row chunks read at 4.5 GB/s, 4 MiB
    chunks of 25 columns at 3.9 GB/s, but 40 KiB chunks at 0.2 GB/s and chunks
    holding every row of 10 columns at 0.7 GB/s (each block decodes whole
    columns). Hence: warn when a chunk is under 256 KiB, or when a band of
    chunks (their rows, every column) exceeds 64 MiB.
    """
    n, d = shape
    rows, cols = min(chunks[0], n), min(chunks[1], d)
    if cols >= d:
        return None
    chunk_bytes, band_bytes = rows * cols * itemsize, rows * d * itemsize
    if chunk_bytes >= SMALL_CHUNK_BYTES and band_bytes <= BAND_BYTES:
        return None
    why = (f"every block of rows reads {-(-d // cols)} chunks of {chunk_bytes / 2**10:.0f} KiB per {rows} rows"
           if chunk_bytes < SMALL_CHUNK_BYTES else
           f"each chunk spans {rows} rows ({band_bytes / 2**20:.0f} MiB across all columns), so every block of rows "
           "decodes rows it does not use")
    where = f"{name!r} in {path}" if path else repr(name)
    return (
        f"{where} is chunked along columns (chunks {chunks} for shape {shape}): {why}, and each pass over the "
        f"data reads slowly. Rewrite it chunked along rows once: `bigrfm convert {path or 'SRC.zarr'} OUT.zarr` "
        "(add --dtype to keep a compact type)."
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
    if not is_url(path):
        path = os.path.abspath(path)  # workers of a remote cluster do not share this process's directory
    group = _open_group(path)
    ds = _describe(group, path, x_name, y_name, require_y)
    ds = dataclasses.replace(ds, feature_names=_feature_names(group, path, ds.n_features), token=store_token(group))

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
        ds = dataclasses.replace(ds, validation_split=dataclasses.replace(val, feature_names=ds.feature_names, token=ds.token))
    return ds




@dataclasses.dataclass(frozen=True, eq=False)
class ZarrArrayDataset(PairDataset):
    """``zarr.Array`` objects (features, and targets as a zarr array or a numpy array) read block by block.

    What the estimators make of ``fit(zarr_array, y)``: nothing is copied; each
    block reads its rows from the arrays, in their stored dtype. The arrays
    pickle as their store and path, so Dask workers read their own blocks
    (a store in memory is pickled whole; use a store on disk for a cluster).
    Build one with :func:`array_dataset`, which checks the shapes.

    Parameters
    ----------
    X : zarr.Array, shape (n, d)
    y : zarr.Array or ndarray, shape (n,) or (n, c), or None
    feature_names : tuple of str or None
    """


    @property
    def dtype(self) -> str:
        return str(self.X.dtype)

    @property
    def chunk_rows(self) -> int:
        return _chunk_rows(self.X)

    @property
    def y_shape(self) -> tuple[int, ...] | None:
        return None if self.y is None else tuple(int(s) for s in self.y.shape)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [start, stop): X (b, d) in the stored dtype, y (b,) / (b, c) or None."""
        X = np.asarray(self.X[start:stop])
        return X, None if self.y is None else as_labels(np.asarray(self.y[start:stop]))


def array_dataset(X: Any, y: Any = None, feature_names: tuple[str, ...] | None = None) -> ZarrArrayDataset:
    """A dataset over a ``zarr.Array`` of features (and targets), checked like a store's arrays.

    Parameters
    ----------
    X : zarr.Array, shape (n, d)
        Any numeric or boolean dtype; chunked along rows is fastest (a
        column-chunked array whose reads are slow gives a :class:`SlowChunkingWarning`).
    y : zarr.Array, array-like or None
        One target (or row of c targets) per row of X; a non-zarr y is held in memory.
    feature_names : tuple of str, optional
    """
    where = _array_where(X)
    _check_features(X, where, "X")
    if y is not None:
        if not hasattr(y, "chunks"):
            y = np.asarray(y)
        _check_target(y, where, "y", "X", int(X.shape[0]))
    return ZarrArrayDataset(X, y, feature_names)


def _array_where(arr: Any) -> str:
    """The store and path of a zarr array, for messages (``""`` when unknown)."""
    root = getattr(getattr(arr, "store", None), "root", None)
    name = getattr(arr, "path", "") or ""
    if root is None:
        return name
    return f"{root}/{name}" if name else str(root)
