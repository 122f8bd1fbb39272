"""Writing datasets (the atomic Zarr writer), converting CSV / Parquet / .npy / .npz, describing a store.

Everything streams: a writer appends row blocks, ``convert`` reads its source
block by block (peak memory independent of the file size), and output appears
at its final path only when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
from typing import Any, Iterator, Sequence

import numpy as np

from .exceptions import DataError, InputError

from .data import _FLOAT_DTYPES, ZarrDataset, _is_url, _open_array, as_labels, default_block_rows, open_dataset, row_blocks
from .stats import ClassCounts, Moments

__all__ = ["create_dataset", "DatasetWriter", "check_output_path", "default_chunk_rows", "convert", "describe"]

log = logging.getLogger("bigrfm.convert")

# -- writing --------------------------------------------------------------------------------

_COMPRESSORS = ("none", "lz4", "zstd")
#: Default size of one stored chunk of X (DESIGN.md: 4–16 MiB per chunk).
_CHUNK_BYTES = 8 * 2**20


def _compressors(name: str) -> Any:
    from zarr.codecs import BloscCodec, ZstdCodec  # noqa: PLC0415

    if name == "none":
        return None
    if name == "lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    if name == "zstd":
        return ZstdCodec(level=3)
    raise InputError(f"compressor must be one of {list(_COMPRESSORS)}. Got {name!r} instead.")


def default_chunk_rows(n_features: int, itemsize: int) -> int:
    """Rows of a stored chunk of about 8 MiB, rounded down to a multiple of 1024 when larger."""
    rows = default_block_rows(n_features, itemsize, _CHUNK_BYTES)
    return rows - rows % 1024 if rows > 1024 else rows


def _is_label_dtype(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in ("U", "O", "T", "S")


class _Appender:
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
        self.pending.append((X.astype(self.dtype, copy=False), y))
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

    Rows go to a temporary sibling folder ``OUT.tmp-<random>``; :meth:`close`
    renames it onto ``OUT`` and :meth:`abort` (or any exception inside a
    ``with`` block) removes it, so ``OUT`` is either complete or untouched.
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
        self.overwrite = overwrite
        self.tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        self._args = (n_features, str(np.dtype(dtype)), chunk_rows, _compressors(compressor))
        self._names = (x_name, y_name)
        self.group = zarr.open_group(self.tmp, mode="w-", zarr_format=3)
        meta = dict(attrs or {})
        if feature_names is not None:
            meta["feature_names"] = list(feature_names)
        if meta:
            self.group.attrs.update(meta)
        self._parts: dict[bool, _Appender] = {}
        self.closed = False

    def _part(self, validation: bool) -> _Appender:
        if validation not in self._parts:
            x_name, y_name = self._names
            suffix = "_val" if validation else ""
            self._parts[validation] = _Appender(self.group, x_name + suffix, y_name + suffix, *self._args)
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
            _replace_dir(self.tmp, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return open_dataset(self.path, *self._names)

    def abort(self) -> None:
        """Drop everything written; the output path is left as it was. Harmless after close."""
        self.closed = True
        if os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()


def _is_zarr_dir(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in ("zarr.json", ".zgroup", ".zarray"))


def check_output_path(path: str, overwrite: bool) -> None:
    """Raise InputError when ``path`` may not be written: a URL, an existing output
    without ``overwrite``, or an existing folder that is not a Zarr store (never deleted)."""
    if _is_url(path):
        raise InputError(f"Datasets are written to local paths only (atomic rename); got {path}. Write locally, then copy.")
    if os.path.lexists(path):
        if not overwrite:
            raise InputError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it, or choose another path.")
        if os.path.isdir(path) and not _is_zarr_dir(path):
            raise InputError(f"{path} exists and is not a Zarr store; refusing to replace it. Choose another path.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"The folder {parent} does not exist; create it first.")


def _replace_dir(tmp: str, path: str, overwrite: bool) -> None:
    """Move ``tmp`` onto ``path``; an old ``path`` is moved aside first and deleted last,
    so a crash leaves either the old or the new dataset in place."""
    check_output_path(path, overwrite)
    old = None
    if os.path.lexists(path):
        old = f"{path}.old-{secrets.token_hex(4)}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if os.path.isdir(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)


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
    dtype : {"float32", "float64"}
        dtype of X (and X_val).
    chunk_rows : int, optional
        Rows per stored chunk; default about 8 MiB of X per chunk.
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
    if str(dtype) not in _FLOAT_DTYPES:
        raise InputError(f"dtype must be one of {list(_FLOAT_DTYPES)}. Got {dtype!r} instead.")
    if int(n_features) < 1:
        raise InputError(f"n_features must be >= 1. Got {n_features} instead.")
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(n_features, np.dtype(dtype).itemsize)
    if int(chunk_rows) < 1:
        raise InputError(f"chunk_rows must be >= 1. Got {chunk_rows} instead.")
    if feature_names is not None:
        feature_names = tuple(str(s) for s in feature_names)
        if len(feature_names) != n_features:
            raise InputError(f"feature_names has {len(feature_names)} names for {n_features} features.")
    _compressors(compressor)
    check_output_path(path, overwrite)
    return DatasetWriter(
        path,
        int(n_features),
        dtype=str(dtype),
        chunk_rows=int(chunk_rows),
        compressor=compressor,
        feature_names=feature_names,
        overwrite=overwrite,
        x_name=x_name,
        y_name=y_name,
        attrs=attrs,
    )


# -- converting files ----------------------------------------------------------------------
#
# `convert` streams a CSV / Parquet / .npy / .npz file into a dataset. A source
# yields raw blocks; `_Encoder` turns a table block into (X, y) (numeric columns,
# one-hot columns, the target); the rows then go to the writer, or, for a shuffled
# copy, through temporary buckets first.

_READ_ROWS = 65_536  # rows per block read from a source
_BUCKET_BYTES = 256 * 2**20  # wanted size of one shuffle bucket (the peak memory of pass 2)
_MAX_BUCKETS = 256  # bounds the write buffers of pass 1 (one small chunk per bucket)
_SOURCE_KINDS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz"}


def _source_kind(src: str) -> str:
    low = src.lower()
    for ext, kind in _SOURCE_KINDS.items():
        if low.endswith(ext):
            return kind
    raise InputError(f"Cannot tell the format of {src}; use a file ending in {', '.join(_SOURCE_KINDS)}.")


class _Table:
    """A CSV or Parquet file read as pandas DataFrames of at most ``rows`` rows."""

    def __init__(self, src: str, kind: str, rows: int) -> None:
        self.src, self.kind, self.rows = src, kind, rows
        try:
            if kind == "csv":
                import pandas as pd  # noqa: PLC0415

                self.columns = [str(c) for c in pd.read_csv(src, nrows=0).columns]
                self.n_rows_hint = None
            else:
                import pyarrow.parquet as pq  # noqa: PLC0415

                pf = pq.ParquetFile(src)
                self.columns = list(pf.schema_arrow.names)
                self.n_rows_hint = pf.metadata.num_rows
        except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
            raise DataError(f"Cannot read {src} as {kind.upper()}: {exc}. Check that the file is complete and is {kind.upper()}.") from exc
        if not self.columns:
            raise DataError(f"{src} has no columns.")

    def blocks(self, columns: list[str] | None = None, text_columns: frozenset[str] = frozenset()) -> Iterator[Any]:
        """DataFrames in file order; ``text_columns`` are read as strings."""
        try:
            if self.kind == "csv":
                import pandas as pd  # noqa: PLC0415

                # every column is parsed (no usecols), so a line with too many fields is an error
                dtype = {c: str for c in text_columns}
                with pd.read_csv(self.src, chunksize=self.rows, dtype=dtype) as reader:
                    for df in reader:
                        yield df if columns is None else df[columns]
            else:
                import pyarrow.parquet as pq  # noqa: PLC0415

                for batch in pq.ParquetFile(self.src).iter_batches(batch_size=self.rows, columns=columns):
                    df = batch.to_pandas()
                    for c in text_columns & set(df.columns):
                        df[c] = df[c].astype("str")
                    yield df
        except (DataError, InputError):
            raise
        except Exception as exc:
            raise DataError(f"Cannot read {self.src}: {exc}. Fix the file (a ragged line?) and convert again.") from exc


def _is_numeric_column(series: Any) -> bool:
    import pandas as pd  # noqa: PLC0415

    return bool(pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype))


def _missing_label(series: Any, start: int, src: str) -> DataError:
    row = start + int(np.flatnonzero(series.isna().to_numpy())[0])
    return DataError(
        f"The target column {series.name!r} of {src} is empty in row {row} (0-based, header not counted); "
        "every row needs a target: fill it or drop the row."
    )


@dataclasses.dataclass(frozen=True)
class _Encoder:
    """How one table block becomes X (b, d) float64 and y (b,) or None."""

    features: tuple[str, ...]
    target: str | None
    categories: dict[str, tuple[str, ...]]  # one-hot columns and their sorted categories
    text_target: bool

    @property
    def feature_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for c in self.features:
            names.extend([f"{c}={v}" for v in self.categories[c]] if c in self.categories else [c])
        return tuple(names)

    def encode(self, df: Any, start: int, src: str) -> tuple[np.ndarray, np.ndarray | None]:
        import pandas as pd  # noqa: PLC0415

        b = len(df)
        parts = []
        for c in self.features:
            col = df[c]
            if c in self.categories:
                # a missing value matches no category: an all-zero group of columns
                codes = pd.Categorical(col, categories=self.categories[c]).codes
                onehot = np.zeros((b, len(self.categories[c])))  # (b, k)
                hit = codes >= 0
                onehot[np.flatnonzero(hit), codes[hit]] = 1.0
                parts.append(onehot)
                continue
            if not _is_numeric_column(col):
                values = pd.to_numeric(col, errors="coerce")
                bad = np.flatnonzero(values.isna().to_numpy() & col.notna().to_numpy())
                if bad.size:
                    raise DataError(
                        f"Column {c!r} of {src} holds the non-numeric value {col.iloc[bad[0]]!r} in row {start + int(bad[0])}; "
                        "fix it, expand text columns with --one-hot, or leave the column out with --features."
                    )
                col = values
            parts.append(col.to_numpy(dtype=np.float64, na_value=np.nan).reshape(b, 1))
        X = np.concatenate(parts, axis=1) if parts else np.zeros((b, 0))
        if self.target is None:
            return X, None
        t = df[self.target]
        if t.isna().any() and (self.text_target or not pd.api.types.is_float_dtype(t.dtype)):
            raise _missing_label(t, start, src)
        if self.text_target:
            y = t.to_numpy(dtype=str)
        elif pd.api.types.is_bool_dtype(t.dtype):
            y = t.to_numpy(dtype=np.int64)
        elif pd.api.types.is_integer_dtype(t.dtype):
            y = t.to_numpy(dtype=np.int64)
        elif _is_numeric_column(t):
            y = t.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            y = t.astype("str").to_numpy(dtype=str)  # text after numbers: the writer refuses it
        return X, y


def _parse_names(spec: str | Sequence[str] | None) -> list[str] | None:
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [s for s in names if s]
    if not names:
        raise InputError("--features is empty; give a comma-separated list of columns, or leave it out.")
    return names


def _plan_table(table: _Table, target: str | None, features: list[str] | None, one_hot: bool) -> _Encoder:
    """Choose the columns, find the text columns, and (for --one-hot) every category: one pass."""
    cols = table.columns
    shown = ", ".join(repr(c) for c in cols[:20]) + (" ..." if len(cols) > 20 else "")
    if target is not None and target not in cols:
        raise DataError(f"{table.src} has no column {target!r} for --target; columns: {shown}.")
    if features is None:
        features = [c for c in cols if c != target]
    missing = [c for c in features if c not in cols]
    if missing:
        raise DataError(f"{table.src} has no column(s) {missing} named in --features; columns: {shown}.")
    if target is not None and target in features:
        raise InputError(f"Column {target!r} is both the target and a feature; remove it from --features.")
    if not features:
        raise DataError(f"{table.src} has no feature column besides the target {target!r}.")

    first = next(table.blocks(), None)
    if first is None or len(first) == 0:
        raise DataError(f"{table.src} holds no data rows (only a header); nothing to convert.")
    text = [c for c in features if not _is_numeric_column(first[c])]
    text_target = target is not None and not _is_numeric_column(first[target])
    if text and not one_hot:
        raise DataError(
            f"Feature column(s) {text} of {table.src} are not numeric; expand them into indicator "
            "columns with --one-hot, or leave them out with --features."
        )
    categories: dict[str, tuple[str, ...]] = {}
    if text:
        found: dict[str, set] = {c: set() for c in text}
        for df in table.blocks(columns=text, text_columns=frozenset(text)):
            for c in text:
                found[c].update(df[c].dropna().unique().tolist())
        categories = {c: tuple(sorted(str(v) for v in found[c])) for c in text}
    return _Encoder(tuple(features), target, categories, text_target)


def _table_rows(table: _Table, enc: _Encoder) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    text = frozenset(enc.categories) | ({enc.target} if enc.text_target else set())
    # CSV parses every column anyway (a ragged line must fail); Parquet reads only these
    columns = [*enc.features, *([enc.target] if enc.target is not None else [])]
    start = 0
    for df in table.blocks(columns=columns, text_columns=text):
        X, y = enc.encode(df, start, table.src)
        yield start, X, y
        start += len(df)


def _npz_member(zf: Any, name: str, rows: int) -> tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]]:
    """Shape, dtype and row blocks of one array of an .npz, read from the zip member as a stream.

    An .npz cannot be memory-mapped, but its members are plain .npy streams
    (possibly deflated): reading the header, then ``rows`` rows at a time, keeps
    memory at one block. Fortran-ordered members are loaded whole (one array).
    """
    fp = zf.open(name + ".npy")
    version = np.lib.format.read_magic(fp)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = header(fp)
    if dtype.hasobject:
        fp.close()
        raise DataError(f"Array {name!r} of the .npz holds Python objects; save it with a numeric dtype.")

    def blocks() -> Iterator[np.ndarray]:
        with fp:
            if fortran:
                whole = np.frombuffer(fp.read(), dtype=dtype).reshape(shape, order="F")
                for lo, hi in row_blocks(shape[0], rows):
                    yield whole[lo:hi]
                return
            row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
            for lo, hi in row_blocks(shape[0], rows):
                buf = fp.read((hi - lo) * row_bytes)
                yield np.frombuffer(buf, dtype=dtype).reshape((hi - lo, *shape[1:]))

    return tuple(shape), dtype, blocks()


def _array_rows(
    src: str, zf: Any, rows: int, target: str | int | None, features: list[str] | None
) -> tuple[Iterator[tuple[int, np.ndarray, np.ndarray | None]], int, list[int]]:
    """Row blocks of an .npy (columns of one 2-D array; ``zf`` None) or of the .npz
    open as ``zf`` (arrays X and optionally y). Returns (blocks, n_rows, source columns)."""
    kind = "npy" if zf is None else "npz"
    y_blocks: Iterator[np.ndarray] | None = None
    try:
        if zf is None:
            arr = np.load(src, mmap_mode="r")
            x_shape, x_dtype = arr.shape, arr.dtype
            x_blocks = (arr[lo:hi] for lo, hi in row_blocks(arr.shape[0], rows))
        else:
            members = [m[:-4] for m in zf.namelist() if m.endswith(".npy")]
            if "X" not in members:
                raise DataError(f"{src} has no array 'X' (arrays: {members}); save it with np.savez(path, X=X, y=y).")
            x_shape, x_dtype, x_blocks = _npz_member(zf, "X", rows)
            if "y" in members:
                if target is not None:
                    raise InputError(f"{src} has an array 'y'; --target (a column of X) is only for files without one.")
                y_shape, _, y_blocks = _npz_member(zf, "y", rows)
                if y_shape[0] != x_shape[0] or len(y_shape) > 2:
                    raise DataError(f"Array 'y' of {src} has shape {y_shape}; it needs one target per row of X {x_shape}.")
    except (DataError, InputError):
        raise
    except Exception as exc:  # numpy raises ValueError/OSError/... for files it cannot parse
        raise DataError(f"Cannot read {src} as {kind}: {exc}.") from exc
    if len(x_shape) != 2:
        raise DataError(f"The array in {src} has shape {x_shape}; it must be 2-D (rows, columns).")
    if x_dtype.kind not in "biuf":
        raise DataError(f"The array in {src} has dtype {x_dtype}; features must be numbers.")
    n, width = x_shape
    if n == 0:
        raise DataError(f"{src} holds no rows; nothing to convert.")
    t_idx = None
    if target is not None:
        try:
            t_idx = int(target)
        except (TypeError, ValueError):
            raise InputError(f"--target for {kind} files is a column index; got {target!r}.") from None
        if not -width <= t_idx < width:
            raise InputError(f"--target {t_idx} is out of range for {width} columns.")
        t_idx %= width
    if features is None:
        cols = [j for j in range(width) if j != t_idx]
    else:
        try:
            cols = [int(c) % width if -width <= int(c) < width else int(c) for c in features]
        except ValueError:
            raise InputError(f"--features for {kind} files are column indices; got {features}.") from None
        if any(not 0 <= c < width for c in cols):
            raise InputError(f"--features {features} go past the {width} columns of {src}.")
    if not cols:
        raise DataError(f"{src} has no feature column besides the target.")

    def gen() -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        start = 0
        for Xb in x_blocks:
            yb = next(y_blocks) if y_blocks is not None else None
            if t_idx is not None:
                yb = np.asarray(Xb[:, t_idx])
            yield start, np.asarray(Xb[:, cols], dtype=np.float64), yb
            start += Xb.shape[0]

    return gen(), int(n), cols


def _first_nonfinite(A: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows of A (b, k) holding NaN/inf (sorted), and the first bad column of the first one."""
    with np.errstate(over="ignore", invalid="ignore"):
        candidates = np.flatnonzero(~np.isfinite(A.sum(axis=1)))
    bad = candidates[~np.isfinite(A[candidates]).all(axis=1)]
    col = int(np.flatnonzero(~np.isfinite(A[bad[0]]))[0]) if bad.size else -1
    return bad, col


