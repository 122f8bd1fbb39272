"""``bigrfm convert`` and ``bigrfm info``: build a Zarr dataset from a file, and describe one.

Thin wrappers: parse options, call :func:`bigrfm.io.convert.convert` /
:func:`bigrfm.io.convert.describe`, print results on stdout (logs go to stderr). The
library's errors propagate to the ``bigrfm`` group, which prints one
``Error: ...`` line and exits with code 2 (``bigrfm --debug`` shows the
traceback).
"""

from __future__ import annotations

import json
from typing import Any

import click

from bigrfm.io import convert as convert_mod
from bigrfm.io import zarr_store

__all__ = ["convert", "info"]


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    units, x, i = ("B", "KiB", "MiB", "GiB", "TiB"), float(n), 0
    while x >= 1024 and i < len(units) - 1:
        x, i = x / 1024, i + 1
    return f"{n} B" if i == 0 else f"{x:.1f} {units[i]}"


@click.command("convert")
@click.argument("src")
@click.argument("out")
@click.option("--target", help="Target column: a name (CSV/Parquet) or a column index (.npy). Omit for an .npz with y.")
@click.option("--features", help="Feature columns, comma-separated (names, or indices for arrays). Default: all but the target.")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="Send this fraction of rows (seeded, at random) to X_val/y_val.")
@click.option("--chunk-rows", type=click.IntRange(min=1), help="Rows per stored chunk. Default: about 8 MiB of X.")
@click.option("--compressor", type=click.Choice(["none", "lz4", "zstd"]), default="none", show_default=True,
              help="Float features barely compress; lz4 is the fast option.")
@click.option("--dtype", type=click.Choice(list(zarr_store.STORAGE_DTYPES)), default="float32", show_default=True,
              help="dtype of X: float64 keeps the source values exactly; uint8/int8/uint16/int16/int32/bool keep "
                   "integer data compact (values are checked to fit) and are cast per block when fitting.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (only a Zarr store is ever replaced).")
@click.option("--shuffle", is_flag=True, help="Write rows in a seeded random order (two passes through temporary buckets).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the validation split and the shuffle.")
@click.option("--one-hot", is_flag=True, help="Expand text feature columns into one indicator column per category.")
@click.option("--drop-nonfinite", is_flag=True, help="Drop rows with NaN/inf or empty values instead of failing.")
@click.option("--missing", type=click.Choice(["error", "mean"]), default="error", show_default=True,
              help="mean: keep NaN and empty feature values as missing, for `bigrfm fit --missing mean` to impute "
                   "with the training means (inf and missing targets are still refused).")
@click.option("--x-name", default="X", show_default=True, help="Name of the feature array in OUT.")
@click.option("--y-name", default="y", show_default=True, help="Name of the target array in OUT.")
def convert(src: str, out: str, **options: Any) -> None:
    """Convert SRC (.csv, .csv.gz, .parquet, .npy, .npz, or a Zarr store) into the Zarr dataset OUT, streaming.

    OUT appears only when the conversion succeeded. A Zarr SRC is rewritten
    chunked along rows and in --dtype (the fix for a column-chunked store).
    """
    ds = convert_mod.convert(src, out, **options)
    val = ds.validation()
    parts = [f"{ds.n_rows} rows", f"{ds.n_features} features ({ds.dtype})"]
    if val is not None:
        parts.append(f"{val.n_rows} validation rows")
    if ds.has_y:
        parts.append(f"target {ds.y_name!r} ({ds.y_dtype})")
    click.echo(f"Wrote {out}: " + ", ".join(parts))


def _target_lines(target: dict | None, indent: str = "  ") -> list[str]:
    if target is None:
        return [f"{indent}target      none"]
    head = f"{indent}target      {target['name']!r} {target['dtype']} {tuple(target['shape'])}"
    if "classes" in target:
        shown = list(zip(target["classes"], target["counts"]))[:20]
        more = f" ... ({len(target['classes'])} classes)" if len(target["classes"]) > 20 else ""
        return [head, f"{indent}classes     " + ", ".join(f"{c}: {n}" for c, n in shown) + more]
    fmt = (lambda v: f"{v:.6g}") if isinstance(target["mean"], float) else (lambda v: "[" + ", ".join(f"{x:.6g}" for x in v) + "]")
    return [head, f"{indent}mean / sd   {fmt(target['mean'])} / {fmt(target['std'])}"]


@click.command("info")
@click.argument("dataset")
@click.option("--x-name", default="X", show_default=True, help="Name of the feature array.")
@click.option("--y-name", default="y", show_default=True, help="Name of the target array.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(dataset: str, x_name: str, y_name: str, as_json: bool) -> None:
    """Describe the Zarr dataset DATASET: shape, storage, targets, validation split."""
    summary = convert_mod.describe(zarr_store.open_dataset(dataset, x_name, y_name))
    if as_json:
        click.echo(json.dumps(summary))
        return
    lines = [
        f"dataset     {summary['path']}",
        f"rows        {summary['rows']}",
        f"features    {summary['features']} ({summary['dtype']})",
        f"chunk rows  {summary['chunk_rows']}",
        f"on disk     {_size(summary['bytes_on_disk'])}",
        f"in memory   {_size(summary['bytes_in_memory'])}",
        *_target_lines(summary["target"], ""),
    ]
    val = summary["validation"]
    lines.append("validation  none" if val is None else f"validation  {val['rows']} rows")
    if val is not None and val["target"] is not None:
        lines.extend(_target_lines(val["target"]))
    names = summary["feature_names"]
    if names:
        more = " ..." if summary["features"] > len(names) else ""
        lines.append("names       " + ", ".join(names) + more)
    click.echo("\n".join(lines))
