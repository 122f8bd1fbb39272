"""Execution settings: :class:`ExecConfig`, where and how blocks run.

Owns device, block dtype, block size, scheduler and cluster shape, retries and
the client's memory budget, and the rule that sizes a block. Holds no numerical
policy (that is :mod:`bigrfm.numerics.backend`) and imports neither dask nor zarr.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .exceptions import InputError

__all__ = ["ExecConfig", "DEVICES", "DTYPES", "DEFAULT_MEMORY_BUDGET", "parse_bytes"]

#: Values of ``ExecConfig.device``.
DEVICES = ("auto", "cpu", "cuda")
#: Values of ``ExecConfig.dtype`` (the dtype of data and kernel blocks).
DTYPES = ("float32", "float64")
#: Bytes the client may use for the exact solver's matrix or the Nystrom factors.
DEFAULT_MEMORY_BUDGET = 4 * 2**30

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | str, what: str = "memory_budget") -> int:
    """Bytes from an int or a string such as ``"16GB"``, ``"12 GiB"``, ``"500MB"`` (decimal and binary units).

    Raises InputError naming ``what`` for anything else, or a size below one byte.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        n = int(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(num):]
        try:
            n = int(float(num) * _UNITS[unit])
        except (ValueError, KeyError):
            raise InputError(
                f"{what} must be a number of bytes or a size such as '16GB' or '12GiB'. Got {value!r} instead."
            ) from None
    else:
        raise InputError(f"{what} must be a number of bytes or a size such as '16GB'. Got {value!r} instead.")
    if n < 1:
        raise InputError(f"{what} must be at least one byte. Got {value!r} instead.")
    return n


@dataclasses.dataclass(frozen=True)
class ExecConfig:
    """Where and how blocks run; none of this changes the fitted model's maths.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` picks CUDA when CuPy imports and sees a GPU, else the CPU.
    dtype : {"float32", "float64"}
        dtype of data blocks and kernel blocks. Reductions and factorizations
        are always float64.
    block_rows : int or None
        Rows per block of a pass over the data; ``None`` sizes blocks to about
        ``block_bytes`` of features.
    block_bytes : int
        Target size of one block of X when ``block_rows`` is None.
    scheduler : str or None
        ``None``: in-process threads, no Dask cluster. ``"local"``: an
        in-process ``distributed.LocalCluster``. ``"tcp://host:port"``: an
        existing Dask scheduler.
    n_workers, threads_per_worker, memory_limit
        Shape of the LocalCluster (``scheduler="local"`` only).
    max_in_flight : int
        Blocks in flight per worker (bounds memory).
    retries : int
        Times a block task that raised an error other than a bigrfm error (a
        flaky read, a lost connection) is run again. A task whose worker dies
        is rescheduled by Dask itself, up to the scheduler's
        ``allowed-failures`` deaths; after that the pass fails naming the block.
    worker_timeout : float
        Seconds a pass waits while the Dask cluster has no worker at all
        before it fails (no worker joined, or every worker died).
    worker_log_level : str or None
        Log level of the LocalCluster's worker processes (``"critical"``
        silences their tracebacks on stderr; the CLI sets it unless ``-v`` or
        ``--debug``); None keeps Dask's default. Remote workers log where they run.
    cache_bytes : int
        Bytes each process (each Dask worker, or this one with threads) may
        keep of prepared training blocks and their rows mapped through the
        metric, so that passes after the first skip reading, standardizing and
        mapping them (:mod:`bigrfm.numerics.block_cache`); 0 turns it off.
        512 MiB by default: flights-3m's 2.85M training rows or Fashion-MNIST's
        60,000 images (float32) fit with their mapped rows, and fitting a 4 GiB
        Dask array stays well under 1.5 GB of RSS (tests/test_memory.py).
    memory_budget : int
        Bytes the client may use for the exact solver's n x n matrix or the
        two m x m float64 factors of the Nystrom solver; decides ``solver="auto"``,
        caps the default number of centers and refuses an ``n_centers`` whose
        factors would not fit.
    """

    device: str = "cpu"
    dtype: str = "float64"
    block_rows: int | None = None
    block_bytes: int = 16 * 2**20
    scheduler: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str | None = "auto"
    max_in_flight: int = 2
    retries: int = 3
    worker_timeout: float = 60.0
    worker_log_level: str | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    cache_bytes: int = 512 * 2**20

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InputError(
                f"device must be one of {DEVICES}. Got {self.device!r} instead."
            )
        if str(self.dtype) not in DTYPES:
            raise InputError(
                f"dtype must be one of {DTYPES}. Got {self.dtype!r} instead."
            )
        if not self.worker_timeout > 0:
            raise InputError(f"worker_timeout must be a number of seconds > 0. Got {self.worker_timeout!r} instead.")
        if self.block_rows is not None and int(self.block_rows) < 1:
            raise InputError(
                f"block_rows must be a positive integer or None. Got {self.block_rows!r} instead."
            )

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def rows_per_block(
        self,
        n_features: int,
        chunk_rows: int | None = None,
        n_rows: int | None = None,
        *,
        workers: int | None = None,
        device_rows: int | None = None,
    ) -> int:
        """Rows of one block (one task) of a pass.

        ``block_rows`` when set; otherwise about ``block_bytes`` of X (or
        ``device_rows``, the size a GPU wants, from its memory: the engine passes
        :func:`bigrfm.numerics.gpu.gpu_block_rows`), rounded to whole stored
        chunks (``chunk_rows``) so no chunk is read by two tasks, and small enough
        that ``n_rows`` make at least two blocks per worker (``workers``: the
        engine's threads or worker processes; default ``n_workers`` or one per core).
        """
        if self.block_rows is not None:
            return int(self.block_rows)
        if device_rows is not None:
            rows = int(device_rows)
        else:
            rows = max(256, int(self.block_bytes // max(n_features * self.np_dtype.itemsize, 1)))
        if chunk_rows:
            rows = chunk_rows * max(1, round(rows / chunk_rows)) if rows >= chunk_rows else chunk_rows // max(1, chunk_rows // rows)
        if n_rows:
            workers = workers or self.n_workers or os.cpu_count() or 1
            cap = max(256, -(-n_rows // (2 * workers)))
            if rows > cap:
                # fewer rows per block, still whole chunks where a chunk fits
                rows = cap - cap % chunk_rows if chunk_rows and cap >= chunk_rows else cap
        return rows
