"""The average gradient outer product (AGOP) of a kernel predictor, block by block.

Pure functions over blocks and their small sums; no I/O, no dask, no zarr.

For f_c(x) = sum_j alpha_jc k_M(x, z_j) the gradient is
g_c(x) = sum_j alpha_jc W_j M (x - z_j) with W = phi'(R)/R (ALGORITHM.md 2).
Per block X_b (b x d):

    H_c = diag(W alpha_c) X_b - W (alpha_c o Z)        (b x d; one GEMM for all c)
    g rows = H_c M   so   sum_b sum_c g g^T = M (sum_b sum_c H_c^T H_c) M.

A block returns only the small partial sums (d x d or d, c x d, a count);
:func:`agop_from_sums` applies M once and finishes the AGOP. The result is the
same for any block size because only sums cross block boundaries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import fused_cpu
from .backend import REDUCE_DTYPE, array_module, on_device, row_tiles, to_numpy
from .kernels import Kernel, augment_centers, map_rows

__all__ = ["AgopSums", "kernel_agop_block", "agop_from_sums", "normalize_metric"]


@dataclasses.dataclass(frozen=True)
class AgopSums:
    """Partial sums of one or more blocks (float64, on the host).

    Attributes
    ----------
    gram : ndarray (d, d) or (d,)
        sum over rows and outputs of H^T H (before M is applied), or of the
        gradients g g^T when ``premultiplied``; only its diagonal when ``diag``.
    grad_sum : ndarray (c, d)
        sum over rows of H_c (or g_c), for centering.
    count : int
        Evaluation rows summed.
    """

    gram: np.ndarray
    grad_sum: np.ndarray
    count: int

    def __add__(self, other: "AgopSums") -> "AgopSums":
        return AgopSums(self.gram + other.gram, self.grad_sum + other.grad_sum, self.count + other.count)


def kernel_agop_block(
    X: Any,
    Y: Any = None,
    *,
    kernel: Kernel,
    Zt: Any,
    zsq: Any,
    Z: Any,
    alpha: Any,
    S: Any,
    diag: bool = False,
    metric_token: str | None = None,
) -> AgopSums:
    """AGOP partial sums of the kernel predictor over one block of rows.

    Parameters
    ----------
    X : array (b, d)
        Prepared (standardized) rows, numpy or cupy.
    Y : ignored
        Present so every block function has the engine's ``(X, Y, **kw)`` form.
    kernel : Kernel
    Zt, zsq : arrays (m, r), (m,)
        Centers mapped through the metric factor, and their squared norms.
    Z : array (m, d)
        Centers in input space.
    alpha : array (m, c)
        Dual coefficients.
    S : array (d, r) or (d,)
        Metric factor (M = S S^T).
    diag : bool
        Keep only the diagonal of sum H^T H.
    metric_token : str, optional
        Names S for the block cache (:func:`bigrfm.numerics.kernels.map_rows`).
    """
    xp = array_module(X)
    S, Zt, zsq, Z, alpha = (on_device(a, X) for a in (S, Zt, zsq, Z, alpha))
    Xt = map_rows(X, S, metric_token)  # (b, r)
    d = Z.shape[1]
    c = alpha.shape[1]
    gram = xp.zeros(d if diag else (d, d), dtype=REDUCE_DTYPE)
    hsum = xp.zeros((c, d), dtype=REDUCE_DTYPE)
    # Row tiles bound the (tile, m) kernel weights; one output at a time keeps
    # the other temporaries at (m, d) and (tile, d) instead of (m, c*d).
    fused = fused_cpu.applies(X)
    Za = None if fused else augment_centers(Zt, zsq)  # once per block, not per tile
    tiles = row_tiles(X.shape[0], Z.shape[0], X.dtype.itemsize, xp=xp)
    Wbuf = np.empty((tiles[0].stop - tiles[0].start, Z.shape[0]), X.dtype) if fused and tiles else None  # (tile, m)
    for t in tiles:
        if fused:  # the weights in one compiled sweep; the products below stay BLAS
            W = fused_cpu.gradient_weights(Xt[t], Zt, out=Wbuf[: t.stop - t.start], **fused_cpu.params_of(kernel))
        else:
            _, W = kernel.block_and_weights(Xt[t], Zt, zsq, Za)  # (tile, m)
        Wa = W @ alpha  # (tile, c)
        for k in range(c):
            H = Wa[:, k : k + 1] * X[t] - W @ (alpha[:, k : k + 1] * Z)  # (tile, d)
            # the (tile x d)^T (tile x d) product runs in the block dtype; sums
            # across tiles and blocks are float64
            gram += (xp.einsum("ij,ij->j", H, H) if diag else H.T @ H).astype(REDUCE_DTYPE)
            hsum[k] += H.sum(axis=0, dtype=REDUCE_DTYPE)
    return AgopSums(to_numpy(gram), to_numpy(hsum), int(X.shape[0]))


def agop_from_sums(
    sums: AgopSums,
    M: np.ndarray | None,
    *,
    centering: bool = False,
    diag: bool = False,
) -> np.ndarray:
    """Finish the AGOP: (1/|E|) M (sum H^T H - centering term) M.

    ``M=None`` means the sums already hold gradients (no metric to apply).
    Returns (d, d), or (d,) when ``diag``.
    """
    n = max(sums.count, 1)
    G = np.array(sums.gram, dtype=REDUCE_DTYPE)
    if centering:
        mean = sums.grad_sum / n  # (c, d): the mean over all of E, not per block
        G -= n * (np.einsum("cj,cj->j", mean, mean) if diag else mean.T @ mean)
    G /= n
    if M is None:
        return G
    M = np.asarray(M, dtype=REDUCE_DTYPE)
    if diag:
        return M * G * M
    return M @ G @ M


def normalize_metric(agop: np.ndarray, power: float = 1.0) -> np.ndarray:
    """M_{t+1} = AGOP^p divided by its largest entry (ALGORITHM.md 2, step 4).

    The matrix power goes through the symmetric eigendecomposition with negative
    eigenvalues (rounding) clipped to 0. A zero AGOP (constant predictor) gives
    back the identity scaled like a normalized metric, so the next iteration is
    the plain kernel instead of a division by zero.
    """
    A = np.asarray(agop, dtype=REDUCE_DTYPE)
    if A.ndim == 1:
        P = np.clip(A, 0.0, None) ** power
    else:
        A = (A + A.T) / 2
        if power == 1.0:
            P = A
        else:
            evals, evecs = np.linalg.eigh(A)
            P = (evecs * np.clip(evals, 0.0, None) ** power) @ evecs.T
    top = float(np.max(P)) if P.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return np.ones_like(A) if A.ndim == 1 else np.eye(A.shape[0])
    return P / top
