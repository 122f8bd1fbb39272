"""The chunked AGOP equals the AGOP of the formula, for any block size."""

import numpy as np
import pytest

from bigrfm.numerics.agop import AgopSums, agop_from_sums, kernel_agop_block, normalize_metric
from bigrfm.numerics.kernels import GaussianKernel, LaplaceKernel
from bigrfm.model.predictors import KernelPredictor
from closeness import assert_close


def naive_agop(kernel, X, Z, alpha, M, centering, diag):
    """Sum over x and outputs of g g^T, g_c(x) = sum_j alpha_jc W_j M (x - z_j), written row by row."""
    Mf = np.diag(M) if diag else M
    grads = []  # (n, c, d)
    for x in X:
        diff = x[None] - Z
        r = np.sqrt(np.maximum(np.einsum("jd,de,je->j", diff, Mf, diff), 0))
        if isinstance(kernel, LaplaceKernel):
            w = np.where(r > 0, -np.exp(-r / kernel.bandwidth) / (kernel.bandwidth * np.where(r > 0, r, 1)), 0)
        else:
            w = -np.exp(-(r**2) / (2 * kernel.bandwidth**2)) / kernel.bandwidth**2
        grads.append((alpha.T * w) @ diff @ Mf)
    G = np.array(grads)
    if centering:
        G = G - G.mean(axis=0, keepdims=True)
    A = np.einsum("ncd,nce->de", G, G) / len(X)
    return np.diag(A) if diag else A


@pytest.mark.parametrize("kernel", [LaplaceKernel(3.0), GaussianKernel(2.0)], ids=["laplace", "gaussian"])
@pytest.mark.parametrize("centering", [False, True])
@pytest.mark.parametrize("diag", [False, True])
def test_blocked_agop_equals_formula_for_any_block_size(kernel, centering, diag):
    rng = np.random.default_rng(0)
    n, m, d, c = 53, 20, 4, 3
    X = rng.normal(size=(n, d))
    Z = np.concatenate([X[:10], rng.normal(size=(m - 10, d))])  # some rows are their own centers
    alpha = rng.normal(size=(m, c))
    M = rng.uniform(0.3, 1.0, size=d) if diag else np.cov(rng.normal(size=(d, 3 * d))) + 0.1 * np.eye(d)
    pred = KernelPredictor(kernel, M, Z, alpha)
    bc = pred.broadcast()
    expected = naive_agop(kernel, X, Z, alpha, M, centering, diag)
    for block in (1, 7, 16, n):
        sums = None
        for s in range(0, n, block):
            part = kernel_agop_block(X[s : s + block], None, diag=diag, **bc)
            sums = part if sums is None else sums + part
        assert sums.count == n
        got = agop_from_sums(sums, M, centering=centering, diag=diag)
        assert_close(got, expected, 1e-9)


def test_normalize_metric_power_and_max_entry():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(4, 4))
    A = B @ B.T
    P = normalize_metric(A, 0.5)
    root = P @ P
    assert_close(root / root.max(), A / A.max(), 1e-9)
    assert P.max() == pytest.approx(1.0)
    np.testing.assert_allclose(normalize_metric(np.array([4.0, 1.0]), 0.5), [1.0, 0.5])
    # a constant predictor (zero AGOP) falls back to the plain kernel
    np.testing.assert_array_equal(normalize_metric(np.zeros((3, 3))), np.eye(3))


def test_sums_add():
    a = AgopSums(np.eye(2), np.ones((1, 2)), 3)
    b = a + a
    assert b.count == 6 and b.gram[0, 0] == 2
