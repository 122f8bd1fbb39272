"""What a fitted RFM learned: its features ranked by the metric M, M's main directions, a heatmap.

Reads a fitted estimator's ``M_`` only; no data, no fitting, no printing.

The learned metric M (the average gradient outer product of the predictor)
says which input directions move the predictions: diag(M)_i is the mean
squared derivative along feature i, and the top eigenvectors of M are the
combinations of features the model relies on most. :func:`feature_report`
returns both as plain data (JSON-ready); :func:`plot_metric` draws M.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .exceptions import InputError
from .io.atomic import atomic_file

__all__ = ["feature_report", "plot_metric"]

_MAX_EIGEN = 5
_MAX_LOADINGS = 5
_MAX_NAMED_TICKS = 40


def _names(est: Any, d: int) -> list[str]:
    """Names of M's d columns: the features', then ``missing(name)`` for each indicator column."""
    names = getattr(est, "feature_names_in_", None)
    indicators = getattr(est, "indicator_features_", None)
    n_in = d - (0 if indicators is None else len(indicators))
    base = [str(n) for n in names] if names is not None else [f"x{i}" for i in range(n_in)]
    return base + ([] if indicators is None else [f"missing({base[j]})" for j in indicators])


def _check_count(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be an integer >= 1{' or None' if allow_none else ''}; got {value!r}.")


def _eigen(M: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of M, eigenvalues descending, each vector's largest entry positive.

    A diagonal metric (1-D ``M``) has the coordinate axes as eigenvectors.
    """
    if M.ndim == 1:
        order = np.argsort(-M, kind="stable")[:k]
        vecs = np.zeros((M.size, order.size))  # d x k
        vecs[order, np.arange(order.size)] = 1.0
        return M[order], vecs
    lam, V = np.linalg.eigh((M + M.T) / 2)  # ascending
    lam, V = lam[::-1][:k], V[:, ::-1][:, :k]
    # eigenvectors are defined up to sign: fix it so that reports are reproducible
    pivot = V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])]
    return lam, V * np.where(pivot < 0, -1.0, 1.0)


def feature_report(est: Any, top: int | None = 20, *, n_eigen: int = _MAX_EIGEN, n_loadings: int = _MAX_LOADINGS) -> dict:
    """Features ranked by diag(M) and the top eigenvectors of M, as JSON-ready data.

    Parameters
    ----------
    est : fitted RFMRegressor or RFMClassifier
        Any object with ``M_`` (d x d, or length d for ``diag=True``); names come
        from ``feature_names_in_`` when present, else ``x0 .. x{d-1}``.
    top : int or None, default=20
        How many ranked features to list (None: all).
    n_eigen : int, default=5
        How many eigenvectors of M to describe (at most d).
    n_loadings : int, default=5
        Features listed per eigenvector, by largest absolute loading (exact
        zeros are left out).

    Returns
    -------
    dict
        ``model``, ``best_iter``, ``n_features``, ``metric`` ("full" or
        ``"diagonal"``), ``trace``; ``features``: one dict per ranked feature
        with ``rank``, ``name``, ``index``, ``importance`` (diag(M)_i / trace,
        i.e. ``feature_importances_``) and ``diag`` (raw diag(M)_i);
        ``eigenvectors``: one dict per direction with ``rank``, ``eigenvalue``,
        ``fraction`` (eigenvalue / trace) and ``loadings`` (``name``, ``index``,
        signed ``value`` of the unit eigenvector).

    Notes
    -----
    M is symmetric positive semi-definite, so M = sum_k lambda_k v_k v_k^T;
    with ``n_eigen=n_loadings=d`` the loadings reconstruct M exactly.
    Eigenvector signs are fixed so that each vector's largest entry is positive.

    Examples
    --------
    >>> import numpy as np
    >>> from bigrfm import RFMRegressor
    >>> from bigrfm.report import feature_report
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4)); y = X[:, 0] * X[:, 1]
    >>> rep = feature_report(RFMRegressor(iters=2, random_state=0).fit(X, y), top=2)
    >>> sorted(f["name"] for f in rep["features"])
    ['x0', 'x1']
    """
    check_is_fitted(est, "M_")
    _check_count("top", top)
    _check_count("n_eigen", n_eigen, allow_none=False)
    _check_count("n_loadings", n_loadings, allow_none=False)
    M = np.asarray(est.M_, dtype=np.float64)
    d = M.shape[0]
    names = _names(est, d)
    diag = M if M.ndim == 1 else np.diag(M)
    importance = np.asarray(est.feature_importances_, dtype=np.float64)
    order = np.argsort(-diag, kind="stable")[: d if top is None else top]
    trace = float(diag.sum())
    features = [
        {"rank": r + 1, "name": names[i], "index": int(i), "importance": float(importance[i]), "diag": float(diag[i])}
        for r, i in enumerate(order)
    ]
    lam, V = _eigen(M, min(n_eigen, d))
    eigenvectors = []
    for k in range(lam.size):
        v = V[:, k]
        main = [i for i in np.argsort(-np.abs(v), kind="stable")[:n_loadings] if v[i] != 0]
        eigenvectors.append({
            "rank": k + 1,
            "eigenvalue": float(lam[k]),
            "fraction": float(lam[k] / trace) if trace > 0 else 0.0,
            "loadings": [{"name": names[i], "index": int(i), "value": float(v[i])} for i in main],
        })
    return {
        "model": type(est).__name__,
        "best_iter": getattr(est, "best_iter_", None),
        "n_features": d,
        "metric": "diagonal" if M.ndim == 1 else "full",
        "trace": trace,
        "features": features,
        "eigenvectors": eigenvectors,
    }


