"""One way to compare two computations of the same numbers: on the scale of the values.

Sums computed in another order (blocks, threads, another BLAS or numpy build)
differ by a few units of rounding of the *terms*, not of each result: an
entry that cancels to nearly zero has no relative precision at all. So the
tolerance is ``rel`` times the values' scale (their largest magnitude, or a
scale given), never a relative tolerance per entry and never an absolute one
below floating-point resolution.
"""

from __future__ import annotations

import numpy as np

__all__ = ["assert_close"]


def assert_close(actual, desired, rel: float, *, scale: float | None = None) -> None:
    """``|actual - desired| <= rel * scale`` everywhere; ``scale`` defaults to ``max |desired|``."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = float(np.abs(desired).max()) if scale is None else float(scale)
    assert rel >= 4 * np.finfo(np.float64).eps, "a tolerance below float64 resolution"
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rel * scale)
