"""Convolutional patch features for images: :class:`PatchFeatures` and :func:`transform_dataset`.

A scikit-learn transformer that sits in front of an RFM; it knows nothing of
the RFM, and reaches Zarr stores only through :mod:`bigrfm.io`.

A radial kernel on raw pixels compares images position by position; it does not
know that a sleeve two pixels to the left is still a sleeve. The single-layer
network of Coates, Lee & Ng (AISTATS 2011) gives a kernel machine that
knowledge cheaply, and it is what moves bigrfm on Fashion-MNIST from 0.863 to
0.902 validation accuracy on 5,000 training rows (benchmarks/RESULTS.md):

1. every ``patch_size`` x ``patch_size`` patch of an image (all channels) is
   contrast-normalized, ``p <- (p - mean(p)) / sqrt(var(p) + contrast_reg)``;
2. ZCA-whitened with statistics of a bounded sample of training patches,
   ``z = (p - mu) W`` with ``W = V diag(1 / sqrt(e + whiten_reg)) V^T``;
3. compared with ``n_filters`` k-means centroids c_k of whitened sample
   patches through the "triangle" activation
   ``f_k = max(0, mean_j ||z - c_j|| - ||z - c_k||)``;
4. averaged over a ``pool`` x ``pool`` grid of image regions.

An image becomes ``n_filters * pool**2`` features (feature ``(i * pool + j) *
n_filters + k`` is filter k averaged over region row i, column j). The map is
row-wise, so :meth:`PatchFeatures.transform` streams: numpy input is processed
in blocks of rows, a Dask array lazily chunk by chunk (``map_blocks``), and
CuPy blocks stay on the GPU. :meth:`PatchFeatures.fit` reads only
``n_fit_images`` sampled rows, whatever the size of X.
"""

from __future__ import annotations

import json
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..exceptions import InputError, ModelFormatError
from ..io.atomic import atomic_folder
from ..numerics.backend import array_module, on_device, to_numpy

__all__ = ["PatchFeatures", "transform_dataset", "kmeans"]

FEATURES_FORMAT = "bigrfm-patch-features"
#: Bytes of patch and distance temporaries per block when ``block_rows`` is None.
BLOCK_BYTES = 64 * 2**20


def _is_dask(X: Any) -> bool:
    return type(X).__module__.startswith("dask.")


