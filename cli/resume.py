"""Resuming ``bigrfm fit``: the run's fingerprint and the checkpoint policy.

A checkpoint belongs to the data and the model, not to where the fit ran: its
fingerprint holds the dataset's identity (absolute path, shape, chunking, a
hash of the store's metadata), the task and the model's hyper-parameters,
and none of the execution settings (scheduler, workers, block rows, device),
so an interrupted fit resumes on another cluster, with other workers or other
blocks. The block dtype stays in it (float32 and float64 blocks give other
numbers), and the memory budget does when it picks the solver or the number
of centers.

An existing checkpoint is only ever replaced by a newer one of the same fit,
or, with ``--restart`` or ``--overwrite``, by the first one of a new fit; a
run without those flags refuses to start over it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bigrfm.config import ExecConfig
from bigrfm.exceptions import InputError

__all__ = ["EXECUTION_PARAMS", "fit_fingerprint", "checkpoint_to_resume", "checkpoint_path"]

#: Estimator parameters that say where and how blocks run, not what is fitted.
EXECUTION_PARAMS = ("device", "block_rows", "scheduler", "n_workers", "memory_budget")


def checkpoint_path(out: str | Path) -> Path:
    """Where ``bigrfm fit --out OUT`` checkpoints: ``OUT.checkpoint`` beside the model folder."""
    return Path(f"{out}.checkpoint")


def fit_fingerprint(est: Any, dataset: Any, task: str, config: ExecConfig) -> dict:
    """The fingerprint a checkpoint of this fit carries (see the module docstring)."""
    params = {k: v for k, v in est.get_params(deep=False).items() if k not in EXECUTION_PARAMS}
    if est.solver == "auto" or (est.solver == "nystrom" and est.n_centers is None):
        params["memory_budget"] = int(config.memory_budget)  # it picks the solver or the number of centers
    return {"data": dataset.fingerprint(), "task": task, "params": params}


def _iteration_of(ckpt: Path) -> str:
    try:
        return str(json.loads((ckpt / "checkpoint.json").read_text())["t"] - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def checkpoint_to_resume(ckpt: Path, fingerprint: dict, *, resume: bool, restart: bool, overwrite: bool) -> Any:
    """The loop state to resume from (``--resume``), or None to start a fit; refuses to start over a checkpoint.

    Raises InputError when ``--resume`` finds no checkpoint or one of another
    fit, and when a checkpoint exists but neither ``--resume``, ``--restart``
    nor ``--overwrite`` says what to do with it.
    """
    from bigrfm.model.checkpoint import load_checkpoint  # noqa: PLC0415
    from bigrfm.io.atomic import recover  # noqa: PLC0415

    if resume and restart:
        raise InputError("--resume and --restart exclude each other: --resume continues the checkpointed fit, "
                         "--restart starts a new one.")
    recover(ckpt)  # a checkpoint write killed between its two renames is put back first
    if resume:
        if not ckpt.exists():
            raise InputError(f"--resume: no checkpoint at {ckpt}; run without --resume to start a fit.")
        return load_checkpoint(ckpt, fingerprint)
    if ckpt.exists() and not (restart or overwrite):
        raise InputError(
            f"{ckpt} holds the checkpoint of an interrupted fit (after iteration {_iteration_of(ckpt)}); pass "
            "--resume to continue it, or --restart to start over (it is replaced when the new fit checkpoints)."
        )
    return None
