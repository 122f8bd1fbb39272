"""bigrfm: Recursive Feature Machines that scale past memory."""

from __future__ import annotations

__version__ = "0.1.0"
