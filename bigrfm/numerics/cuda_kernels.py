"""Fused CUDA kernels (CuPy RawKernel) for the two products of a kernel pass.

Owns the CUDA source and its launch; imports CuPy only when a kernel runs,
and nothing above :mod:`bigrfm.numerics`.

For a block of mapped rows Xt (b x r) and mapped centers Zt (m x r):

* ``kv``:  u = K v   (b x c): one thread per row, centers staged through
  shared memory tile by tile; the kernel value k(x_i, z_j) lives in a register.
* ``ktu``: w = K^T u (m x c): one thread per center, rows staged through
  shared memory; the rows are split over ``gridDim.y`` and the partial sums
  added with float64 atomics.

Distances are computed directly as sum_k (x_k - z_k)^2 (no cancellation, so
no clamping is needed; a point against itself gives exactly 0), then the
kernel function, then the products: K is never written to GPU memory, so one
CG iteration reads the block once and writes only b x c and m x c numbers.
Each kernel value is computed twice (once per product); at small r the cost
is the exp/sqrt, which is cheap on a GPU next to the memory traffic that a
materialized K would cost.

The kernels are compiled for a fixed r (<= ``MAX_RANK``) and c (<=
``MAX_OUTPUTS``) and float32; other shapes and dtypes, and kernels other than
Laplace and Gaussian, use the unfused path (GEMM + elementwise), which is also
the reference the GPU tests compare against. Importing this module does not
import CuPy.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from .kernels import GaussianKernel, Kernel, LaplaceKernel

__all__ = ["fused_supported", "fused_kv", "fused_ktu", "MAX_RANK", "MAX_OUTPUTS"]

#: Set to False to force the unfused (GEMM + elementwise) GPU path, e.g. to compare the two.
ENABLED = True
MAX_RANK = 64
MAX_OUTPUTS = 16
_TILE = 128  # threads per block and rows/centers per shared-memory tile
_SPLIT_ROWS = 4096  # rows per gridDim.y slice of ktu (more when b would need more than _MAX_GRID_Y slices)
_MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y
_COMPILE_LOCK = threading.Lock()  # threads of one process share compiled modules; compile each once

_SOURCE = r"""
#define R {R}
#define C {C}
#define TILE {TILE}

__device__ __forceinline__ float kfun(float d2, float a) {{
#if {GAUSS}
    return __expf(-d2 * a);            // a = 1 / (2 L^2)
#else
    return __expf(-sqrtf(d2) * a);     // a = 1 / L
#endif
}}

extern "C" __global__ void kv(const float* __restrict__ X, const float* __restrict__ Z,
                              const float* __restrict__ v, float* __restrict__ out,
                              int b, int m, float a) {{
    __shared__ float zs[TILE * R];
    __shared__ float vs[TILE * C];
    int i = blockIdx.x * TILE + threadIdx.x;
    float x[R];
    float acc[C];
    #pragma unroll
    for (int k = 0; k < R; ++k) x[k] = (i < b) ? X[(size_t)i * R + k] : 0.f;
    #pragma unroll
    for (int c = 0; c < C; ++c) acc[c] = 0.f;
    for (int j0 = 0; j0 < m; j0 += TILE) {{
        int nj = min(TILE, m - j0);
        for (int t = threadIdx.x; t < nj * R; t += TILE) zs[t] = Z[(size_t)j0 * R + t];
        for (int t = threadIdx.x; t < nj * C; t += TILE) vs[t] = v[(size_t)j0 * C + t];
        __syncthreads();
        for (int j = 0; j < nj; ++j) {{
            float d2 = 0.f;
            #pragma unroll
            for (int k = 0; k < R; ++k) {{ float e = x[k] - zs[j * R + k]; d2 = fmaf(e, e, d2); }}
            float kv_ = kfun(d2, a);
            #pragma unroll
            for (int c = 0; c < C; ++c) acc[c] = fmaf(kv_, vs[j * C + c], acc[c]);
        }}
        __syncthreads();
    }}
    if (i < b) {{
        #pragma unroll
        for (int c = 0; c < C; ++c) out[(size_t)i * C + c] = acc[c];
    }}
}}