class _Buckets:
    """The first pass of a shuffled copy: rows go to K temporary Zarr buckets by a
    seeded random bucket id; :meth:`drain` then permutes each bucket in memory and
    appends it. Peak memory is one bucket plus K small write buffers."""

    def __init__(self, folder: str, k: int, d: int, dtype: str, rng: np.random.Generator) -> None:
        import zarr  # noqa: PLC0415

        self.folder, self.k, self.d, self.dtype, self.rng = folder, k, d, dtype, rng
        self.group = zarr.open_group(folder, mode="w-", zarr_format=3)
        # small chunks: K write buffers of one chunk each stay ≈ K x 256 KiB
        self.chunk_rows = default_block_rows(d, np.dtype(dtype).itemsize, 256 * 2**10)
        self.parts: dict[tuple[bool, int], _Appender] = {}

    def append(self, X: np.ndarray, y: np.ndarray | None, *, validation: bool = False) -> None:
        ids = self.rng.integers(0, self.k, size=X.shape[0])
        order = np.argsort(ids, kind="stable")
        bounds = np.searchsorted(ids[order], np.arange(self.k + 1))
        for j in range(self.k):
            take = order[bounds[j] : bounds[j + 1]]
            if take.size == 0:
                continue
            key = (validation, j)
            if key not in self.parts:
                tag = f"{int(validation)}_{j}"
                self.parts[key] = _Appender(self.group, f"X_{tag}", f"y_{tag}", self.d, self.dtype, self.chunk_rows, None)
            self.parts[key].append(X[take], None if y is None else y[take])

    def drain(self, writer: DatasetWriter, rng: np.random.Generator) -> None:
        for key in sorted(self.parts):
            part = self.parts[key]
            part.flush()
            X = part.X[0 : part.n]
            y = None if part.y is None else as_labels(part.y[0 : part.n])
            perm = rng.permutation(part.n)
            writer.append(X[perm], None if y is None else y[perm], validation=key[0])


