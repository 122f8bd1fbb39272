"""Dask collections as datasets: arrays and DataFrames streamed block by block, and lazy row-wise maps.

Owns turning a ``dask.array.Array`` or ``dask.dataframe.DataFrame``/``Series``
into a :class:`~bigrfm.io.datasets.Dataset` (:func:`dask_dataset`), and applying
a block function to a collection lazily (:func:`map_row_blocks`, what
``predict`` on a collection returns). Never fits and never calls ``compute`` on
a whole collection: everything here reads one block at a time.

How a :class:`DaskDataset` is read:

- on threads (``scheduler=None``), ``read(start, stop)`` computes the slice
  with Dask's synchronous scheduler in the engine's thread: only the chunks of
  those rows are computed, and each pass computes them again (a lazily
  generated or file-backed collection is never held whole);
- on a Dask cluster, the engine asks :meth:`DaskDataset.block_collections`
  for the block's slices and submits them to the cluster, so each block is
  computed by the workers (where its chunks live, when the collection was
  persisted) and the block function runs next to it.

Blocks are whole chunks (:func:`~bigrfm.io.datasets.block_bounds` reads
``row_chunks``), so no chunk is computed for two blocks of a pass.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

import numpy as np

from ..exceptions import DataError, InputError
from .zarr_store import as_labels
from .datasets import PairDataset

__all__ = ["DaskDataset", "dask_dataset", "is_dask_collection", "map_row_blocks", "feature_names_of"]


def is_dask_collection(obj: Any) -> bool:
    """Whether ``obj`` is a Dask collection (checked without importing dask)."""
    return hasattr(obj, "__dask_graph__") and hasattr(obj, "__dask_keys__")


def _is_frame(obj: Any) -> bool:
    """A Dask DataFrame (then dask.dataframe is loaded; never imported here for the check)."""
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(obj, dd.DataFrame)


def _is_series(obj: Any) -> bool:
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(obj, dd.Series)


def _is_tabular(obj: Any) -> bool:
    """A DataFrame or Series: its partitions' lengths are unknown until counted."""
    return _is_frame(obj) or _is_series(obj)


def feature_names_of(X: Any) -> tuple[str, ...] | None:
    """Column names of a Dask DataFrame when they are all strings (as scikit-learn records them), else None."""
    if not _is_frame(X):
        return None
    names = [c for c in X.columns]
    return tuple(names) if names and all(isinstance(c, str) for c in names) else None


