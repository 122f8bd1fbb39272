"""The exceptions bigrfm raises on purpose: a small hierarchy, one module, imported by every layer.

Imports nothing of bigrfm.

Every error that reaches a user names what is wrong, where, and how to fix it.
Input problems derive from ``ValueError`` so that scikit-learn conventions
(``pytest.raises(ValueError)``) keep working.
"""

from __future__ import annotations

__all__ = [
    "BigRFMError",
    "InputError",
    "DataError",
    "SolverError",
    "ModelFormatError",
    "ClusterError",
]


class BigRFMError(Exception):
    """Base class of every error bigrfm raises deliberately."""


class InputError(BigRFMError, ValueError):
    """A parameter or an in-memory input is invalid (bad value, shape, NaN...)."""


class DataError(InputError):
    """An on-disk dataset is missing, malformed, or holds invalid values."""


class SolverError(BigRFMError, RuntimeError):
    """A linear solve failed numerically (for example a non-positive-definite system)."""


class ModelFormatError(BigRFMError, ValueError):
    """A model folder is missing, of an unknown version, or inconsistent."""


class ClusterError(BigRFMError, RuntimeError):
    """The Dask cluster could not be started or reached."""
