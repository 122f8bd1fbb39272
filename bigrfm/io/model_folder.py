"""Model folders and checkpoints on disk: a Zarr group of arrays plus one JSON file; never pickle.

Layout of ``MODEL_DIR``::

    model.json      format name and version, then whatever the writer put in its
                    metadata (estimator class, hyper-parameters, kernel, history...)
    zarr.json       the Zarr (format 3) group holding the arrays, one per name
                    (M/, centers/, dual_coef/, x_mean/, classes/, ...)

A checkpoint folder is the same with ``checkpoint.json``. The JSON file also
records a SHA-256 of every array (``checksums``): a truncated, emptied,
deleted or altered chunk file is reported on load as a damaged folder naming
the array (Zarr itself reads a missing chunk as zeros). This module reads
and writes a :class:`FolderContents` (a JSON-ready dict and named arrays) and
nothing else: what the names mean is for the estimators and the RFM loop,
which build themselves from the contents. Loading reads JSON and numeric or
string arrays only, so it never executes code. Writes go through
:mod:`bigrfm.io.atomic`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ModelFormatError
from ..version import __version__
from .atomic import atomic_folder, recover
from .zarr_store import as_labels

__all__ = [
    "FolderContents",
    "write_model",
    "read_model",
    "write_checkpoint",
    "read_checkpoint",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "bigrfm-model"
FORMAT_VERSION = 1
_META_FILE = {"model": "model.json", "checkpoint": "checkpoint.json"}
_FORMAT = {"model": FORMAT, "checkpoint": FORMAT + "-checkpoint"}


@dataclasses.dataclass(frozen=True, eq=False)
class FolderContents:
    """What a model folder or checkpoint holds: JSON-ready metadata and named arrays.

    Attributes
    ----------
    meta : dict
        JSON-ready values (numpy scalars and arrays are converted when written).
        ``format`` and ``format_version`` are added on write and checked on read.
    arrays : dict of str to ndarray
        Numeric arrays, or string arrays (class labels); ``None`` values are skipped.
    where : str
        The folder they were read from (for messages); empty when built in memory.
    """

    meta: dict
    arrays: dict[str, np.ndarray | None]
    where: str = ""

    def array(self, name: str, required: bool = True) -> np.ndarray | None:
        """The array ``name``; a missing required one raises :class:`ModelFormatError`."""
        a = self.arrays.get(name)
        if a is None and required:
            raise ModelFormatError(
                f"{self.where or 'The model'} lacks the array {name!r}; the folder is incomplete or damaged. "
                "Refit, or copy the folder again."
            )
        return a

    def get(self, key: str) -> Any:
        """The metadata value ``key``; a missing one raises :class:`ModelFormatError`."""
        if key not in self.meta:
            raise ModelFormatError(
                f"{self.where or 'The model'}: its metadata lacks {key!r}; the folder is damaged or was written "
                f"by another version of bigrfm (this is {__version__})."
            )
        return self.meta[key]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _digest(a: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and values (strings by their text), as written and as read back."""
    a = np.asarray(a)
    h = hashlib.sha256(repr(a.shape).encode())
    if a.dtype.kind in "OUTS":
        h.update(json.dumps([str(v) for v in a.ravel().tolist()]).encode())
    else:
        little = a.dtype.newbyteorder("<")
        h.update(little.str.encode())
        h.update(np.ascontiguousarray(a, dtype=little).tobytes())
    return h.hexdigest()


def _put(group: Any, name: str, a: Any) -> None:
    if a is None:
        return
    a = np.asarray(a)
    if a.dtype.kind in "OUT":
        # Zarr's variable-length "string" type (fixed-width unicode has no stable v3 spec)
        group.create_array(name, shape=a.shape, dtype=str, chunks=a.shape)[...] = a.astype(str)
        return
    group.create_array(name, data=a, chunks=a.shape if a.ndim else None)


