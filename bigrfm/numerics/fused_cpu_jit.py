"""The compiled half of :mod:`bigrfm.numerics.fused_cpu`: Numba distance and pass kernels.

Only :mod:`bigrfm.numerics.fused_cpu` imports this module, on first use
(importing it imports numba). Every function here is ``nogil`` and
single-threaded: the engine runs one block per thread, so two blocks on two
threads use two cores. exp and log come from :mod:`bigrfm.numerics.fastmath`;
``sqrt`` is the LLVM intrinsic (one vector instruction). Loops run over the
centers, which are stored transposed (``ZT``: r x m, contiguous along m), so
the innermost loop is a unit-stride loop over centers.

Where the time goes (one core, float32, laplace): the exp polynomial runs at
~8e9 values/s (numpy's exp ~3e9), float64 ~2.3e9 (numpy ~1.8e9); <= 1 ulp
both (tests/test_fused_cpu.py). Distances cost r subtract + FMA pairs per
entry; two rows share each load of the centers and four features go per
store, which times as fast as a BLAS GEMM of the same shape (r = 9: ~5e9
entries/s, r = 32: ~1.6e9). So at r = 32 the distances alone take ~0.6 ns of
the ~1 ns an entry costs, and no fusion gets far past that.

Kernel codes (runtime integers, so one compiled function per dtype serves all
kernels): 0 laplace exp(-r/L), 1 gaussian exp(-r^2/(2L^2)),
2 exp_power exp(-(r/L)^q).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fastmath import JIT as _JIT
from .fastmath import JIT_SUM as _JIT_SUM
from .fastmath import vexp, vlog

LAPLACE, GAUSSIAN, EXP_POWER = 0, 1, 2


# ---------------------------------------------------------------------------
# Parameters travel as one small array in the block dtype, so no float64
# scalar ever promotes float32 arithmetic:
#   P[A]      laplace 1/L, gaussian 1/(2L^2), exp_power 1/L^2
#   P[H]      exp_power q/2
#   P[THR2]   zero-distance threshold on r^2: max((1e-10 L)^2, tiny); -1 when
#             the kernel has no zero-distance rule (gaussian)
#   P[WA]     gradient-weight factor: laplace -1/L (W = WA K / r), gaussian
#             -1/L^2 (W = WA K), exp_power -q (W = WA (r/L)^q K / r^2)
#   P[SHRINK] 1 - 16 eps: norms shrink in the norm form (as kernels.sq_distances)
#   P[ZERO]   0
# ---------------------------------------------------------------------------
A, H, THR2, WA, SHRINK, ZERO, N_PARAMS = 0, 1, 2, 3, 4, 5, 6


@njit(**_JIT)
def _sqdist2(x, y, ZT, j0, j1, zero, out, out2):
    """out[j - j0] = |x - z_j|^2 and out2[j - j0] = |y - z_j|^2 for j in [j0, j1).

    Two rows share each load of the centers; the features go four at a time,
    so each output is stored once per four features. Direct differences: no
    cancellation, and a duplicate point gives exactly 0.
    """
    r = x.shape[0]
    n = j1 - j0
    k = 0
    if r >= 4:
        x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
        y0, y1, y2, y3 = y[0], y[1], y[2], y[3]
        z0, z1, z2, z3 = ZT[0, j0:j1], ZT[1, j0:j1], ZT[2, j0:j1], ZT[3, j0:j1]
        for j in range(n):
            a0, a1, a2, a3 = z0[j], z1[j], z2[j], z3[j]
            e0, e1, e2, e3 = x0 - a0, x1 - a1, x2 - a2, x3 - a3
            f0, f1, f2, f3 = y0 - a0, y1 - a1, y2 - a2, y3 - a3
            out[j] = (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
            out2[j] = (f0 * f0 + f1 * f1) + (f2 * f2 + f3 * f3)
        k = 4
    else:
        for j in range(n):
            out[j] = zero
            out2[j] = zero
    while k + 4 <= r:
        x0, x1, x2, x3 = x[k], x[k + 1], x[k + 2], x[k + 3]
        y0, y1, y2, y3 = y[k], y[k + 1], y[k + 2], y[k + 3]
        z0, z1, z2, z3 = ZT[k, j0:j1], ZT[k + 1, j0:j1], ZT[k + 2, j0:j1], ZT[k + 3, j0:j1]
        for j in range(n):
            a0, a1, a2, a3 = z0[j], z1[j], z2[j], z3[j]
            e0, e1, e2, e3 = x0 - a0, x1 - a1, x2 - a2, x3 - a3
            f0, f1, f2, f3 = y0 - a0, y1 - a1, y2 - a2, y3 - a3
            out[j] += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
            out2[j] += (f0 * f0 + f1 * f1) + (f2 * f2 + f3 * f3)
        k += 4
    while k < r:
        xk, yk = x[k], y[k]
        zk = ZT[k, j0:j1]
        for j in range(n):
            e, f = xk - zk[j], yk - zk[j]
            out[j] += e * e
            out2[j] += f * f
        k += 1


@njit(**_JIT)
def _sqdist(x, ZT, j0, j1, zero, out):
    """out[j - j0] = |x - z_j|^2 for j in [j0, j1): one row (the odd one out of _sqdist2's pairs)."""
    r = x.shape[0]
    n = j1 - j0
    for j in range(n):
        out[j] = zero
    k = 0
    while k + 4 <= r:
        x0, x1, x2, x3 = x[k], x[k + 1], x[k + 2], x[k + 3]
        z0, z1, z2, z3 = ZT[k, j0:j1], ZT[k + 1, j0:j1], ZT[k + 2, j0:j1], ZT[k + 3, j0:j1]
        for j in range(n):
            e0, e1, e2, e3 = x0 - z0[j], x1 - z1[j], x2 - z2[j], x3 - z3[j]
            out[j] += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
        k += 4
    while k < r:
        xk = x[k]
        zk = ZT[k, j0:j1]
        for j in range(n):
            e = xk - zk[j]
            out[j] += e * e
        k += 1


@njit(**_JIT)
def _cross_sqdist(buf, xs, zsq, j0, j1, P):
    """In place: buf[j] = x . z_j (the GEMM) -> max(s |x|^2 + s |z_j|^2 - 2 buf[j], 0) for j in [j0, j1)."""
    s = P[SHRINK]
    zero = P[ZERO]
    sx = s * xs
    zs = zsq[j0:j1]
    g = buf[j0:j1]
    for j in range(j1 - j0):
        g[j] = max(sx + s * zs[j] - (g[j] + g[j]), zero)


@njit(**_JIT)
def _phi(buf, code, P):
    """In place: squared distances -> kernel values."""
    n = buf.shape[0]
    a = P[A]
    if code == LAPLACE:
        for j in range(n):
            buf[j] = vexp(-(np.sqrt(buf[j]) * a))
    elif code == GAUSSIAN:
        for j in range(n):
            buf[j] = vexp(-(buf[j] * a))
    else:
        h = P[H]
        for j in range(n):
            buf[j] = vexp(-vexp(h * vlog(buf[j] * a)))


@njit(**_JIT)
def _phi_weights(buf, code, P):
    """In place: squared distances -> gradient weights W = phi'(r)/r.

    W = 0 where r^2 < P[THR2] (laplace, exp_power with q < 2; ALGORITHM.md 1).
    """
    n = buf.shape[0]
    a = P[A]
    wa = P[WA]
    thr2 = P[THR2]
    zero = P[ZERO]
    if code == LAPLACE:
        for j in range(n):
            d2 = buf[j]
            r = np.sqrt(d2)
            buf[j] = zero if d2 < thr2 else wa * vexp(-(r * a)) / r
    elif code == GAUSSIAN:
        for j in range(n):
            buf[j] = wa * vexp(-(buf[j] * a))
    else:
        h = P[H]
        for j in range(n):
            d2 = buf[j]
            t = vexp(h * vlog(d2 * a))
            buf[j] = zero if d2 < thr2 else wa * t * vexp(-t) / d2


@njit(**_JIT)
def _phi_weights_values(buf, kout, code, P):
    """:func:`_phi_weights`, and the kernel values into ``kout`` (a separate loop: a
    conditional store would make LLVM keep the loop scalar)."""
    n = buf.shape[0]
    a = P[A]
    wa = P[WA]
    thr2 = P[THR2]
    zero = P[ZERO]
    if code == LAPLACE:
        for j in range(n):
            d2 = buf[j]
            r = np.sqrt(d2)
            k = vexp(-(r * a))
            kout[j] = k
            buf[j] = zero if d2 < thr2 else wa * k / r
    elif code == GAUSSIAN:
        for j in range(n):
            k = vexp(-(buf[j] * a))
            kout[j] = k
            buf[j] = wa * k
    else:
        h = P[H]
        for j in range(n):
            d2 = buf[j]
            t = vexp(h * vlog(d2 * a))
            k = vexp(-t)
            kout[j] = k
            buf[j] = zero if d2 < thr2 else wa * t * k / d2


@njit(**_JIT_SUM)
def _dot(x, y, zero):
    """sum_j x[j] y[j] in the dtype of x (vector lanes: reassociated)."""
    s = zero
    for j in range(x.shape[0]):
        s += x[j] * y[j]
    return s


@njit(**_JIT)
def _axpy_rows(K, i0, n, u, j0, j1, acc):
    """acc[j - j0] += sum_{t < n} u[t] K[i0 + t, j] (float64 acc), rows four at a time."""
    t = 0
    w = j1 - j0
    while t + 4 <= n:
        k0, k1, k2, k3 = K[i0 + t, j0:j1], K[i0 + t + 1, j0:j1], K[i0 + t + 2, j0:j1], K[i0 + t + 3, j0:j1]
        u0, u1, u2, u3 = u[t], u[t + 1], u[t + 2], u[t + 3]
        for j in range(w):
            acc[j] += (u0 * k0[j] + u1 * k1[j]) + (u2 * k2[j] + u3 * k3[j])
        t += 4
    while t < n:
        kt = K[i0 + t, j0:j1]
        ut = u[t]
        for j in range(w):
            acc[j] += ut * kt[j]
        t += 1


@njit(**_JIT)
def _fill(X, ZT, xsq, zsq, cross, i0, nt, j0, j1, code, P, K, Kout, weights):
    """Rows i0..i0+nt against centers j0..j1: K[t, j0:j1] = phi(r) or, with ``weights``,
    W = phi'(r)/r (and Kout[t, j0:j1] = phi(r) when Kout has rows).

    Distances direct from X and ZT (two rows at a time), or (``cross``) in the
    norm form from K[0:nt] = X Z^T, in place. Each row's chunk goes through
    phi right after its distances, while it is in L1.
    """
    keep = Kout.shape[0] > 0
    t = 0
    while t < nt:
        if cross:
            _cross_sqdist(K[t], xsq[i0 + t], zsq, j0, j1, P)
            u = t
        elif t + 1 < nt:
            _sqdist2(X[i0 + t], X[i0 + t + 1], ZT, j0, j1, P[ZERO], K[t, j0:j1], K[t + 1, j0:j1])
            u = t + 1
        else:
            _sqdist(X[i0 + t], ZT, j0, j1, P[ZERO], K[t, j0:j1])
            u = t
        for s in range(t, u + 1):
            if weights and keep:
                _phi_weights_values(K[s, j0:j1], Kout[s, j0:j1], code, P)
            elif weights:
                _phi_weights(K[s, j0:j1], code, P)
            else:
                _phi(K[s, j0:j1], code, P)
        t = u + 1


@njit(**_JIT)
def _gram_tile(X, ZT, xsq, zsq, cross, i0, nt, VT, Y, code, P, chunk, K, U, Yt, KtKvT, KtYT):
    m = K.shape[1]
    c = VT.shape[0]
    cy = KtYT.shape[0]
    for cc in range(c):
        for t in range(nt):
            U[cc, t] = 0.0
    for cc in range(cy):
        for t in range(nt):
            Yt[cc, t] = Y[i0 + t, cc]
    for j0 in range(0, m, chunk):
        j1 = min(j0 + chunk, m)
        _fill(X, ZT, xsq, zsq, cross, i0, nt, j0, j1, code, P, K, K[0:0], False)
        for t in range(nt):
            for cc in range(c):
                U[cc, t] += _dot(K[t, j0:j1], VT[cc, j0:j1], P[ZERO])
        for cc in range(cy):
            _axpy_rows(K, 0, nt, Yt[cc], j0, j1, KtYT[cc, j0:j1])
    if c > 0:
        for j0 in range(0, m, chunk):
            j1 = min(j0 + chunk, m)
            for cc in range(c):
                _axpy_rows(K, 0, nt, U[cc], j0, j1, KtKvT[cc, j0:j1])


@njit(**_JIT)
def gram_rows(X, ZT, xsq, zsq, cross, i0, nt, VT, Y, code, P, chunk, K, U, Yt, KtKvT, KtYT):
    """Rows i0..i0+nt's K^T (K v) and K^T Y, added to KtKvT (c, m) and KtYT (c_y, m) (float64).

    Works in tiles of K.shape[0] rows: K (tile, m) is the tile's kernel buffer
    (in the ``cross`` form it holds X Z^T of the rows on entry, and nt <=
    tile); U (c, tile) and Yt (c_y, tile) float64 scratch. Each entry is
    evaluated once: chunk by chunk (``chunk`` centers, cache-resident) the
    distances, phi, the partial K v and the K^T Y update; then the
    K^T (K v) update from the finished tile.
    """
    tile = K.shape[0]
    for s in range(i0, i0 + nt, tile):
        _gram_tile(X, ZT, xsq, zsq, cross, s, min(tile, i0 + nt - s), VT, Y, code, P, chunk, K, U, Yt, KtKvT, KtYT)


@njit(**_JIT)
def kv_rows(X, ZT, xsq, zsq, cross, i0, nt, VT, code, P, chunk, K, out):
    """out[i] = K v for rows i0..i0+nt (float64 partial sums per chunk, stored in out's dtype); K as in gram_rows."""
    m = K.shape[1]
    tile = K.shape[0]
    c = VT.shape[0]
    acc = np.zeros((tile, c))
    for s in range(i0, i0 + nt, tile):
        ns = min(tile, i0 + nt - s)
        acc[:] = 0.0
        for j0 in range(0, m, chunk):
            j1 = min(j0 + chunk, m)
            _fill(X, ZT, xsq, zsq, cross, s, ns, j0, j1, code, P, K, K[0:0], False)
            for t in range(ns):
                for cc in range(c):
                    acc[t, cc] += _dot(K[t, j0:j1], VT[cc, j0:j1], P[ZERO])
        for t in range(ns):
            for cc in range(c):
                out[s + t, cc] = acc[t, cc]


@njit(**_JIT)
def weights_rows(X, ZT, xsq, zsq, cross, i0, nt, code, P, chunk, W, Kout):
    """W[i] = phi'(r)/r (zero-distance rule applied) for rows i0..i0+nt and, if Kout has rows, Kout[i] = phi(r).

    In the ``cross`` form W[i0:i0+nt] holds X Z^T of the rows on entry.
    """
    m = W.shape[1]
    Wt = W[i0 : i0 + nt]
    Kt = Kout[i0 : i0 + nt] if Kout.shape[0] > 0 else Kout
    for j0 in range(0, m, chunk):
        _fill(X, ZT, xsq, zsq, cross, i0, nt, j0, min(j0 + chunk, m), code, P, Wt, Kt, True)
