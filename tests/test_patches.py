"""PatchFeatures: the blocked / Dask transform against a per-image reference, fit, errors, pipeline use."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from bigrfm import PatchFeatures, RFMClassifier
from bigrfm.exceptions import InputError
from bigrfm.features.patches import kmeans


def reference_features(pf: PatchFeatures, X: np.ndarray) -> np.ndarray:
    """The module docstring's four steps, one image and one patch position at a time, in float64."""
    H, W = pf.image_shape[:2]
    C = pf.image_shape[2] if len(pf.image_shape) == 3 else 1
    P, s, pool, K = pf.patch_size, pf.stride, pf.pool, pf.n_filters
    out = []
    for x in X.astype(np.float64):
        win = sliding_window_view(x.reshape(H, W, C), (P, P), axis=(0, 1))[::s, ::s]  # h, w, C, P, P
        h, w = win.shape[:2]
        act = np.empty((h, w, K))
        for r in range(h):
            for c in range(w):
                p = win[r, c].transpose(1, 2, 0).ravel()  # (i, j, channel) order
                p = (p - p.mean()) / np.sqrt(p.var() + pf.contrast_reg)
                z = (p - pf.patch_mean_) @ pf.whiten_
                dist = np.linalg.norm(z - pf.filters_, axis=1)
                act[r, c] = np.maximum(dist.mean() - dist, 0)
        er, ec = np.linspace(0, h, pool + 1).astype(int), np.linspace(0, w, pool + 1).astype(int)
        out.append(np.concatenate([act[er[i]:er[i + 1], ec[j]:ec[j + 1]].mean(axis=(0, 1))
                                   for i in range(pool) for j in range(pool)]))
    return np.asarray(out)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.mark.parametrize(
    "shape,kw",
    [((8, 8), dict(patch_size=3, n_filters=6, pool=2)),
     ((8, 8), dict(patch_size=4, n_filters=5, pool=3, stride=2)),
     ((6, 7, 2), dict(patch_size=3, n_filters=4, pool=2))],
)
def test_transform_matches_per_image_reference(shape: tuple, kw: dict) -> None:
    rng = np.random.default_rng(0)
    X = rng.random((60, int(np.prod(shape))))
    pf = PatchFeatures(shape, n_fit_images=40, patches_per_image=10, random_state=0, dtype="float64", block_rows=7, **kw)
    F = pf.fit(X).transform(X[:9])
    assert F.shape == (9, pf.n_filters * pf.pool**2) == (9, pf.n_features_out_)
    np.testing.assert_allclose(F, reference_features(pf, X[:9]), rtol=1e-9, atol=1e-9)
    assert (F >= 0).all() and (F > 0).any()


def test_dask_transform_is_lazy_and_matches_numpy(digits: tuple) -> None:
    X, _ = digits
    pf = PatchFeatures((8, 8), patch_size=3, n_filters=8, pool=2, n_fit_images=300, random_state=1).fit(X)
    Xd = da.from_array(X[:500], chunks=(120, 40))  # column chunks too: transform rechunks them
    Fd = pf.transform(Xd)
    assert isinstance(Fd, da.Array) and Fd.chunks[0] == Xd.chunks[0] and Fd.dtype == np.float32
    np.testing.assert_allclose(Fd.compute(), pf.transform(X[:500]), rtol=1e-6, atol=1e-6)


def test_fit_is_seeded_and_reads_dask_input(digits: tuple) -> None:
    X, _ = digits
    kw = dict(image_shape=(8, 8), patch_size=3, n_filters=8, pool=2, n_fit_images=200)
    a = PatchFeatures(**kw, random_state=3).fit(X)
    b = PatchFeatures(**kw, random_state=3).fit(da.from_array(X, chunks=(256, 64)))
    c = PatchFeatures(**kw, random_state=4).fit(X)
    np.testing.assert_array_equal(a.filters_, b.filters_)
    np.testing.assert_array_equal(a.whiten_, b.whiten_)
    assert not np.allclose(a.filters_, c.filters_)
    # ZCA: the whitened sample patches have (close to) unit covariance away from the regularizer
    assert a.whiten_.shape == (9, 9) and np.allclose(a.whiten_, a.whiten_.T)


