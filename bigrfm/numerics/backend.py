"""Array backends and numerical policy: numpy or CuPy blocks, float64 reductions, jitter, tiles.

The one place for numerical policy: which array module runs a block, the dtype
of blocks versus the float64 of every m x m and d x d quantity, jitter, and the
size of kernel tiles. Never imports CuPy before ``device="cuda"`` is used, and
never imports zarr or dask.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any

import numpy as np

from ..exceptions import InputError

log = logging.getLogger("bigrfm.backend")

__all__ = [
    "get_xp",
    "resolve_device",
    "resolve_dtype",
    "to_device",
    "to_numpy",
    "array_module",
    "jitter",
    "row_tiles",
    "on_device",
    "REDUCE_DTYPE",
    "TILE_BYTES",
]

#: Bytes of one (rows x m) kernel tile inside a block function: big enough for
#: GEMM efficiency, small enough that a worker holds a few of them.
TILE_BYTES = 16 * 2**20

#: dtype of every small (m x m, d x d, m x c) reduction and factorization.
REDUCE_DTYPE = np.float64


def _cupy() -> ModuleType | None:
    try:
        import cupy  # noqa: PLC0415

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, or CUDA driver errors on a machine without a GPU
        return None


def resolve_device(device: str) -> str:
    """Turn ``"auto"`` into ``"cpu"`` or ``"cuda"``; check that ``"cuda"`` is usable."""
    if device == "auto":
        return "cuda" if _cupy() is not None else "cpu"
    if device == "cuda" and _cupy() is None:
        raise InputError(
            "device='cuda' was requested but CuPy is not installed or sees no GPU. "
            "Install the extra (pip install 'bigrfm[gpu]') on a machine with a GPU, "
            "or use device='cpu'."
        )
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """The block dtype for a resolved ``device``: ``"auto"`` is float32 on a GPU and float64 on a CPU.

    On a GPU the fused kernels run in float32 and float64 arithmetic is many times
    slower (an H100/H200 has about 1/2 of its fp32 rate in fp64 and no fused float64
    path here), so asking for float64 there costs speed: that is logged as a warning.
    """
    if dtype == "auto":
        return "float32" if device == "cuda" else "float64"
    if dtype == "float64" and device == "cuda":
        log.warning(
            "dtype='float64' on the GPU skips the fused float32 kernels (GEMM + elementwise path, several "
            "times slower); dtype='float32' or 'auto' uses them (every reduction stays float64)."
        )
    return dtype


def get_xp(device: str) -> ModuleType:
    """The array module (numpy or cupy) for a resolved device."""
    if resolve_device(device) == "cuda":
        import cupy  # noqa: PLC0415

        return cupy
    return np


def array_module(a: Any) -> ModuleType:
    """numpy or cupy, whichever owns ``a``."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy  # noqa: PLC0415

        return cupy
    return np


def to_device(a: Any, xp: ModuleType, dtype: Any = None) -> Any:
    """Move (and cast) an array to the module ``xp``; a no-op when already there."""
    if a is None:
        return None
    if xp is np:
        return np.asarray(to_numpy(a), dtype=dtype)
    return xp.asarray(a, dtype=dtype)


def to_numpy(a: Any) -> np.ndarray:
    """A numpy copy of a numpy or cupy array."""
    if hasattr(a, "get") and array_module(a) is not np:
        return a.get()
    return np.asarray(a)


def jitter(a: Any, dtype: Any) -> float:
    """Diagonal jitter for a PSD matrix ``a``: eps of ``dtype`` times its trace.

    Scaled from the dtype the entries were computed in rather than a fixed
    number, so float32 kernel blocks get a jitter that matches their rounding.
    """
    xp = array_module(a)
    eps = float(np.finfo(np.dtype(dtype)).eps)
    return eps * max(float(xp.trace(a)), float(np.finfo(np.float64).tiny))


def row_tiles(n_rows: int, width: int, itemsize: int, budget: int = TILE_BYTES, *, xp: Any = np) -> list[slice]:
    """Row slices of a block such that one (rows x width) tile takes about ``budget`` bytes.

    Block functions loop over these tiles so the kernel matrix of a block is
    never materialized whole: memory per worker is O(tile), not O(block x m).
    On a GPU (``xp`` CuPy) the tile is sized from the device's memory instead
    (:func:`bigrfm.numerics.gpu.gpu_tile_rows`): 16 MiB tiles would be a few
    hundred rows at m = 8,000 and leave the card launch-bound.
    """
    if xp is not np:
        from .gpu import device_memory, gpu_tile_rows  # noqa: PLC0415

        step = gpu_tile_rows(device_memory()[1], width, itemsize)
    else:
        step = max(64, int(budget // max(width * itemsize, 1)))
    return [slice(s, min(s + step, n_rows)) for s in range(0, n_rows, step)]


# Device copies of broadcast arrays, keyed by the host array's id, the target
# dtype and the GPU. A pass sends its broadcasts once (scattered); every block
# of the pass on this worker then finds the device copy here instead of copying
# again (each GPU of a multi-GPU process gets its own). The weak reference makes
# a reused id (after the host array is freed) a miss rather than a stale hit.
_DEVICE_CACHE: dict[tuple[int, str, int], tuple[Any, Any]] = {}
_DEVICE_CACHE_LOCK = threading.Lock()


def on_device(a: Any, like: Any) -> Any:
    """``a`` on the array module and in the dtype of ``like`` (a block): no copy when it already is.

    numpy -> cupy copies are cached per host array, so a broadcast moves to the
    GPU once per pass, not once per block.
    """
    xp = array_module(like)
    if a is None:
        return None
    if xp is np:
        return np.asarray(to_numpy(a), dtype=like.dtype)
    if array_module(a) is xp:
        return a.astype(like.dtype, copy=False)
    import weakref  # noqa: PLC0415

    key = (id(a), str(like.dtype), int(like.device.id))
    with _DEVICE_CACHE_LOCK:
        hit = _DEVICE_CACHE.get(key)
        if hit is not None and hit[0]() is a:
            return hit[1]
    dev = xp.asarray(a, dtype=like.dtype)  # on like's device: the thread's current one
    with _DEVICE_CACHE_LOCK:
        if len(_DEVICE_CACHE) > 64:
            _DEVICE_CACHE.clear()
        try:
            _DEVICE_CACHE[key] = (weakref.ref(a), dev)
        except TypeError:  # not weak-referenceable: no caching
            pass
    return dev
