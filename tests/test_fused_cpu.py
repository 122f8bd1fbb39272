"""The fused CPU passes against naive float64 formulas (ALGORITHM.md 1), and the polynomial exp/log."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys

import numpy as np
import pytest

from bigrfm.numerics import fused_cpu

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="numba missing or fused CPU passes disabled")

KERNELS = [("laplace", 1.0), ("gaussian", 1.0), ("exp_power", 0.5), ("exp_power", 1.0), ("exp_power", 1.5), ("exp_power", 2.0)]
DTYPES = [np.float32, np.float64]


# -- the naive reference ----------------------------------------------------------------


def naive(X, Z, name, L, q):
    """K and W = phi'(r)/r in float64 straight from ALGORITHM.md 1 (W = 0 below 1e-10 L where singular)."""
    X, Z = np.asarray(X, np.float64), np.asarray(Z, np.float64)
    R = np.sqrt(((X[:, None, :] - Z[None, :, :]) ** 2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "laplace":
            K = np.exp(-R / L)
            W = -K / (L * R)
        elif name == "gaussian":
            K = np.exp(-(R**2) / (2 * L**2))
            W = -K / L**2
        else:
            K = np.exp(-((R / L) ** q))
            W = -q * R ** (q - 2) * K / L**q
    if name == "laplace" or (name == "exp_power" and q < 2):
        W[R < 1e-10 * L] = 0.0
    return K, W


def data(b, m, r, dtype, seed=0, dup=True):
    """Rows, centers (some rows duplicate centers: zero distances), v (m, 2), Y (b, 3); bandwidth ~ typical distance."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((b, r)).astype(dtype)
    Z = rng.standard_normal((m, r)).astype(dtype)
    if dup and b and m:
        k = min(b, m, 5)
        X[:k] = Z[:k]  # a point against itself
        X[-1] = Z[-1]
    v = rng.standard_normal((m, 2)).astype(dtype)
    Y = rng.standard_normal((b, 3)).astype(dtype)
    return X, Z, v, Y, float(np.sqrt(2 * r))


def close(got, ref, dtype, r):
    """Error relative to the largest |value|: a few float resolutions, more in the norm form (r > DIRECT_MAX_RANK)."""
    eps = float(np.finfo(dtype).eps)
    tol = (3e3 if r > fused_cpu.DIRECT_MAX_RANK else 1e2) * eps
    scale = max(float(np.abs(ref).max()), np.finfo(np.float64).tiny)
    err = float(np.abs(np.asarray(got, np.float64) - ref).max()) / scale
    assert err <= tol, f"relative error {err:.2e} > {tol:.1e}"


@pytest.fixture(params=["default", "small-tiles"])
def tiles(request, monkeypatch):
    """Default tile shapes, and tiny ones so that every tile, chunk and odd-row boundary is crossed."""
    if request.param == "small-tiles":
        monkeypatch.setattr(fused_cpu, "TILE_BYTES", 1)
        monkeypatch.setattr(fused_cpu, "GEMM_TILE_BYTES", 1)
        monkeypatch.setattr(fused_cpu, "CHUNK_CENTERS", 16)
    return request.param


# -- exp and log ---------------------------------------------------------------------------


def _ulps(got, x, dtype, fn):
    ref = fn(x.astype(np.longdouble))
    return np.abs(got.astype(np.longdouble) - ref) / np.spacing(ref.astype(dtype)).astype(np.longdouble), ref


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps, reason="needs an extended long double")
@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_accuracy(dtype):
    """<= 1 ulp wherever exp(x) is a normal number; 0 (or below the smallest normal) under it."""
    from bigrfm.numerics import fastmath as J  # numba loads here
    tiny = np.finfo(dtype).tiny
    lo = float(np.log(tiny))
    x = np.concatenate([
        -np.logspace(-30, np.log10(-lo * 1.5), 200_000),  # all the magnitudes a kernel argument takes
        np.linspace(1.5 * lo, 0.0, 200_001),
        np.linspace(0.0, -lo * 0.99, 2_001),  # positive arguments (exp_power's inner power)
        [0.0, -0.0, lo, lo * (1 + 1e-7), -1e4, -np.inf],
    ]).astype(dtype)
    got = np.empty_like(x)
    J.exp_array(x, got)
    with np.errstate(over="ignore"):
        ulps, ref = _ulps(got, x, dtype, np.exp)
    normal = ref >= tiny
    assert ulps[normal].max() <= 1.0
    assert np.all(got[~normal] <= tiny) and np.all(got[~normal] >= 0)
    assert got[x == 0][0] == 1.0 and got[x < 1.01 * lo].max() == 0.0


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps, reason="needs an extended long double")
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_accuracy(dtype):
    """Absolute error <= eps max(1, |log x|) over all positive floats, subnormals included; log 0 = -inf."""
    from bigrfm.numerics import fastmath as J  # numba loads here
    fi = np.finfo(dtype)
    x = np.concatenate([np.logspace(np.log10(fi.smallest_subnormal), np.log10(fi.max) - 0.01, 300_000),
                        np.linspace(0.5, 2.0, 10_001)]).astype(dtype)
    x = x[x > 0]
    got = np.empty_like(x)
    J.log_array(x, got)
    ref = np.log(x.astype(np.longdouble))
    err = np.abs(got.astype(np.longdouble) - ref) / np.maximum(1, np.abs(ref))
    assert err.max() <= fi.eps
    z = np.zeros(1, dtype)
    J.log_array(z, z)
    assert z[0] == -np.inf


# -- the three passes ----------------------------------------------------------------------


@pytest.mark.parametrize("r", [1, 9, 64, 784])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,q", KERNELS)
def test_passes_match_naive(name, q, dtype, r, tiles):
    X, Z, v, Y, L = data(37, 45, r, dtype)
    K, W = naive(X, Z, name, L, q)
    kw = dict(kernel=name, bandwidth=L, exponent=q)
    KtKv, KtY = fused_cpu.gram_matvec(X, Z, v, Y, **kw)
    assert KtKv.dtype == KtY.dtype == np.float64 and KtKv.shape == (45, 2) and KtY.shape == (45, 3)
    close(KtKv, K.T @ (K @ v.astype(np.float64)), dtype, r)
    close(KtY, K.T @ Y.astype(np.float64), dtype, r)
    u = fused_cpu.kv(X, Z, v, **kw)
    assert u.dtype == dtype and u.shape == (37, 2)
    close(u, K @ v.astype(np.float64), dtype, r)
    Kf, Wf = fused_cpu.gradient_weights(X, Z, values=True, **kw)
    assert Kf.dtype == Wf.dtype == dtype
    close(Kf, K, dtype, r)
    close(Wf, W, dtype, r)
    close(fused_cpu.gradient_weights(X, Z, **kw), W, dtype, r)


@pytest.mark.parametrize("r", [1, 9, 64])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,q", KERNELS)
def test_zero_distance_rule(name, q, dtype, r):
    """A point against itself: k = 1 exactly and W = 0 (laplace, exp_power q < 2) or -k q / L^q (smooth kernels)."""
    X, Z, _, _, L = data(20, 30, r, dtype)
    K, W = fused_cpu.gradient_weights(X, Z, kernel=name, bandwidth=L, exponent=q, values=True)
    dup = [(i, i) for i in range(5)] + [(19, 29)]
    rows, cols = zip(*dup)
    assert np.all(K[rows, cols] == 1.0)
    smooth = -(1 / L**2 if name == "gaussian" else q / L**q)
    want = smooth if name == "gaussian" or (name == "exp_power" and q == 2) else 0.0
    np.testing.assert_allclose(W[rows, cols], want, rtol=4 * np.finfo(dtype).eps)
    assert np.all(np.isfinite(W))


def test_norm_form_above_direct_rank(monkeypatch):
    """Both distance forms agree at the same rank (the crossover is only a speed choice)."""
    X, Z, v, Y, L = data(33, 50, 20, np.float64)
    direct = fused_cpu.gram_matvec(X, Z, v, Y, kernel="laplace", bandwidth=L)
    monkeypatch.setattr(fused_cpu, "DIRECT_MAX_RANK", 4)
    norm = fused_cpu.gram_matvec(X, Z, v, Y, kernel="laplace", bandwidth=L)
    for a, b in zip(direct, norm):
        close(a, b, np.float64, 64)


@pytest.mark.parametrize("r", [9, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_blocks(dtype, r):
    kw = dict(kernel="laplace", bandwidth=1.0)
    X, Z, v, Y, _ = data(0, 6, r, dtype)
    KtKv, KtY = fused_cpu.gram_matvec(X, Z, v, Y, **kw)
    assert KtKv.shape == (6, 2) and KtY.shape == (6, 3) and not KtKv.any() and not KtY.any()
    assert fused_cpu.kv(X, Z, v, **kw).shape == (0, 2)
    assert fused_cpu.gradient_weights(X, Z, **kw).shape == (0, 6)
    X, Z, v, Y, _ = data(7, 0, r, dtype)
    KtKv, KtY = fused_cpu.gram_matvec(X, Z, v, Y, **kw)
    assert KtKv.shape == (0, 2) and KtY.shape == (0, 3)
    u = fused_cpu.kv(X, Z, v, **kw)
    assert u.shape == (7, 2) and u.dtype == dtype and not u.any()
    K, W = fused_cpu.gradient_weights(X, Z, values=True, **kw)
    assert K.shape == W.shape == (7, 0)


def test_gram_products_optional():
    X, Z, v, Y, L = data(25, 12, 3, np.float64)
    both = fused_cpu.gram_matvec(X, Z, v, Y, kernel="gaussian", bandwidth=L)
    only_v = fused_cpu.gram_matvec(X, Z, v, kernel="gaussian", bandwidth=L)
    only_y = fused_cpu.gram_matvec(X, Z, Y=Y, kernel="gaussian", bandwidth=L)
    assert only_v[1] is None and only_y[0] is None
    np.testing.assert_array_equal(both[0], only_v[0])
    np.testing.assert_array_equal(both[1], only_y[1])
    assert fused_cpu.gram_matvec(X, Z, kernel="gaussian", bandwidth=L) == (None, None)


def test_weights_into_given_buffers():
    X, Z, _, _, L = data(10, 8, 4, np.float32)
    K, W = np.empty((10, 8), np.float32), np.empty((10, 8), np.float32)
    got = fused_cpu.gradient_weights(X, Z, kernel="laplace", bandwidth=L, values=True, out=(K, W))
    assert got[0] is K and got[1] is W
    np.testing.assert_allclose(W, fused_cpu.gradient_weights(X, Z, kernel="laplace", bandwidth=L), rtol=1e-6)
    with pytest.raises(ValueError, match="out W"):
        fused_cpu.gradient_weights(X, Z, kernel="laplace", bandwidth=L, out=np.empty((10, 8)))


def test_two_threads_give_the_single_thread_result():
    """The compiled functions release the GIL and keep no shared state: concurrent blocks are independent."""
    from bigrfm.numerics import fused_cpu_jit as J  # numba loads here
    assert all(f.targetoptions.get("nogil") and not f.targetoptions.get("parallel") for f in (J.gram_rows, J.kv_rows, J.weights_rows))
    X, Z, v, Y, L = data(400, 300, 9, np.float32)
    one = [fused_cpu.gram_matvec(X[s : s + 200], Z, v, Y[s : s + 200], kernel="laplace", bandwidth=L) for s in (0, 200)]
    with cf.ThreadPoolExecutor(2) as pool:
        two = list(pool.map(lambda s: fused_cpu.gram_matvec(X[s : s + 200], Z, v, Y[s : s + 200], kernel="laplace", bandwidth=L), (0, 200)))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(kernel="cauchy", bandwidth=1.0), "Unknown kernel"),
        (dict(kernel="laplace", bandwidth=0.0), "bandwidth"),
        (dict(kernel="exp_power", bandwidth=1.0, exponent=2.5), "exponent"),
    ],
)
def test_bad_parameters(kw, match):
    X = np.zeros((2, 3))
    with pytest.raises(ValueError, match=match):
        fused_cpu.kv(X, X, np.zeros((2, 1)), **kw)


def test_bad_shapes_and_dtypes():
    X = np.zeros((2, 3))
    with pytest.raises(ValueError, match="columns"):
        fused_cpu.kv(X, np.zeros((2, 4)), np.zeros((2, 1)), kernel="laplace", bandwidth=1.0)
    with pytest.raises(ValueError, match="float32 or float64"):
        fused_cpu.kv(X.astype(np.float16), X, np.zeros((2, 1)), kernel="laplace", bandwidth=1.0)
    with pytest.raises(ValueError, match="v must have shape"):
        fused_cpu.gram_matvec(X, X, np.zeros((3, 1)), kernel="laplace", bandwidth=1.0)


def test_import_is_lazy_and_switch_disables():
    code = (
        "import sys; import bigrfm.numerics.fused_cpu as f; assert 'numba' not in sys.modules; "
        "print(f.available())"
    )
    env = {**os.environ, "BIGRFM_FUSED_CPU": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
