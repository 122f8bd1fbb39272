"""Kernels against a naive formula and their gradients against finite differences."""

import numpy as np
import pytest

from bigrfm.exceptions import InputError
from bigrfm.numerics.kernels import ExpPowerKernel, GaussianKernel, LaplaceKernel, apply_metric, make_kernel
from bigrfm.numerics.linalg import metric_factor
from closeness import assert_close

KERNELS = [LaplaceKernel(2.0), GaussianKernel(1.5), ExpPowerKernel(2.0, q=0.7), ExpPowerKernel(1.0, q=2.0)]


def naive_phi(kernel, r):
    L = kernel.bandwidth
    if isinstance(kernel, LaplaceKernel):
        return np.exp(-r / L)
    if isinstance(kernel, GaussianKernel):
        return np.exp(-(r**2) / (2 * L**2))
    return np.exp(-((r / L) ** kernel.q))


def random_spd(rng, d):
    A = rng.normal(size=(d, d))
    return A @ A.T / d + 0.1 * np.eye(d)


def naive_block(kernel, X, Z, M):
    out = np.empty((len(X), len(Z)))
    for i, x in enumerate(X):
        for j, z in enumerate(Z):
            out[i, j] = naive_phi(kernel, np.sqrt((x - z) @ M @ (x - z)))
    return out


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}")
@pytest.mark.parametrize("diag", [False, True])
def test_block_matches_naive(kernel, diag):
    rng = np.random.default_rng(0)
    X, Z = rng.normal(size=(7, 4)), rng.normal(size=(5, 4))
    M = rng.uniform(0.2, 2, size=4) if diag else random_spd(rng, 4)
    S = metric_factor(M)
    K = kernel.block(apply_metric(X, S), apply_metric(Z, S))
    assert_close(K, naive_block(kernel, X, Z, np.diag(M) if diag else M), 1e-12)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}")
def test_gradient_matches_finite_differences(kernel):
    # f(x) = sum_j a_j k(x, z_j); grad f = sum_j a_j W_j M (x - z_j)
    rng = np.random.default_rng(1)
    d = 5
    M = random_spd(rng, d)
    Z, a = rng.normal(size=(6, d)), rng.normal(size=6)
    S = metric_factor(M)
    Zt = apply_metric(Z, S)

    def f(x):
        return kernel.block(apply_metric(x[None], S), Zt)[0] @ a

    for x in rng.normal(size=(3, d)):
        _, W = kernel.block_and_weights(apply_metric(x[None], S), Zt)
        grad = (W[0] * a) @ (x[None] - Z) @ M
        h = 1e-6
        fd = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(d)])
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kernel", [LaplaceKernel(1.0), ExpPowerKernel(1.0, q=0.5)], ids=["laplace", "exp_power"])
def test_zero_distance_gradient_weight_is_zero(kernel):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6, 3)) * 10
    Xt = apply_metric(X, metric_factor(random_spd(rng, 3)))
    K, W = kernel.block_and_weights(Xt, Xt)
    assert np.all(np.isfinite(W))
    np.testing.assert_array_equal(np.diag(W), 0.0)
    assert np.all(W[~np.eye(6, dtype=bool)] < 0)
    np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-7)


def test_distances_are_clamped_before_sqrt():
    # a large offset makes |x|^2 + |z|^2 - 2x.z round below zero for x == z
    X = np.full((4, 3), 1e4) + np.arange(12).reshape(4, 3) * 1e-6
    K = LaplaceKernel(1.0).block(X, X)
    assert np.all(np.isfinite(K)) and np.all(K <= 1.0)


def test_metric_factor_reconstructs_and_drops_negative_eigenvalues():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(4, 2))
    M = v @ v.T  # rank 2
    S = metric_factor(M)
    assert S.shape == (4, 2)
    np.testing.assert_allclose(S @ S.T, M, atol=1e-12)


def test_bad_kernel_arguments():
    with pytest.raises(InputError, match="Unknown kernel 'cosine'"):
        make_kernel("cosine", 1.0)
    with pytest.raises(InputError, match="must be a float > 0"):
        LaplaceKernel(-1.0)
    with pytest.raises(InputError, match=r"must be in \(0, 2\]"):
        ExpPowerKernel(1.0, q=3.0)