class PatchFeatures(TransformerMixin, BaseEstimator):
    """Single-layer convolutional features (k-means filters, triangle activation, average pooling).

    Use it in front of an RFM on image data, in a scikit-learn pipeline::

        make_pipeline(PatchFeatures(image_shape=(28, 28)), RFMClassifier(bandwidth=160))

    Parameters
    ----------
    image_shape : tuple of int
        ``(height, width)`` or ``(height, width, channels)``; each row of X is
        one image flattened in C order (row by row, channels last).
    patch_size : int >= 1, default=5
        Side of the square patches.
    n_filters : int >= 1, default=64
        Number of k-means centroids (filters).
    pool : int >= 1, default=4
        The image is split into ``pool`` x ``pool`` regions whose activations are averaged.
    stride : int >= 1, default=1
        Step between patch positions.
    n_fit_images : int >= 1, default=5000
        Rows sampled (seeded, without replacement) to learn the whitening and the filters.
    patches_per_image : int >= 1, default=40
        Patch positions drawn from each sampled image.
    kmeans_iters : int >= 1, default=10
        Lloyd iterations.
    contrast_reg : float > 0, default=0.01
        Added to each patch's variance before dividing by its square root (in
        squared input units: 0.01 suits pixels scaled to [0, 1]).
    whiten_reg : float > 0, default=0.1
        Added to the eigenvalues of the patch covariance before whitening.
    random_state : int, RandomState instance or None, default=None
        Seeds the row sample, the patch positions and the k-means initialization.
    block_rows : int or None, default=None
        Images per block in :meth:`transform` on numpy input (None: about 64 MiB
        of temporaries per block). Dask input keeps its own chunks.
    dtype : {"float32", "float64"}, default="float32"
        dtype of the transform's arithmetic and output.

    Attributes
    ----------
    patch_mean_ : ndarray of shape (patch_dim,)
        Mean of the contrast-normalized sample patches.
    whiten_ : ndarray of shape (patch_dim, patch_dim)
        ZCA whitening matrix W.
    filters_ : ndarray of shape (n_filters, patch_dim)
        k-means centroids in whitened space.
    n_features_in_ : int
    n_features_out_ : int
        ``n_filters * pool ** 2``.
    """

    _parameter_constraints: dict = {
        "image_shape": [tuple, list],
        "patch_size": [Interval(Integral, 1, None, closed="left")],
        "n_filters": [Interval(Integral, 1, None, closed="left")],
        "pool": [Interval(Integral, 1, None, closed="left")],
        "stride": [Interval(Integral, 1, None, closed="left")],
        "n_fit_images": [Interval(Integral, 1, None, closed="left")],
        "patches_per_image": [Interval(Integral, 1, None, closed="left")],
        "kmeans_iters": [Interval(Integral, 1, None, closed="left")],
        "contrast_reg": [Interval(Real, 0, None, closed="neither")],
        "whiten_reg": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "block_rows": [None, Interval(Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"})],
    }

    def __init__(
        self,
        image_shape: tuple[int, ...] = (28, 28),
        patch_size: int = 5,
        n_filters: int = 64,
        pool: int = 4,
        stride: int = 1,
        n_fit_images: int = 5000,
        patches_per_image: int = 40,
        kmeans_iters: int = 10,
        contrast_reg: float = 0.01,
        whiten_reg: float = 0.1,
        random_state: Any = None,
        block_rows: int | None = None,
        dtype: str = "float32",
    ) -> None:
        self.image_shape = image_shape
        self.patch_size = patch_size
        self.n_filters = n_filters
        self.pool = pool
        self.stride = stride
        self.n_fit_images = n_fit_images
        self.patches_per_image = patches_per_image
        self.kmeans_iters = kmeans_iters
        self.contrast_reg = contrast_reg
        self.whiten_reg = whiten_reg
        self.random_state = random_state
        self.block_rows = block_rows
        self.dtype = dtype

    # -- geometry ------------------------------------------------------------------------
    def _geometry(self) -> tuple[int, int, int, int, int]:
        """(H, W, C, positions down, positions across), checked against the parameters."""
        shape = tuple(self.image_shape)
        if len(shape) not in (2, 3) or not all(isinstance(s, Integral) and s >= 1 for s in shape):
            raise InputError(
                f"image_shape must be (height, width) or (height, width, channels) of positive ints; got {self.image_shape!r}."
            )
        H, W = int(shape[0]), int(shape[1])
        C = int(shape[2]) if len(shape) == 3 else 1
        P, s = int(self.patch_size), int(self.stride)
        if P > min(H, W):
            raise InputError(f"patch_size={P} is larger than the image ({H} x {W}); use patch_size <= {min(H, W)}.")
        h, w = (H - P) // s + 1, (W - P) // s + 1
        if self.pool > min(h, w):
            raise InputError(
                f"pool={self.pool} asks for more regions than there are patch positions ({h} x {w}); "
                f"use pool <= {min(h, w)}."
            )
        return H, W, C, h, w

    def check_width(self, X: Any, where: str) -> None:
        """Raise InputError (naming ``where``) unless X is 2-D with one flattened image of ``image_shape`` per row."""
        H, W, C, _, _ = self._geometry()
        if X.ndim != 2:
            raise InputError(f"{where}: X must be 2-D (one flattened image per row); got {X.ndim} dimensions.")
        if X.shape[1] != H * W * C:
            raise InputError(
                f"{where}: X has {X.shape[1]} columns but image_shape={tuple(self.image_shape)} needs "
                f"{H * W * C}; pass the shape the rows were flattened from."
            )

    def _patches(self, B: Any) -> Any:
        """All patches of a block of images: (rows, h * w, P * P * C), in the block's array module."""
        xp = array_module(B)
        H, W, C, h, w = self._geometry()
        P, s = int(self.patch_size), int(self.stride)
        img = B.reshape(B.shape[0], H, W, C)
        # P*P shifted strided views instead of sliding_window_view: same order on numpy and cupy
        views = [img[:, i : i + s * (h - 1) + 1 : s, j : j + s * (w - 1) + 1 : s, :] for i in range(P) for j in range(P)]
        return xp.stack(views, axis=3).reshape(B.shape[0], h * w, P * P * C)

    def _normalize(self, p: Any) -> Any:
        xp = array_module(p)
        p = p - p.mean(axis=-1, keepdims=True)
        return p / xp.sqrt(p.var(axis=-1, keepdims=True) + p.dtype.type(self.contrast_reg))

    # -- fit -----------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> "PatchFeatures":
        """Learn the whitening and the filters from ``n_fit_images`` sampled rows of X.

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, height * width * channels)
        y : ignored

        Returns
        -------
        self
        """
        if not hasattr(X, "shape") or not hasattr(X, "ndim"):
            X = np.asarray(X)
        self.check_width(X, "PatchFeatures.fit")
        n = int(X.shape[0])
        if n < 1:
            raise InputError("PatchFeatures.fit: X has no rows.")
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        idx = np.sort(rng.choice(n, size=min(n, int(self.n_fit_images)), replace=False))
        sample = X.oindex[idx] if hasattr(X, "oindex") else X[idx]  # a zarr array reads only those rows' chunks
        sample = np.asarray(sample.compute() if _is_dask(sample) else to_numpy(sample), dtype=np.float64)
        bad = ~np.isfinite(sample).all(axis=1)
        if bad.any():
            raise InputError(
                f"PatchFeatures.fit: sampled row(s) {', '.join(map(str, idx[bad][:10]))} of X hold NaN or inf; "
                "impute or drop them first."
            )
        patches = self._patches(sample)  # (n_s, h*w, D)
        n_s, n_pos, D = patches.shape
        take = rng.integers(0, n_pos, size=(n_s, int(self.patches_per_image)))
        z = self._normalize(np.take_along_axis(patches, take[:, :, None], axis=1).reshape(-1, D))
        mu = z.mean(axis=0)
        cov = np.cov(z - mu, rowvar=False).reshape(D, D)
        evals, evecs = np.linalg.eigh(cov)
        whiten = (evecs / np.sqrt(np.maximum(evals, 0.0) + self.whiten_reg)) @ evecs.T
        z = (z - mu) @ whiten
        self.patch_mean_ = mu
        self.whiten_ = whiten
        self.filters_ = kmeans(z, int(self.n_filters), int(self.kmeans_iters), rng)
        self.n_features_in_ = int(X.shape[1])
        return self

    @property
    def n_features_out_(self) -> int:
        """``n_filters * pool ** 2`` (fitted transformers only)."""
        check_is_fitted(self, "filters_")
        return int(self.n_filters) * int(self.pool) ** 2

    # -- transform -----------------------------------------------------------------------
    def _transform_block(self, B: Any) -> Any:
        """Features of one block of images (numpy or cupy in, same module out, ``dtype``)."""
        xp = array_module(B)
        B = B.astype(self.dtype, copy=False)
        _, _, _, h, w = self._geometry()
        K, pool = int(self.n_filters), int(self.pool)
        mu, whiten, filters = (on_device(a, B) for a in (self.patch_mean_, self.whiten_, self.filters_))
        rows = B.shape[0]
        z = (self._normalize(self._patches(B).reshape(rows * h * w, -1)) - mu) @ whiten
        d2 = (z * z).sum(axis=1, keepdims=True) - 2 * (z @ filters.T) + (filters * filters).sum(axis=1)
        dist = xp.sqrt(xp.maximum(d2, 0))
        act = xp.maximum(dist.mean(axis=1, keepdims=True) - dist, 0).reshape(rows, h, w, K)
        er, ec = np.linspace(0, h, pool + 1).astype(int), np.linspace(0, w, pool + 1).astype(int)
        out = [act[:, er[i] : er[i + 1], ec[j] : ec[j + 1]].mean(axis=(1, 2)) for i in range(pool) for j in range(pool)]
        return xp.concatenate(out, axis=1)

    def _block_rows(self) -> int:
        if self.block_rows is not None:
            return int(self.block_rows)
        _, _, C, h, w = self._geometry()
        per_image = h * w * (int(self.patch_size) ** 2 * C * 3 + int(self.n_filters) * 3) * np.dtype(self.dtype).itemsize
        return max(1, BLOCK_BYTES // per_image)

    def transform(self, X: Any) -> Any:
        """Patch features of every row of X.

        Parameters
        ----------
        X : array-like, cupy array or dask array of shape (n_samples, height * width * channels)

        Returns
        -------
        ndarray, cupy array or dask array of shape (n_samples, n_features_out_)
            Same kind as X (array-likes become numpy); a dask array is returned
            lazily, one output chunk per row chunk of X.
        """
        check_is_fitted(self, "filters_")
        if not hasattr(X, "shape") or not hasattr(X, "ndim"):
            X = np.asarray(X)
        self.check_width(X, "PatchFeatures.transform")
        if _is_dask(X):
            if X.numblocks[1] != 1:
                X = X.rechunk({1: -1})
            return X.map_blocks(
                self._dask_block, dtype=np.dtype(self.dtype), chunks=(X.chunks[0], (self.n_features_out_,))
            )
        xp = array_module(X)
        X = X if xp is not np else np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise InputError(f"PatchFeatures.transform: X must be numeric; got dtype {X.dtype}.")
        step = self._block_rows()
        out = xp.empty((X.shape[0], self.n_features_out_), dtype=self.dtype)
        for s in range(0, X.shape[0], step):
            out[s : s + step] = self._checked_block(X[s : s + step], s)
        return out

    def _checked_block(self, B: Any, offset: int) -> Any:
        """:meth:`_transform_block` of a block that starts at row ``offset`` of X, after naming
        its non-finite rows (by their row in X) if it has any."""
        self._check_finite(B, offset)
        return self._transform_block(B)

    def _dask_block(self, B: Any, block_info: dict | None = None) -> Any:
        return self._checked_block(B, 0 if not block_info else int(block_info[0]["array-location"][0][0]))

    @staticmethod
    def _check_finite(B: Any, offset: int) -> None:
        xp = array_module(B)
        if B.dtype.kind == "f" and not bool(xp.isfinite(B).all()):
            rows = to_numpy(xp.flatnonzero(~xp.isfinite(B).all(axis=1)))[:10] + offset
            raise InputError(
                f"PatchFeatures.transform: row(s) {', '.join(map(str, rows))} of X hold NaN or inf; impute or drop them first."
            )

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fitted transformer as JSON-ready data (parameters and arrays as nested lists; JSON
        writes floats with enough digits to read back the same float64 values)."""
        check_is_fitted(self, "filters_")
        params = {**self.get_params(), "image_shape": [int(v) for v in self.image_shape]}
        if not isinstance(params["random_state"], (Integral, type(None))):
            params["random_state"] = None  # a RandomState object is not data; the fitted arrays are what matter
        return {"format": FEATURES_FORMAT, "format_version": 1, "params": params,
                "patch_mean": self.patch_mean_.tolist(), "whiten": self.whiten_.tolist(), "filters": self.filters_.tolist()}

    @classmethod
    def from_dict(cls, meta: dict, where: str = "the input") -> "PatchFeatures":
        """Inverse of :meth:`to_dict`; ``where`` names the source in errors."""
        if not isinstance(meta, dict) or meta.get("format") != FEATURES_FORMAT or meta.get("format_version") != 1:
            got = (meta.get("format"), meta.get("format_version")) if isinstance(meta, dict) else type(meta).__name__
            raise ModelFormatError(
                f"{where}: {got!r} is not {FEATURES_FORMAT!r} version 1; it was written by another program "
                "or a newer bigrfm."
            )
        try:
            params = {**meta["params"], "image_shape": tuple(meta["params"]["image_shape"])}
            pf = cls(**params)
            arrays = [np.asarray(meta[n], dtype=np.float64) for n in ("patch_mean", "whiten", "filters")]
            H, W, C, _, _ = pf._geometry()
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFormatError(f"{where}: incomplete or malformed PatchFeatures data ({type(e).__name__}: {e}).") from e
        D = int(pf.patch_size) ** 2 * C
        want = [(D,), (D, D), (int(pf.n_filters), D)]
        if [a.shape for a in arrays] != want:
            raise ModelFormatError(
                f"{where}: array shapes {[a.shape for a in arrays]} do not match the parameters (expected {want})."
            )
        pf.patch_mean_, pf.whiten_, pf.filters_ = arrays
        pf.n_features_in_ = H * W * C
        return pf

    def save(self, path: Any, *, overwrite: bool = False) -> Path:
        """Write the fitted transformer to a folder holding ``patch_features.json`` (:meth:`to_dict`);
        atomic, never pickle."""
        meta = self.to_dict()
        with atomic_folder(path, overwrite) as tmp:
            (tmp / "patch_features.json").write_text(json.dumps(meta))
        return Path(path)

    @classmethod
    def load(cls, path: Any) -> "PatchFeatures":
        """Read a folder written by :meth:`save`, or the ``patch_features`` attribute of a Zarr
        dataset written by :func:`transform_dataset` (JSON only; shapes are checked)."""
        import zarr  # noqa: PLC0415

        path = Path(path)
        meta_file = path / "patch_features.json"
        if meta_file.is_file():
            return cls.from_dict(json.loads(meta_file.read_text()), str(meta_file))
        if (path / "zarr.json").is_file():
            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
            if "patch_features" in attrs:
                return cls.from_dict(attrs["patch_features"], f"{path} (attribute patch_features)")
        raise ModelFormatError(
            f"{path} holds no PatchFeatures: neither a folder with patch_features.json nor a dataset "
            "written by `bigrfm patches`."
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``patch{k}_r{i}c{j}``: filter k averaged over pooling region (i, j)."""
        check_is_fitted(self, "filters_")
        pool, K = int(self.pool), int(self.n_filters)
        return np.asarray([f"patch{k}_r{i}c{j}" for i in range(pool) for j in range(pool) for k in range(K)], dtype=object)


def kmeans(z: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """k centroids (k x p) of the rows of z (n x p): Lloyd's k-means from a k-means++ start
    (Arthur & Vassilvitskii 2007); an empty cluster is re-seeded with the point farthest
    from its centroid (so all k filters stay in use)."""
    if len(z) < k:
        raise InputError(
            f"PatchFeatures: {len(z)} sample patches are fewer than n_filters={k}; "
            "raise n_fit_images or patches_per_image, or lower n_filters."
        )
    sq = (z * z).sum(axis=1)
    cent = np.empty((k, z.shape[1]))
    cent[0] = z[rng.integers(len(z))]
    closest = np.maximum(sq - 2 * (z @ cent[0]) + cent[0] @ cent[0], 0)
    for j in range(1, k):
        total = closest.sum()
        # all points already coincide with a center: any row will do
        pick = rng.choice(len(z), p=closest / total) if total > 0 else rng.integers(len(z))
        cent[j] = z[pick]
        closest = np.minimum(closest, np.maximum(sq - 2 * (z @ cent[j]) + cent[j] @ cent[j], 0))
    for _ in range(iters):
        d2 = sq[:, None] - 2 * (z @ cent.T) + (cent * cent).sum(axis=1)
        assign = d2.argmin(axis=1)
        counts = np.bincount(assign, minlength=k)
        sums = np.stack([np.bincount(assign, weights=z[:, j], minlength=k) for j in range(z.shape[1])], axis=1)
        nonempty = counts > 0
        cent[nonempty] = sums[nonempty] / counts[nonempty, None]
        empty = np.flatnonzero(~nonempty)
        if empty.size:
            far = np.argsort(d2[np.arange(len(z)), assign])[::-1][: empty.size]
            cent[empty] = z[far]
    return cent


def transform_dataset(
    pf: PatchFeatures,
    data: Any,
    out: str | Path,
    *,
    x_name: str = "X",
    y_name: str = "y",
    overwrite: bool = False,
    block_rows: int | None = None,
    progress: Any = None,
) -> Any:
    """Stream a Zarr dataset of images through a fitted :class:`PatchFeatures` into a new one.

    Reads ``data`` block by block (its ``X_val``/``y_val`` split too), writes the features
    and the unchanged targets to ``out`` (atomically: ``out`` appears complete or not at
    all), and stores the transformer in the group attribute ``patch_features``, so
    ``PatchFeatures.load(out)`` gives it back to transform new data the same way.

    Parameters
    ----------
    pf : PatchFeatures
        Fitted.
    data : str, path or ZarrDataset
        The image dataset (one flattened image per row of ``x_name``).
    out : str or path
        Output Zarr group.
    x_name, y_name : str
        Array names in ``data`` (``out`` uses the same names).
    overwrite : bool
        Replace an existing Zarr store at ``out``.
    block_rows : int, optional
        Images per block (default: :class:`PatchFeatures`' own block size).
    progress : callable, optional
        Called after each block with ``(rows done, rows in total)``.

    Returns
    -------
    ZarrDataset
        The written feature dataset, opened.
    """
    from ..io.convert import create_dataset  # noqa: PLC0415
    from ..io.datasets import iter_blocks  # noqa: PLC0415
    from ..io.zarr_store import open_dataset  # noqa: PLC0415

    check_is_fitted(pf, "filters_")
    ds = data if hasattr(data, "read") else open_dataset(str(data), x_name=x_name, y_name=y_name)
    H, W, C, _, _ = pf._geometry()
    if ds.n_features != H * W * C:
        raise InputError(
            f"{getattr(ds, 'path', data)}: {x_name!r} has {ds.n_features} columns but the transformer's "
            f"image_shape={tuple(pf.image_shape)} needs {H * W * C}."
        )
    splits = [(ds, False)] + ([(ds.validation(), True)] if ds.validation() is not None else [])
    total, done = sum(s.n_rows for s, _ in splits), 0
    step = int(block_rows or pf._block_rows())
    writer = create_dataset(out, pf.n_features_out_, dtype=pf.dtype, feature_names=list(pf.get_feature_names_out()),
                            overwrite=overwrite, x_name=x_name, y_name=y_name, attrs={"patch_features": pf.to_dict()})
    with writer:
        for split, validation in splits:
            for start, _stop, X, y in iter_blocks(split, step):
                try:
                    F = pf._checked_block(X, start)  # rows numbered within the split, not the block
                except InputError as e:
                    raise InputError(f"{getattr(split, 'path', data)} ({'validation' if validation else 'training'} "
                                     f"split): {e}") from None
                writer.append(F, y, validation=validation)
                done += len(X)
                if progress is not None:
                    progress(done, total)
        return writer.close()
