"""Vectorizable exp and log for Numba loops (importing this module imports numba).

Owns :func:`vexp` / :func:`vlog` and the Numba options the fused passes share;
only :mod:`bigrfm.numerics.fused_cpu_jit` (and the tests) import it, on first
use of a fused pass.

This llvmlite is built without Intel SVML (``has_svml()`` is False), so LLVM
would call the scalar libm ``exp`` once per entry and not vectorize the loop.
:func:`vexp` and :func:`vlog` are therefore written out: Cody-Waite range
reduction, a polynomial, and the power of two built from its integer bits (an
LLVM ``bitcast``, :func:`_bits_to_float`), which LLVM vectorizes like any
arithmetic.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["vexp", "vlog", "exp_array", "log_array", "JIT", "JIT_SUM"]

# Fast-math flags. No "reassoc" in the elementwise math: it would let LLVM
# fold the two-part Cody-Waite constants and lose the reduction's accuracy.
# "contract" allows fused multiply-adds. No "nnan"/"ninf": log(0) = -inf is
# used (and they measured no faster).
_FM = {"contract", "nsz", "arcp"}
# Reductions (dot products) need reassociation to vectorize.
_FM_SUM = _FM | {"reassoc"}
JIT = dict(nogil=True, cache=True, fastmath=_FM, error_model="numpy", boundscheck=False)
JIT_SUM = dict(JIT, fastmath=_FM_SUM)


# ---------------------------------------------------------------------------
# bit casts (LLVM bitcast; vectorizes to nothing)
# ---------------------------------------------------------------------------
@intrinsic
def _bits_to_float(typingctx, i):
    """Reinterpret int32 -> float32 or int64 -> float64."""
    if i == types.int32:
        ret, lt = types.float32, ir.FloatType()
    elif i == types.int64:
        ret, lt = types.float64, ir.DoubleType()
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], lt)

    return ret(i), codegen


@intrinsic
def _float_to_bits(typingctx, x):
    """Reinterpret float32 -> int32 or float64 -> int64."""
    if x == types.float32:
        ret, lt = types.int32, ir.IntType(32)
    elif x == types.float64:
        ret, lt = types.int64, ir.IntType(64)
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], lt)

    return ret(x), codegen


# ---------------------------------------------------------------------------
# exp and log
# ---------------------------------------------------------------------------
def vexp(x):  # pragma: no cover - stub, implemented by the overload below
    """exp(x) that LLVM vectorizes; see the overload for the method and range."""
    raise NotImplementedError


def vlog(x):  # pragma: no cover - stub
    """log(x) for x >= 0 (log(0) = -inf) that LLVM vectorizes."""
    raise NotImplementedError


@overload(vexp, jit_options=dict(fastmath=_FM))
def _vexp_impl(x):
    if x == types.float32:
        # Cephes expf: n = round(x log2 e), f = x - n ln2 (ln2 in two parts),
        # exp(f) by a degree-7 minimax polynomial on |f| <= ln2/2, times 2^n
        # from the exponent bits. Below ln(FLT_MIN) the result is 0.
        def impl(x):
            xc = min(max(x, np.float32(-87.33654)), np.float32(88.72283))
            n = np.floor(xc * np.float32(1.44269504088896341) + np.float32(0.5))
            f = xc - n * np.float32(0.693359375)
            f = f - n * np.float32(-2.12194440e-4)
            z = f * f
            p = np.float32(1.9875691500e-4)
            p = p * f + np.float32(1.3981999507e-3)
            p = p * f + np.float32(8.3334519073e-3)
            p = p * f + np.float32(4.1665795894e-2)
            p = p * f + np.float32(1.6666665459e-1)
            p = p * f + np.float32(5.0000001201e-1)
            y = p * z + f + np.float32(1.0)
            scale = _bits_to_float(np.int32((np.int32(n) + 127) << 23))  # numba widens int32 arithmetic
            return np.float32(0.0) if x < np.float32(-87.33654) else y * scale

        return impl
    if x == types.float64:
        # n = round(x log2 e), f = x - n ln2 (Cody-Waite, two parts), exp(f) by
        # its Taylor polynomial of degree 13 on |f| <= ln2/2 (truncation error
        # < 5e-18), times 2^n from the exponent bits. Below ln(DBL_MIN): 0.
        def impl(x):
            xc = min(max(x, -708.3964185322641), 709.782712893384)
            n = np.floor(xc * 1.4426950408889634 + 0.5)
            f = xc - n * 6.93145751953125e-1
            f = f - n * 1.42860682030941723212e-6
            p = 1.0 / 6227020800.0
            p = p * f + 1.0 / 479001600.0
            p = p * f + 1.0 / 39916800.0
            p = p * f + 1.0 / 3628800.0
            p = p * f + 1.0 / 362880.0
            p = p * f + 1.0 / 40320.0
            p = p * f + 1.0 / 5040.0
            p = p * f + 1.0 / 720.0
            p = p * f + 1.0 / 120.0
            p = p * f + 1.0 / 24.0
            p = p * f + 1.0 / 6.0
            p = p * f + 0.5
            y = (p * f) * f + f + 1.0
            scale = _bits_to_float(np.int64((np.int64(n) + 1023) << 52))
            return 0.0 if x < -708.3964185322641 else y * scale

        return impl
    return None


@overload(vlog, jit_options=dict(fastmath=_FM))
def _vlog_impl(x):
    # x = m 2^e with m in [sqrt(1/2), sqrt(2)) from the bits (subnormals scaled
    # first); log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716, by its
    # series; log x = log m + e ln2 (ln2 in two parts). log(0) = -inf.
    if x == types.float32:

        def impl(x):
            sub = x < np.float32(1.17549435e-38)
            xs = x * np.float32(8388608.0) if sub else x  # 2^23
            bits = _float_to_bits(xs)
            e = ((bits >> 23) & 0xFF) - 127
            m = _bits_to_float(np.int32((bits & 0x7FFFFF) | 0x3F800000))
            big = m > np.float32(1.41421356)
            m = m * np.float32(0.5) if big else m
            ef = np.float32(e) + (np.float32(1.0) if big else np.float32(0.0))
            ef = ef - (np.float32(23.0) if sub else np.float32(0.0))
            s = (m - np.float32(1.0)) / (m + np.float32(1.0))
            s2 = s * s
            p = np.float32(1.0 / 11.0)
            p = p * s2 + np.float32(1.0 / 9.0)
            p = p * s2 + np.float32(1.0 / 7.0)
            p = p * s2 + np.float32(1.0 / 5.0)
            p = p * s2 + np.float32(1.0 / 3.0)
            lm = np.float32(2.0) * s + np.float32(2.0) * s * s2 * p
            out = ef * np.float32(0.693359375) + (ef * np.float32(-2.12194440e-4) + lm)
            return np.float32(-np.inf) if x <= np.float32(0.0) else out

        return impl
    if x == types.float64:

        def impl(x):
            sub = x < 2.2250738585072014e-308
            xs = x * 4503599627370496.0 if sub else x  # 2^52
            bits = _float_to_bits(xs)
            e = ((bits >> 52) & 0x7FF) - 1023
            m = _bits_to_float(np.int64((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000))
            big = m > 1.4142135623730951
            m = m * 0.5 if big else m
            ef = np.float64(e) + (1.0 if big else 0.0)
            ef = ef - (52.0 if sub else 0.0)
            s = (m - 1.0) / (m + 1.0)
            s2 = s * s
            p = 1.0 / 23.0
            p = p * s2 + 1.0 / 21.0
            p = p * s2 + 1.0 / 19.0
            p = p * s2 + 1.0 / 17.0
            p = p * s2 + 1.0 / 15.0
            p = p * s2 + 1.0 / 13.0
            p = p * s2 + 1.0 / 11.0
            p = p * s2 + 1.0 / 9.0
            p = p * s2 + 1.0 / 7.0
            p = p * s2 + 1.0 / 5.0
            p = p * s2 + 1.0 / 3.0
            lm = 2.0 * s + 2.0 * s * s2 * p
            out = ef * 6.93145751953125e-1 + (ef * 1.42860682030941723212e-6 + lm)
            return -np.inf if x <= 0.0 else out

        return impl
    return None


@njit(**JIT)
def exp_array(x, out):
    """out[i] = vexp(x[i]) (for tests and the exp-rate benchmark)."""
    for i in range(x.shape[0]):
        out[i] = vexp(x[i])


@njit(**JIT)
def log_array(x, out):
    """out[i] = vlog(x[i]) (for tests)."""
    for i in range(x.shape[0]):
        out[i] = vlog(x[i])