def _estimate_bytes(src: str, n_rows: int | None, d: int, itemsize: int) -> int:
    """Size of the converted data, to choose the number of shuffle buckets."""
    if n_rows is not None:
        return n_rows * d * itemsize
    # CSV: the text is larger than the binary values (≈10 characters per float32), so
    # the file size over-estimates, giving smaller buckets; gzip packs text ≈5x
    return os.path.getsize(src) * (5 if src.lower().endswith(".gz") else 1)


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    target: str | int | None = None,
    features: str | Sequence[str] | None = None,
    val_fraction: float = 0.0,
    chunk_rows: int | None = None,
    compressor: str = "none",
    dtype: str = "float32",
    overwrite: bool = False,
    shuffle: bool = False,
    seed: int | None = 0,
    one_hot: bool = False,
    drop_nonfinite: bool = False,
    x_name: str = "X",
    y_name: str = "y",
    shuffle_buckets: int | None = None,
    read_rows: int = _READ_ROWS,
) -> ZarrDataset:
    """Convert a CSV, Parquet, .npy or .npz file into a dataset, streaming.

    No more than a block of ``read_rows`` rows of the source is in memory at a
    time (one bucket with ``shuffle``); ``out`` appears only when everything
    succeeded, and no temporary folder is left behind on error.

    Parameters
    ----------
    src : str or PathLike
        ``.csv``/``.csv.gz`` (read with ``pandas.read_csv(chunksize=...)``),
        ``.parquet`` (``pyarrow`` batches), ``.npy`` (memory-mapped: one 2-D
        numeric array whose columns are the features and, with ``target``, the
        target) or ``.npz`` (arrays ``X`` and optionally ``y``; an .npz cannot
        be memory-mapped, so its members are read as streams, see
        ``_npz_member``).
    out : str or PathLike
        Output Zarr group (local path).
    target : str or int, optional
        Target column: a name (CSV/Parquet) or a column index (.npy, or an .npz
        without ``y``). Integer and text targets are classes; text is stored as
        a Zarr string array. Without a target the dataset has no ``y``.
    features : str or sequence, optional
        Feature columns (comma-separated names, or indices for arrays); by
        default every column but the target.
    val_fraction : float
        Each row goes to ``{x_name}_val``/``{y_name}_val`` instead with this
        probability (seeded), so the split has about this fraction of rows.
    chunk_rows : int, optional
        Rows per stored chunk (default about 8 MiB of X).
    compressor : {"none", "lz4", "zstd"}
    dtype : {"float32", "float64"}
        dtype of X; float64 keeps the source values exactly.
    overwrite : bool
        Replace an existing Zarr store at ``out``.
    shuffle : bool
        Write the rows in a seeded random order. A streaming shuffle needs two
        passes: rows first go to K temporary Zarr buckets by a random bucket id,
        then each bucket is permuted in memory and appended. Peak memory is one
        bucket (about 256 MiB by default; K is chosen from the source size).
    seed : int or None
        Seeds the validation split, the buckets and the permutations
        (independent streams); the same seed gives the same output.
    one_hot : bool
        Expand text feature columns into one indicator column per category
        (named ``column=value``), found in a first pass over the file. A missing
        value sets none of its columns. The categories are stored in the
        ``one_hot_categories`` attribute.
    drop_nonfinite : bool
        Drop rows with a NaN/inf (or empty) feature or target instead of failing.
    x_name, y_name : str
        Array names in ``out``.
    shuffle_buckets : int, optional
        Number of buckets K (default from the source size).
    read_rows : int
        Rows per block read from the source.

    Returns
    -------
    ZarrDataset
        The new dataset, opened.

    Examples
    --------
    >>> convert("flights.csv", "flights.zarr", target="delayed", val_fraction=0.1)  # doctest: +SKIP
    """
    src, out = os.fspath(src), os.fspath(out)
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1). Got {val_fraction} instead.")
    if shuffle_buckets is not None and shuffle_buckets < 1:
        raise InputError(f"shuffle_buckets must be >= 1. Got {shuffle_buckets} instead.")
    if str(dtype) not in _FLOAT_DTYPES:
        raise InputError(f"dtype must be one of {list(_FLOAT_DTYPES)}. Got {dtype!r} instead.")
    _compressors(compressor)
    check_output_path(out, overwrite)
    if not os.path.isfile(src):
        raise DataError(f"Source file {src} does not exist (or is not a file).")
    kind = _source_kind(src)
    if os.path.getsize(src) == 0:
        raise DataError(f"{src} is empty; nothing to convert.")
    names = _parse_names(features)

    with contextlib.ExitStack() as stack:
        attrs: dict[str, Any] = {"source": os.path.basename(src)}
        if target is not None:
            attrs["target"] = str(target)
        feature_names = None
        if kind in ("csv", "parquet"):
            table = _Table(src, kind, read_rows)
            enc = _plan_table(table, None if target is None else str(target), names, one_hot)
            blocks, n_hint, feature_names = _table_rows(table, enc), table.n_rows_hint, enc.feature_names
            column_names = feature_names
            if enc.categories:
                attrs["one_hot_categories"] = {c: list(v) for c, v in enc.categories.items()}
        else:
            zf = None if kind == "npy" else stack.enter_context(_open_zip(src))
            blocks, n_hint, cols = _array_rows(src, zf, read_rows, target, names)
            column_names = tuple(f"column {j}" for j in cols)
        d = len(column_names)

        rng_val, rng_bucket, rng_perm = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        writer = create_dataset(
            out, d, dtype=dtype, chunk_rows=chunk_rows, compressor=compressor, feature_names=feature_names,
            overwrite=overwrite, x_name=x_name, y_name=y_name, attrs=attrs,
        )  # fmt: skip
        stack.callback(writer.abort)  # no-op once closed; removes the temporary folder on any error
        sink: Any = writer
        if shuffle:
            est = _estimate_bytes(src, n_hint, d, np.dtype(dtype).itemsize)
            k = shuffle_buckets or int(np.clip(-(-est // _BUCKET_BYTES), 1, _MAX_BUCKETS))
            scratch = f"{writer.tmp}-buckets"
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
            sink = _Buckets(scratch, k, d, dtype, rng_bucket)
        n_read, n_kept = _copy_rows(blocks, sink, src, column_names, target, val_fraction, drop_nonfinite, rng_val)
        if shuffle:
            sink.drain(writer, rng_perm)
        if n_kept < n_read:
            log.warning("convert: dropped %d of %d rows holding NaN/inf or empty values", n_read - n_kept, n_read)
        ds = writer.close()
    log.info("convert: wrote %s (%d rows x %d features)", out, ds.n_rows, ds.n_features)
    return ds


def _open_zip(src: str) -> Any:
    import zipfile  # noqa: PLC0415

    try:
        return zipfile.ZipFile(src)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"Cannot read {src} as npz: {exc}.") from exc


def _copy_rows(
    blocks: Iterator[tuple[int, np.ndarray, np.ndarray | None]],
    sink: Any,
    src: str,
    column_names: Sequence[str],
    target: str | int | None,
    val_fraction: float,
    drop_nonfinite: bool,
    rng_val: np.random.Generator,
) -> tuple[int, int]:
    """Check, split and append every source block; returns (rows read, rows kept)."""
    d = len(column_names)
    n_read = n_kept = 0
    for start, X, y in blocks:
        n_read += X.shape[0]
        bad, col = _first_nonfinite(X if y is None or y.dtype.kind != "f" else np.column_stack([X, y]))
        if bad.size and not drop_nonfinite:
            what = f"Column {column_names[col]!r}" if col < d else f"The target column {target!r}"
            raise DataError(
                f"{what} of {src} holds NaN, inf or an empty value in row {start + int(bad[0])} "
                f"(0-based, header not counted; {bad.size} such row(s) in rows {start}–{start + X.shape[0]}). "
                "Clean the file, or drop these rows with --drop-nonfinite."
            )
        if bad.size:
            keep = np.ones(X.shape[0], bool)
            keep[bad] = False
            X, y = X[keep], None if y is None else y[keep]
        n_kept += X.shape[0]
        if val_fraction > 0:
            # each row independently: a streaming split needs no row count
            to_val = rng_val.random(X.shape[0]) < val_fraction
            sink.append(X[~to_val], None if y is None else y[~to_val])
            if to_val.any():
                sink.append(X[to_val], None if y is None else y[to_val], validation=True)
        else:
            sink.append(X, y)
    return n_read, n_kept


# -- describing a dataset ----------------------------------------------------------------------


def _bytes_on_disk(path: str) -> int | None:
    if _is_url(path):
        return None  # listing a remote store can be slow and costs requests
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _target_summary(ds: ZarrDataset) -> dict | None:
    """Classes and counts (integer or text targets) or mean and std (floats), from y alone."""
    if not ds.has_y:
        return None
    arr = _open_array(ds.path, ds.y_name, ds.y_shape)
    is_classes = ds.y_dtype == "string" or np.dtype(ds.y_dtype).kind in "iub"
    # y is small next to X: read it a few chunks at a time, never whole
    step = max(ds.chunk_rows, default_block_rows(int(np.prod(ds.y_shape[1:])), 8))
    acc: Moments | ClassCounts | None = None
    for lo, hi in row_blocks(ds.n_rows, step):
        y = as_labels(arr[lo:hi])
        part = ClassCounts.of_block(y) if is_classes else Moments.of_block(y)
        acc = part if acc is None else acc + part
    out: dict[str, Any] = {"name": ds.y_name, "dtype": ds.y_dtype, "shape": list(ds.y_shape)}
    if is_classes:
        out["classes"] = acc.labels.tolist()
        out["counts"] = acc.counts.tolist()
    else:
        out["mean"] = acc.mean.tolist() if len(ds.y_shape) > 1 else float(acc.mean[0])
        out["std"] = np.sqrt(acc.var).tolist() if len(ds.y_shape) > 1 else float(np.sqrt(acc.var[0]))
    return out


def describe(ds: ZarrDataset, *, max_names: int = 20) -> dict:
    """A JSON-ready summary of a dataset (what ``bigrfm info`` shows).

    Reads only metadata and the targets (never X), a few chunks at a time.

    Parameters
    ----------
    ds : ZarrDataset
    max_names : int
        Feature names listed (the first ones).

    Returns
    -------
    dict
        ``path, rows, features, dtype, chunk_rows, bytes_on_disk`` (None for
        URLs), ``bytes_in_memory`` (X, plus y when numeric), ``target`` (None, or
        name/dtype/shape with ``classes``/``counts`` or ``mean``/``std``),
        ``validation`` (None, or rows and target), ``feature_names`` (the first
        ``max_names``, or None).
    """
    def split(d: ZarrDataset) -> dict:
        mem = d.n_rows * d.n_features * np.dtype(d.dtype).itemsize
        if d.has_y and d.y_dtype != "string":
            mem += int(np.prod(d.y_shape)) * np.dtype(d.y_dtype).itemsize
        return {"rows": d.n_rows, "bytes_in_memory": mem, "target": _target_summary(d)}

    train = split(ds)
    val = ds.validation()
    return {
        "path": ds.path,
        "rows": ds.n_rows,
        "features": ds.n_features,
        "dtype": ds.dtype,
        "chunk_rows": ds.chunk_rows,
        "bytes_on_disk": _bytes_on_disk(ds.path),
        "bytes_in_memory": train["bytes_in_memory"],
        "target": train["target"],
        "validation": None if val is None else split(val),
        "feature_names": None if ds.feature_names is None else list(ds.feature_names[:max_names]),
    }
