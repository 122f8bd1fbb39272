"""Model folders: a Zarr group of arrays plus ``model.json``; never pickle.

Layout of ``MODEL_DIR``::

    model.json      format name and version, estimator class, hyper-parameters,
                    kernel, solver, history, metrics, provenance
    zarr.json       the Zarr (format 3) group holding the arrays:
    M/              learned metric (d x d, or d for diag models)
    centers/, dual_coef/          kernel predictors
    omega/, phase/, weights/      random-feature predictors
    x_mean/, x_scale/, y_mean/, y_scale/  standardization
    classes/        class labels (classifiers)

Loading reads JSON and numeric/string arrays only, so it never executes code;
every shape is checked against the others. Writes are atomic: everything goes
to a temporary sibling folder that is renamed onto ``MODEL_DIR`` at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from . import __version__
from .data import as_labels
from .exceptions import InputError, ModelFormatError
from .kernels import KERNELS, make_kernel
from .predictors import KernelPredictor

__all__ = ["save_model", "load_model", "save_checkpoint", "load_checkpoint", "atomic_folder", "FORMAT", "FORMAT_VERSION"]

FORMAT = "bigrfm-model"
FORMAT_VERSION = 1


class atomic_folder:
    """Context manager yielding a temporary folder that replaces ``path`` on success.

    An existing ``path`` is only replaced when ``overwrite``; on any error the
    temporary folder is removed and ``path`` is untouched.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite

    def __enter__(self) -> Path:
        if self.path.exists() and not self.overwrite:
            raise InputError(f"{self.path} already exists; pass overwrite=True (--overwrite) to replace it.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _put(group: Any, name: str, a: Any) -> None:
    if a is None:
        return
    a = np.asarray(a)
    if a.dtype.kind in "OUT":
        # Zarr's variable-length "string" type (fixed-width unicode has no stable v3 spec)
        group.create_array(name, shape=a.shape, dtype=str, chunks=a.shape)[...] = a.astype(str)
        return
    group.create_array(name, data=a, chunks=a.shape if a.ndim else None)


def save_model(est: Any, path: str | os.PathLike, *, overwrite: bool = False, provenance: dict | None = None) -> Path:
    """Write a fitted estimator to ``path`` (atomic; refuses to overwrite unless asked)."""
    from sklearn.utils.validation import check_is_fitted  # noqa: PLC0415

    check_is_fitted(est, "predictor_")
    pred = est.predictor_
    kind = "rff" if hasattr(pred, "rffmap") else "kernel"
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": type(est).__name__,
        "params": est.get_params(deep=False),
        "kernel": dataclass_kernel(pred.kernel),
        "predictor": kind,
        "solver": est.solver_,
        "best_iter": est.best_iter_,
        "history": est.history_,
        "n_features_in": int(est.n_features_in_),
        "feature_names": None if not hasattr(est, "feature_names_in_") else [str(f) for f in est.feature_names_in_],
        "y_ndim": int(getattr(est, "_y_ndim", 1)),
        "provenance": {"bigrfm_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})},
    }
    with atomic_folder(path, overwrite) as tmp:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        _put(g, "M", est.M_)
        if kind == "kernel":
            _put(g, "centers", pred.centers)
            _put(g, "dual_coef", pred.alpha)
        else:
            _put(g, "omega", pred.rffmap.omega)
            _put(g, "phase", pred.rffmap.phase)
            _put(g, "weights", pred.w)
        for name in ("x_mean_", "x_scale_"):
            _put(g, name[:-1], getattr(est, name))
        _put(g, "y_mean", getattr(est, "_y_mean", None))
        _put(g, "y_scale", getattr(est, "_y_scale", None))
        if hasattr(est, "classes_"):
            _put(g, "classes", est.classes_)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    return Path(path)


def _read(g: Any, name: str, required: bool = True) -> np.ndarray | None:
    if name not in g:
        if required:
            raise ModelFormatError(f"Model folder {g.store} lacks the array {name!r}; it is incomplete or corrupt.")
        return None
    return np.asarray(g[name][...])


def load_model(path: str | os.PathLike) -> Any:
    """Load a model folder written by :func:`save_model` (or ``bigrfm fit``).

    Raises
    ------
    ModelFormatError
        Missing files, an unknown format version, or arrays whose shapes disagree.
    """
    from .estimators import RFMClassifier, RFMRegressor  # noqa: PLC0415 - estimators import this module
    from .solvers.rff import RFFMap, RFFPredictor  # noqa: PLC0415

    path = Path(path)
    meta_file = path / "model.json"
    if not meta_file.is_file():
        raise ModelFormatError(f"{path} is not a bigrfm model folder (no model.json).")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{meta_file} is not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelFormatError(f"{meta_file} is not a bigrfm model (format={meta.get('format')!r}).")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has model format version {meta.get('format_version')}; this bigrfm ({__version__}) "
            f"reads version {FORMAT_VERSION}. Refit, or load it with the bigrfm version that wrote it."
        )
    classes = {"RFMRegressor": RFMRegressor, "RFMClassifier": RFMClassifier}
    if meta.get("estimator") not in classes or meta["kernel"]["name"] not in KERNELS:
        raise ModelFormatError(f"{meta_file}: unknown estimator or kernel ({meta.get('estimator')}, {meta['kernel']}).")
    est = classes[meta["estimator"]](**meta["params"])
    g = zarr.open_group(str(path), mode="r")
    d = int(meta["n_features_in"])
    M = _read(g, "M")
    kernel = make_kernel(meta["kernel"]["name"], meta["kernel"]["bandwidth"], meta["kernel"]["exponent"])
    if meta["predictor"] == "kernel":
        centers, alpha = _read(g, "centers"), _read(g, "dual_coef")
        ok = centers.ndim == 2 and centers.shape[1] == d and alpha.ndim == 2 and alpha.shape[0] == centers.shape[0]
        pred: Any = KernelPredictor(kernel, M, centers, alpha)
    else:
        omega, phase, w = _read(g, "omega"), _read(g, "phase"), _read(g, "weights")
        ok = omega.ndim == 2 and omega.shape[1] == phase.shape[0] == w.shape[0]
        pred = RFFPredictor(kernel, M, RFFMap(omega, phase, kernel.name), w)
    ok = ok and M.shape in ((d,), (d, d))
    x_mean, x_scale = _read(g, "x_mean", False), _read(g, "x_scale", False)
    ok = ok and (x_mean is None or (x_mean.shape == (d,) and x_scale.shape == (d,)))
    if not ok:
        raise ModelFormatError(f"{path}: array shapes are inconsistent with n_features_in={d}; the folder is corrupt.")
    est.predictor_ = pred
    est.M_ = M
    est.centers_ = getattr(pred, "centers", None)
    est.dual_coef_ = getattr(pred, "alpha", getattr(pred, "w", None))
    est.best_iter_ = int(meta["best_iter"])
    est.history_ = meta["history"]
    est.solver_ = meta["solver"]
    est.x_mean_, est.x_scale_ = x_mean, x_scale
    est._y_mean, est._y_scale = _read(g, "y_mean", False), _read(g, "y_scale", False)
    est._y_ndim = int(meta.get("y_ndim", 1))
    est.n_features_in_ = d
    if meta.get("feature_names"):
        est.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
    if meta["estimator"] == "RFMClassifier":
        est.classes_ = as_labels(_read(g, "classes"))
    est.model_metadata_ = meta
    return est