def test_kmeans_finds_separated_blobs_and_keeps_every_filter() -> None:
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = np.concatenate([m + 0.1 * rng.standard_normal((200, 2)) for m in means])
    cent = kmeans(z, 3, 20, np.random.default_rng(5))
    got = cent[np.argsort(cent[:, 0] + 2 * cent[:, 1])]
    np.testing.assert_allclose(got, means, atol=0.05)
    # more filters than distinct points: empty clusters are re-seeded, nothing becomes NaN
    dup = np.repeat(means, 50, axis=0)
    assert np.isfinite(kmeans(dup, 5, 5, np.random.default_rng(0))).all()


def test_pipeline_with_rfm_classifier(digits: tuple) -> None:
    X, y = digits
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    pipe = make_pipeline(
        PatchFeatures((8, 8), patch_size=3, n_filters=16, pool=2, n_fit_images=500, random_state=0),
        RFMClassifier(iters=1, bandwidth=20.0, random_state=0),
    )
    acc = pipe.fit(X_tr, y_tr).score(X_te, y_te)
    assert acc > 0.95
    pf = pipe[0]
    names = pf.get_feature_names_out()
    assert len(names) == 64 and names[0] == "patch0_r0c0" and names[-1] == "patch15_r1c1"
    assert clone(pf).get_params() == pf.get_params()