def plot_metric(est: Any, path: str | os.PathLike, top: int | None = None) -> Path:
    """Write a heatmap of the learned metric M to the PNG file ``path``.

    Parameters
    ----------
    est : fitted RFMRegressor or RFMClassifier
    path : str or PathLike
        Output image; the format follows the suffix (PNG recommended).
    top : int or None, default=None
        Show only the ``top`` features ranked by diag(M), in rank order
        (None: all features in their original order).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        matplotlib is not installed (``pip install 'bigrfm[plot]'``).

    Notes
    -----
    Drawn with matplotlib's Agg canvas directly, so no GUI backend is touched
    and pyplot's global state is left alone. Axes carry the feature names when
    at most 40 features are shown, else a named tick every k features.
    The colour scale is symmetric around 0 (M has negative off-diagonal entries).
    """
    check_is_fitted(est, "M_")
    _check_count("top", top)
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional dependency, imported first so a missing one is caught here
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        raise InputError("matplotlib is needed for --plot: pip install 'bigrfm[plot]'") from None

    M = np.asarray(est.M_, dtype=np.float64)
    M = np.diag(M) if M.ndim == 1 else M
    d = M.shape[0]
    names = _names(est, d)
    idx = np.arange(d) if top is None else np.argsort(-np.diag(M), kind="stable")[:top]
    shown = M[np.ix_(idx, idx)]  # s x s
    labels = [names[i] for i in idx]
    s = idx.size

    side = min(12.0, max(5.0, 0.22 * s + 3.0)) if s <= _MAX_NAMED_TICKS else 9.0
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    vmax = float(np.abs(shown).max()) or 1.0
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="M entry")
    step = 1 if s <= _MAX_NAMED_TICKS else int(np.ceil(s / 20))
    ticks = np.arange(0, s, step)
    ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=90, fontsize=8 if s <= 20 else 7)
    ax.set_yticks(ticks, [labels[t] for t in ticks], fontsize=8 if s <= 20 else 7)
    what = "all features" if top is None else f"top {s} features by diag(M)"
    best = getattr(est, "best_iter_", None)
    ax.set_title(f"Learned metric M of {type(est).__name__}, iteration {best} ({what})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    return path
