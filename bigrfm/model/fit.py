"""From a dataset to a fitted RFM: splits, the statistics pass, the solver choice, the loop.

Owns the first pass and the choices of a fit that are not maths; runs every
pass through the engine it is given and imports neither zarr nor dask.

This is the one code path behind both the estimators (in-memory arrays wrapped
as an :class:`~bigrfm.io.datasets.ArrayDataset`) and ``bigrfm fit`` (a Zarr store).
The first pass over the data computes the standardization statistics on the
training rows, checks every value is finite, and collects the few rows kept
in memory: the validation rows and the centers. Everything later streams.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any, Callable

import numpy as np

from ..config import ExecConfig
from ..exceptions import InputError
from ..io import stats as stats_mod
from ..io.missing import Imputation, check_missing_option, imputation_from_stats, imputed_standardization
from ..numerics.backend import resolve_device
from .prepare import Prepare, RowSelect, encode_targets, sample_rows
from .rfm import FitContext, RFMParams, RFMState, initial_state, run
from .validation import VALIDATION_CAP, gather_validation
from . import scale

__all__ = [
    "FitSettings",
    "Preprocessing",
    "FitResult",
    "fit_dataset",
    "exact_row_limit",
    "max_centers",
    "default_n_centers",
    "VALIDATION_CAP",
]

log = logging.getLogger("bigrfm.model.fit")


def exact_row_limit(memory_budget: int) -> int:
    """Largest n for the exact solver: its n x n float64 matrix may take 80% of the budget."""
    return int((0.8 * memory_budget / 8) ** 0.5)


def max_centers(memory_budget: int) -> int:
    """Most Nystrom centers whose two m x m float64 factors (Falkon's T and A) take at most 90% of the budget."""
    return int((0.9 * memory_budget / (2 * 8)) ** 0.5)


def default_n_centers(n_train: int, n_features: int, memory_budget: int) -> int:
    """Nystrom centers: m = min(n, max(2000, 20 sqrt(n))), capped by :func:`max_centers`.

    Falkon's theory asks for m ~ sqrt(n) (times log factors) for optimal rates;
    the constant 20 and the floor of 2000 come from accuracy on the benchmark
    sets (flights-3m, Fashion-MNIST).
    """
    m = max(2000, int(20 * np.sqrt(n_train)))
    return int(min(n_train, m, max_centers(memory_budget)))


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Choices of a fit that are not the RFM's maths: splits, solver, sampling, seed.

    ``seed`` None draws a fresh one (recorded in the loop state, so checkpoints
    keep it); a resumed fit uses its state's seed.
    """

    solver: str = "auto"
    n_centers: int | None = None
    n_components: int | None = None
    cg_tol: float | None = None
    cg_maxiter: int = 20
    cg_stall_iters: int | None = 5
    agop_sample: int | None = None
    validation_fraction: float = 0.1
    standardize: bool = True
    seed: int | None = None
    missing: str = "error"
    add_indicator: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessing:
    """How raw rows become the model's inputs and targets (saved with the model)."""

    mean: np.ndarray | None
    scale: np.ndarray | None
    classes: np.ndarray | None
    y_mean: np.ndarray | None
    y_scale: np.ndarray | None
    n_train: int
    n_val: int
    solver: str
    impute: Imputation | None = None

    def prepare(self, dtype: str, select: RowSelect | None = None) -> Prepare:
        return Prepare(self.mean, self.scale, dtype, self.classes, self.y_mean, self.y_scale, select, impute=self.impute)


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    state: RFMState
    preprocessing: Preprocessing


# -- the first pass ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _Rows:
    """Raw rows gathered from blocks, in block order."""

    X: list
    y: list

    def __add__(self, other: "_Rows") -> "_Rows":
        return _Rows(self.X + other.X, self.y + other.y)

    def arrays(self, d: int) -> tuple[np.ndarray, np.ndarray | None]:
        X = np.concatenate(self.X) if self.X else np.zeros((0, d))
        y = np.concatenate(self.y) if self.y and self.y[0] is not None else None
        return X, y


@dataclasses.dataclass(frozen=True, eq=False)
class _FirstPass:
    stats: Any
    val: _Rows
    centers: _Rows

    def __add__(self, other: "_FirstPass") -> "_FirstPass":
        return _FirstPass(stats_mod.combine_stats(self.stats, other.stats), self.val + other.val, self.centers + other.centers)


def _take(X: np.ndarray, y: np.ndarray | None, keep: np.ndarray | None) -> _Rows:
    if keep is None:
        return _Rows([X], [y])
    if not keep.any():
        return _Rows([], [])
    return _Rows([X[keep]], [None if y is None else y[keep]])


def first_pass_block(
    X: np.ndarray,
    y: np.ndarray | None,
    *,
    block_range: tuple[int, int],
    val_select: RowSelect | None,
    center_select: RowSelect | None,
    classification: bool,
    source: str | None = None,
    missing: str = "error",
) -> _FirstPass:
    """Statistics of the training rows of one raw block, plus its validation and center rows.

    With ``missing="mean"`` NaN in X is allowed (±inf is not) and X's moments skip it.
    """
    start, stop = block_range
    skip_nan = missing == "mean"
    stats_mod.check_finite(X, y, start, source=source, allow_nan=skip_nan)
    val_mask = None if val_select is None else val_select.mask(start, stop)
    train_mask = None if val_mask is None else ~val_mask
    Xt, yt = (X, y) if train_mask is None else (X[train_mask], None if y is None else y[train_mask])
    stats = stats_mod.block_stats(Xt, yt, classification=classification, skip_nan=skip_nan)
    val = _Rows([], []) if val_mask is None else _take(X, y, val_mask)
    centers = _Rows([], []) if center_select is None else _take(X, y, center_select.mask(start, stop))
    return _FirstPass(stats, val, centers)


# -- the fit ---------------------------------------------------------------------------


def _resolve_solver(name: str, n_train: int, config: ExecConfig) -> str:
    if name != "auto":
        return name
    return "exact" if n_train <= exact_row_limit(config.memory_budget) else "nystrom"


def _make_solver(name: str, params: RFMParams, settings: FitSettings, rng: np.random.Generator) -> Any:
    if name == "exact":
        from ..solvers.exact import ExactSolver  # noqa: PLC0415

        return ExactSolver(params.reg)
    if name == "nystrom":
        from ..solvers.nystrom import NystromSolver  # noqa: PLC0415

        return NystromSolver(params.reg, tol=settings.cg_tol, maxiter=settings.cg_maxiter, stall_iters=settings.cg_stall_iters)
    if name == "rff":
        from ..solvers.rff import RFFSolver  # noqa: PLC0415

        return RFFSolver(params.reg, n_components=settings.n_components, rng=rng)
    raise InputError(f"Unknown solver {name!r}. Choose one of ['auto', 'exact', 'nystrom', 'rff'].")


def fit_dataset(
    dataset: Any,
    *,
    params: RFMParams,
    settings: FitSettings,
    config: ExecConfig,
    engine: Any,
    validation: Any = None,
    classes: np.ndarray | None = None,
    state: RFMState | None = None,
    on_iteration: Callable[[RFMState], None] | None = None,
    progress: Callable[..., None] | None = None,
) -> FitResult:
    """Fit an RFM on a dataset (in memory or on disk) through ``engine``.

    Parameters
    ----------
    dataset : Dataset
        Training rows (and the held-out validation rows when ``validation`` is None).
    params : RFMParams
    settings : FitSettings
    config : ExecConfig
    engine : Engine
    validation : Dataset, optional
        Explicit validation rows (a seeded sample of ``VALIDATION_CAP`` when it
        has more, read in one pass through the engine); otherwise
        ``settings.validation_fraction`` of the dataset's rows (at most
        ``VALIDATION_CAP``) are held out, seeded.
    classes : ndarray, optional
        Known class labels (classification); otherwise found in the first pass.
    state : RFMState, optional
        Resume the loop from this state; its seed (when it has one) draws the
        same validation rows, centers and samples as the interrupted fit, and
        a different explicit ``settings.seed`` is refused.
    """
    n, d = dataset.n_rows, dataset.n_features
    check_missing_option(settings.missing)
    device = resolve_device(config.device)
    block_rows = engine.block_rows(d, getattr(dataset, "chunk_rows", None), n)
    seed = _resolve_seed(settings.seed, state)
    # a fifth stream for the scale screen leaves the first four (and fits with a fixed scale) unchanged
    seeds = np.random.SeedSequence(seed).spawn(5)
    rng_val, rng_centers, rng_agop, rng_solver, rng_screen = (np.random.default_rng(s) for s in seeds)

    val_idx = np.zeros(0, np.int64)
    if validation is None and settings.validation_fraction > 0:
        n_val = min(VALIDATION_CAP, max(1, int(round(settings.validation_fraction * n))))
        if n - n_val < 2:
            raise InputError(
                f"validation_fraction={settings.validation_fraction} leaves {n - n_val} training rows "
                f"of {n}; use a smaller fraction or pass X_val/y_val."
            )
        val_idx = sample_rows(rng_val, n, n_val)
    train_select = RowSelect(val_idx, include=False)
    n_train = n - val_idx.size

    solver_name = _resolve_solver(settings.solver, n_train, config)
    if solver_name == "exact":
        center_select = train_select
    elif solver_name == "nystrom":
        m = settings.n_centers or default_n_centers(n_train, d, config.memory_budget)
        if m > n_train:
            raise InputError(
                f"n_centers={m} is larger than the {n_train} training rows; use at most {n_train}."
            )
        if m > max_centers(config.memory_budget):
            need = 2 * 8 * m * m / 0.9
            raise InputError(
                f"n_centers={m} needs two {m} x {m} float64 factors ({2 * 8 * m * m / 2**30:.1f} GiB) on the client, "
                f"more than memory_budget={config.memory_budget / 2**30:.1f} GiB allows; raise memory_budget "
                f"(--memory-budget) to at least {need / 2**30:.1f} GiB, or use at most "
                f"{max_centers(config.memory_budget)} centers."
            )
        center_select = RowSelect(sample_rows(rng_centers, n, m, exclude=val_idx), include=True)
    else:
        center_select = None
    # rows the first pass keeps in memory: the centers, or (rff choosing its scale) the screening rows
    kept_select = center_select
    if center_select is None and params.auto_scale:
        kept_select = RowSelect(sample_rows(rng_screen, n, scale.SCREEN_ROWS, exclude=val_idx), include=True)

    first: _FirstPass = engine.map_reduce(
        first_pass_block,
        dataset,
        broadcast={
            "val_select": RowSelect(val_idx, include=True) if val_idx.size else None,
            "center_select": kept_select,
            "classification": params.classification,
            "source": getattr(dataset, "path", None),
            "missing": settings.missing,
        },
        block_rows=block_rows,
        with_range=True,
        progress=progress,
    )
    mean, std, found_classes, y_mean, y_std = _summarize(first.stats, params.classification)
    impute = None
    if settings.missing == "mean":
        impute = imputation_from_stats(first.stats.x, add_indicator=settings.add_indicator,
                                       feature_names=getattr(dataset, "feature_names", None))
        mean, std = imputed_standardization(first.stats.x, impute)
    d_model = d if impute is None else impute.n_features_out  # columns the kernel sees
    state = dataclasses.replace(state if state is not None else initial_state(d_model, params.diag), seed=seed)
    if params.classification and classes is None:
        classes = found_classes
        if classes.dtype.kind == "f" and not np.all(np.mod(classes, 1) == 0):
            raise InputError(
                "Unknown label type: continuous. The targets hold non-integer floats, so they are not classes; "
                "fit a regressor instead (or pass --task regression)."
            )
    if params.classification and classes.size < 2:
        raise InputError(
            f"The training targets hold a single class ({classes[0]!r}); a classifier needs at least two."
        )
    pre = Preprocessing(
        mean=mean if settings.standardize else None,
        scale=std if settings.standardize else None,
        classes=classes if params.classification else None,
        y_mean=None if params.classification else y_mean,
        y_scale=None if params.classification else y_std,
        n_train=n_train,
        n_val=0,
        solver=solver_name,
        impute=impute,
    )
    prep = dataclasses.replace(pre.prepare(config.dtype), device=device)

    Xv_raw, yv_raw = first.val.arrays(d)
    if validation is not None:
        Xv_raw, yv_raw = gather_validation(validation, engine, rng_val, block_rows=block_rows,
                                           allow_nan=impute is not None)
    X_val = Y_val = None
    if Xv_raw.shape[0] and pre.classes is not None:
        unseen = np.setdiff1d(np.unique(yv_raw), pre.classes)
        if unseen.size:
            raise InputError(
                f"The validation targets hold {unseen.size} class(es) absent from the training rows "
                f"(e.g. {unseen[:5].tolist()}). If y is a regression target stored as integers, "
                "store it as floats (or pass --task regression); otherwise use a validation split "
                "drawn from the same classes."
            )
    if Xv_raw.shape[0]:
        X_val = pre.prepare(config.dtype).transform_X(Xv_raw).astype(np.float64)
        Y_val = encode_targets(yv_raw, pre.classes, pre.y_mean, pre.y_scale)
    pre = dataclasses.replace(pre, n_val=0 if X_val is None else X_val.shape[0])

    centers = np.zeros((0, d_model))
    center_targets = None
    if kept_select is not None:
        Xc_raw, yc_raw = first.centers.arrays(d)
        centers = pre.prepare(config.dtype).transform_X(Xc_raw).astype(np.float64)
        center_targets = encode_targets(yc_raw, pre.classes, pre.y_mean, pre.y_scale)
    screen = None
    if params.auto_scale:
        screen = scale.ScreenRows.sample(centers, center_targets, X_val, Y_val, rng_screen,
                             all_rows=solver_name == "exact" and centers.shape[0] <= scale.SCREEN_ROWS,
                             memory_budget=config.memory_budget)
    if center_select is None:
        centers, center_targets = np.zeros((0, d)), None

    agop_select = train_select
    if settings.agop_sample is not None and settings.agop_sample < n_train:
        agop_select = RowSelect(sample_rows(rng_agop, n, settings.agop_sample, exclude=val_idx), include=True)

    # training blocks are the same in every pass of this fit: the engine may keep them
    # between passes; an AGOP sample is another selection, hence another token
    token = uuid.uuid4().hex
    train_prep = prep.with_select(train_select).cached(f"{token}-train")
    agop_prep = train_prep if agop_select is train_select else prep.with_select(agop_select).cached(f"{token}-agop")
    ctx = FitContext(
        engine=engine,
        train=dataset,
        prepare=train_prep,
        agop_prepare=agop_prep,
        n_train=n_train,
        centers=centers,
        center_targets=center_targets,
        X_val=X_val,
        Y_val=Y_val,
        block_rows=block_rows,
        dtype=config.dtype,
        progress=progress,
        device=device,
        screen=screen,
        memory_budget=config.memory_budget,
    )
    solver = _make_solver(solver_name, params, settings, rng_solver)
    log.info("fit: n_train=%d n_val=%d d=%d solver=%s centers=%d", n_train, pre.n_val, d, solver_name, centers.shape[0])
    state = run(ctx, params, solver, state, on_iteration=on_iteration)
    return FitResult(state, pre)


def _resolve_seed(seed: int | None, state: RFMState | None) -> int:
    """The fit's seed: the resumed state's (an explicit different one is refused), the given one, or a fresh one."""
    resumed = None if state is None else state.seed
    if resumed is not None:
        if seed is not None and int(seed) != int(resumed):
            raise InputError(
                f"The state to resume was fitted with seed {resumed}, not {seed}; resume with "
                f"random_state={resumed} (or None), or start a new fit."
            )
        return int(resumed)
    return int(np.random.SeedSequence().entropy) if seed is None else int(seed)


def _summarize(stats: stats_mod.BlockStats, classification: bool) -> tuple:
    """(mean, std, classes, y_mean, y_std) from the combined first-pass statistics."""
    if (stats.x.rows if isinstance(stats.x, stats_mod.NanMoments) else stats.x.count) == 0:
        raise InputError("No training rows left after holding out the validation rows.")
    x_std = stats.x.imputed_std if isinstance(stats.x, stats_mod.NanMoments) else stats.x.std
    if classification:
        return stats.x.mean, x_std, stats.y.labels, None, None
    return stats.x.mean, x_std, None, stats.y.mean, stats.y.std