@pytest.mark.parametrize(
    "kw,fit_X,match",
    [
        (dict(image_shape=(8, 8)), np.zeros((10, 63)), r"63 columns but image_shape=\(8, 8\) needs 64"),
        (dict(image_shape=(8, 8), patch_size=9), np.zeros((10, 64)), "patch_size=9 is larger than the image"),
        (dict(image_shape=(8, 8), patch_size=5, pool=5), np.zeros((10, 64)), "pool=5 asks for more regions"),
        (dict(image_shape=(8,)), np.zeros((10, 8)), "image_shape must be"),
        (dict(image_shape=(8, 8), n_filters=50, n_fit_images=2, patches_per_image=3), np.random.rand(10, 64),
         "6 sample patches are fewer than n_filters=50"),
    ],
)
def test_bad_parameters_give_one_clear_error(kw: dict, fit_X: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        PatchFeatures(patch_size=kw.pop("patch_size", 3), **kw).fit(fit_X)


def test_non_finite_rows_are_named(digits: tuple) -> None:
    X, _ = digits
    pf = PatchFeatures((8, 8), patch_size=3, n_filters=4, pool=2, n_fit_images=100, random_state=0).fit(X)
    bad = X[:300].copy()
    bad[257, 5] = np.nan
    with pytest.raises(InputError, match=r"row\(s\) 257 of X hold NaN"):
        pf.transform(bad)
    with pytest.raises(InputError, match=r"row\(s\) 257 of X hold NaN"):
        pf.transform(da.from_array(bad, chunks=(100, 64))).compute()
    with pytest.raises(InputError, match="hold NaN or inf"):
        PatchFeatures((8, 8), patch_size=3, n_filters=4, n_fit_images=300, random_state=0).fit(bad)
    with pytest.raises(InputError, match="63 columns"):
        pf.transform(X[:, :63])


def test_save_load_round_trip_and_bad_folders(digits: tuple, tmp_path) -> None:
    X, _ = digits
    pf = PatchFeatures((8, 8), patch_size=3, n_filters=8, pool=2, n_fit_images=200, random_state=0).fit(X)
    pf.save(tmp_path / "pf")
    back = PatchFeatures.load(tmp_path / "pf")
    assert back.get_params() == {**pf.get_params(), "image_shape": (8, 8)}
    for name in ("patch_mean_", "whiten_", "filters_"):  # JSON keeps float64 exactly
        np.testing.assert_array_equal(getattr(back, name), getattr(pf, name))
    np.testing.assert_array_equal(back.transform(X[:50]), pf.transform(X[:50]))
    with pytest.raises(InputError, match="already exists"):
        pf.save(tmp_path / "pf")
    from bigrfm.exceptions import ModelFormatError

    with pytest.raises(ModelFormatError, match="holds no PatchFeatures"):
        PatchFeatures.load(tmp_path)
    meta = tmp_path / "pf" / "patch_features.json"
    meta.write_text(meta.read_text().replace('"n_filters": 8', '"n_filters": 9'))
    with pytest.raises(ModelFormatError, match="do not match the parameters"):
        PatchFeatures.load(tmp_path / "pf")
    meta.write_text('{"format": "something-else", "format_version": 1}')
    with pytest.raises(ModelFormatError, match="is not 'bigrfm-patch-features' version 1"):
        PatchFeatures.load(tmp_path / "pf")


def test_transform_dataset_streams_a_zarr_store(digits: tuple, tmp_path) -> None:
    from bigrfm.io.convert import create_dataset
    from bigrfm.io.zarr_store import open_dataset
    from bigrfm.features.patches import transform_dataset

    X, y = digits
    with create_dataset(tmp_path / "img.zarr", 64, dtype="float32", chunk_rows=100) as w:
        w.append(X[:1500], y[:1500])
        w.append(X[1500:], y[1500:], validation=True)
    pf = PatchFeatures((8, 8), patch_size=3, n_filters=8, pool=2, n_fit_images=300, random_state=0).fit(X[:1500])
    seen = []
    out = transform_dataset(pf, tmp_path / "img.zarr", tmp_path / "f.zarr", block_rows=256,
                            progress=lambda done, total: seen.append((done, total)))
    assert out.n_rows == 1500 and out.n_features == 32 and out.feature_names[0] == "patch0_r0c0"
    F, yy = out.read(0, 1500)
    np.testing.assert_allclose(F, pf.transform(X[:1500].astype(np.float32)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(yy, y[:1500])
    Fv, yv = out.validation().read(0, 297)
    np.testing.assert_allclose(Fv, pf.transform(X[1500:].astype(np.float32)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(yv, y[1500:])
    assert seen[-1] == (1797, 1797) and len(seen) == 6 + 2  # 256-row blocks: 6 of the 1,500, 2 of the 297
    # the transformer travels with the dataset
    back = PatchFeatures.load(tmp_path / "f.zarr")
    np.testing.assert_array_equal(back.filters_, pf.filters_)
    # a store of the wrong width: one clear error, nothing written
    with create_dataset(tmp_path / "wide.zarr", 65, dtype="float32") as w:
        w.append(np.zeros((10, 65)), np.zeros(10))
    with pytest.raises(InputError, match="has 65 columns but the transformer's image_shape=\\(8, 8\\) needs 64"):
        transform_dataset(pf, tmp_path / "wide.zarr", tmp_path / "g.zarr")
    assert not (tmp_path / "g.zarr").exists()
    assert open_dataset(str(tmp_path / "f.zarr")).n_rows == 1500
    # a NaN deep in the store: named by its row in the split, nothing written
    import zarr

    zarr.open_group(str(tmp_path / "img.zarr"), mode="r+")["X"][1234, 7] = np.nan
    from bigrfm.io.zarr_store import _OPEN_ARRAYS

    _OPEN_ARRAYS.clear()
    with pytest.raises(InputError, match=r"img.zarr \(training split\): .*row\(s\) 1234 of X hold NaN"):
        transform_dataset(pf, tmp_path / "img.zarr", tmp_path / "h.zarr", block_rows=256)
    assert not (tmp_path / "h.zarr").exists()
