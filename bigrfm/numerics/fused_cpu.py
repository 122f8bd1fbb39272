"""Fused CPU kernel passes (Numba): distances, phi and the products in one sweep over each tile.

A kernel pass in numpy materializes a (rows x m) tile and reads it once per
step (distance GEMM, sqrt, exp, each product). Here each kernel entry is
computed once, in cache, and used for every product that needs it:

* :func:`gram_matvec` -- K^T (K v) and K^T Y of one block (one CG iteration's work);
* :func:`kv` -- K v (the prediction pass);
* :func:`gradient_weights` -- W = phi'(R)/R with the zero-distance rule (and
  optionally K), the elementwise part of an AGOP block.

Rows ``Xt`` (b x r) and centers ``Zt`` (m x r) are already mapped through the
metric factor (x~ = S^T x, ALGORITHM.md 1), so r = |x~ - z~|. The kernels
(ALGORITHM.md 1, bandwidth L, exponent q)::

    laplace     k = exp(-r/L)            W = -k / (L r)             (W = 0 where r < 1e-10 L)
    gaussian    k = exp(-r^2/(2 L^2))    W = -k / L^2
    exp_power   k = exp(-(r/L)^q)        W = -q r^(q-2) k / L^q     (W = 0 where r < 1e-10 L, q < 2)

exp_power with q = 1 is computed as laplace and q = 2 as a gaussian of
bandwidth L/sqrt(2) (the same functions, without the log/pow).

Distances: for r <= :data:`DIRECT_MAX_RANK` directly as sum_k (x_k - z_k)^2
(no cancellation; duplicates give exactly 0); above it by the norm form
|x|^2 + |z|^2 - 2 x.z with one BLAS GEMM per row tile, clamped at 0, the norms
shrunk by 1 - 16 eps as in :func:`bigrfm.numerics.kernels.sq_distances` so that
near-duplicates clamp to exactly 0.

Precision: kernel values in the block dtype (float32 or float64); K v
partial sums and the m x c products accumulate in float64. exp is a
polynomial with Cody-Waite range reduction (float32: Cephes' expf, <= 1 ulp;
float64: degree-13 Taylor, <= 1 ulp; results below the smallest normal
number are 0), see :mod:`bigrfm.numerics.fastmath`.

Threads: every compiled function is single-threaded and releases the GIL, so
two blocks on two Python threads use two cores (the engine's thread backend,
or one process per core). No ``parallel=True``.

Importing this module does not import numba; the first call compiles (or
loads from numba's on-disk cache). ``BIGRFM_FUSED_CPU=0`` in the environment,
or :data:`ENABLED` = False, makes :func:`available` return False, so callers
keep the numpy path (which stays the reference).

Examples
--------
>>> import numpy as np
>>> from bigrfm.numerics import fused_cpu
>>> rng = np.random.default_rng(0)
>>> Xt, Zt = rng.standard_normal((100, 9)), rng.standard_normal((20, 9))
>>> v = rng.standard_normal((20, 1))
>>> fused_cpu.available()  # numba importable, not switched off
True
>>> KtKv, KtY = fused_cpu.gram_matvec(Xt, Zt, v, kernel="laplace", bandwidth=10.0)
>>> KtKv.shape, KtKv.dtype, KtY
((20, 1), dtype('float64'), None)
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np

from ..exceptions import InputError

__all__ = ["available", "applies", "params_of", "gram_matvec", "kv", "gradient_weights", "ENABLED", "DIRECT_MAX_RANK", "KERNELS"]

#: Module switch: False (or env ``BIGRFM_FUSED_CPU=0``) makes :func:`available` return False.
ENABLED = os.environ.get("BIGRFM_FUSED_CPU", "1").strip().lower() not in ("0", "false", "no", "off")

#: Largest rank r whose distances are computed directly; above it, the norm form with a BLAS GEMM.
#: Timed crossover: the direct form is ahead up to r = 24, level at 32, behind from 48.
DIRECT_MAX_RANK = 32

#: Kernel names and their integer codes in the compiled functions.
KERNELS = {"laplace": 0, "gaussian": 1, "exp_power": 2}

#: Relative distance below which the gradient weight is 0 (ALGORITHM.md 1).
ZERO_DISTANCE = 1e-10

# Tile shapes, timed on the 2-core AVX-512 machine (DESIGN.md; bench_fused.py):
# - direct form: a tile of about TILE_BYTES of kernel values (rows x all m
#   centers: 8 rows at m = 8000 in float32) stays in L2 from the chunk sweep
#   to the K^T (K v) update; 64 KiB to 1 MiB timed the same;
# - CHUNK_CENTERS centers per sweep: a chunk's transposed centers stay in
#   cache while the tile's rows go by; 512 to 4096 timed the same, 256 was
#   10-40 % slower at r = 32;
# - norm form: GEMM tiles of GEMM_TILE_BYTES, as bigrfm.backend.row_tiles;
#   2 MiB tiles (65 rows at m = 8000) made OpenBLAS repack the m x r centers
#   for every call (2x slower at d = 784).
TILE_BYTES = 256 * 2**10
CHUNK_CENTERS = 1024
GEMM_TILE_BYTES = 16 * 2**20


@functools.cache
def _jit() -> Any:
    """The compiled module (imports numba); raises ImportError when numba is missing."""
    from . import fused_cpu_jit  # noqa: PLC0415 - numba only on first use

    return fused_cpu_jit


@functools.cache
def _compiles() -> bool:
    try:
        _jit()
        from .fastmath import exp_array  # noqa: PLC0415

        x = np.zeros(1, np.float32)
        exp_array(x, x)
    except Exception:  # noqa: BLE001 - any failure (missing numba, LLVM error) means "use numpy"
        return False
    return True


def available() -> bool:
    """True when the fused CPU passes can be used: enabled, numba importable, and a first function compiles."""
    return ENABLED and _compiles()


def applies(X: Any) -> bool:
    """Whether a block function should take the fused path for block X: a numpy float32/float64 block and
    :func:`available` (CuPy blocks have the CUDA kernels; anything else keeps the numpy reference path)."""
    return isinstance(X, np.ndarray) and X.dtype in (np.float32, np.float64) and available()


def params_of(kernel: Any) -> dict:
    """A bigrfm kernel object (:mod:`bigrfm.numerics.kernels`) as this module's plain parameters."""
    return {"kernel": kernel.name, "bandwidth": float(kernel.bandwidth), "exponent": float(getattr(kernel, "q", 1.0))}