def _write(kind: str, path: str | os.PathLike, contents: FolderContents, overwrite: bool) -> Path:
    import zarr  # noqa: PLC0415

    checksums = {name: _digest(a) for name, a in contents.arrays.items() if a is not None}
    meta = {"format": _FORMAT[kind], "format_version": FORMAT_VERSION, **contents.meta, "checksums": checksums}
    text = json.dumps(meta, indent=2, default=_json_default)  # before anything is written: bad data fails early
    with atomic_folder(path, overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name, a in contents.arrays.items():
            _put(group, name, a)
        (tmp / _META_FILE[kind]).write_text(text)
    return Path(path)


def _read(kind: str, path: str | os.PathLike) -> FolderContents:
    import zarr  # noqa: PLC0415

    path = Path(path)
    recover(path)
    meta_file = path / _META_FILE[kind]
    if not meta_file.is_file():
        what = "a bigrfm model folder" if kind == "model" else "a bigrfm checkpoint"
        raise ModelFormatError(f"{path} is not {what} (no {meta_file.name}).")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{meta_file} is not valid JSON ({exc}); the folder is damaged.") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT[kind]:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFormatError(f"{meta_file} is not a bigrfm {kind} (format={got!r}).")
    if "format_version" not in meta:
        raise ModelFormatError(f"{meta_file} lacks 'format_version'; the folder is damaged. Refit, or copy the folder again.")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ModelFormatError(
            f"{path} has {kind} format version {version!r}; this bigrfm ({__version__}) reads version "
            f"{FORMAT_VERSION}. " + ("Upgrade bigrfm to read it." if newer else "Refit, or load it with the bigrfm version that wrote it.")
        )
    try:
        group = zarr.open_group(str(path), mode="r")
        with warnings.catch_warnings():
            # the JSON file next to the arrays is not a Zarr node: zarr says so while listing
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            names = list(group.array_keys())
    except Exception as exc:  # zarr raises many types for missing or damaged metadata
        raise ModelFormatError(
            f"The arrays of {path} cannot be listed ({type(exc).__name__}: {exc}); the folder is damaged. "
            "Refit, or copy the folder again."
        ) from None
    checksums = meta.pop("checksums", None)  # folders written before checksums have none
    if checksums is not None and (not isinstance(checksums, dict) or set(checksums) - set(names)):
        missing = sorted(set(checksums) - set(names)) if isinstance(checksums, dict) else "?"
        raise ModelFormatError(f"{path} lacks the array(s) {missing}; the folder is damaged. Refit, or copy the folder again.")
    arrays = {}
    for name in names:
        try:
            arrays[name] = _load_array(group[name])
        except Exception as exc:  # zarr raises many types for truncated or undecodable chunks
            raise ModelFormatError(
                f"The array {name!r} of {path} cannot be read ({type(exc).__name__}: {exc}); the folder is "
                "damaged. Refit, or copy the folder again."
            ) from None
        if checksums is not None and checksums.get(name) != _digest(arrays[name]):
            raise ModelFormatError(
                f"The array {name!r} of {path} does not hold what was written (checksum mismatch: a chunk file is "
                "missing, truncated or altered); the folder is damaged. Refit, or copy the folder again."
            )
    return FolderContents(meta, arrays, str(path))


def _load_array(arr: Any) -> np.ndarray:
    a = np.asarray(arr[...])
    return as_labels(a)


def write_model(path: str | os.PathLike, contents: FolderContents, *, overwrite: bool = False) -> Path:
    """Write a model folder atomically; an existing ``path`` is replaced only with ``overwrite``."""
    return _write("model", path, contents, overwrite)


def read_model(path: str | os.PathLike) -> FolderContents:
    """Read a model folder written by :func:`write_model`.

    Raises
    ------
    ModelFormatError
        No ``model.json``, invalid JSON, another format or version, or arrays that cannot be read.
    """
    return _read("model", path)


def write_checkpoint(path: str | os.PathLike, contents: FolderContents) -> Path:
    """Write (or replace) a checkpoint folder atomically: a crash leaves the previous one whole."""
    return _write("checkpoint", path, contents, overwrite=True)


def read_checkpoint(path: str | os.PathLike) -> FolderContents:
    """Read a checkpoint folder written by :func:`write_checkpoint` (errors as :func:`read_model`)."""
    return _read("checkpoint", path)