# -- checkpoints of the RFM loop -------------------------------------------------------


def _predictor_arrays(pred: Any) -> dict:
    if pred is None:
        return {}
    if hasattr(pred, "rffmap"):
        return {"kind": "rff", "omega": pred.rffmap.omega, "phase": pred.rffmap.phase, "weights": pred.w}
    return {"kind": "kernel", "centers": pred.centers, "dual_coef": pred.alpha}


def save_checkpoint(state: Any, path: str | os.PathLike, fingerprint: dict) -> None:
    """Write the loop state after an iteration (atomic: a crash leaves the previous checkpoint)."""
    with atomic_folder(path, overwrite=True) as tmp:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        _put(g, "M", state.M)
        _put(g, "warm", state.warm)
        _put(g, "best_M", state.best_M)
        best = _predictor_arrays(state.best_predictor)
        for k, v in best.items():
            if k != "kind":
                _put(g, f"best_{k}", v)
        meta = {
            "format": FORMAT + "-checkpoint",
            "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "t": state.t,
            "best_iter": state.best_iter,
            "best_score": state.best_score,
            "best_kind": best.get("kind"),
            "kernel": None if state.best_predictor is None else dataclass_kernel(state.best_predictor.kernel),
            "history": [r.as_dict() for r in state.history],
        }
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2, default=_json_default))


def dataclass_kernel(kernel: Any) -> dict:
    return {"name": kernel.name, "bandwidth": kernel.bandwidth, "exponent": getattr(kernel, "q", 1.0)}


def load_checkpoint(path: str | os.PathLike, fingerprint: dict) -> Any:
    """The loop state saved by :func:`save_checkpoint`; refuses one made for other data or settings."""
    from .rfm import IterationRecord, RFMState  # noqa: PLC0415
    from .solvers.rff import RFFMap, RFFPredictor  # noqa: PLC0415

    path = Path(path)
    meta_file = path / "checkpoint.json"
    if not meta_file.is_file():
        raise ModelFormatError(f"No checkpoint to resume from at {path}.")
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"The checkpoint at {path} has format version {meta.get('format_version')}; refit without --resume.")
    if json.loads(json.dumps(fingerprint, default=_json_default)) != meta["fingerprint"]:
        raise InputError(
            f"The checkpoint at {path} was made with other data or settings; rerun with the same "
            "arguments, or without --resume (and with --overwrite) to start over."
        )
    g = zarr.open_group(str(path), mode="r")
    best = None
    if meta["best_kind"] is not None:
        k = meta["kernel"]
        kernel = make_kernel(k["name"], k["bandwidth"], k["exponent"])
        if meta["best_kind"] == "kernel":
            best = KernelPredictor(kernel, _read(g, "best_M"), _read(g, "best_centers"), _read(g, "best_dual_coef"))
        else:
            rmap = RFFMap(_read(g, "best_omega"), _read(g, "best_phase"), kernel.name)
            best = RFFPredictor(kernel, _read(g, "best_M"), rmap, _read(g, "best_weights"))
    history = tuple(IterationRecord(**h) for h in meta["history"])
    return RFMState(
        t=int(meta["t"]),
        M=_read(g, "M"),
        warm=_read(g, "warm", False),
        history=history,
        best_iter=meta["best_iter"],
        best_score=meta["best_score"],
        best_M=_read(g, "best_M", False),
        best_predictor=best,
    )