# -- parameters ----------------------------------------------------------------


def _resolve(kernel: str, bandwidth: float, exponent: float) -> tuple[int, float, float]:
    """(code, L, q) with exp_power q = 1 / q = 2 mapped onto laplace / gaussian."""
    if kernel not in KERNELS:
        raise InputError(f"Unknown kernel {kernel!r}. Choose one of {sorted(KERNELS)}.")
    L = float(bandwidth)
    if not (math.isfinite(L) and L > 0):
        raise InputError(f"The bandwidth of the {kernel} kernel must be a float > 0. Got {bandwidth!r} instead.")
    q = float(exponent)
    if kernel == "exp_power":
        if not (0 < q <= 2):
            raise InputError(f"The exponent q of the exp_power kernel must be in (0, 2]. Got {exponent!r} instead.")
        if q == 1.0:
            return KERNELS["laplace"], L, 1.0
        if q == 2.0:
            return KERNELS["gaussian"], L / math.sqrt(2.0), 1.0
    return KERNELS[kernel], L, q


def _params(code: int, L: float, q: float, dtype: np.dtype) -> np.ndarray:
    J = _jit()
    P = np.zeros(J.N_PARAMS, dtype=np.float64)
    P[J.A] = (1.0 / L, 0.5 / L**2, 1.0 / L**2)[code]
    P[J.H] = q / 2
    tiny = float(np.finfo(dtype).tiny)
    P[J.THR2] = -1.0 if code == KERNELS["gaussian"] else max((ZERO_DISTANCE * L) ** 2, tiny)
    P[J.WA] = (-1.0 / L, -1.0 / L**2, -q)[code]
    P[J.SHRINK] = 1.0 - 16 * float(np.finfo(dtype).eps)
    return P.astype(dtype)


