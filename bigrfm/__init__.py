"""bigrfm: Recursive Feature Machines that scale past memory.

>>> from bigrfm import RFMClassifier, RFMRegressor, PatchFeatures, load_model
"""

from __future__ import annotations

__version__ = "0.1.0"

from .estimators import RFMClassifier, RFMRegressor  # noqa: E402
from .model_io import load_model  # noqa: E402
from .patches import PatchFeatures  # noqa: E402

__all__ = ["RFMRegressor", "RFMClassifier", "PatchFeatures", "load_model", "__version__"]
