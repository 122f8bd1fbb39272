"""``bigrfm patches``: stream a Zarr dataset of images into a Zarr dataset of patch features.

Thin wrapper over :class:`bigrfm.PatchFeatures` and :func:`bigrfm.features.patches.transform_dataset`;
errors propagate to the ``bigrfm`` group (one ``Error: ...`` line, exit code 2).
"""

from __future__ import annotations

import sys
import time

import click

from bigrfm.exceptions import InputError

__all__ = ["patches"]


def _shape(spec: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in spec.lower().replace("x", ",").split(","))
    except ValueError:
        raise InputError(f"--image-shape {spec!r}: give HEIGHT,WIDTH or HEIGHT,WIDTH,CHANNELS, e.g. 28,28.") from None
    return shape


@click.command("patches")
@click.argument("data")
@click.argument("out")
@click.option("--image-shape", help="HEIGHT,WIDTH[,CHANNELS] the rows were flattened from (C order). "
              "Needed unless --features is given.")
@click.option("--features", "features_src", help="Reuse a fitted transformer: a dataset written by this command "
              "(e.g. the training features) or a folder saved with PatchFeatures.save.")
@click.option("--patch-size", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--filters", type=click.IntRange(min=1), default=64, show_default=True, help="k-means filters.")
@click.option("--pool", type=click.IntRange(min=1), default=4, show_default=True, help="POOL x POOL regions.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--fit-images", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Images sampled from DATA to learn the whitening and the filters.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--block-rows", type=click.IntRange(min=1), help="Images per block (default: about 64 MiB of temporaries).")
@click.option("--x-name", default="X", show_default=True)
@click.option("--y-name", default="y", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a Zarr store.")
def patches(data: str, out: str, image_shape: str | None, features_src: str | None, patch_size: int, filters: int,
            pool: int, stride: int, fit_images: int, seed: int, dtype: str, block_rows: int | None, x_name: str,
            y_name: str, overwrite: bool) -> None:
    """Convolutional patch features of the images in DATA, written to the Zarr dataset OUT.

    Without --features a PatchFeatures transformer is fitted on --fit-images rows
    sampled from DATA; it is stored in OUT, so test data goes through the same one:

        bigrfm patches train.zarr train-f.zarr --image-shape 28,28
        bigrfm patches test.zarr test-f.zarr --features train-f.zarr
        bigrfm fit train-f.zarr --out model/ && bigrfm evaluate model/ test-f.zarr
    """
    from bigrfm import PatchFeatures
    from bigrfm.io.zarr_store import open_array, open_dataset
    from bigrfm.features.patches import transform_dataset

    ds = open_dataset(data, x_name=x_name, y_name=y_name)
    t0 = time.perf_counter()
    if features_src:
        pf = PatchFeatures.load(features_src)
        how = f"transformer from {features_src}"
    else:
        if not image_shape:
            raise InputError("Give --image-shape HEIGHT,WIDTH[,CHANNELS] (or --features to reuse a fitted transformer).")
        pf = PatchFeatures(_shape(image_shape), patch_size=patch_size, n_filters=filters, pool=pool, stride=stride,
                           n_fit_images=fit_images, random_state=seed, dtype=dtype)
        X = open_array(ds.path, x_name, (ds.n_rows, ds.n_features), ds.token)
        pf.check_width(X, f"{data} ({x_name!r})")  # fit checks too, but without naming the store
        pf.fit(X)
        how = f"fitted on {min(fit_images, ds.n_rows):,} sampled images in {time.perf_counter() - t0:.1f} s"

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done:,}/{total:,} images", end="", file=sys.stderr, flush=True)

    res = transform_dataset(pf, ds, out, x_name=x_name, y_name=y_name, overwrite=overwrite, block_rows=block_rows,
                            progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    val = res.validation()
    click.echo(f"wrote {out}: {res.n_rows:,} rows x {res.n_features:,} features ({res.dtype})"
               + (f", {val.n_rows:,} validation rows" if val is not None else "")
               + f"; {how}; {time.perf_counter() - t0:.1f} s in all")