# -- arrays --------------------------------------------------------------------


def _block_dtype(Xt: np.ndarray) -> np.dtype:
    dt = np.asarray(Xt).dtype
    if dt not in (np.float32, np.float64):
        raise InputError(f"fused_cpu: blocks must be float32 or float64; got {dt}. Cast the block first.")
    return dt


def _as2d(a: Any, name: str, rows: int | None, dtype: np.dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.ndim != 2 or (rows is not None and a.shape[0] != rows):
        want = f"({rows}, k)" if rows is not None else "2-D"
        raise InputError(f"fused_cpu: {name} must have shape {want}; got {a.shape}.")
    return a


class _Pass:
    """The arrays and tile shapes shared by the three passes for one (Xt, Zt, kernel)."""

    def __init__(self, Xt: Any, Zt: Any, kernel: str, bandwidth: float, exponent: float) -> None:
        self.dtype = _block_dtype(Xt)
        self.X = _as2d(Xt, "Xt", None, self.dtype)  # (b, r)
        Z = _as2d(Zt, "Zt", None, self.dtype)  # (m, r)
        if Z.shape[1] != self.X.shape[1]:
            raise InputError(f"fused_cpu: Xt has {self.X.shape[1]} columns but Zt has {Z.shape[1]}; map both through the same factor.")
        self.b, self.r = self.X.shape
        self.m = Z.shape[0]
        self.code, L, q = _resolve(kernel, bandwidth, exponent)
        self.J = _jit()
        self.P = _params(self.code, L, q, self.dtype)
        item = self.dtype.itemsize
        self.cross = self.r > DIRECT_MAX_RANK
        self.chunk = CHUNK_CENTERS
        if self.cross:
            self.Z = Z
            self.ZT = np.zeros((0, 0), self.dtype)
            self.zsq = np.einsum("ij,ij->i", Z, Z)
            self.xsq = np.einsum("ij,ij->i", self.X, self.X)
            self.tile = max(16, GEMM_TILE_BYTES // max(1, self.m * item))
        else:
            self.ZT = np.ascontiguousarray(Z.T)  # (r, m): centers contiguous in the inner loops
            self.zsq = self.xsq = np.zeros(0, self.dtype)
            self.tile = max(4, min(256, TILE_BYTES // max(1, self.m * item)))
        self.tile = min(self.tile, max(self.b, 1))

    def run(self, fn, buf, *args) -> None:
        """Call a compiled ``*_rows`` function over all rows: once (direct form), or per row tile
        after the tile's GEMM X Z^T into ``buf`` (norm form); ``buf`` is the tile's (tile, m) buffer."""
        common = (self.X, self.ZT, self.xsq, self.zsq, self.cross)
        if not self.cross:
            fn(*common, 0, self.b, *args)
            return
        for i0 in range(0, self.b, self.tile):
            nt = min(self.tile, self.b - i0)
            np.matmul(self.X[i0 : i0 + nt], self.Z.T, out=buf(i0, nt))
            fn(*common, i0, nt, *args)


# -- the passes ------------------------------------------------------------------


def gram_matvec(
    Xt: Any, Zt: Any, v: Any = None, Y: Any = None, *, kernel: str, bandwidth: float, exponent: float = 1.0
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One block's K^T (K v) and K^T Y from one evaluation of each kernel entry.

    Parameters
    ----------
    Xt : ndarray (b, r), float32 or float64
        Rows mapped through the metric factor; its dtype is the block dtype.
    Zt : ndarray (m, r)
        Mapped centers (cast to the block dtype).
    v : ndarray (m, c) or None
        Vector(s) of the Gram product.
    Y : ndarray (b, c_y) or None
        Targets for the right-hand side K^T Y.
    kernel : {"laplace", "gaussian", "exp_power"}
    bandwidth : float
        L > 0.
    exponent : float
        q in (0, 2] for ``exp_power``.

    Returns
    -------
    KtKv : ndarray (m, c) float64, or None when ``v`` is None
    KtY : ndarray (m, c_y) float64, or None when ``Y`` is None
    """
    p = _Pass(Xt, Zt, kernel, bandwidth, exponent)
    VT = np.zeros((0, p.m), p.dtype) if v is None else np.ascontiguousarray(_as2d(v, "v", p.m, p.dtype).T)
    Yb = np.zeros((p.b, 0), p.dtype) if Y is None else _as2d(Y, "Y", p.b, p.dtype)
    c, cy = VT.shape[0], Yb.shape[1]
    KtKvT = np.zeros((c, p.m))  # (c, m) float64
    KtYT = np.zeros((cy, p.m))  # (c_y, m) float64
    if p.m and p.b and (c or cy):
        K = np.empty((p.tile, p.m), p.dtype)  # (tile, m): one tile of kernel values
        U = np.empty((c, p.tile))  # (c, tile): K v of the tile, float64
        Yt = np.empty((cy, p.tile))  # (c_y, tile): Y of the tile, float64
        p.run(p.J.gram_rows, lambda i0, nt: K[:nt], VT, Yb, p.code, p.P, p.chunk, K, U, Yt, KtKvT, KtYT)
    return (None if v is None else KtKvT.T.copy()), (None if Y is None else KtYT.T.copy())


def kv(Xt: Any, Zt: Any, v: Any, *, kernel: str, bandwidth: float, exponent: float = 1.0) -> np.ndarray:
    """K v, shape (b, c), in the block dtype (float64 partial sums).

    Parameters are those of :func:`gram_matvec`; ``v`` (m, c) is required.
    """
    p = _Pass(Xt, Zt, kernel, bandwidth, exponent)
    VT = np.ascontiguousarray(_as2d(v, "v", p.m, p.dtype).T)  # (c, m)
    out = np.zeros((p.b, VT.shape[0]), p.dtype)  # (b, c)
    if p.m and p.b and VT.shape[0]:
        K = np.empty((p.tile, p.m), p.dtype)  # (tile, m)
        p.run(p.J.kv_rows, lambda i0, nt: K[:nt], VT, p.code, p.P, p.chunk, K, out)
    return out


def gradient_weights(
    Xt: Any, Zt: Any, *, kernel: str, bandwidth: float, exponent: float = 1.0, values: bool = False, out: Any = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Gradient weights W = phi'(R)/R (b, m) in the block dtype, with the zero-distance rule.

    W = 0 where r < 1e-10 L for laplace and exp_power with q < 2 (ALGORITHM.md 1).
    With ``values=True`` returns ``(K, W)``, K the kernel values. ``out``: a
    C-contiguous (b, m) array of the block dtype to write W into (a pair
    ``(K, W)`` with ``values``), so a caller's tile loop reuses its buffers.
    The other parameters are those of :func:`gram_matvec`.
    """
    p = _Pass(Xt, Zt, kernel, bandwidth, exponent)
    shape = (p.b, p.m)
    K, W = (None, out) if not values else (out if out is not None else (None, None))
    W = _out(W, shape, p.dtype, "W")  # (b, m)
    K = _out(K, shape, p.dtype, "K") if values else np.empty((0, 0), p.dtype)  # (b, m) or a (0, 0) placeholder
    if p.m and p.b:
        p.run(p.J.weights_rows, lambda i0, nt: W[i0 : i0 + nt], p.code, p.P, p.chunk, W, K)
    return (K, W) if values else W


def _out(a: Any, shape: tuple[int, int], dtype: np.dtype, name: str) -> np.ndarray:
    if a is None:
        return np.empty(shape, dtype)
    if not (isinstance(a, np.ndarray) and a.shape == shape and a.dtype == dtype and a.flags.c_contiguous):
        raise InputError(f"fused_cpu: out {name} must be a C-contiguous {dtype} array of shape {shape}.")
    return a
