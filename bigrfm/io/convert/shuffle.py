"""The external shuffle of ``convert --shuffle``: rows scattered to temporary buckets, then each bucket permuted.

Peak memory is one bucket plus a small write buffer per bucket. The buckets
are Zarr arrays in a scratch folder that the caller removes.
"""

from __future__ import annotations

import os

import numpy as np

from ..datasets import default_block_rows
from ..zarr_store import as_labels
from .writer import Appender, DatasetWriter

__all__ = ["Buckets", "estimate_bytes", "BUCKET_BYTES", "MAX_BUCKETS"]

BUCKET_BYTES = 256 * 2**20  # wanted size of one shuffle bucket (the peak memory of pass 2)
MAX_BUCKETS = 256  # bounds the write buffers of pass 1 (one small chunk per bucket)


class Buckets:
    """The first pass of a shuffled copy: rows go to K temporary Zarr buckets by a
    seeded random bucket id; :meth:`drain` then permutes each bucket in memory and
    appends it. Peak memory is one bucket plus K small write buffers."""

    def __init__(self, folder: str, k: int, d: int, dtype: str, rng: np.random.Generator) -> None:
        import zarr  # noqa: PLC0415

        self.folder, self.k, self.d, self.dtype, self.rng = folder, k, d, dtype, rng
        self.group = zarr.open_group(folder, mode="w-", zarr_format=3)
        # small chunks: K write buffers of one chunk each stay ≈ K x 256 KiB
        self.chunk_rows = default_block_rows(d, np.dtype(dtype).itemsize, 256 * 2**10)
        self.parts: dict[tuple[bool, int], Appender] = {}

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
                self.parts[key] = Appender(self.group, f"X_{tag}", f"y_{tag}", self.d, self.dtype, self.chunk_rows, None)
            self.parts[key].append(X[take], None if y is None else y[take])

    def drain(self, writer: DatasetWriter, rng: np.random.Generator) -> None:
        for key in sorted(self.parts):
            part = self.parts[key]
            part.flush()
            X = part.X[0 : part.n]
            y = None if part.y is None else as_labels(part.y[0 : part.n])
            perm = rng.permutation(part.n)
            writer.append(X[perm], None if y is None else y[perm], validation=key[0])


def estimate_bytes(src: str, n_rows: int | None, d: int, itemsize: int) -> int:
    """Size of the converted data, to choose the number of shuffle buckets."""
    if n_rows is not None:
        return n_rows * d * itemsize
    # CSV: the text is larger than the binary values (≈10 characters per float32), so
    # the file size over-estimates, giving smaller buckets; gzip packs text ≈5x
    return os.path.getsize(src) * (5 if src.lower().endswith(".gz") else 1)
