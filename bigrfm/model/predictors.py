"""Fitted predictors: f(x) = K_M(x, Z) alpha (kernel) or phi(S^T x)^T w (random features).

A predictor is what a solver returns and what the RFM loop scores, takes the
AGOP of and saves. Its ``broadcast(xp, dtype)`` gives the small arrays a pass
over the data needs (sent once per pass); the block functions take a block of
prepared rows and those arrays. Predictors hold only small arrays and know
nothing of zarr, dask or solvers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from ..numerics import fused_cpu
from ..numerics.agop import kernel_agop_block
from ..numerics.backend import REDUCE_DTYPE, array_module, on_device, row_tiles, to_device, to_numpy
from ..numerics.cuda_kernels import fused_kv, fused_supported
from ..numerics.kernels import Kernel, apply_metric, augment_centers, map_rows, metric_token
from ..numerics.linalg import metric_factor
from ..numerics.random_features import RFFMap, rff_agop_block, rff_predict_block

__all__ = [
    "KernelPredictor",
    "RFFPredictor",
    "kernel_predict_block",
    "predict_in_blocks",
    "predictor_arrays",
    "predictor_from_arrays",
    "scores_to_proba",
]


def kernel_predict_block(
    X: Any, Y: Any = None, *, kernel: Kernel, S: Any, Zt: Any, zsq: Any, alpha: Any, metric_token: str | None = None,
    **_: Any
) -> Any:
    """Predictions K_M(X, Z) alpha for one block of prepared rows, shape (b, c), tile by tile."""
    xp = array_module(X)
    S, Zt, zsq, alpha = (on_device(a, X) for a in (S, Zt, zsq, alpha))
    Xt = map_rows(X, S, metric_token)
    if fused_cpu.applies(X):
        return fused_cpu.kv(Xt, Zt, alpha, **fused_cpu.params_of(kernel))
    if fused_supported(kernel, X, Xt.shape[1], alpha.shape[1]):
        return fused_kv(kernel, Xt, Zt, alpha)
    out = xp.empty((X.shape[0], alpha.shape[1]), dtype=X.dtype)
    Za = augment_centers(Zt, zsq)  # once per block, not per tile
    for t in row_tiles(X.shape[0], Zt.shape[0], X.dtype.itemsize, xp=xp):
        out[t] = kernel.block(Xt[t], Zt, zsq, Za) @ alpha  # (tile, m) @ (m, c)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class KernelPredictor:
    """f(x) = sum_j alpha_j k_M(x, z_j).

    Attributes
    ----------
    kernel : Kernel
    M : ndarray (d, d) or (d,)
        The metric (its diagonal for ``diag=True`` models), float64.
    centers : ndarray (m, d)
        Centers Z in the prepared (standardized) input space, float64.
    alpha : ndarray (m, c)
        Dual coefficients, float64.
    """

    kernel: Kernel
    M: np.ndarray
    centers: np.ndarray
    alpha: np.ndarray

    predict_fn: Callable[..., Any] = dataclasses.field(default=kernel_predict_block, repr=False)
    agop_fn: Callable[..., Any] = dataclasses.field(default=kernel_agop_block, repr=False)

    @property
    def n_outputs(self) -> int:
        return int(self.alpha.shape[1])

    @property
    def agop_premultiplied(self) -> bool:
        """False: the AGOP sums are H^T H and the metric M is applied once at the end."""
        return False

    @functools.cached_property
    def _mapped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # S, Zt, |Zt|^2 in float64, computed once per predictor (an eigendecomposition)
        S = metric_factor(np.asarray(self.M, dtype=REDUCE_DTYPE))
        Zt = apply_metric(np.asarray(self.centers, dtype=REDUCE_DTYPE), S)
        return S, Zt, np.einsum("ij,ij->i", Zt, Zt)

    def broadcast(self, xp: Any = np, dtype: Any = np.float64) -> dict[str, Any]:
        """The arrays a predict or AGOP pass needs, on ``xp`` in ``dtype`` (norms in float64 first)."""
        S, Zt, zsq = self._mapped
        return {
            "kernel": self.kernel,
            "metric_token": metric_token(self.M, dtype, xp.__name__),
            "S": to_device(S, xp, dtype),
            "Zt": to_device(Zt, xp, dtype),
            "zsq": to_device(zsq, xp, dtype),
            "Z": to_device(self.centers, xp, dtype),
            "alpha": to_device(self.alpha, xp, dtype),
        }


@dataclasses.dataclass(frozen=True, eq=False)
class RFFPredictor:
    """f(x) = phi(S^T x)^T w with random Fourier features (see :func:`rff_features`).

    Attributes
    ----------
    kernel : Kernel
    M : ndarray (d, d) or (d,)
        Metric the features were built in.
    rffmap : RFFMap
    w : ndarray (D, c)
        Feature weights, float64.
    """

    kernel: Kernel
    M: np.ndarray
    rffmap: RFFMap
    w: np.ndarray

    predict_fn: Any = dataclasses.field(default=rff_predict_block, repr=False)
    agop_fn: Any = dataclasses.field(default=rff_agop_block, repr=False)

    @property
    def agop_premultiplied(self) -> bool:
        """True: the AGOP sums already hold gradients in input space."""
        return True

    @property
    def n_outputs(self) -> int:
        return int(self.w.shape[1])

    def broadcast(self, xp: Any = np, dtype: Any = np.float64) -> dict[str, Any]:
        S = metric_factor(np.asarray(self.M, dtype=REDUCE_DTYPE))
        return {"S": to_device(S, xp, dtype), "rffmap": self.rffmap, "w": to_device(self.w, xp, dtype)}


def predictor_arrays(pred: KernelPredictor | RFFPredictor) -> tuple[str, dict[str, np.ndarray]]:
    """The kind (``"kernel"`` or ``"rff"``) and the arrays that describe a predictor besides its kernel and M."""
    if isinstance(pred, RFFPredictor):
        return "rff", {"omega": pred.rffmap.omega, "phase": pred.rffmap.phase, "weights": pred.w}
    return "kernel", {"centers": pred.centers, "dual_coef": pred.alpha}


def predictor_from_arrays(kind: str, kernel: Kernel, M: np.ndarray, arrays: dict[str, np.ndarray]) -> KernelPredictor | RFFPredictor:
    """Inverse of :func:`predictor_arrays`. Raises ValueError when the shapes disagree with each other or with M."""
    d = M.shape[0]
    if M.shape not in ((d,), (d, d)):
        raise ValueError(f"M has shape {M.shape}; it must be (d,) or (d, d)")
    if kind == "kernel":
        Z, alpha = arrays["centers"], arrays["dual_coef"]
        if Z.ndim != 2 or Z.shape[1] != d or alpha.ndim != 2 or alpha.shape[0] != Z.shape[0]:
            raise ValueError(f"centers {Z.shape} and dual_coef {alpha.shape} do not fit M {M.shape}")
        return KernelPredictor(kernel, M, Z, alpha)
    if kind == "rff":
        omega, phase, w = arrays["omega"], arrays["phase"], arrays["weights"]
        if omega.ndim != 2 or not omega.shape[1] == phase.shape[0] == w.shape[0]:
            raise ValueError(f"omega {omega.shape}, phase {phase.shape} and weights {w.shape} disagree")
        return RFFPredictor(kernel, M, RFFMap(omega, phase, kernel.name), w)
    raise ValueError(f"unknown predictor kind {kind!r}")


def predict_in_blocks(predictor: Any, X: np.ndarray, block_rows: int, dtype: Any = np.float64, xp: Any = np) -> np.ndarray:
    """Predictions for in-memory prepared rows, block by block on ``xp`` (numpy or cupy); float64 (n, c) on the host."""
    bc = predictor.broadcast(xp, dtype)
    out = np.empty((X.shape[0], predictor.n_outputs))
    for s in range(0, X.shape[0], block_rows):
        Xb = to_device(X[s : s + block_rows], xp, dtype)
        out[s : s + Xb.shape[0]] = to_numpy(predictor.predict_fn(Xb, None, **bc))
    return out


def scores_to_proba(s: np.ndarray) -> np.ndarray:
    """Class probabilities from one-hot regression scores (n, k).

    Scores are clipped at 0 and each row normalized to sum to 1; a row whose
    scores are all <= 0 is shifted to a minimum of 0 first (all equal: uniform).
    Two classes: p_1 = clip((s_1 - s_0 + 1) / 2, 0, 1), monotone in the
    decision s_1 - s_0 (one-hot scores sum to about 1). The argmax is the
    argmax of the scores; the values are not calibrated.
    """
    if s.shape[1] == 2:
        p1 = np.clip((s[:, 1] - s[:, 0] + 1.0) / 2.0, 0.0, 1.0)
        return np.stack([1.0 - p1, p1], axis=1)
    p = np.clip(s, 0.0, None)
    dead = p.max(axis=1) <= 0
    if dead.any():
        p[dead] = s[dead] - s[dead].min(axis=1, keepdims=True)
    tot = p.sum(axis=1, keepdims=True)
    flat = tot[:, 0] <= 0
    p[flat] = 1.0
    tot[flat] = p.shape[1]
    return p / tot
