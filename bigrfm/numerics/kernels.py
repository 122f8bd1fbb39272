"""Mahalanobis kernels k_M(x, z) = phi(||x - z||_M) and their gradient weights.

Owns the kernel formulas (ALGORITHM.md 1) and the distance GEMM; array-module
generic, no I/O, no factorizations (those are :mod:`bigrfm.numerics.linalg`).

Each kernel is a small frozen dataclass holding the two scalar functions of
ALGORITHM.md section 1: ``phi(r)`` and ``phi'(r)/r``. The shared base turns
them into blocks: ``block(Xt, Zt)`` (b x m kernel values) and
``block_and_weights(Xt, Zt)`` (kernel values and the gradient weights
W = phi'(R)/R with the zero-distance rule). Rows are mapped once through the
metric factor (x~ = S^T x with M = S S^T, see :func:`bigrfm.numerics.linalg.metric_factor`), so the
distance cross term is a single GEMM. All functions are array-module generic:
pass numpy or cupy arrays and get the same module back. The metric factor
itself is linear algebra (:func:`bigrfm.numerics.linalg.metric_factor`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, ClassVar

import numpy as np

from .backend import array_module
from .block_cache import BLOCKS
from ..exceptions import InputError

__all__ = [
    "Kernel",
    "LaplaceKernel",
    "GaussianKernel",
    "ExpPowerKernel",
    "make_kernel",
    "kernel_to_dict",
    "kernel_from_dict",
    "KERNELS",
    "apply_metric",
    "map_rows",
    "metric_token",
    "sq_distances",
    "augment_centers",
]

#: Relative distance below which the gradient weight is defined as 0 (ALGORITHM.md 1).
ZERO_DISTANCE = 1e-10


def apply_metric(X: Any, S: Any) -> Any:
    """Map rows through the metric factor: returns X S (b x r), or X * S for a diagonal metric."""
    xp = array_module(X)
    S = xp.asarray(S, dtype=X.dtype)
    return X * S if S.ndim == 1 else X @ S


def map_rows(X: Any, S: Any, metric_token: str | None = None) -> Any:
    """:func:`apply_metric`, kept in the block cache for ``metric_token`` when X is a cached block.

    ``metric_token`` names S (and its dtype and device) within a fit; the same
    block mapped by the same metric in a later pass is then not recomputed.
    """
    if metric_token is None:
        return apply_metric(X, S)
    return BLOCKS.mapped(X, metric_token, lambda: apply_metric(X, S))


def metric_token(M: Any, dtype: Any, xp_name: str = "numpy") -> str:
    """A short name of the metric M as broadcast in ``dtype`` on ``xp_name`` (for :func:`map_rows`)."""
    digest = hashlib.blake2b(np.ascontiguousarray(M, dtype=np.float64).tobytes(), digest_size=12).hexdigest()
    return f"{digest}-{np.dtype(dtype).name}-{xp_name}"


def _sq_norms(A: Any) -> Any:
    xp = array_module(A)
    return xp.einsum("ij,ij->i", A, A)


def _shrink(dtype: Any) -> float:
    return 1.0 - 16 * float(np.finfo(dtype).eps)


def augment_centers(Zt: Any, zsq: Any = None) -> Any:
    """The centers' side of :func:`sq_distances`' GEMM, [-2 z~, s |z~|^2, 1] (m, r + 2).

    Build it once per block and pass it to every tile (``Za=``) instead of once per tile.
    """
    xp = array_module(Zt)
    if zsq is None:
        zsq = _sq_norms(Zt)
    Za = xp.empty((Zt.shape[0], Zt.shape[1] + 2), dtype=Zt.dtype)  # (m, r + 2)
    Za[:, :-2] = Zt
    Za[:, :-2] *= -2.0
    Za[:, -2] = zsq * _shrink(Zt.dtype)
    Za[:, -1] = 1.0
    return Za


def sq_distances(Xt: Any, Zt: Any, zsq: Any = None, Za: Any = None) -> Any:
    """Squared distances |x~ - z~|^2 between mapped rows, shape (b, m), in Xt's dtype.

    Computed as |x|^2 + |z|^2 - 2 x.z by ONE GEMM on rows augmented with their
    norms ([x, 1, s|x|^2] . [-2z, s|z|^2, 1]), then clamped at 0. The norms
    are shrunk by s = 1 - 16 eps, so that pairs closer than the rounding level
    of that cancellation (16 eps (|x|^2 + |z|^2)) clamp to exactly 0: such
    pairs are duplicates as far as the arithmetic can tell, and a point
    against itself gets k = phi(0) and, for kernels singular at 0, a zero
    gradient weight, in float32 as in float64. Every other distance moves by
    less than its own rounding error. ``Za``: :func:`augment_centers` of
    (Zt, zsq), when the caller has it.
    """
    xp = array_module(Xt)
    dtype = Xt.dtype
    if Za is None:
        Za = augment_centers(Zt.astype(dtype, copy=False), zsq)
    b = Xt.shape[0]
    Xa = xp.empty((b, Xt.shape[1] + 2), dtype=dtype)  # (b, r + 2)
    Xa[:, :-2] = Xt
    Xa[:, -2] = 1.0
    Xa[:, -1] = _sq_norms(Xt) * _shrink(dtype)
    D2 = Xa @ Za.T  # (b, m): the one GEMM
    xp.maximum(D2, 0.0, out=D2)
    return D2


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Base of the radial Mahalanobis kernels; subclasses define ``phi`` and ``dphi_over_r``.

    Parameters
    ----------
    bandwidth : float
        Length scale L > 0.
    """

    bandwidth: float = 10.0
    name: ClassVar[str] = ""
    #: Whether phi'(r)/r diverges at r = 0 (then the zero-distance rule applies).
    singular_at_zero: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (np.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise InputError(
                f"The bandwidth of the {self.name} kernel must be a float > 0. "
                f"Got {self.bandwidth!r} instead."
            )

    # -- the two scalar functions of ALGORITHM.md section 1, on distances r --------
    def phi(self, r: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def dphi_over_r(self, r: Any, phi_r: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- the same on squared distances (avoids a sqrt where a kernel allows it) -----
    def phi_sq(self, D2: Any) -> Any:
        xp = array_module(D2)
        return self.phi(xp.sqrt(D2))

    # -- blocks ----------------------------------------------------------------------
    def block(self, Xt: Any, Zt: Any, zsq: Any = None, Za: Any = None) -> Any:
        """Kernel values K[i, j] = phi(|x~_i - z~_j|), shape (b, m), in the dtype of Xt."""
        return self.phi_sq(sq_distances(Xt, Zt, zsq, Za))

    def block_and_weights(self, Xt: Any, Zt: Any, zsq: Any = None, Za: Any = None) -> tuple[Any, Any]:
        """Kernel values K and gradient weights W = phi'(R)/R, both (b, m).

        W is 0 where the distance is below ``1e-10 * bandwidth`` (duplicates, a
        point against itself: see :func:`sq_distances`), for kernels whose
        phi'(r)/r is singular at 0.
        """
        xp = array_module(Xt)
        R = xp.sqrt(sq_distances(Xt, Zt, zsq, Za))
        K = self.phi(R)
        if self.singular_at_zero:
            zero = R < ZERO_DISTANCE * self.bandwidth
            R[zero] = 1.0  # any positive value: W is overwritten below
            W = self.dphi_over_r(R, K)
            W[zero] = 0.0
        else:
            W = self.dphi_over_r(R, K)
        return K, W


@dataclasses.dataclass(frozen=True)
class LaplaceKernel(Kernel):
    """k(x, z) = exp(-|x - z|_M / L): the paper's kernel and the default."""

    name: ClassVar[str] = "laplace"

    def phi(self, r: Any) -> Any:
        xp = array_module(r)
        return xp.exp(r * (-1.0 / self.bandwidth))

    def phi_sq(self, D2: Any) -> Any:
        # in place: sqrt, scale, exp over the (b, m) block without temporaries
        xp = array_module(D2)
        xp.sqrt(D2, out=D2)
        D2 *= -1.0 / self.bandwidth
        return xp.exp(D2, out=D2)

    def dphi_over_r(self, r: Any, phi_r: Any) -> Any:
        return -phi_r / (self.bandwidth * r)


@dataclasses.dataclass(frozen=True)
class GaussianKernel(Kernel):
    """k(x, z) = exp(-|x - z|_M^2 / (2 L^2))."""

    name: ClassVar[str] = "gaussian"
    singular_at_zero: ClassVar[bool] = False

    def phi(self, r: Any) -> Any:
        xp = array_module(r)
        return xp.exp(r * r * (-0.5 / self.bandwidth**2))

    def phi_sq(self, D2: Any) -> Any:
        xp = array_module(D2)
        D2 *= -0.5 / self.bandwidth**2
        return xp.exp(D2, out=D2)

    def dphi_over_r(self, r: Any, phi_r: Any) -> Any:
        return phi_r * (-1.0 / self.bandwidth**2)


@dataclasses.dataclass(frozen=True)
class ExpPowerKernel(Kernel):
    """k(x, z) = exp(-(|x - z|_M / L)^q), 0 < q <= 2 (q = 1 is Laplace, q = 2 a Gaussian)."""

    q: float = 1.0
    name: ClassVar[str] = "exp_power"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < self.q <= 2):
            raise InputError(
                f"The exponent q of the exp_power kernel must be in (0, 2]. Got {self.q!r} instead."
            )

    @property
    def singular_at_zero(self) -> bool:  # type: ignore[override]
        return self.q < 2

    def phi(self, r: Any) -> Any:
        xp = array_module(r)
        return xp.exp(-((r / self.bandwidth) ** self.q))

    def dphi_over_r(self, r: Any, phi_r: Any) -> Any:
        return -self.q * r ** (self.q - 2) * phi_r / self.bandwidth**self.q


KERNELS: dict[str, type[Kernel]] = {
    "laplace": LaplaceKernel,
    "gaussian": GaussianKernel,
    "exp_power": ExpPowerKernel,
}


def make_kernel(name: str, bandwidth: float, exponent: float = 1.0) -> Kernel:
    """Build a kernel by name (``"laplace"``, ``"gaussian"``, ``"exp_power"``)."""
    if name not in KERNELS:
        raise InputError(
            f"Unknown kernel {name!r}. Choose one of {sorted(KERNELS)}."
        )
    if name == "exp_power":
        return ExpPowerKernel(bandwidth=float(bandwidth), q=float(exponent))
    return KERNELS[name](bandwidth=float(bandwidth))


def kernel_to_dict(kernel: Kernel) -> dict:
    """A JSON-ready description of ``kernel``: ``name``, ``bandwidth``, ``exponent`` (inverse of :func:`kernel_from_dict`)."""
    return {"name": kernel.name, "bandwidth": float(kernel.bandwidth), "exponent": float(getattr(kernel, "q", 1.0))}


def kernel_from_dict(spec: dict) -> Kernel:
    """The kernel described by :func:`kernel_to_dict`."""
    return make_kernel(spec["name"], spec["bandwidth"], spec.get("exponent", 1.0))
