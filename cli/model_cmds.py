"""``bigrfm fit``, ``predict``, ``evaluate``: the product path from a Zarr store to a model folder.

Parses, calls the library's public API, prints tables and progress; no maths."""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from bigrfm.config import ExecConfig, parse_bytes
from bigrfm.exceptions import InputError

_TASKS = ("auto", "classification", "regression")


class AutoOrFloat(click.ParamType):
    """``auto`` or a float > 0 (the bandwidth and the ridge)."""

    name = "auto|float"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, float) or value == "auto":
            return value
        try:
            v = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor a number.", param, ctx)
        if not v > 0:
            self.fail(f"{value!r} must be 'auto' or a number > 0.", param, ctx)
        return v


class PassProgress:
    """Progress of passes over the data on stderr: blocks, rows/s, ETA (one line, rewritten)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.passes = 0
        self.t_first = time.perf_counter()
        self.rows_first = 0
        self.label = ""

    def __call__(self, done: int, total: int, rows: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done == 1:
            self.passes += 1
            self.t_first, self.rows_first = now, rows
        rate = (rows - self.rows_first) / (now - self.t_first) if done > 1 and now > self.t_first else None
        eta = (now - self.t_first) / (done - 1) * (total - done) if done > 1 else None
        line = f"  {self.label}pass {self.passes}: {done}/{total} blocks"
        if rate is not None:
            line += f", {rate:,.0f} rows/s, ETA {eta:.0f}s"
        if self.tty:
            click.echo("\r" + line.ljust(78), err=True, nl=done == total)
        elif done == total:
            click.echo(line, err=True)


def _history_table(history: list[dict], best: int, classification: bool) -> str:
    cols = [("iter", 4), ("val acc" if classification else "val rmse", 9), ("val mse", 10), ("bandwidth", 9),
            ("reg", 7), ("passes", 6), ("cg iters", 8), ("cg resid", 8), ("cg stop", 9), ("seconds", 8)]
    head = "  ".join(f"{name:>{w}}" for name, w in cols)
    rows = [head, "-" * len(head)]

    def cell(v: Any, spec: str, width: int) -> str:
        return f"{'-' if v is None else format(v, spec):>{width}}"

    for h in history:
        metric = h["val_accuracy"] if classification else (None if h["val_mse"] is None else h["val_mse"] ** 0.5)
        sv = h["solver"]
        values = [(h["iter"], "d"), (metric, ".4f"), (h["val_mse"], ".5f"), (h.get("bandwidth"), ".4g"),
                  (h.get("reg"), ".0e"), (h.get("passes"), "d"),
                  (sv.get("cg_iters"), "d"), (sv.get("cg_residual"), ".1e"), (sv.get("cg_stop"), "s"), (h["seconds"], ".2f")]
        line = "  ".join(cell(v, spec, w) for (v, spec), (_, w) in zip(values, cols))
        rows.append(line + ("  *" if h["iter"] == best else ""))
    last = history[-1] if history else {}
    if last.get("stop") == "patience":
        rows.append(f"stopped after iteration {last['iter']}: no better validation score since iteration {best} (patience)")
    for h in history:
        sc = h.get("scale")
        if sc:
            rows.append(f"t={h['iter']}: bandwidth {h['bandwidth']:.4g} = {sc['ratio']:.3g} x median distance "
                        f"{sc['median']:.3g}, reg {h['reg']:g}, chosen on validation among {len(sc['candidates'])} "
                        f"candidates ({sc['seconds']:.2f}s)")
    rows.append("(* chosen iteration; passes over the training data, the AGOP pass included; cg resid is relative to the "
                "right-hand side; validation metrics in standardized target units for regression)")
    return "\n".join(rows)


def _exec_options(f: Any, *, model_dtype: bool = False) -> Any:
    """Add the execution options; ``model_dtype``: --dtype defaults to the model's (predict, evaluate)."""
    dtype_opt = (
        click.option("--dtype", type=click.Choice(["float32", "float64"]), default=None,
                     help="Block dtype (default: the dtype the model was fitted in; reductions are float64).")
        if model_dtype else
        click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
                     help="Block dtype (reductions are float64).")
    )
    for opt in reversed(
        [
            dtype_opt,
            click.option("--block-rows", type=click.IntRange(1), default=None, help="Rows per block (default: ~32 MiB of features)."),
            click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True),
            click.option("--scheduler", default="local", show_default=True, help="'local' (in-process LocalCluster), 'threads' (no cluster), or a scheduler address tcp://host:port."),
            click.option("--workers", "--gpus", "workers", type=click.IntRange(1), default=None, help="LocalCluster workers (default: one per core); with --device cuda, GPUs (one worker each, needs dask-cuda)."),
            click.option("--memory-limit", default="auto", show_default=True, help="LocalCluster memory limit per worker."),
            click.option("--worker-timeout", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True, help="Seconds a pass waits while the Dask cluster has no worker before it fails."),
            click.option("--memory-budget", default="4GiB", show_default=True, help="Memory the client may use for the exact solver's matrix or the two m x m Nystrom factors (m = 30,000 needs 16GB)."),
            click.option("--x-name", default="X", show_default=True),
            click.option("--y-name", default="y", show_default=True),
        ]
    ):
        f = opt(f)
    return f