extern "C" __global__ void ktu(const float* __restrict__ X, const float* __restrict__ Z,
                               const float* __restrict__ u, double* __restrict__ out,
                               int b, int m, float a, int split) {{
    __shared__ float xs[TILE * R];
    __shared__ float us[TILE * C];
    int j = blockIdx.x * TILE + threadIdx.x;
    int i_lo = blockIdx.y * split, i_hi = min(b, i_lo + split);
    float z[R];
    float acc[C];
    #pragma unroll
    for (int k = 0; k < R; ++k) z[k] = (j < m) ? Z[(size_t)j * R + k] : 0.f;
    #pragma unroll
    for (int c = 0; c < C; ++c) acc[c] = 0.f;
    for (int i0 = i_lo; i0 < i_hi; i0 += TILE) {{
        int ni = min(TILE, i_hi - i0);
        for (int t = threadIdx.x; t < ni * R; t += TILE) xs[t] = X[(size_t)i0 * R + t];
        for (int t = threadIdx.x; t < ni * C; t += TILE) us[t] = u[(size_t)i0 * C + t];
        __syncthreads();
        for (int i = 0; i < ni; ++i) {{
            float d2 = 0.f;
            #pragma unroll
            for (int k = 0; k < R; ++k) {{ float e = xs[i * R + k] - z[k]; d2 = fmaf(e, e, d2); }}
            float kv_ = kfun(d2, a);
            #pragma unroll
            for (int c = 0; c < C; ++c) acc[c] = fmaf(kv_, us[i * C + c], acc[c]);
        }}
        __syncthreads();
    }}
    if (j < m) {{
        #pragma unroll
        for (int c = 0; c < C; ++c) atomicAdd(&out[(size_t)j * C + c], (double)acc[c]);
    }}
}}
"""


def fused_supported(kernel: Kernel, X: Any, rank: int, n_outputs: int) -> bool:
    """Whether the fused path applies: a CuPy float32 block, Laplace/Gaussian, small r and c."""
    if not ENABLED or type(X).__module__.split(".")[0] != "cupy" or X.dtype != np.float32:
        return False
    return isinstance(kernel, (LaplaceKernel, GaussianKernel)) and rank <= MAX_RANK and n_outputs <= MAX_OUTPUTS


@functools.lru_cache(maxsize=64)
def _compiled(rank: int, n_outputs: int, gaussian: bool, device: int) -> Any:
    import cupy  # noqa: PLC0415

    src = _SOURCE.format(R=rank, C=n_outputs, TILE=_TILE, GAUSS=int(gaussian))
    module = cupy.RawModule(code=src, options=("--use_fast_math",))
    module.compile()  # NVRTC now, under the lock, rather than at the first launch
    return module


def _module(rank: int, n_outputs: int, gaussian: bool) -> Any:
    """The compiled module for (r, c, kernel) on the current device, compiled once per process and device."""
    import cupy  # noqa: PLC0415

    with _COMPILE_LOCK:
        return _compiled(rank, n_outputs, gaussian, cupy.cuda.Device().id)


def ktu_split(b: int) -> int:
    """Rows per gridDim.y slice of ``ktu``: :data:`_SPLIT_ROWS`, or more so that at most
    :data:`_MAX_GRID_Y` slices cover b rows."""
    return max(_SPLIT_ROWS, -(-b // _MAX_GRID_Y))


def _scale(kernel: Kernel) -> tuple[bool, np.float32]:
    gaussian = isinstance(kernel, GaussianKernel)
    L = kernel.bandwidth
    return gaussian, np.float32(1.0 / (2 * L * L) if gaussian else 1.0 / L)


def fused_kv(kernel: Kernel, Xt: Any, Zt: Any, v: Any) -> Any:
    """u = K(Xt, Zt) v, shape (b, c) float32, without materializing K."""
    import cupy  # noqa: PLC0415

    b, r = Xt.shape
    m, c = v.shape
    if b == 0 or m == 0:  # an empty grid is an invalid launch
        return cupy.zeros((b, c), dtype=cupy.float32)
    gaussian, a = _scale(kernel)
    Xt, Zt, v = (cupy.ascontiguousarray(t, dtype=cupy.float32) for t in (Xt, Zt, v))
    out = cupy.empty((b, c), dtype=cupy.float32)
    fn = _module(r, c, gaussian).get_function("kv")
    fn(((b + _TILE - 1) // _TILE,), (_TILE,), (Xt, Zt, v, out, np.int32(b), np.int32(m), a))
    return out


def fused_ktu(kernel: Kernel, Xt: Any, Zt: Any, u: Any) -> Any:
    """w = K(Xt, Zt)^T u, shape (m, c) float64, without materializing K."""
    import cupy  # noqa: PLC0415

    b, r = Xt.shape
    m = Zt.shape[0]
    c = u.shape[1]
    out = cupy.zeros((m, c), dtype=cupy.float64)
    if b == 0 or m == 0:  # an empty grid is an invalid launch
        return out
    gaussian, a = _scale(kernel)
    Xt, Zt, u = (cupy.ascontiguousarray(t, dtype=cupy.float32) for t in (Xt, Zt, u))
    fn = _module(r, c, gaussian).get_function("ktu")
    split = ktu_split(b)
    grid = ((m + _TILE - 1) // _TILE, (b + split - 1) // split)
    fn(grid, (_TILE,), (Xt, Zt, u, out, np.int32(b), np.int32(m), a, np.int32(split)))
    return out
