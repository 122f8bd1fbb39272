"""Your data as it is: a Dask DataFrame with missing values, a lazy Dask array, a uint8 Zarr array.

The estimators take numpy and pandas in memory, and three kinds of data that
they never load whole: Dask arrays, Dask DataFrames and zarr arrays, streamed
block by block (on threads here; pass scheduler="tcp://..." to run on a
cluster, where each block is computed by the workers). predict on a Dask
collection is lazy: it returns a Dask array with the same row chunks.

Run:  python examples/06_your_data.py     (~10 s on 2 cores)
"""

import tempfile

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import zarr

from bigrfm import RFMClassifier, RFMRegressor

rng = np.random.default_rng(0)

# 1. A Dask DataFrame with missing values. missing="mean" replaces each NaN by its
#    feature's mean over the training rows (found in the first pass, saved with the
#    model, applied by predict); the column names become feature_names_in_.
n = 6_000
frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["age", "income", "visits", "noise"])
frame["target"] = frame["age"] * frame["income"] + np.sin(frame["visits"])
frame.loc[rng.random(n) < 0.1, "income"] = np.nan  # 10% missing
table = dd.from_pandas(frame, npartitions=6)
X, y = table.drop(columns="target"), table["target"]
model = RFMRegressor(iters=2, missing="mean", random_state=0).fit(X, y)  # counts partition lengths: one pass
print(f"DataFrame: features {list(model.feature_names_in_)}, income imputed with {model.impute_values_[1]:.3f}")
pred = model.predict(X)
print(f"lazy predictions: {type(pred).__name__} of {pred.numblocks[0]} chunks, nothing computed yet")
rmse = float(np.sqrt(((pred.compute() - frame["target"].to_numpy()) ** 2).mean()))
print(f"train RMSE {rmse:.3f} (target sd {frame['target'].std():.3f})")

# 2. A Dask array generated lazily: each pass computes the chunks of its blocks and
#    drops them; 40,000 x 8 here, but memory stays a few blocks whatever the size.
Xl = da.random.default_rng(1).normal(size=(40_000, 8), chunks=(5_000, 8))
yl = Xl[:, 0] * Xl[:, 1] + Xl[:, 2]
lazy_model = RFMRegressor(iters=1, solver="nystrom", n_centers=500, random_state=0).fit(Xl, yl)
print(f"lazy Dask array: fitted on {Xl.shape[0]:,} rows, {lazy_model.history_[-1]['passes']} passes in the last iteration")

# 3. A zarr array of uint8 pixels on disk: fit reads it in row blocks, in its stored dtype
#    (a quarter of float32's bytes), and casts each block; no copy of the data is made.
with tempfile.TemporaryDirectory() as tmp:
    pixels = rng.integers(0, 256, size=(3_000, 64), dtype=np.uint8)
    labels = (pixels[:, :8].mean(axis=1) > pixels[:, 8:16].mean(axis=1)).astype(int)
    Xz = zarr.create_array(f"{tmp}/pixels.zarr", shape=pixels.shape, chunks=(1_000, 64), dtype="uint8")
    Xz[...] = pixels
    clf = RFMClassifier(iters=1, random_state=0).fit(Xz, labels)
    print(f"uint8 zarr array: {Xz.nbytes_stored() / 2**10:.0f} KiB stored, accuracy {clf.score(pixels, labels):.3f}")
