"""Checkpoints of the RFM loop: an :class:`~bigrfm.model.rfm.RFMState` to and from a checkpoint folder.

A checkpoint is the loop state after an iteration plus a fingerprint of the
run it belongs to; ``--resume`` refuses one whose fingerprint differs. The
folder format itself is :mod:`bigrfm.io.model_folder`'s.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..exceptions import InputError, ModelFormatError
from ..io.model_folder import FolderContents, read_checkpoint, write_checkpoint
from ..numerics.kernels import kernel_from_dict, kernel_to_dict
from .predictors import predictor_arrays, predictor_from_arrays
from .rfm import IterationRecord, RFMState

__all__ = ["save_checkpoint", "load_checkpoint", "normalize_fingerprint"]


def normalize_fingerprint(fingerprint: dict) -> Any:
    """The fingerprint as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(fingerprint, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def save_checkpoint(state: RFMState, path: str | os.PathLike, fingerprint: dict) -> None:
    """Write the loop state after an iteration (atomic: a crash leaves the previous checkpoint)."""
    arrays = {"M": state.M, "warm": state.warm, "best_M": state.best_M}
    kind = None
    if state.best_predictor is not None:
        kind, parts = predictor_arrays(state.best_predictor)
        arrays.update({f"best_{k}": v for k, v in parts.items()})
    meta = {
        "fingerprint": normalize_fingerprint(fingerprint),
        "t": state.t,
        "best_iter": state.best_iter,
        "best_score": state.best_score,
        "stop": state.stop,
        "best_kind": kind,
        "kernel": None if state.best_predictor is None else kernel_to_dict(state.best_predictor.kernel),
        "history": [r.as_dict() for r in state.history],
    }
    write_checkpoint(path, FolderContents(meta, arrays))


def load_checkpoint(path: str | os.PathLike, fingerprint: dict) -> RFMState:
    """The loop state saved by :func:`save_checkpoint`; refuses one made for other data or settings."""
    c = read_checkpoint(path)
    if normalize_fingerprint(fingerprint) != c.get("fingerprint"):
        raise InputError(
            f"The checkpoint at {path} was made with other data or settings; rerun with the same "
            "arguments, or without --resume (and with --overwrite) to start over."
        )
    try:
        best = None
        if c.get("best_kind") is not None:
            parts = {k[len("best_"):]: v for k, v in c.arrays.items() if k.startswith("best_") and k != "best_M"}
            best = predictor_from_arrays(c.get("best_kind"), kernel_from_dict(c.get("kernel")), c.array("best_M"), parts)
        history = tuple(IterationRecord(**h) for h in c.get("history"))
        return RFMState(
            t=int(c.get("t")),
            M=c.array("M"),
            warm=c.array("warm", required=False),
            history=history,
            best_iter=c.get("best_iter"),
            best_score=c.get("best_score"),
            best_M=c.array("best_M", required=False),
            best_predictor=best,
            stop=c.meta.get("stop"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"The checkpoint at {path} is damaged or from another version ({type(exc).__name__}: {exc}).") from None