@dataclasses.dataclass(frozen=True, eq=False)
class DaskDataset(PairDataset):
    """A Dask array of features (and targets) seen through the dataset interface.

    Build one with :func:`dask_dataset`, which resolves unknown chunk sizes,
    aligns the targets' chunks with the features' and checks the shapes.

    Parameters
    ----------
    X : dask.array.Array, shape (n, d)
        Known row chunks, one chunk across the columns.
    y : dask.array.Array or ndarray, shape (n,) or (n, c), or None
        Chunked like X's rows when lazy.
    feature_names : tuple of str or None
    """


    @property
    def dtype(self) -> str:
        return str(self.X.dtype)

    @property
    def row_chunks(self) -> tuple[int, ...]:
        """Rows of each chunk, in order (blocks are runs of whole chunks)."""
        return tuple(int(c) for c in self.X.chunks[0])

    @property
    def y_shape(self) -> tuple[int, ...] | None:
        return None if self.y is None else tuple(int(s) for s in self.y.shape)

    def block_collections(self, start: int, stop: int) -> tuple[Any, Any]:
        """The lazy slices ``X[start:stop]`` and ``y[start:stop]`` (y None, or in memory, as it is)."""
        y = None if self.y is None else self.y[start:stop]
        return self.X[start:stop], y

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [start, stop) computed here, chunk by chunk (Dask's synchronous scheduler)."""
        import dask  # noqa: PLC0415

        X, y = self.block_collections(start, stop)
        lazy = [a for a in (X, y) if is_dask_collection(a)]
        done = iter(dask.compute(*lazy, scheduler="sync"))
        X = np.asarray(next(done))
        if y is not None:
            y = as_labels(np.asarray(next(done) if is_dask_collection(y) else y))
        return X, y


def _lengths(parts: Any) -> Any:
    """A lazy 1-D array of the row counts of the chunks (partitions) of an array or frame."""
    import dask.array as da  # noqa: PLC0415

    if _is_tabular(parts):
        return parts.map_partitions(len).to_dask_array()
    return da.map_blocks(lambda b: np.array([b.shape[0]]), parts[:, :1] if parts.ndim == 2 else parts,
                         chunks=((1,) * parts.numblocks[0],), drop_axis=list(range(1, parts.ndim)) or None, dtype=np.int64)


def _with_lengths(a: Any, lengths: tuple[int, ...] | None) -> Any:
    """An array of ``a`` (array, frame or series) with known row chunks ``lengths`` (None: already known)."""
    import dask.array as da  # noqa: PLC0415

    if _is_tabular(a):
        return a.to_dask_array(lengths=list(lengths))
    if lengths is None:
        return a
    # rebuild from the chunks with their now known row counts: the same tasks, no recomputation
    a = a.rechunk({i: -1 for i in range(1, a.ndim)})
    blocks = a.to_delayed().reshape(-1)
    tail = tuple(int(s) for s in a.shape[1:])
    return da.concatenate([da.from_delayed(b, shape=(n, *tail), dtype=a.dtype) for b, n in zip(blocks, lengths)])


def _known(a: Any) -> bool:
    return not _is_tabular(a) and not any(np.isnan(c) for c in a.chunks[0])


def dask_dataset(X: Any, y: Any = None, *, compute: Callable[..., tuple] | None = None) -> DaskDataset:
    """A :class:`DaskDataset` over a Dask array or DataFrame X and targets y, without computing them.

    Parameters
    ----------
    X : dask.array.Array or dask.dataframe.DataFrame, shape (n, d)
        Numeric or boolean features. A DataFrame's string column names become
        ``feature_names``; its partitions become the row chunks.
    y : dask.array.Array, dask.dataframe.Series/DataFrame, array-like or None
        Targets; lazy ones are rechunked to X's row chunks when they differ.
    compute : callable, optional
        ``compute(*collections) -> tuple`` used to find unknown chunk sizes
        (a DataFrame's partition lengths, or an array's after filtering); by
        default ``dask.compute``. The estimators pass their engine's, so the
        lengths are counted where the fit runs.

    Notes
    -----
    Unknown chunk sizes cost one pass over the collection (one task per
    partition returns its length; X and y are counted in one computation, so
    what they share is computed once). A DataFrame always has unknown lengths
    unless it came from an array with known chunks: persist it first, or call
    ``X.to_dask_array(lengths=True)`` yourself, to avoid recounting on each fit.
    """
    import dask  # noqa: PLC0415

    names = feature_names_of(X)
    if not (hasattr(X, "ndim") or _is_frame(X)) or _is_series(X):
        raise InputError(f"X must be a 2-D Dask array or a Dask DataFrame. Got {type(X).__name__} instead.")
    if not _is_frame(X) and X.ndim != 2:
        raise InputError(f"Expected a 2-D Dask array for X (rows, features); got shape {X.shape}.")
    lazy_y = is_dask_collection(y)
    if y is not None and not lazy_y:
        y = np.asarray(y)
    todo = [a for a in (X, y) if is_dask_collection(a) and not _known(a)]
    if todo:
        counted = (compute or dask.compute)(*[_lengths(a) for a in todo])
        found = {id(a): tuple(int(v) for v in np.asarray(c)) for a, c in zip(todo, counted)}
    else:
        found = {}
    X = _with_lengths(X, found.get(id(X)))
    if lazy_y:
        y = _with_lengths(y, found.get(id(y)))
    if X.dtype.kind not in "biuf":
        raise DataError(f"X has dtype {X.dtype}; features must be numbers or booleans (encode text columns first).")
    X = X.rechunk({1: -1}) if X.numblocks[1] > 1 else X
    n = int(X.shape[0])
    if y is not None:
        if y.ndim not in (1, 2):
            raise InputError(f"y must be (n,) or (n, c); got shape {y.shape}.")
        if int(y.shape[0]) != n:
            raise InputError(f"Found input variables with inconsistent numbers of samples: [{n}, {int(y.shape[0])}]")
        if lazy_y:
            if y.ndim == 2 and y.numblocks[1] > 1:
                y = y.rechunk({1: -1})
            if tuple(y.chunks[0]) != tuple(X.chunks[0]):
                y = y.rechunk({0: X.chunks[0]})
    if n < 2:
        raise InputError(f"Found array with {n} sample(s) while a minimum of 2 is required.")
    return DaskDataset(X, y, names)


def _apply(block: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return fn(block)


def map_row_blocks(X: Any, fn: Callable[[np.ndarray], np.ndarray], *, n_out: int | None, dtype: Any) -> Any:
    """``fn`` applied lazily to each row chunk of a Dask array or DataFrame: a Dask array with the same row chunks.

    Parameters
    ----------
    X : dask.array.Array or dask.dataframe.DataFrame, shape (n, d)
        Column chunks are joined first (one chunk across the columns); a
        DataFrame's partitions (unknown lengths are fine) become row chunks.
    fn : callable
        ``fn(block (b, d)) -> (b,)`` or ``(b, n_out)``; put into the graph once
        (one key every task depends on), not once per task.
    n_out : int or None
        Columns of the output; None for 1-D output.
    dtype : dtype
        Of the output.

    Returns
    -------
    dask.array.Array
        Lazy; nothing is computed until the caller computes it.
    """
    import dask  # noqa: PLC0415

    if _is_frame(X):
        X = X.to_dask_array()
    if X.ndim != 2:
        raise InputError(f"Expected a 2-D Dask array (rows, features); got shape {X.shape}.")
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    shared = dask.delayed(fn, pure=True, traverse=False)
    meta = np.empty((0,) * (1 if n_out is None else 2), dtype=dtype)
    if n_out is None:
        return X.map_blocks(_apply, shared, drop_axis=1, dtype=dtype, meta=meta)
    return X.map_blocks(_apply, shared, chunks=(X.chunks[0], (n_out,)), dtype=dtype, meta=meta)
