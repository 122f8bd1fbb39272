"""Checkpoints of the RFM loop: an :class:`~bigrfm.model.rfm.RFMState` to and from a checkpoint folder.

A checkpoint is the loop state after an iteration (with the fit's resolved
seed) plus a fingerprint of the run it belongs to: the data's identity and the
model's parameters, not where it ran, so a fit may resume on another cluster,
with other workers or other blocks. ``--resume`` refuses one whose fingerprint
differs. The folder format itself is :mod:`bigrfm.io.model_folder`'s.
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


def _first_difference(saved: Any, wanted: Any, where: str = "") -> str:
    """The first key whose value differs between two fingerprints, for the message."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for key in sorted(set(saved) | set(wanted), key=str):
            if saved.get(key) != wanted.get(key):
                return _first_difference(saved.get(key), wanted.get(key), f"{where}.{key}" if where else str(key))
    return f"{where or 'fingerprint'}: {saved!r} then, {wanted!r} now"


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
        "seed": state.seed,
        "kernel": None if state.best_predictor is None else kernel_to_dict(state.best_predictor.kernel),
        "history": [r.as_dict() for r in state.history],
    }
    write_checkpoint(path, FolderContents(meta, arrays))


def load_checkpoint(path: str | os.PathLike, fingerprint: dict) -> RFMState:
    """The loop state saved by :func:`save_checkpoint`; refuses one made for other data or settings."""
    c = read_checkpoint(path)
    saved, wanted = c.get("fingerprint"), normalize_fingerprint(fingerprint)
    if wanted != saved:
        raise InputError(
            f"The checkpoint at {path} was made with other data or settings ({_first_difference(saved, wanted)}); "
            "resume with the same data and model options, or pass --restart (restart=True) to start over."
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
            seed=None if c.meta.get("seed") is None else int(c.meta["seed"]),
            stop=c.meta.get("stop"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFormatError(f"The checkpoint at {path} is damaged or from another version ({type(exc).__name__}: {exc}).") from None
