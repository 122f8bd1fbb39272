"""The model: fitted predictors, row preparation, the RFM loop and the fit pipeline.

Layer order: ``predictors`` and ``prepare`` sit on :mod:`bigrfm.numerics`;
:mod:`bigrfm.solvers` build predictors; ``rfm`` runs the loop over a solver;
``fit`` turns a dataset into a fitted state through an engine it is given.
Nothing here knows zarr or dask internals.
"""
