"""Fit an RFM from a Zarr store on a Dask cluster, from Python.

The estimator never holds the data: ``fit_dataset(path)`` streams the store
block by block through the cluster's workers (each worker reads its own
blocks from disk), and only small d x d and m x c summaries come back.

Run:  python examples/03_dask_cluster.py                  starts a LocalCluster (~30 s on 2 cores)
      python examples/03_dask_cluster.py tcp://host:8786  uses a running scheduler
      python examples/03_dask_cluster.py --quick          fewer rows (or BIGRFM_QUICK=1)

With an existing cluster, the workers must see the same path (a shared
filesystem, or an fsspec URL such as s3://...) and have bigrfm installed.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import LocalCluster

from bigrfm import RFMRegressor
from bigrfm.io.convert import create_dataset


def target(X):
    """Depends on 3 of the 12 features (x0, x1, x2), through an interaction and a sine: the RFM should find them."""
    return X[:, 0] * X[:, 1] + np.sin(2 * X[:, 2])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", help="scheduler address tcp://host:port (default: start a LocalCluster)")
    parser.add_argument("--workdir", help="where to write the Zarr store (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BIGRFM_QUICK")), help="fewer rows")
    args = parser.parse_args()

    n_train, n_val, n_test, d = (2_000, 500, 1_000, 12) if args.quick else (8_000, 1_000, 2_000, 12)

    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory(prefix="bigrfm-dask-") as tmp:
        path = Path(args.workdir or tmp) / "train.zarr"

        # 1. Write the dataset in blocks, as you would when the data is produced
        #    piece by piece or is bigger than memory. Validation rows go to
        #    X_val/y_val; fit_dataset uses them to choose the best iteration.
        with create_dataset(path, d, dtype="float32", overwrite=True) as writer:
            for start in range(0, n_train, 1_000):
                X = rng.normal(size=(min(1_000, n_train - start), d))
                writer.append(X, target(X) + 0.1 * rng.normal(size=len(X)))
            X_val = rng.normal(size=(n_val, d))
            writer.append(X_val, target(X_val) + 0.1 * rng.normal(size=n_val), validation=True)
        print(f"wrote {path}: {n_train} training rows, {n_val} validation rows, {d} features")

        # 2. The cluster. The estimator takes the scheduler's ADDRESS (a string),
        #    never a Client object: estimators must stay plain, picklable settings.
        cluster = None
        if args.address:
            address = args.address
        else:
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
            address = cluster.scheduler_address
        print(f"Dask scheduler: {address}")

        try:
            # 3. Fit. solver="nystrom" is what runs past ~20,000 rows (the exact solver
            #    needs the n x n kernel matrix); we force it here so that each conjugate-
            #    gradient iteration is one streamed pass over the store.
            model = RFMRegressor(
                iters=3,
                solver="nystrom",
                n_centers=1_000,
                dtype="float32",
                scheduler=address,
                random_state=0,
            )
            t0 = time.perf_counter()
            model.fit_dataset(str(path))
            print(f"fit in {time.perf_counter() - t0:.1f}s")
        finally:
            if cluster is not None:
                cluster.close()

        # 4. The history: validation RMSE (standardized target units) per iteration.
        #    Iteration 0 is plain kernel ridge (M = identity).
        print("iter  val rmse  cg iters  seconds   (val rmse in units of the target sd)")
        for h in model.history_:
            mark = "  <- chosen" if h["iter"] == model.best_iter_ else ""
            print(f"{h['iter']:>4}  {h['val_mse'] ** 0.5:8.4f}  {h['solver'].get('cg_iters', '-'):>8}  {h['seconds']:7.2f}{mark}")

        # 5. Test on fresh rows. predict() on in-memory arrays runs locally; for a
        #    test set on disk use `bigrfm predict` or bigrfm.inference.predict_dataset.
        X_test = rng.normal(size=(n_test, d))
        y_test = target(X_test)
        rmse = float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
        print(f"test RMSE: {rmse:.4f}  (target sd {y_test.std():.4f})")
        top = np.argsort(model.feature_importances_)[::-1][:3]
        print("most important features:", ", ".join(f"x{i} ({model.feature_importances_[i]:.2f})" for i in top))


# Dask starts worker processes that re-import this file: the guard keeps them
# from re-running the script.
if __name__ == "__main__":
    main()
