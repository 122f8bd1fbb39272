"""Compact storage: Fashion-MNIST stored as uint8 against float32 — bytes on disk, read and fit seconds.

    python benchmarks/bench_dtypes.py                    # 60,000 x 784 pixels, 2,000 centers
    python benchmarks/bench_dtypes.py --centers 4000 --append

The pixels are integers 0..255. ``bigrfm convert --dtype uint8`` stores them as
they are; the default ``--dtype float32`` stores the same values in four times
the bytes. Both stores hold the official training set as X/y and the official
test set as X_val/y_val, written by ``convert`` from one plain Zarr group of the raw pixels (uncompressed,
the default, and Blosc-LZ4). For each store: bytes of X on disk, seconds of
one pass reading every block of X (what each pass over the data does when the
block cache does not hold it), and for the uncompressed stores one fit
(``RFMClassifier(solver="nystrom", iters=1, dtype="float32")``, threads,
``fit_dataset``) with its seconds, its validation accuracy and whether the
two models are equal (they should be bit for bit: a uint8 block is cast to the
same float64 values as a float32 one before standardization).

Prints markdown; ``--append`` appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import datasets  # noqa: E402

from bigrfm import RFMClassifier  # noqa: E402
from bigrfm.io.convert import convert  # noqa: E402
from bigrfm.io.datasets import iter_blocks  # noqa: E402
from bigrfm.io.zarr_store import open_dataset  # noqa: E402


def raw_fashion(root: str = datasets.FASHION_MNIST_DIR) -> dict:
    """Fashion-MNIST as stored: uint8 pixels (n, 784) and int64 labels, train and test."""
    out = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        paths = [os.path.join(root, f"{prefix}-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1")]
        for p in paths:
            if not os.path.exists(p):
                raise datasets.DatasetMissing(f"{p} not found: `apt-get install -y dataset-fashion-mnist`.")
        images, labels = (datasets.read_idx(p) for p in paths)
        out[f"X_{split}"] = images.reshape(len(images), -1)
        out[f"y_{split}"] = labels.astype(np.int64)
    return out


def raw_store(D: dict, path: str) -> str:
    """The pixels as one plain Zarr group (uint8 X/y, the test set as X_val/y_val): the source of every store."""
    import zarr

    g = zarr.open_group(path, mode="w")
    for name, key in (("X", "X_train"), ("y", "y_train"), ("X_val", "X_test"), ("y_val", "y_test")):
        a = D[key]
        g.create_array(name, shape=a.shape, dtype=a.dtype, chunks=(10_000, *a.shape[1:]))[...] = a
    return path


def x_bytes(store: str) -> int:
    """Bytes on disk of the training features (the X array's folder)."""
    base = os.path.join(store, "X")
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(base) for f in fs)


def read_pass(store: str, repeats: int = 3) -> float:
    """Median seconds of reading every block of X once (16 MiB of float32 per block), as a pass does."""
    ds = open_dataset(store)
    rows = 16 * 2**20 // (4 * ds.n_features)
    return common.median_time(lambda: [None for _ in iter_blocks(ds, rows)], repeats)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--centers", type=int, default=2000)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--bandwidth", type=float, default=20.0)
    ap.add_argument("--rows", type=int, default=None, help="only the first ROWS training images (a quick check)")
    ap.add_argument("--append", action="store_true", help="append the report to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    t_all = time.perf_counter()
    D = raw_fashion()
    if args.rows:
        D["X_train"], D["y_train"] = D["X_train"][: args.rows], D["y_train"][: args.rows]
    rows, models = [], {}
    with tempfile.TemporaryDirectory(prefix="bigrfm-dtypes-") as tmp:
        src = raw_store(D, os.path.join(tmp, "raw.zarr"))
        for dtype in ("uint8", "float32"):
            for compressor in ("none", "lz4"):
                store = os.path.join(tmp, f"{dtype}-{compressor}.zarr")
                t = time.perf_counter()
                convert(src, store, dtype=dtype, compressor=compressor)
                convert_s = time.perf_counter() - t
                row = {"dtype": dtype, "compressor": compressor, "bytes": x_bytes(store), "convert_s": convert_s,
                       "read_s": read_pass(store)}
                if compressor == "none":
                    t = time.perf_counter()
                    model = RFMClassifier(solver="nystrom", n_centers=args.centers, iters=args.iters, bandwidth=args.bandwidth,
                                          dtype="float32", random_state=0).fit_dataset(store)
                    row["fit_s"] = time.perf_counter() - t
                    h = model.history_[model.best_iter_]
                    row["val_acc"] = h["val_accuracy"]
                    models[dtype] = model
                rows.append(row)
                print(row, flush=True)
                shutil.rmtree(store)
    same = all(np.array_equal(getattr(models["uint8"], a), getattr(models["float32"], a)) for a in ("M_", "dual_coef_", "centers_"))
    seconds = time.perf_counter() - t_all

    f32 = {r["compressor"]: r for r in rows if r["dtype"] == "float32"}
    lines = ["| X stored as | compressor | X on disk | vs float32 | one read pass s | convert s | fit s | val accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fit_s = f"{r['fit_s']:.1f}" if "fit_s" in r else ""
        acc = f"{r['val_acc']:.4f}" if "val_acc" in r else ""
        ratio = r["bytes"] / f32[r["compressor"]]["bytes"]
        lines.append(f"| {r['dtype']} | {r['compressor']} | {r['bytes'] / 2**20:.1f} MiB | {ratio:.2f}x | {r['read_s']:.3f} | "
                     f"{r['convert_s']:.1f} | {fit_s} | {acc} |")
    about = (f"Data: Fashion-MNIST, the {len(D['y_train']):,} official training images as X (784 uint8 pixels each) and the 10,000 test "
             f"images as X_val, written by `bigrfm.io.convert.convert` (= `bigrfm convert raw.zarr OUT.zarr --dtype ... --compressor ...`) from a plain Zarr group of the raw pixels. Fit: `RFMClassifier(solver=\"nystrom\", "
             f"n_centers={args.centers}, iters={args.iters}, bandwidth={args.bandwidth:g}, dtype=\"float32\", random_state=0)"
             f".fit_dataset(store)` on threads; one read pass = every 16 MiB block of X read once (median of 3). "
             f"The uint8 and float32 fits give {'the same model bit for bit' if same else 'DIFFERENT models'}.\n")
    common.screen_report("bench_dtypes", argv, seconds, about, "\n".join(lines),
                         os.path.join(HERE, "RESULTS.md") if args.append else None)


if __name__ == "__main__":
    main()
