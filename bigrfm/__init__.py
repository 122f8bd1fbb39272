"""bigrfm: Recursive Feature Machines that scale past memory.

>>> from bigrfm import RFMClassifier, RFMRegressor, PatchFeatures, load_model

Importing bigrfm imports neither dask nor zarr nor CuPy; they load when a fit,
a store or a GPU first needs them.
"""

from __future__ import annotations

from .estimators import RFMClassifier, RFMRegressor, load_model
from .features.patches import PatchFeatures
from .version import __version__

__all__ = ["RFMRegressor", "RFMClassifier", "PatchFeatures", "load_model", "__version__"]
