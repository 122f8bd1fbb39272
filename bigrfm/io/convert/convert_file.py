"""``convert``: a CSV, Parquet, .npy, .npz file or a Zarr store streamed into a dataset, checked, split and optionally shuffled.

Ties the pieces of :mod:`bigrfm.io.convert` together: a source
(:mod:`.sources`), the table encoding (:mod:`.encode`), the external shuffle
(:mod:`.shuffle`) and the atomic writer (:mod:`.writer`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Any, Iterator, Sequence

import numpy as np

from ...exceptions import DataError, InputError
from ..missing import check_missing_option
from ..zarr_store import STORAGE_DTYPES, ZarrDataset
from .encode import plan_table, table_rows
from .shuffle import BUCKET_BYTES, MAX_BUCKETS, Buckets, estimate_bytes
from .sources import READ_ROWS, Table, array_rows, first_nonfinite, open_zarr_source, parse_names, source_kind
from .writer import cast_features, check_output_path, compressors, create_dataset

__all__ = ["convert"]

log = logging.getLogger("bigrfm.io.convert")


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
    read_rows: int = READ_ROWS,
    missing: str = "error",
) -> ZarrDataset:
    """Convert a CSV, Parquet, .npy or .npz file, or a Zarr store, into a dataset, streaming.

    No more than a block of ``read_rows`` rows of the source is in memory at a
    time (one bucket with ``shuffle``); ``out`` appears only when everything
    succeeded, and no temporary folder is left behind on error.

    Parameters
    ----------
    src : str or PathLike
        ``.csv``/``.csv.gz`` (read with ``pandas.read_csv(chunksize=...)``),
        ``.parquet`` (``pyarrow`` batches), ``.npy`` (memory-mapped: one 2-D
        numeric array whose columns are the features and, with ``target``, the
        target), ``.npz`` (arrays ``X`` and optionally ``y``; an .npz cannot
        be memory-mapped, so its members are read as streams, see
        ``npz_member``), or a Zarr store: a group with ``X`` and optionally ``y``
        and ``X_val``/``y_val`` (copied as the validation split), or one 2-D
        array. Converting a store rewrites it chunked along rows (the fix for a
        column-chunked store) and in ``dtype``; its ``feature_names`` are kept.
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
        Rows per stored chunk (default about 8 MiB of X as float32 or float64).
    compressor : {"none", "lz4", "zstd"}
    dtype : {"float32", "float64", "float16", "uint8", "int8", "uint16", "int16", "int32", "bool"}
        dtype of X; float64 keeps the source values exactly. The compact types
        keep integer data small (uint8 images take a quarter of float32 on disk
        and to read) and are cast per block when fitting; every value is checked
        to fit (whole numbers in range, no NaN), and the conversion fails naming
        the first row that does not.
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
        Drop rows with a NaN/inf (or empty) feature or target instead of failing
        (with ``missing="mean"``: rows with inf, or a missing target).
    missing : {"error", "mean"}
        ``"mean"`` keeps NaN (and empty CSV cells) in the features as missing
        values, for ``bigrfm fit --missing mean`` to impute with the training
        means (recorded in the ``missing`` attribute); ``"error"`` refuses them.
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
    if str(dtype) not in STORAGE_DTYPES:
        raise InputError(f"dtype must be one of {list(STORAGE_DTYPES)}. Got {dtype!r} instead.")
    check_missing_option(missing)
    compressors(compressor)
    check_output_path(out, overwrite)
    if not os.path.exists(src):
        raise DataError(f"Source file {src} does not exist.")
    kind = source_kind(src)
    if kind != "zarr" and (not os.path.isfile(src) or os.path.getsize(src) == 0):
        raise DataError(f"{src} is empty or not a file; nothing to convert.")
    names = parse_names(features)

    with contextlib.ExitStack() as stack:
        attrs: dict[str, Any] = {"source": os.path.basename(os.path.normpath(src))}
        if target is not None:
            attrs["target"] = str(target)
        if missing != "error":
            attrs["missing"] = missing
        feature_names = None
        val_blocks = None
        if kind == "zarr":
            node = open_zarr_source(src)
            blocks, n_hint, cols = array_rows(src, node, read_rows, target, names, kind="zarr")
            stored = getattr(node, "attrs", {}).get("feature_names")
            if isinstance(stored, list) and all(isinstance(c, str) for c in stored) and max(cols) < len(stored):
                feature_names = tuple(stored[j] for j in cols)
            column_names = feature_names or tuple(f"column {j}" for j in cols)
            if hasattr(node, "array_keys") and "X_val" in set(node.array_keys()):
                val_blocks, _, _ = array_rows(src, node, read_rows, target, names, kind="zarr", split="_val")
        elif kind in ("csv", "parquet"):
            table = Table(src, kind, read_rows)
            enc = plan_table(table, None if target is None else str(target), names, one_hot)
            blocks, n_hint, feature_names = table_rows(table, enc), table.n_rows_hint, enc.feature_names
            column_names = feature_names
            if enc.categories:
                attrs["one_hot_categories"] = {c: list(v) for c, v in enc.categories.items()}
        else:
            zf = None if kind == "npy" else stack.enter_context(_open_zip(src))
            blocks, n_hint, cols = array_rows(src, zf, read_rows, target, names)
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
            est = estimate_bytes(src, n_hint, d, np.dtype(dtype).itemsize)
            k = shuffle_buckets or int(np.clip(-(-est // BUCKET_BYTES), 1, MAX_BUCKETS))
            scratch = f"{writer.tmp}-buckets"
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
            sink = Buckets(scratch, k, d, dtype, rng_bucket)
        check = _RowCheck(src, column_names, target, drop_nonfinite, missing != "error", dtype)
        n_read, n_kept = _copy_rows(blocks, sink, check, val_fraction, rng_val)
        if val_blocks is not None:
            n_val_read, n_val_kept = _copy_rows(val_blocks, sink, check, 0.0, rng_val, validation=True)
            n_read, n_kept = n_read + n_val_read, n_kept + n_val_kept
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


class _RowCheck:
    """What every source block goes through before it is written: non-finite values
    (refused, dropped, or NaN kept as missing) and the stored dtype (values must fit)."""

    def __init__(self, src: str, column_names: Sequence[str], target: Any, drop: bool, keep_nan: bool, dtype: str) -> None:
        self.src, self.column_names, self.target = src, tuple(column_names), target
        self.drop, self.keep_nan, self.dtype = drop, keep_nan, dtype

    def __call__(self, start: int, X: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        d = len(self.column_names)
        with_y = y is not None and y.dtype.kind == "f"
        ok = None
        if self.keep_nan:  # NaN is a missing feature value; inf, and a missing target, are not
            ok = np.concatenate([np.ones(d, bool), np.zeros(int(np.prod(y.shape[1:])) if with_y else 0, bool)])
        bad, col = first_nonfinite(np.column_stack([X, y]) if with_y else X, ok)
        if bad.size and not self.drop:
            what = f"Column {self.column_names[col]!r}" if col < d else f"The target column {self.target!r}"
            value = "inf" if self.keep_nan and col < d else "NaN, inf or an empty value"
            fix = "Clean the file, or drop these rows with --drop-nonfinite"
            if not self.keep_nan and col < d:
                fix += ", or keep NaN as missing values with --missing mean (then `bigrfm fit --missing mean`)"
            raise DataError(
                f"{what} of {self.src} holds {value} in row {start + int(bad[0])} "
                f"(0-based, header not counted; {bad.size} such row(s) in rows {start}–{start + X.shape[0]}). {fix}."
            )
        rows: int | np.ndarray = start
        if bad.size:
            keep = np.ones(X.shape[0], bool)
            keep[bad] = False
            X, y = X[keep], None if y is None else y[keep]
            rows = start + np.flatnonzero(keep)  # source rows of the kept rows, for the dtype check's message
        return cast_features(X, self.dtype, rows, self.column_names), y


def _copy_rows(
    blocks: Iterator[tuple[int, np.ndarray, np.ndarray | None]],
    sink: Any,
    check: _RowCheck,
    val_fraction: float,
    rng_val: np.random.Generator,
    *,
    validation: bool = False,
) -> tuple[int, int]:
    """Check, split and append every source block; returns (rows read, rows kept)."""
    n_read = n_kept = 0
    for start, X, y in blocks:
        n_read += X.shape[0]
        X, y = check(start, X, y)
        n_kept += X.shape[0]
        if val_fraction > 0:
            # each row independently: a streaming split needs no row count
            to_val = rng_val.random(X.shape[0]) < val_fraction
            sink.append(X[~to_val], None if y is None else y[~to_val])
            if to_val.any():
                sink.append(X[to_val], None if y is None else y[to_val], validation=True)
        else:
            sink.append(X, y, validation=validation)
    return n_read, n_kept
