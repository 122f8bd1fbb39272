"""``bigrfm demo``: the whole product path on a real dataset bundled with scikit-learn.

Writes the dataset to Zarr stores (train, with a validation split, and test),
runs ``bigrfm fit`` on an in-process Dask LocalCluster for the plain kernel
(``--iters 0``) and for the RFM, then ``bigrfm evaluate`` on the test rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np

from .model_cmds import evaluate, fit

_DATASETS = {
    "digits": ("load_digits", True),
    "breast_cancer": ("load_breast_cancer", True),
    "diabetes": ("load_diabetes", False),
}


def _write_splits(name: str, out: Path, seed: int) -> tuple[Path, Path]:
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    from bigrfm.io.convert import create_dataset

    loader, classification = _DATASETS[name]
    bunch = getattr(sklearn.datasets, loader)()
    X, y = bunch.data.astype(np.float64), bunch.target
    strat = y if classification else None
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=strat, random_state=seed)
    X_tr, X_va, y_tr, y_va = train_test_split(X_tr, y_tr, test_size=0.125, stratify=y_tr if classification else None, random_state=seed)
    names = [str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(X.shape[1])])]
    train, test = out / f"{name}.zarr", out / f"{name}-test.zarr"
    with create_dataset(train, X.shape[1], dtype="float64", feature_names=names, overwrite=True) as w:
        w.append(X_tr, y_tr if classification else y_tr.astype(np.float64))
        w.append(X_va, y_va if classification else y_va.astype(np.float64), validation=True)
    with create_dataset(test, X.shape[1], dtype="float64", feature_names=names, overwrite=True) as w:
        w.append(X_te, y_te if classification else y_te.astype(np.float64))
    return train, test


@click.command()
@click.option("--dataset", type=click.Choice(sorted(_DATASETS)), default="breast_cancer", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Where to write the stores and models (default: a temporary folder).")
@click.option("--iters", type=click.IntRange(1), default=3, show_default=True)
@click.option("--scheduler", default="local", show_default=True, help="'local' (in-process LocalCluster), 'threads', or tcp://host:port.")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def demo(ctx: click.Context, dataset: str, workdir: str | None, iters: int, scheduler: str, workers: int, seed: int) -> None:
    """Convert a bundled real dataset to Zarr, fit plain kernel and RFM, evaluate both."""
    with tempfile.TemporaryDirectory(prefix="bigrfm-demo-") as tmp:
        out = Path(workdir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        train, test = _write_splits(dataset, out, seed)
        click.echo(f"== {dataset}: Zarr stores {train} (train + validation split) and {test}", err=True)
        common = dict(data=str(train), overwrite=True, scheduler=scheduler, workers=workers, seed=seed, dtype="float64")
        results = {}
        for label, n_iter in (("plain kernel (iters=0)", 0), (f"RFM (iters={iters})", iters)):
            model = out / f"model-{n_iter}"
            click.echo(f"\n$ bigrfm fit {train} --out {model} --iters {n_iter} --scheduler {scheduler}")
            ctx.invoke(fit, out=str(model), iters=n_iter, **common)
            click.echo(f"$ bigrfm evaluate {model} {test}")
            results[label] = ctx.invoke(evaluate, model_dir=str(model), data=str(test), scheduler="threads")
        metric = "accuracy" if "accuracy" in next(iter(results.values())) else "rmse"
        click.echo(f"\n{'model':<24} test {metric}")
        for label, m in results.items():
            click.echo(f"{label:<24} {m[metric]:.4f}")