def _config(opts: dict) -> ExecConfig:
    """The execution settings of the options added by :func:`_exec_options` (x/y names excluded)."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    return ExecConfig(
        device=opts["device"],
        dtype=opts["dtype"],
        block_rows=opts["block_rows"],
        scheduler=None if opts["scheduler"] == "threads" else opts["scheduler"],
        n_workers=opts["workers"],
        memory_limit=opts["memory_limit"],
        memory_budget=parse_bytes(opts["memory_budget"], "--memory-budget"),
        worker_timeout=opts["worker_timeout"],
        worker_log_level=(root or {}).get("worker_log_level"),
    )


def _task_of(dataset: Any, task: str) -> str:
    if task != "auto":
        return task
    kind = np.dtype(dataset.y_dtype).kind if dataset.y_dtype not in (None, "string") else "U"
    return "regression" if kind == "f" else "classification"


@click.command()
@click.argument("data", type=str)
@click.option("--out", "out", required=True, type=click.Path(), help="Model folder to write.")
@click.option("--task", type=click.Choice(_TASKS), default="auto", show_default=True, help="auto: float targets are regression, integer or string targets classification.")
@click.option("--kernel", type=click.Choice(["laplace", "gaussian", "exp_power"]), default="laplace", show_default=True)
@click.option("--bandwidth", type=AutoOrFloat(), default="auto", show_default=True,
              help="Kernel length scale, or 'auto': chosen on validation in every iteration among multiples of the "
                   "median pairwise distance in that iteration's metric.")
@click.option("--exponent", type=float, default=1.0, show_default=True, help="q of the exp_power kernel.")
@click.option("--reg", type=AutoOrFloat(), default="auto", show_default=True,
              help="Ridge, or 'auto': chosen on validation in every iteration.")
@click.option("--iters", type=click.IntRange(0), default=5, show_default=True, help="Most AGOP updates.")
@click.option("--patience", type=click.IntRange(0), default=2, show_default=True,
              help="Stop after this many iterations without a better validation score (0: run all --iters).")
@click.option("--solver", type=click.Choice(["auto", "exact", "nystrom", "rff"]), default="auto", show_default=True)
@click.option("--centers", type=click.IntRange(1), default=None, help="Nystrom centers (default grows with n).")
@click.option("--features", "n_components", type=click.IntRange(1), default=None, help="Random features (rff).")
@click.option("--diag", is_flag=True, help="Learn a diagonal metric.")
@click.option("--centering", is_flag=True, help="Center gradients before the AGOP.")
@click.option("--agop-power", type=float, default=1.0, show_default=True)
@click.option("--agop-sample", type=click.IntRange(1), default=None, help="AGOP on a sample of rows (default: all).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True, help="Held out when the store has no X_val/y_val.")
@click.option("--cg-tol", type=float, default=None, help="CG relative residual (default 1e-3; CG also stops when the validation score stops improving; 0 runs to --cg-maxiter).")
@click.option("--cg-maxiter", type=click.IntRange(1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--missing", type=click.Choice(["error", "mean"]), default="error", show_default=True,
              help="NaN in X: error, or mean (replace by each feature's training mean, saved with the model).")
@click.option("--add-indicator", is_flag=True, help="With --missing mean, add a 0/1 column per feature with a NaN.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint of an interrupted fit (on any cluster, workers or blocks).")
@click.option("--restart", is_flag=True, help="Start over although a checkpoint exists (it is replaced when the new fit checkpoints).")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder (and start over any checkpoint).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@_exec_options
def fit(data: str, out: str, task: str, kernel: str, bandwidth: Any, exponent: float, reg: Any, iters: int, patience: int,
        solver: str,
        centers: int | None, n_components: int | None, diag: bool, centering: bool, agop_power: float, agop_sample: int | None,
        val_fraction: float, cg_tol: float, cg_maxiter: int, seed: int, missing: str, add_indicator: bool, resume: bool,
        restart: bool, overwrite: bool, as_json: bool, x_name: str, y_name: str, **exec_opts: Any) -> None:
    """Fit an RFM on the Zarr dataset DATA and write a model folder.

    Streams DATA block by block through a Dask cluster (an in-process
    LocalCluster by default), checkpoints after every iteration
    (OUT.checkpoint/, used by --resume), and ends with the per-iteration table.
    """
    from bigrfm import RFMClassifier, RFMRegressor
    from bigrfm.io.atomic import WriterLock
    from bigrfm.io.zarr_store import open_dataset
    from bigrfm.model.checkpoint import save_checkpoint

    from .resume import checkpoint_path, checkpoint_to_resume, fit_fingerprint

    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it.")
    ckpt = checkpoint_path(out)
    config = _config(exec_opts)
    dataset = open_dataset(data, x_name=x_name, y_name=y_name, require_y=True)
    task = _task_of(dataset, task)
    cls = RFMClassifier if task == "classification" else RFMRegressor
    est = cls(
        kernel=kernel, bandwidth=bandwidth, exponent=exponent, reg=reg, iters=iters, patience=patience or None,
        solver=solver, diag=diag,
        centering=centering, agop_power=agop_power, agop_sample=agop_sample, validation_fraction=val_fraction,
        random_state=seed, n_centers=centers, n_components=n_components, cg_tol=cg_tol, cg_maxiter=cg_maxiter,
        device=config.device, dtype=config.dtype, block_rows=config.block_rows, scheduler=config.scheduler,
        n_workers=config.n_workers, memory_budget=config.memory_budget, missing=missing, add_indicator=add_indicator,
    )
    fingerprint = fit_fingerprint(est, dataset, task, config)
    progress = PassProgress(enabled=not as_json or sys.stderr.isatty())
    saved: list[int] = []

    def on_iteration(st: Any) -> None:
        save_checkpoint(st, ckpt, fingerprint)
        saved.append(st.t - 1)
        h = st.history[-1]
        score = "-" if h.score is None else f"{(h.val_accuracy if task == 'classification' else h.val_mse ** 0.5):.4f}"
        extra = "".join(f" {k}={v:.3g}" if isinstance(v, float) else f" {k}={v}" for k, v in h.solver.items())
        extra += f" bandwidth={h.bandwidth:.4g} reg={h.reg:.0e}" + (" (stopped: patience)" if h.stop == "patience" else "")
        click.echo(f"iteration {h.iter}/{iters}: val {'acc' if task == 'classification' else 'rmse'} {score}, {h.seconds:.1f}s{extra}", err=True)

    # one fit per --out: a second one fails at once instead of racing for the checkpoint and the model
    with WriterLock(out_path, "fitting a model into"):
        state = checkpoint_to_resume(ckpt, fingerprint, resume=resume, restart=restart, overwrite=overwrite)
        if state is not None:
            saved.append(state.t - 1)
        click.echo(f"fitting {cls.__name__} on {dataset.n_rows:,} rows x {dataset.n_features} features ({data})", err=True)
        t0 = time.perf_counter()
        try:
            est.fit_dataset(dataset, state=state, on_iteration=on_iteration, progress=progress, config=config)
        except KeyboardInterrupt:
            if not saved:  # Ctrl-C may land between a checkpoint's write and its note in `saved`
                try:
                    saved.append(int(json.loads((Path(ckpt) / "checkpoint.json").read_text())["t"]) - 1)
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            if saved:
                click.echo(f"\ninterrupted: the checkpoint after iteration {saved[-1]} is kept ({ckpt}); continue "
                           "with the same command and --resume.", err=True)
            else:
                click.echo("\ninterrupted before the first iteration finished; nothing was checkpointed.", err=True)
            raise
        seconds = time.perf_counter() - t0
        est.save(out_path, overwrite=overwrite, provenance={"data": dataset.path, "rows": dataset.n_rows, "seconds": seconds})
        shutil.rmtree(ckpt, ignore_errors=True)  # the model is in place: the checkpoint served its purpose
    summary = {"model": str(out_path), "task": task, "solver": est.solver_, "best_iter": est.best_iter_, "seconds": seconds, "history": est.history_}
    if as_json:
        click.echo(json.dumps(summary, default=float))
    else:
        click.echo(_history_table(est.history_, est.best_iter_, task == "classification"))
        click.echo(f"chose iteration {est.best_iter_} ({est.solver_} solver); fit took {seconds:.1f}s; model written to {out_path}")


def _model_dtype(est: Any, device: str) -> str:
    """The block dtype the model was fitted in ("auto" resolved for ``device``)."""
    from bigrfm.numerics.backend import resolve_device, resolve_dtype

    return resolve_dtype(est.dtype, resolve_device(device))


def _engine(exec_opts: dict) -> Any:
    from bigrfm.engine import Engine

    return Engine(_config(exec_opts))


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=str)
@click.option("--out", "out", required=True, type=click.Path(), help="Zarr group to write (y_pred, and proba with --proba).")
@click.option("--proba", is_flag=True, help="Also write class probabilities (classifiers).")
@click.option("--overwrite", is_flag=True)
@functools.partial(_exec_options, model_dtype=True)
def predict(model_dir: str, data: str, out: str, proba: bool, overwrite: bool, x_name: str, y_name: str,
            **exec_opts: Any) -> None:
    """Write predictions of the model in MODEL_DIR for the rows of DATA (streamed)."""
    from bigrfm import load_model
    from bigrfm.io.zarr_store import open_dataset
    from bigrfm.inference import predict_dataset

    est = load_model(model_dir)
    dataset = open_dataset(data, x_name=x_name, y_name=y_name)
    exec_opts["dtype"] = exec_opts["dtype"] or _model_dtype(est, exec_opts["device"])
    with _engine(exec_opts) as engine:
        predict_dataset(est, dataset, out, engine, proba=proba, overwrite=overwrite, progress=PassProgress())
    click.echo(f"wrote predictions for {dataset.n_rows:,} rows to {out}")


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=str)
@click.option("--json", "as_json", is_flag=True)
@click.option("--split", type=click.Choice(["data", "val"]), default="data", show_default=True, help="Evaluate X/y, or the stored X_val/y_val.")
@functools.partial(_exec_options, model_dtype=True)
def evaluate(model_dir: str, data: str, as_json: bool, split: str, x_name: str, y_name: str, **exec_opts: Any) -> dict:
    """Accuracy (classifiers) or RMSE and R^2 (regressors) of MODEL_DIR on DATA."""
    from bigrfm import load_model
    from bigrfm.io.zarr_store import open_dataset
    from bigrfm.inference import evaluate_dataset

    est = load_model(model_dir)
    dataset = open_dataset(data, x_name=x_name, y_name=y_name, require_y=True)
    if split == "val":
        dataset = dataset.validation()
        if dataset is None:
            raise InputError(f"{data} has no X_val/y_val to evaluate.")
    exec_opts["dtype"] = exec_opts["dtype"] or _model_dtype(est, exec_opts["device"])
    with _engine(exec_opts) as engine:
        metrics = evaluate_dataset(est, dataset, engine, progress=PassProgress())
    if as_json:
        click.echo(json.dumps(metrics))
    else:
        click.echo("  ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()))
    return metrics
