"""``bigrfm features``: what a fitted model learned (features ranked by diag(M), top eigenvectors, heatmap).

A thin wrapper over :mod:`bigrfm.report`: tables or JSON on stdout, the
heatmap written with ``--plot``.
"""

from __future__ import annotations

import json

import click

__all__ = ["features"]


def _feature_table(rep: dict) -> list[str]:
    width = max([len("feature")] + [len(f["name"]) for f in rep["features"]])
    head = f"{'rank':>4}  {'feature':<{width}}  {'importance':>10}  {'diag(M)':>10}"
    rows = [head, "-" * len(head)]
    rows += [f"{f['rank']:>4}  {f['name']:<{width}}  {f['importance']:>10.4f}  {f['diag']:>#10.4g}" for f in rep["features"]]
    return rows


def _eigen_table(rep: dict) -> list[str]:
    head = f"{'rank':>4}  {'eigenvalue':>10}  {'of trace':>8}  main loadings"
    rows = [head, "-" * len(head)]
    for e in rep["eigenvectors"]:
        loads = ", ".join(f"{ld['value']:+.2f} {ld['name']}" for ld in e["loadings"])
        rows.append(f"{e['rank']:>4}  {e['eigenvalue']:>#10.4g}  {e['fraction']:>8.1%}  {loads}")
    return rows


@click.command("features")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--top", type=click.IntRange(1), default=20, show_default=True, help="Ranked features to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--plot", "plot", type=click.Path(dir_okay=False), default=None, help="Write a heatmap of M to this PNG (needs matplotlib).")
def features(model_dir: str, top: int, as_json: bool, plot: str | None) -> None:
    """Show what the model in MODEL_DIR learned: features ranked by diag(M) and M's top eigenvectors.

    importance is diag(M)_i / trace(M): the share of the mean squared gradient
    of the predictor along feature i (features in standardized units). The
    eigenvectors are the feature combinations the model is most sensitive to.
    """
    from bigrfm import load_model
    from bigrfm.report import feature_report, plot_metric

    est = load_model(model_dir)
    rep = feature_report(est, top=top)
    if plot is not None:  # before printing, so a missing matplotlib fails without half an output
        plot_metric(est, plot)
    if as_json:
        click.echo(json.dumps(rep))
    else:
        click.echo(
            f"{rep['model']}: learned metric M, {rep['n_features']} features ({rep['metric']}), "
            f"chosen iteration {rep['best_iter']}"
        )
        click.echo("\nFeatures ranked by diag(M):")
        click.echo("\n".join(_feature_table(rep)))
        click.echo("\nTop eigenvectors of M (loadings of the unit vector):")
        click.echo("\n".join(_eigen_table(rep)))
    if plot is not None:
        click.echo(f"wrote the heatmap of M to {plot}", err=as_json)
