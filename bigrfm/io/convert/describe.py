"""``describe``: a JSON-ready summary of a stored dataset (what ``bigrfm info`` prints).

Reads metadata and the targets only, never X.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..datasets import default_block_rows, row_blocks
from ..stats import ClassCounts, Moments
from ..zarr_store import ZarrDataset, as_labels, is_url, open_array

__all__ = ["describe"]


def _bytes_on_disk(path: str) -> int | None:
    if is_url(path):
        return None  # listing a remote store can be slow and costs requests
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _target_summary(ds: ZarrDataset) -> dict | None:
    """Classes and counts (integer or text targets) or mean and std (floats), from y alone."""
    if not ds.has_y:
        return None
    arr = open_array(ds.path, ds.y_name, ds.y_shape, ds.token)
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
