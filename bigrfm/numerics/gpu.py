"""GPU placement and sizing: which device and stream a thread uses, block and tile sizes from device memory, pinned copies.

The sizing rules are pure functions of the device's memory (tested on the CPU);
everything that touches CuPy imports it on first use, so this module is
importable without a GPU. Owns no maths and no data: callers pass arrays.

Rules (one H100/H200 has 80-141 GB; a CPU block of 16 MiB would be a few
hundred rows at m = 8,000 and leave the card launch-bound):

* a block of rows takes about :data:`BLOCK_FRACTION` of the device's memory,
  at least :data:`MIN_GPU_BLOCK_ROWS` rows when the data has them;
* an unfused kernel tile (rows x m) about :data:`TILE_FRACTION`;
* resident prepared blocks (the block cache) up to :data:`CACHE_FRACTION`;
* :data:`THREADS_PER_DEVICE` engine threads per GPU, each with its own
  non-blocking stream, so one thread's read and host-to-device copy overlap
  the other's kernels.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = [
    "THREADS_PER_DEVICE",
    "BLOCK_FRACTION",
    "TILE_FRACTION",
    "CACHE_FRACTION",
    "MIN_GPU_BLOCK_ROWS",
    "device_count",
    "device_memory",
    "gpu_block_rows",
    "gpu_tile_rows",
    "gpu_cache_bytes",
    "bind_thread",
    "to_device_pinned",
]

THREADS_PER_DEVICE = 2
BLOCK_FRACTION = 0.02
TILE_FRACTION = 0.02
CACHE_FRACTION = 0.4
MIN_GPU_BLOCK_ROWS = 1 << 16
#: Rows of a block beyond which more rows buy nothing (kernels already fill the card).
MAX_GPU_BLOCK_ROWS = 1 << 22


def device_count() -> int:
    """GPUs CuPy sees (0 without CuPy or a driver)."""
    try:
        import cupy  # noqa: PLC0415

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # ImportError, or CUDA driver errors on a machine without a GPU
        return 0


def device_memory(device: int | None = None) -> tuple[int, int]:
    """(free, total) bytes of a GPU (the current one by default)."""
    import cupy  # noqa: PLC0415

    dev = cupy.cuda.Device() if device is None else cupy.cuda.Device(device)
    free, total = dev.mem_info
    return int(free), int(total)


def gpu_block_rows(free_bytes: int, n_features: int, itemsize: int, n_rows: int | None = None) -> int:
    """Rows of one block on a GPU with ``free_bytes`` of memory.

    A block of X (and its float64 standardization, its mapped rows and one-hot
    targets, about 4x the raw block) takes :data:`BLOCK_FRACTION` of the memory,
    clamped to [:data:`MIN_GPU_BLOCK_ROWS`, :data:`MAX_GPU_BLOCK_ROWS`] and to
    the rows there are.
    """
    per_row = 4 * max(int(n_features), 1) * max(int(itemsize), 1)
    rows = int(BLOCK_FRACTION * free_bytes // per_row)
    rows = int(np.clip(rows, MIN_GPU_BLOCK_ROWS, MAX_GPU_BLOCK_ROWS))
    return max(1, min(rows, n_rows)) if n_rows else rows


def gpu_tile_rows(total_bytes: int, width: int, itemsize: int) -> int:
    """Rows of one (rows x width) tile of the unfused GPU path: :data:`TILE_FRACTION` of the memory.

    The unfused path holds about three such tiles (distances, kernel values,
    gradient weights); at least 1,024 rows, so that kernels are never launch-bound.
    """
    return max(1024, int(TILE_FRACTION * total_bytes // max(3 * int(width) * int(itemsize), 1)))


def gpu_cache_bytes(free_bytes: int) -> int:
    """Bytes of prepared blocks a GPU keeps resident between passes (:data:`CACHE_FRACTION` of its free memory)."""
    return int(CACHE_FRACTION * free_bytes)


def bind_thread(index: int, n_devices: int) -> int:
    """Make engine thread ``index`` use GPU ``index % n_devices`` and a stream of its own; returns the device id.

    CuPy's current device and stream are per thread: each block this thread runs
    then launches on its own stream, concurrently with the other threads'.
    """
    import cupy  # noqa: PLC0415

    device = index % max(n_devices, 1)
    cupy.cuda.Device(device).use()
    stream = cupy.cuda.Stream(non_blocking=True)
    stream.use()
    _LOCAL.stream = stream  # keep it alive for the thread's lifetime
    return device


_LOCAL = threading.local()


class _PinnedPair:
    """Two pinned host buffers used in turn: while one is being copied to the device
    (asynchronously, on the thread's stream), the next block is written into the other."""

    def __init__(self) -> None:
        self.buffers: list[Any] = [None, None]
        self.events: list[Any] = [None, None]
        self.turn = 0

    def host_view(self, nbytes: int) -> tuple[np.ndarray, int]:
        import cupy  # noqa: PLC0415

        k = self.turn
        self.turn ^= 1
        if self.events[k] is not None:
            self.events[k].synchronize()  # its previous copy has left the buffer
        if self.buffers[k] is None or self.buffers[k].nbytes < nbytes:
            mem = cupy.cuda.alloc_pinned_memory(max(nbytes, 1))
            self.buffers[k] = np.frombuffer(mem, dtype=np.uint8, count=mem.size())
        return self.buffers[k], k


def to_device_pinned(a: np.ndarray) -> Any:
    """``a`` on the current GPU, copied through a pinned, double-buffered host buffer on the current stream.

    Pageable numpy arrays copy at a few GB/s; pinned memory at tens of GB/s
    (measured on an H200: 55 vs ~4 GB/s), and the copy is asynchronous, so the
    thread can read its next block while this one travels.
    """
    import cupy  # noqa: PLC0415

    a = np.ascontiguousarray(a)
    if getattr(_LOCAL, "stream", None) is None:
        # a thread that no engine bound (a Dask worker's): a stream of its own too
        _LOCAL.stream = cupy.cuda.Stream(non_blocking=True)
        _LOCAL.stream.use()
    pair = getattr(_LOCAL, "pinned", None)
    if pair is None:
        pair = _LOCAL.pinned = _PinnedPair()
    raw, k = pair.host_view(a.nbytes)
    host = raw[: a.nbytes].view(a.dtype).reshape(a.shape)
    host[...] = a
    out = cupy.empty(a.shape, dtype=a.dtype)
    stream = cupy.cuda.get_current_stream()
    out.set(host, stream=stream)
    event = cupy.cuda.Event()
    event.record(stream)
    pair.events[k] = event
    return out
