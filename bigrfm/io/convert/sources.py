"""Source files read as row blocks: CSV and Parquet tables (pandas / pyarrow), .npy and .npz arrays, Zarr.

A Zarr source is a group with arrays ``X`` (and ``y``, ``X_val``/``y_val``) or a
single 2-D array: converting one rechunks it along rows, or changes its dtype.

Each source yields raw blocks without loading the file; turning a table block
into numbers is :mod:`bigrfm.io.convert.encode`. Writes nothing.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

from ...exceptions import DataError, InputError
from ..datasets import row_blocks

__all__ = ["READ_ROWS", "SOURCE_KINDS", "source_kind", "Table", "npz_member", "open_zarr_source", "array_rows", "parse_names",
           "first_nonfinite"]

READ_ROWS = 65_536  # rows per block read from a source
BUCKET_BYTES = 256 * 2**20  # wanted size of one shuffle bucket (the peak memory of pass 2)
MAX_BUCKETS = 256  # bounds the write buffers of pass 1 (one small chunk per bucket)
#: Files that make a folder a Zarr group or array.
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
SOURCE_KINDS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz"}


def source_kind(src: str) -> str:
    low = src.lower().rstrip("/")
    if os.path.isdir(src) and (low.endswith(".zarr") or any(os.path.exists(os.path.join(src, f)) for f in ZARR_MARKERS)):
        return "zarr"
    for ext, kind in SOURCE_KINDS.items():
        if low.endswith(ext):
            return kind
    raise InputError(f"Cannot tell the format of {src}; use a file ending in {', '.join(SOURCE_KINDS)}, or a Zarr store.")


class Table:
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


def parse_names(spec: str | Sequence[str] | None) -> list[str] | None:
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [s for s in names if s]
    if not names:
        raise InputError("--features is empty; give a comma-separated list of columns, or leave it out.")
    return names



def npz_member(zf: Any, name: str, rows: int) -> tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]]:
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


def open_zarr_source(src: str) -> Any:
    """The Zarr group or array at ``src``, opened read-only."""
    import zarr  # noqa: PLC0415

    try:
        return zarr.open(src, mode="r")
    except Exception as exc:  # zarr raises several types for folders it cannot read
        raise DataError(f"Cannot read {src} as a Zarr store: {type(exc).__name__}: {exc}.") from exc


def _zarr_member(node: Any, name: str, rows: int) -> tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]] | None:
    """Shape, dtype and row blocks of the array ``name`` of a Zarr group (the node itself when
    it is an array and ``name`` is ``"X"``), or None when absent."""
    import zarr  # noqa: PLC0415

    if isinstance(node, zarr.Array):
        arr = node if name == "X" else None
    else:
        arr = node[name] if name in set(node.array_keys()) else None
    if arr is None:
        return None
    from ..zarr_store import as_labels  # noqa: PLC0415

    blocks = (as_labels(np.asarray(arr[lo:hi])) for lo, hi in row_blocks(int(arr.shape[0]), rows))
    return tuple(int(v) for v in arr.shape), np.dtype(arr.dtype) if arr.dtype.kind not in "OT" else np.dtype(str), blocks


def array_rows(
    src: str, zf: Any, rows: int, target: str | int | None, features: list[str] | None, *, kind: str | None = None,
    split: str = "",
) -> tuple[Iterator[tuple[int, np.ndarray, np.ndarray | None]], int, list[int]]:
    """Row blocks of an .npy (columns of one 2-D array; ``zf`` None), of the .npz open as
    ``zf`` (arrays X and optionally y), or of the Zarr group or array ``zf`` (``kind="zarr"``:
    arrays ``X{split}`` and optionally ``y{split}``). Features keep their stored dtype.
    Returns (blocks, n_rows, source columns)."""
    kind = kind or ("npy" if zf is None else "npz")
    y_blocks: Iterator[np.ndarray] | None = None
    try:
        if kind == "zarr":
            found = _zarr_member(zf, "X" + split, rows)
            if found is None:
                raise DataError(f"{src} has no array 'X'; convert a Zarr group holding X (and y) or a 2-D Zarr array.")
            x_shape, x_dtype, x_blocks = found
            ys = _zarr_member(zf, "y" + split, rows)
            if ys is not None:
                if target is not None:
                    raise InputError(f"{src} has an array 'y'; --target (a column of X) is only for stores without one.")
                y_shape, _, y_blocks = ys
                if y_shape[0] != x_shape[0] or len(y_shape) > 2:
                    raise DataError(f"Array 'y{split}' of {src} has shape {y_shape}; it needs one target per row of X {x_shape}.")
        elif zf is None:
            arr = np.load(src, mmap_mode="r")
            x_shape, x_dtype = arr.shape, arr.dtype
            x_blocks = (arr[lo:hi] for lo, hi in row_blocks(arr.shape[0], rows))
        else:
            members = [m[:-4] for m in zf.namelist() if m.endswith(".npy")]
            if "X" not in members:
                raise DataError(f"{src} has no array 'X' (arrays: {members}); save it with np.savez(path, X=X, y=y).")
            x_shape, x_dtype, x_blocks = npz_member(zf, "X", rows)
            if "y" in members:
                if target is not None:
                    raise InputError(f"{src} has an array 'y'; --target (a column of X) is only for files without one.")
                y_shape, _, y_blocks = npz_member(zf, "y", rows)
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
            yield start, np.asarray(Xb[:, cols]), yb
            start += Xb.shape[0]

    return gen(), int(n), cols


def first_nonfinite(A: np.ndarray, ok: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Rows of A (b, k) holding NaN/inf (sorted), and the first bad column of the first one.

    ``ok`` (k,) bool marks columns where NaN is allowed (a missing feature value): only
    ±inf counts there.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        candidates = np.flatnonzero(~np.isfinite(A.sum(axis=1)))
    sub = A[candidates]
    bad_values = ~np.isfinite(sub) if ok is None else (~np.isfinite(sub) & ~(np.isnan(sub) & ok))
    bad = candidates[bad_values.any(axis=1)]
    col = int(np.flatnonzero(bad_values[np.searchsorted(candidates, bad[0])])[0]) if bad.size else -1
    return bad, col
