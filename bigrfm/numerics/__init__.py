"""Pure numerical functions over blocks: array backends, kernels, dense linear algebra, AGOP sums, random features, fused passes.

Layer rule: numerics imports neither zarr nor dask, reads no files, and never
allocates n x n or n x m arrays; block functions take numpy or CuPy arrays and
return arrays or small sums.
"""
