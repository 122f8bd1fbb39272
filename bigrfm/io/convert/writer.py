"""The dataset writer: rows appended block by block into a new Zarr group, which appears whole or not at all.

Owns the stored layout of a dataset (arrays ``X``/``y``, ``X_val``/``y_val``,
chunking along rows, compression, attributes) and writes it through the one
atomic-folder helper (:mod:`bigrfm.io.atomic`). Reads no source files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...exceptions import DataError, InputError
from ..atomic import AtomicFolder
from ..datasets import default_block_rows
from ..zarr_store import STORAGE_DTYPES, ZarrDataset, as_labels, is_url, open_dataset

__all__ = [
    "create_dataset",
    "DatasetWriter",
    "Appender",
    "check_output_path",
    "default_chunk_rows",
    "compressors",
    "cast_features",
    "COMPRESSORS",
]

COMPRESSORS = ("none", "lz4", "zstd")
#: Default size of one stored chunk of X (DESIGN.md: 4–16 MiB per chunk).
_CHUNK_BYTES = 8 * 2**20


def compressors(name: str) -> Any:
    from zarr.codecs import BloscCodec, ZstdCodec  # noqa: PLC0415

    if name == "none":
        return None
    if name == "lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    if name == "zstd":
        return ZstdCodec(level=3)
    raise InputError(f"compressor must be one of {list(COMPRESSORS)}. Got {name!r} instead.")


def default_chunk_rows(n_features: int, itemsize: int) -> int:
    """Rows of a stored chunk of about 8 MiB, rounded down to a multiple of 1024 when larger."""
    rows = default_block_rows(n_features, itemsize, _CHUNK_BYTES)
    return rows - rows % 1024 if rows > 1024 else rows


def cast_features(X: np.ndarray, dtype: Any, rows: int | np.ndarray = 0, names: Sequence[str] | None = None) -> np.ndarray:
    """X in the stored dtype ``dtype``; refuses values it cannot hold.

    ``rows`` numbers X's rows for the message: the first one's, or one per row.
    ``names`` names the columns.

    Floats take any finite value (float16 rounds to 3 significant digits and
    refuses |x| > 65504; NaN is kept as a missing value). Integers and bool
    take only whole numbers in their range (bool: 0 and 1), never NaN. A
    lossless cast (uint8 into int16, say) is not checked.

    Raises
    ------
    DataError
        Naming the first row and column that does not fit, and what would.
    """
    dtype = np.dtype(dtype)
    X = np.asarray(X)
    if X.dtype == dtype or np.can_cast(X.dtype, dtype, "safe"):
        return X.astype(dtype, copy=False)
    if dtype.kind == "f":
        limit = np.finfo(dtype).max
        with np.errstate(invalid="ignore"):
            bad = np.abs(X) > limit
        if not bad.any():
            return X.astype(dtype)
        what = f"beyond ±{float(limit):g}, the largest {dtype}"
    else:
        lo, hi = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        with np.errstate(invalid="ignore"):
            bad = ~((X >= lo) & (X <= hi)) if X.dtype.kind != "f" else ~((X >= lo) & (X <= hi) & (np.mod(X, 1) == 0))
        if not bad.any():
            return X.astype(dtype)
        what = f"not a whole number from {lo} to {hi}" if dtype.kind != "b" else "neither 0 nor 1"
    row, col = (int(v[0]) for v in np.nonzero(bad))
    column = names[col] if names is not None and col < len(names) else f"column {col}"
    missing = " (a missing value: integer dtypes cannot store NaN)" if X.dtype.kind == "f" and np.isnan(X[row, col]) else ""
    raise DataError(
        f"{column!s} holds {X[row, col].item()!r} in row {_row_label(rows, row)}{missing}, {what}, so --dtype {dtype} cannot store it. "
        "Choose a dtype that holds the values (float32 holds any), or clean the source."
    )


def _row_label(rows: int | np.ndarray, i: int) -> int:
    return int(rows[i]) if isinstance(rows, np.ndarray) else int(rows) + i


def _is_label_dtype(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in ("U", "O", "T", "S")


class Appender:
    """Appends rows to one X/y pair of zarr arrays, writing whole chunks only.

    Rows are buffered until a chunk is full, so every chunk is written once and
    never read back and rewritten; ``flush`` writes the last, partial chunk.
    The arrays are created at the first write: a dataset smaller than one
    chunk gets a chunk of its own size (a stored chunk always takes its full
    size uncompressed, so an 8 MiB chunk would hold a few KiB of rows).
    """

    def __init__(self, group: Any, x_name: str, y_name: str, d: int, dtype: str, chunk_rows: int, compressors: Any) -> None:
        self.group, self.x_name, self.y_name = group, x_name, y_name
        self.d, self.dtype, self.chunk_rows, self.compressors = d, np.dtype(dtype), chunk_rows, compressors
        self.X: Any = None
        self.y: Any = None
        self.y_dtype: np.dtype | None = None  # dtype of the targets (kind "U" for text), from the first block
        self.y_tail: tuple[int, ...] = ()  # per-row shape of the targets
        self.n = 0  # rows written to the arrays
        self.pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.n_pending = 0

    def _create_arrays(self, rows: int) -> None:
        chunk = min(self.chunk_rows, max(rows, 1))
        self.X = self.group.create_array(
            self.x_name, shape=(0, self.d), dtype=self.dtype, chunks=(chunk, self.d), compressors=self.compressors
        )
        if self.y_dtype is not None:
            # str: Zarr's variable-length UTF-8 string type, stable in format 3 (a numpy
            # "<U" dtype would become an unspecified fixed-width type)
            dtype = str if self.y_dtype.kind == "U" else self.y_dtype
            self.y = self.group.create_array(
                self.y_name, shape=(0, *self.y_tail), dtype=dtype, chunks=(chunk, *self.y_tail), compressors=self.compressors
            )

    def append(self, X: np.ndarray, y: np.ndarray | None) -> None:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.d:
            raise InputError(f"Blocks of {self.x_name!r} must have shape (rows, {self.d}). Got {X.shape} instead.")
        if self.n + self.n_pending > 0 and (y is None) != (self.y_dtype is None):
            raise InputError(f"Either every block of {self.x_name!r} comes with targets or none does.")
        if y is not None:
            y = np.asarray(y)
            if y.shape[0] != X.shape[0]:
                raise InputError(f"A block has {X.shape[0]} rows of X but {y.shape[0]} targets.")
            if self.y_dtype is None:
                self.y_dtype = np.dtype(str) if _is_label_dtype(y.dtype) else y.dtype
                self.y_tail = tuple(y.shape[1:])
            y = self._cast_targets(y)
        self.pending.append((cast_features(X, self.dtype, self.n + self.n_pending), y))
        self.n_pending += X.shape[0]
        if self.n_pending >= self.chunk_rows:
            self._write(full_chunks_only=True)

    def _cast_targets(self, y: np.ndarray) -> np.ndarray:
        """Targets of a later block in the dtype of the first; refuses lossy casts."""
        if tuple(y.shape[1:]) != self.y_tail:
            raise InputError(f"Targets must have shape (rows, *{self.y_tail}). Got {y.shape} instead.")
        if self.y_dtype.kind == "U":
            return y if y.dtype.kind == "U" else as_labels(y) if y.dtype.kind in "OT" else y.astype(str)
        if _is_label_dtype(y.dtype):
            raise DataError(
                f"Targets turn from numbers ({self.y_dtype}) into text after row {self.n + self.n_pending}; "
                "a target column must hold one kind of value."
            )
        cast = y.astype(self.y_dtype)
        if y.dtype != self.y_dtype and not np.array_equal(cast, y):
            raise DataError(
                f"Targets after row {self.n + self.n_pending} are {y.dtype} but earlier ones were "
                f"{self.y_dtype} and the values do not fit; a target column must hold one kind of value."
            )
        return cast

    def _write(self, full_chunks_only: bool) -> None:
        X = np.concatenate([p[0] for p in self.pending])
        y = None if self.y_dtype is None else np.concatenate([p[1] for p in self.pending])
        if self.X is None:
            self._create_arrays(X.shape[0])
        chunk = self.X.chunks[0]
        k = X.shape[0] - X.shape[0] % chunk if full_chunks_only else X.shape[0]
        if k:
            lo, hi = self.n, self.n + k
            self.X.resize((hi, self.d))
            self.X[lo:hi] = X[:k]
            if y is not None:
                self.y.resize((hi, *self.y_tail))
                self.y[lo:hi] = y[:k]
            self.n = hi
        self.pending = [(X[k:], None if y is None else y[k:])] if k < X.shape[0] else []
        self.n_pending = X.shape[0] - k

    def flush(self) -> None:
        if self.pending:
            self._write(full_chunks_only=False)
        elif self.X is None:
            self._create_arrays(0)


class DatasetWriter:
    """Writes a dataset row block by row block into a new Zarr group, atomically.

    Rows go to a hidden temporary sibling folder (:class:`bigrfm.io.atomic.AtomicFolder`);
    :meth:`close` puts it at ``OUT`` whole and :meth:`abort` (or any exception inside
    a ``with`` block) removes it, so ``OUT`` is either complete or untouched.
    Use :func:`create_dataset` to make one.
    """

    def __init__(
        self,
        path: str,
        n_features: int,
        *,
        dtype: str,
        chunk_rows: int,
        compressor: str,
        feature_names: tuple[str, ...] | None,
        overwrite: bool,
        x_name: str,
        y_name: str,
        attrs: dict | None,
    ) -> None:
        import zarr  # noqa: PLC0415

        self.path = path
        self._folder = AtomicFolder(path, overwrite=overwrite, may_replace=_refuse_non_zarr)
        self._args = (n_features, str(np.dtype(dtype)), chunk_rows, compressors(compressor))
        self._names = (x_name, y_name)
        try:
            self.group = zarr.open_group(str(self._folder.tmp), mode="w", zarr_format=3)
            meta = dict(attrs or {})
            if feature_names is not None:
                meta["feature_names"] = list(feature_names)
            if meta:
                self.group.attrs.update(meta)
        except BaseException:
            self._folder.abort()
            raise
        self._parts: dict[bool, Appender] = {}
        self.closed = False

    @property
    def tmp(self) -> Path:
        """The temporary folder being written (it becomes ``path`` at :meth:`close`)."""
        return self._folder.tmp

    def _part(self, validation: bool) -> Appender:
        if validation not in self._parts:
            x_name, y_name = self._names
            suffix = "_val" if validation else ""
            self._parts[validation] = Appender(self.group, x_name + suffix, y_name + suffix, *self._args)
        return self._parts[validation]

    def append(self, X: np.ndarray, y: np.ndarray | None = None, *, validation: bool = False) -> None:
        """Append rows: X (b, d), y (b,) / (b, c) or None; ``validation`` sends them to X_val/y_val."""
        if self.closed:
            raise InputError(f"The writer of {self.path} is closed.")
        try:
            self._part(validation).append(X, y)
        except BaseException:
            self.abort()
            raise

    def close(self) -> ZarrDataset:
        """Flush, move the finished group onto the output path and open it."""
        if self.closed:
            raise InputError(f"The writer of {self.path} is closed.")
        try:
            self._part(False)  # an X array exists even when no row was appended
            for part in self._parts.values():
                part.flush()
            if self._parts[False].n == 0:
                raise DataError(f"No rows were written to {self.path}; the source holds no data rows.")
            self._folder.commit()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return open_dataset(self.path, *self._names)

    def abort(self) -> None:
        """Drop everything written; the output path is left as it was. Harmless after close."""
        self.closed = True
        self._folder.abort()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()


def _is_zarr_dir(path: str | os.PathLike) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in ("zarr.json", ".zgroup", ".zarray"))


def _refuse_non_zarr(path: Path) -> str | None:
    if path.is_dir() and not _is_zarr_dir(path):
        return f"{path} exists and is not a Zarr store; refusing to replace it. Choose another path."
    return None


def check_output_path(path: str, overwrite: bool) -> None:
    """Raise InputError when ``path`` may not be written: a URL, an existing output
    without ``overwrite``, or an existing folder that is not a Zarr store (never deleted).

    The writer checks again when it commits; this early check fails before any work.
    """
    if is_url(path):
        raise InputError(f"Datasets are written to local paths only (atomic rename); got {path}. Write locally, then copy.")
    if os.path.lexists(path):
        if not overwrite:
            raise InputError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it, or choose another path.")
        reason = _refuse_non_zarr(Path(path))
        if reason:
            raise InputError(reason)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"The folder {parent} does not exist; create it first.")


def create_dataset(
    path: str | os.PathLike,
    n_features: int,
    *,
    dtype: str = "float32",
    chunk_rows: int | None = None,
    compressor: str = "none",
    feature_names: Sequence[str] | None = None,
    overwrite: bool = False,
    x_name: str = "X",
    y_name: str = "y",
    attrs: dict | None = None,
) -> DatasetWriter:
    """Start writing a dataset (Zarr format 3) row block by row block.

    The target array is created from the first block that carries targets:
    its dtype (floats, ints, or strings stored as a Zarr string array) and its
    per-row shape, () or (c,), come from that block.

    Parameters
    ----------
    path : str or PathLike
        Output folder (local). Nothing appears there until :meth:`DatasetWriter.close`.
    n_features : int
        Columns of X.
    dtype : {"float32", "float64", "float16", "uint8", "int8", "uint16", "int16", "int32", "bool"}
        dtype of X (and X_val). The compact ones keep integer data small (images as
        uint8: a quarter of float32 on disk and in I/O) and are cast per block when
        read; appended values that a dtype cannot hold are refused (:func:`cast_features`).
    chunk_rows : int, optional
        Rows per stored chunk; default about 8 MiB of X per chunk, counting values
        of a compact dtype as 4 bytes (a uint8 store has the rows per chunk of a
        float32 one, so both are read in the same blocks and give the same model).
    compressor : {"none", "lz4", "zstd"}
        Float features barely compress (zstd ≈1.08× at a third of the read
        speed), hence no compression by default; ``"lz4"`` is Blosc-LZ4 with
        byte shuffle.
    feature_names : sequence of str, optional
        Stored as the ``feature_names`` group attribute.
    overwrite : bool
        Replace an existing Zarr store at ``path`` (a folder that is not a Zarr
        store is never replaced).
    x_name, y_name : str
        Array names; the validation split is ``{x_name}_val``/``{y_name}_val``.
    attrs : dict, optional
        More JSON-serializable group attributes.

    Returns
    -------
    DatasetWriter
        ``append(X, y=None, *, validation=False)``, then ``close()`` (returns the
        opened :class:`ZarrDataset`) or ``abort()``; also a context manager.

    Examples
    --------
    >>> with create_dataset("toy.zarr", 3, dtype="float64") as w:  # doctest: +SKIP
    ...     w.append(np.ones((10, 3)), np.zeros(10))
    >>> open_dataset("toy.zarr").n_rows  # doctest: +SKIP
    10
    """
    path = os.fspath(path)
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in STORAGE_DTYPES:
        raise InputError(f"dtype must be one of {list(STORAGE_DTYPES)}. Got {dtype!r} instead.")
    if int(n_features) < 1:
        raise InputError(f"n_features must be >= 1. Got {n_features} instead.")
    if chunk_rows is None:
        # compact dtypes get float32's rows per chunk: the same blocks when read, hence the same model
        chunk_rows = default_chunk_rows(n_features, max(np.dtype(dtype).itemsize, 4))
    if int(chunk_rows) < 1:
        raise InputError(f"chunk_rows must be >= 1. Got {chunk_rows} instead.")
    if feature_names is not None:
        feature_names = tuple(str(s) for s in feature_names)
        if len(feature_names) != n_features:
            raise InputError(f"feature_names has {len(feature_names)} names for {n_features} features.")
    compressors(compressor)
    check_output_path(path, overwrite)
    return DatasetWriter(
        path,
        int(n_features),
        dtype=name,
        chunk_rows=int(chunk_rows),
        compressor=compressor,
        feature_names=feature_names,
        overwrite=overwrite,
        x_name=x_name,
        y_name=y_name,
        attrs=attrs,
    )
