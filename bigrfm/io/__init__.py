"""Data in and out: datasets read block by block, streaming statistics, atomic folders, model folders, conversion.

Layer rule: ``io`` imports :mod:`bigrfm.exceptions` and nothing else of bigrfm
above it (no numerics, no model, no engine); dask appears only in the dataset
readers of Dask collections.
"""
