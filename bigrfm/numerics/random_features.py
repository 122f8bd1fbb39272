"""Random Fourier features in the Mahalanobis metric (ALGORITHM.md 3, ``rff``).

Owns the feature map, its gradients and block sums; pure functions over
blocks, no passes over data (that is :mod:`bigrfm.solvers.rff`).

With M = S S^T and x~ = S^T x, a shift-invariant kernel k(x~ - z~) is the
expectation over frequencies w (drawn from its spectral density) of
2 cos(w^T x~ + b) cos(w^T z~ + b), b ~ U[0, 2 pi). D draws give the features

    phi(x) = sqrt(2/D) cos(Omega^T x~ + b)        (D,)

and the predictor f(x) = phi(x)^T w, fitted by ridge regression on the
features: (Phi^T Phi + reg I) w = Phi^T Y. One streamed pass accumulates
Phi^T Phi and Phi^T Y; another gives the AGOP. The block functions are pure
and share the engine's ``block_fn(X_block, y_block, **broadcast)`` form (the
Y argument is unused where the maths needs no targets); :func:`sample_rff`
draws the frequencies and :func:`rff_solve` solves the small D x D system.
The solver that runs these passes is :mod:`bigrfm.solvers.rff`; the fitted
predictor is :class:`bigrfm.model.predictors.RFFPredictor`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from ..exceptions import InputError
from .agop import AgopSums
from .backend import REDUCE_DTYPE, array_module, on_device, to_numpy
from .kernels import GaussianKernel, Kernel, LaplaceKernel, apply_metric
from .linalg import cholesky_solve

__all__ = [
    "RFFMap",
    "GramSums",
    "sample_rff",
    "rff_features",
    "rff_gram_block",
    "rff_solve",
    "rff_predict_block",
    "rff_grad_block",
    "rff_agop_block",
]

#: Kernels whose spectral density :func:`sample_rff` can draw from.
SUPPORTED = (LaplaceKernel.name, GaussianKernel.name)


@dataclasses.dataclass(frozen=True)
class RFFMap:
    """The random part of the feature map.

    Attributes
    ----------
    omega : array (r, D)
        Frequencies, one column per feature, in the metric's coordinates
        (r = rank of the metric factor S, or d for a diagonal metric). float64
        as sampled; a copy on the device in the block dtype is fine too.
    phase : array (D,)
        Phases b ~ U[0, 2 pi).
    kernel_name : str
        The kernel whose spectral density ``omega`` was drawn from.
    """

    omega: Any
    phase: Any
    kernel_name: str

    @property
    def n_components(self) -> int:
        return int(self.omega.shape[1])


@dataclasses.dataclass(frozen=True)
class GramSums:
    """Partial sums of the normal equations over one or more blocks (float64, host).

    Adds with ``+`` (the engine's reduction) and unpacks as ``gram, rhs = sums``.

    Attributes
    ----------
    gram : ndarray (D, D)
        Phi^T Phi.
    rhs : ndarray (D, c) or (D,)
        Phi^T Y.
    """

    gram: np.ndarray
    rhs: np.ndarray

    def __add__(self, other: "GramSums") -> "GramSums":
        return GramSums(self.gram + other.gram, self.rhs + other.rhs)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.gram, self.rhs))


def sample_rff(kernel: Kernel, n_components: int, rank: int, rng: np.random.Generator) -> RFFMap:
    """Draw D frequencies and phases for ``kernel`` in r = ``rank`` dimensions.

    Parameters
    ----------
    kernel : LaplaceKernel or GaussianKernel
        Its bandwidth L sets the frequency scale.
    n_components : int
        Number of features D.
    rank : int
        Dimension r of the mapped rows x~ = S^T x (columns of S, or d when S is
        a diagonal).
    rng : numpy.random.Generator
        The RFF stream of the fit's random state.

    Returns
    -------
    RFFMap

    Notes
    -----
    Spectral densities (Bochner): for ``laplace``, exp(-|u|/L) in r dimensions
    has the multivariate Cauchy density, drawn as w = g / (L |u|) with
    g ~ N(0, I_r), u ~ N(0, 1) (a multivariate t with one degree of freedom);
    for ``gaussian``, w ~ N(0, I_r / L^2).

    Examples
    --------
    >>> import numpy as np
    >>> from bigrfm.numerics.kernels import LaplaceKernel
    >>> m = sample_rff(LaplaceKernel(2.0), 8, 3, np.random.default_rng(0))
    >>> m.omega.shape, m.phase.shape
    ((3, 8), (8,))
    """
    name = getattr(kernel, "name", type(kernel).__name__)
    if not isinstance(kernel, (LaplaceKernel, GaussianKernel)):
        raise InputError(
            f"solver='rff' supports the kernels {list(SUPPORTED)}; got kernel {name!r}. "
            "Choose one of those kernels, or solver='exact' or 'nystrom'."
        )
    if int(n_components) != n_components or n_components < 1:
        raise InputError(f"n_components must be a positive integer. Got {n_components!r} instead.")
    if int(rank) != rank or rank < 1:
        raise InputError(f"rank must be a positive integer. Got {rank!r} instead.")
    D, r, L = int(n_components), int(rank), float(kernel.bandwidth)
    g = rng.standard_normal((r, D))  # (r, D)
    if name == "laplace":
        omega = g / (L * np.abs(rng.standard_normal(D)))  # one Cauchy radius per feature
    else:
        omega = g / L
    phase = rng.uniform(0.0, 2.0 * np.pi, D)  # (D,)
    return RFFMap(omega=omega, phase=phase, kernel_name=name)


def rff_features(Xt: Any, rffmap: RFFMap) -> Any:
    """Features Phi = sqrt(2/D) cos(Xt Omega + b) of mapped rows, shape (b, D), in Xt's dtype.

    Parameters
    ----------
    Xt : array (b, r)
        Rows mapped through the metric factor (:func:`bigrfm.numerics.kernels.apply_metric`).
    rffmap : RFFMap
    """
    xp = array_module(Xt)
    Phi = Xt @ on_device(rffmap.omega, Xt)  # (b, D)
    Phi += on_device(rffmap.phase, Xt)
    xp.cos(Phi, out=Phi)
    Phi *= np.sqrt(2.0 / rffmap.n_components)
    return Phi


def rff_gram_block(X: Any, Y: Any, *, S: Any, rffmap: RFFMap) -> GramSums:
    """Phi^T Phi (D, D) and Phi^T Y (D, c) of one block: the streamed pass of the fit.

    Parameters
    ----------
    X : array (b, d)
        Prepared rows, numpy or cupy.
    Y : array (b, c) or (b,)
        Encoded targets of those rows.
    S : array (d, r) or (d,)
        Metric factor (M = S S^T, :func:`bigrfm.numerics.linalg.metric_factor`).
    rffmap : RFFMap

    Returns
    -------
    GramSums
        float64, on the host.
    """
    xp = array_module(X)
    # the features are computed in the block dtype (cos is the elementwise cost),
    # but the products in float64: the normal equations square Phi's condition
    # number, and float32 rounding of Phi^T Phi would rival a small reg
    Phi = rff_features(apply_metric(X, S), rffmap).astype(REDUCE_DTYPE, copy=False)  # (b, D)
    gram = Phi.T @ Phi  # (D, D)
    rhs = Phi.T @ xp.asarray(Y, dtype=REDUCE_DTYPE)  # (D, c)
    return GramSums(to_numpy(gram), to_numpy(rhs))


def rff_solve(gram: Any, rhs: Any, reg: float) -> np.ndarray:
    """Weights w (D, c) of (Phi^T Phi + reg I) w = Phi^T Y, by a float64 Cholesky factorization.

    The D x D system is small and already reduced to the host, so it is solved
    there with LAPACK whatever the device of the blocks.

    Raises
    ------
    SolverError
        When the system is not numerically positive definite (instead of
        returning NaNs), with the fix: a larger ``reg``.
    """
    A = np.array(to_numpy(gram), dtype=REDUCE_DTYPE)  # a copy: factorized in place below
    A[np.diag_indices_from(A)] += reg
    w = cholesky_solve(A, to_numpy(rhs), what=f"Phi^T Phi + reg*I (D={A.shape[0]}, reg={reg:g})",
                       fix="increase reg (e.g. by 10x) or use fewer random features")
    return w


def rff_predict_block(X: Any, Y: Any = None, *, S: Any, rffmap: RFFMap, w: Any) -> Any:
    """Predictions Phi(X) w for one block of prepared rows, shape (b, c), in X's dtype.

    ``Y`` is ignored: present so every block function has the engine's form.
    """
    return rff_features(apply_metric(X, S), rffmap) @ on_device(w, X)


def _sin_weighted(X: Any, S: Any, rffmap: RFFMap, w: Any) -> tuple[Any, Any, Any]:
    """sin(Xt Omega + b) (b, D), the scaled weights -sqrt(2/D) w (D, c) and Omega (r, D)."""
    xp = array_module(X)
    Xt = apply_metric(X, S)  # (b, r)
    omega = on_device(rffmap.omega, X)
    Sin = Xt @ omega  # (b, D)
    Sin += on_device(rffmap.phase, X)
    xp.sin(Sin, out=Sin)
    ws = on_device(w, X) * -np.sqrt(2.0 / rffmap.n_components)  # (D, c)
    if ws.ndim == 1:
        ws = ws[:, None]
    return Sin, ws, omega


def _to_input_space(H: Any, S: Any) -> Any:
    """g = S h for rows h of H (..., r): H S^T, or H * S for a diagonal metric."""
    return H * S if S.ndim == 1 else H @ S.T


def rff_grad_block(X: Any, Y: Any = None, *, S: Any, rffmap: RFFMap, w: Any) -> Any:
    """Gradients of the predictor at each row, shape (b, c, d), in X's dtype.

    ``grad f_c(x) = -sqrt(2/D) S Omega (sin(Omega^T x~ + b) o w_c)``; for a
    diagonal metric S multiplies elementwise. ``Y`` is ignored.
    """
    xp = array_module(X)
    Sin, ws, omega = _sin_weighted(X, S, rffmap, w)
    S = xp.asarray(S, dtype=X.dtype)
    G = xp.empty((X.shape[0], ws.shape[1], X.shape[1]), dtype=X.dtype)  # (b, c, d)
    # one output at a time keeps the temporaries at (b, D) instead of (b, c, D)
    for k in range(ws.shape[1]):
        G[:, k, :] = _to_input_space((Sin * ws[:, k]) @ omega.T, S)  # (b, r) -> (b, d)
    return G


def rff_agop_block(
    X: Any, Y: Any = None, *, S: Any, rffmap: RFFMap, w: Any, diag: bool = False
) -> AgopSums:
    """AGOP partial sums of the RFF predictor over one block of rows.

    Parameters
    ----------
    X : array (b, d)
        Prepared rows, numpy or cupy.
    Y : ignored
        Present so every block function has the engine's ``(X, Y, **kw)`` form.
    S : array (d, r) or (d,)
        Metric factor.
    rffmap : RFFMap
    w : array (D, c)
        Feature weights.
    diag : bool
        Keep only the diagonal of the gradient sum.

    Returns
    -------
    AgopSums
        ``gram`` = sum over rows and outputs of g g^T (d, d), or its diagonal
        (d,); ``grad_sum`` = sum over rows of g_c (c, d); ``count`` = rows.
        Gradients already include the metric, so the sums are finished with
        ``agop_from_sums(sums, None, ...)``. float64, on the host.

    Notes
    -----
    With h_c = Omega (sin(.) o w_c) in the metric's r coordinates, g_c = S h_c,
    so sum g g^T = S (sum_c H_c^T H_c) S^T: the block reduces r x r products and
    applies S once, in float64.
    """
    xp = array_module(X)
    Sin, ws, omega = _sin_weighted(X, S, rffmap, w)
    S64 = xp.asarray(S, dtype=REDUCE_DTYPE)
    r, c = omega.shape[0], ws.shape[1]
    hh = xp.zeros((r, r), dtype=REDUCE_DTYPE)  # sum_c H_c^T H_c
    hsum = xp.zeros((c, r), dtype=REDUCE_DTYPE)  # sum over rows of H_c
    for k in range(c):
        H = (Sin * ws[:, k]) @ omega.T  # (b, r)
        hh += (H.T @ H).astype(REDUCE_DTYPE, copy=False)
        hsum[k] = H.sum(axis=0, dtype=REDUCE_DTYPE)
    if S64.ndim == 1:  # r = d: g = S o h
        gram = S64 * xp.diagonal(hh) * S64 if diag else S64[:, None] * hh * S64[None, :]
    elif diag:  # diag(S hh S^T) without the d x d product
        gram = xp.einsum("ir,ir->i", S64 @ hh, S64)
    else:
        gram = S64 @ hh @ S64.T  # (d, d)
    grad_sum = _to_input_space(hsum, S64)  # (c, d)
    return AgopSums(to_numpy(gram), to_numpy(grad_sum), int(X.shape[0]))
