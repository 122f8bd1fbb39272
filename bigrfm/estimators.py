"""scikit-learn estimators: :class:`RFMRegressor`, :class:`RFMClassifier`, and :func:`load_model`.

They validate inputs and hyper-parameters, encode labels, and hand the maths
to :func:`bigrfm.model.fit.fit_dataset` (the same code path ``bigrfm fit``
runs on a Zarr store) with the data wrapped as a dataset: numpy and pandas
inputs in memory (checked by scikit-learn's ``validate_data``), Dask collections
and ``zarr.Array`` objects streamed block by block without being loaded
(scikit-learn checks only their feature count and names), and ``predict`` on a
Dask collection returns a lazy Dask array. They
describe themselves to a model folder as plain arrays and JSON
(:mod:`bigrfm.io.model_folder`) and build themselves back from one. No maths
and no file format here.
"""

from __future__ import annotations

import contextlib
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import DEFAULT_MEMORY_BUDGET, ExecConfig, parse_bytes
from .exceptions import InputError, ModelFormatError
from .inference import BlockPredict, prepare_of
from .io.dask_data import dask_dataset, feature_names_of, is_dask_collection, map_row_blocks
from .io.datasets import ArrayDataset, block_bounds
from .io.missing import MISSING_OPTIONS
from .io.model_folder import FolderContents, read_model, write_model
from .io.zarr_store import array_dataset, is_zarr_array
from .model.fit import FitSettings, fit_dataset
from .model.predictors import predict_in_blocks, predictor_arrays, predictor_from_arrays, scores_to_proba
from .model.rfm import RFMParams
from .numerics.backend import get_xp, resolve_device, resolve_dtype
from .numerics.kernels import KERNELS, kernel_from_dict, kernel_to_dict, make_kernel
from .version import __version__

__all__ = ["RFMRegressor", "RFMClassifier", "load_model"]

_PARAMS_DOC = """
    kernel : {"laplace", "gaussian", "exp_power"}, default="laplace"
        Radial Mahalanobis kernel k_M(x, z) = phi(||x - z||_M).
    bandwidth : float > 0 or "auto", default="auto"
        Length scale L of the kernel. ``"auto"``: chosen on the validation
        rows in every iteration, in that iteration's metric M (its scale
        changes with every AGOP update): at t = 0 among 0.5, 1, 2 and 4 times
        the median pairwise distance ||x - z||_M of a seeded sample of 1,000
        training rows, later among 0.5, 1 and 2 times the previous ratio.
        Candidates are ranked by the validation MSE of the predictions (the
        one-hot scores for a classifier). A number fixes L (standardized
        units; 10 is the reference implementation's value).
    reg : float > 0 or "auto", default="auto"
        Ridge regularization of the kernel regression. ``"auto"``: chosen on
        the validation rows at t = 0, jointly with the bandwidth, among 1e-3,
        0.1 and 1, and kept for the later iterations. With the exact solver up
        to 4,000 training rows the candidates share one distance matrix and
        the winner is the fit; otherwise they are screened by exact kernel
        ridge on 4,000 seeded training rows and the winner is fitted on all
        rows (``bigrfm.model.scale``). Without validation rows: ratio 2 and
        reg 1e-3.
    iters : int >= 0, default=5
        Most AGOP updates T; iterations t = 0..T are fitted (fewer when
        ``patience`` stops the loop) and the one with the best validation score
        is kept. ``iters=0`` is plain kernel ridge.
    patience : int >= 1 or None, default=2
        Stop the loop after this many iterations in a row without a better
        validation score than the best so far (the best iteration is kept;
        ``history_`` records the stop). None runs all ``iters`` iterations.
        Without validation rows there is no score and no early stop.
    solver : {"auto", "exact", "nystrom", "rff"}, default="auto"
        ``"exact"``: Cholesky solve with every training row as a center.
        ``"nystrom"``: Falkon-style preconditioned CG with ``n_centers`` centers.
        ``"rff"``: random Fourier features. ``"auto"``: exact while the n x n
        matrix fits the memory budget (about 20,000 rows at 4 GiB), else nystrom.
    diag : bool, default=False
        Learn a diagonal metric only (feature scaling, no rotations).
    centering : bool, default=False
        Subtract each output's mean gradient before the outer product.
    agop_power : float > 0, default=1.0
        M = AGOP ** agop_power (0.5 is the "neural feature ansatz" variant).
    agop_sample : int or None, default=None
        Evaluate the AGOP on a seeded sample of this many training rows
        instead of all of them.
    validation_fraction : float in [0, 1), default=0.1
        Fraction of training rows held out (seeded, at most 50,000 rows) to
        choose the best iteration when ``X_val`` is not given. With 0 and no
        ``X_val`` there is no selection: the model after ``iters`` updates is
        returned, as in the reference implementation.
    standardize : bool, default=True
        Standardize features with the training rows' mean and standard
        deviation (regression targets are always standardized internally).
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, the centers, the AGOP sample and random
        features (independent streams of one seed).
    exponent : float in (0, 2], default=1.0
        q of the ``exp_power`` kernel exp(-(r/L)**q).
    n_centers : int or None, default=None
        Nystrom centers; ``None`` picks min(n, max(2000, 20 sqrt(n))), capped by memory.
    n_components : int or None, default=None
        Random features of the ``rff`` solver; ``None`` picks 4096.
    cg_tol : float >= 0 or None, default=None
        Relative residual |b - A beta| / |b| at which conjugate gradient stops
        (nystrom), measured against the right-hand side also after a warm start.
        None: 1e-3. CG also stops when the validation MSE of its iterate (on up
        to 2,048 validation rows) improved by less than 0.1% over two
        iterations, and when the residual has not halved in 5 iterations (the
        accuracy floor of float32 blocks); the README's solver section has the
        measurements behind these rules. 0 runs every solve to ``cg_maxiter``.
    cg_maxiter : int >= 1, default=20
        Most conjugate-gradient iterations (= passes over the data) per solve.
    device : {"auto", "cpu", "cuda"}, default="cpu"
        Where blocks are computed.
    dtype : {"auto", "float32", "float64"}, default="auto"
        dtype of data and kernel blocks; reductions and factorizations are
        always float64. ``"auto"``: float64 on the CPU, float32 on a GPU (where
        the fused kernels need it).
    block_rows : int or None, default=None
        Rows per block (None: about 32 MiB of features per block).
    scheduler : str or None, default=None
        None: in-process threads. ``"local"``: an in-process Dask
        LocalCluster. ``"tcp://host:port"``: an existing Dask scheduler.
    n_workers : int or None, default=None
        Threads or LocalCluster workers (None: one per core).
    memory_budget : int, str or None, default=None
        Bytes (or a size such as ``"16GB"``) the client may use for the exact
        solver's n x n matrix or the two m x m float64 factors of the Nystrom
        solver (None: 4 GiB). It decides ``solver="auto"``, caps the default
        ``n_centers``, and a larger explicit ``n_centers`` is refused: m = 30,000
        centers need 14.4 GB, so ``memory_budget="16GB"``.
    missing : {"error", "mean"}, default="error"
        NaN in X: ``"error"`` refuses it, naming the rows; ``"mean"`` replaces
        it by the feature's mean over the training rows (computed in the first
        pass, ignoring NaN), in training and in ``predict``, and saves those
        means with the model. A feature NaN in every training row is an error;
        ±inf is always one, and so is NaN in y.
    add_indicator : bool, default=False
        With ``missing="mean"``, append one 0/1 column per feature that has a
        NaN among the training rows (1 where it was missing), as scikit-learn's
        ``SimpleImputer(add_indicator=True)``: the kernel then sees d + k columns.
"""

_ATTRS_DOC = """
    M_ : ndarray of shape (n_features, n_features) or (n_features,)
        The learned feature matrix of the selected iteration (its diagonal when ``diag=True``).
    centers_ : ndarray of shape (n_centers, n_features)
        Centers, in standardized feature units (None for ``solver="rff"``).
    dual_coef_ : ndarray of shape (n_centers, n_outputs)
        Coefficients alpha of f(x) = sum_j alpha_j k_M(x, z_j) (random-feature
        weights for ``solver="rff"``).
    best_iter_ : int
        The selected iteration t (0 = plain kernel).
    bandwidth_, reg_ : float
        Bandwidth and ridge of the selected iteration (chosen ones with ``"auto"``).
    history_ : list of dict
        One record per iteration: ``iter``, ``score``, ``val_mse``, ``val_accuracy``, ``seconds``,
        ``solver``, ``passes``, ``bandwidth``, ``reg``, ``scale`` (with ``"auto"``: the median
        distance, the chosen ratio, every candidate's validation score) and ``stop`` (on the last
        iteration: ``"patience"`` or ``"iters"``).
    solver_ : str
        The solver that ran (``"auto"`` resolved).
    x_mean_, x_scale_ : ndarray of shape (n_features,) or None
        Feature standardization.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Present when X was a DataFrame with string column names.
    feature_importances_ : ndarray of shape (n_features,)
        Diagonal of ``M_`` normalized to sum to 1.
    impute_values_ : ndarray of shape (n_features_in_,) or None
        The training means that replace NaN (``missing="mean"``); None otherwise.
    indicator_features_ : ndarray of int or None
        Features given a missing-indicator column (``add_indicator=True``),
        which ``M_``, ``centers_`` and ``feature_importances_`` have after the
        n_features_in_ features.
"""


def _seed(random_state: Any, resumed: int | None = None) -> int:
    """The fit's seed: an int as given; when resuming a state, its seed; else one drawn from ``random_state``."""
    if isinstance(random_state, (Integral, np.integer)):
        return int(random_state)
    if resumed is not None:
        return int(resumed)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def check_finite_rows(name: str, a: np.ndarray, *, allow_nan: bool = False) -> None:
    """One clear error naming the rows of ``a`` that hold NaN or inf (only inf with ``allow_nan``)."""
    if a.dtype.kind not in "fc":
        return
    bad = np.isinf(a) if allow_nan else ~np.isfinite(a)
    if bad.ndim > 1:
        bad = bad.reshape(bad.shape[0], -1).any(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:10])) + (", ..." if rows.size > 10 else "")
        if allow_nan:
            raise InputError(
                f"Input {name} contains inf in {rows.size} row(s): {shown}. missing='mean' imputes NaN only; "
                "replace inf by NaN or drop these rows."
            )
        option = ", or pass missing='mean' to replace NaN by each feature's training mean" if name.startswith("X") else ""
        raise InputError(
            f"Input {name} contains NaN or inf in {rows.size} row(s): {shown}. "
            f"Drop or impute these rows (e.g. sklearn.impute.SimpleImputer) before fitting{option}."
        )


class _BaseRFM(BaseEstimator):
    _parameter_constraints: dict = {
        "kernel": [StrOptions(set(KERNELS))],
        "bandwidth": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "reg": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "iters": [Interval(Integral, 0, None, closed="left")],
        "patience": [None, Interval(Integral, 1, None, closed="left")],
        "solver": [StrOptions({"auto", "exact", "nystrom", "rff"})],
        "diag": ["boolean"],
        "centering": ["boolean"],
        "agop_power": [Interval(Real, 0, None, closed="neither")],
        "agop_sample": [None, Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "standardize": ["boolean"],
        "random_state": ["random_state"],
        "exponent": [Interval(Real, 0, 2, closed="right")],
        "n_centers": [None, Interval(Integral, 1, None, closed="left")],
        "n_components": [None, Interval(Integral, 1, None, closed="left")],
        "cg_tol": [None, Interval(Real, 0, None, closed="left")],
        "cg_maxiter": [Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "dtype": [StrOptions({"auto", "float32", "float64"})],
        "block_rows": [None, Interval(Integral, 1, None, closed="left")],
        "scheduler": [None, str],
        "n_workers": [None, Interval(Integral, 1, None, closed="left")],
        "memory_budget": [None, Interval(Integral, 1, None, closed="left"), str],
        "missing": [StrOptions(set(MISSING_OPTIONS))],
        "add_indicator": ["boolean"],
    }

    def __init__(
        self,
        kernel: str = "laplace",
        bandwidth: float | str = "auto",
        reg: float | str = "auto",
        iters: int = 5,
        patience: int | None = 2,
        solver: str = "auto",
        diag: bool = False,
        centering: bool = False,
        agop_power: float = 1.0,
        agop_sample: int | None = None,
        validation_fraction: float = 0.1,
        standardize: bool = True,
        random_state: Any = None,
        exponent: float = 1.0,
        n_centers: int | None = None,
        n_components: int | None = None,
        cg_tol: float | None = None,
        cg_maxiter: int = 20,
        device: str = "cpu",
        dtype: str = "auto",
        block_rows: int | None = None,
        scheduler: str | None = None,
        n_workers: int | None = None,
        memory_budget: int | str | None = None,
        missing: str = "error",
        add_indicator: bool = False,
    ) -> None:
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.reg = reg
        self.iters = iters
        self.patience = patience
        self.solver = solver
        self.diag = diag
        self.centering = centering
        self.agop_power = agop_power
        self.agop_sample = agop_sample
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.random_state = random_state
        self.exponent = exponent
        self.n_centers = n_centers
        self.n_components = n_components
        self.cg_tol = cg_tol
        self.cg_maxiter = cg_maxiter
        self.device = device
        self.dtype = dtype
        self.block_rows = block_rows
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.memory_budget = memory_budget
        self.missing = missing
        self.add_indicator = add_indicator

    # -- shared plumbing -------------------------------------------------------------
    def _exec_config(self) -> ExecConfig:
        device = self.device
        if self.dtype == "auto" and device != "cpu":
            device = resolve_device(device)  # "auto" needs to know whether it is a GPU
        return ExecConfig(
            device=device,
            dtype=resolve_dtype(self.dtype, device),
            block_rows=self.block_rows,
            scheduler=self.scheduler,
            n_workers=self.n_workers,
            memory_budget=DEFAULT_MEMORY_BUDGET if self.memory_budget is None else parse_bytes(self.memory_budget),
        )

    def _fit_arrays(self, X: np.ndarray, y: np.ndarray, X_val: Any, y_val: Any, classes: np.ndarray | None) -> None:
        validation = None if X_val is None else ArrayDataset(X_val, y_val)
        self._fit_data(ArrayDataset(X, y), validation, classification=classes is not None, classes=classes)

    def _fit_data(
        self,
        dataset: Any,
        validation: Any,
        *,
        classification: bool,
        classes: np.ndarray | None = None,
        state: Any = None,
        on_iteration: Any = None,
        progress: Any = None,
        config: ExecConfig | None = None,
        engine: Any = None,
    ) -> Any:
        from .engine import Engine  # noqa: PLC0415 - dask is imported only when fitting

        config = self._exec_config() if config is None else config
        auto_bandwidth, auto_reg = self.bandwidth == "auto", self.reg == "auto"
        params = RFMParams(
            # with "auto" the kernel only names the family: its bandwidth is chosen in every iteration
            kernel=make_kernel(self.kernel, 1.0 if auto_bandwidth else self.bandwidth, self.exponent),
            reg=1e-3 if auto_reg else float(self.reg),
            iters=int(self.iters),
            diag=bool(self.diag),
            centering=bool(self.centering),
            agop_power=float(self.agop_power),
            classification=classification,
            auto_bandwidth=auto_bandwidth,
            auto_reg=auto_reg,
            patience=None if self.patience is None else int(self.patience),
        )
        settings = FitSettings(
            solver=self.solver,
            n_centers=self.n_centers,
            n_components=self.n_components,
            cg_tol=None if self.cg_tol is None else float(self.cg_tol),
            cg_maxiter=int(self.cg_maxiter),
            agop_sample=self.agop_sample,
            validation_fraction=float(self.validation_fraction),
            standardize=bool(self.standardize),
            seed=_seed(self.random_state, getattr(state, "seed", None)),
            missing=self.missing,
            add_indicator=bool(self.add_indicator),
        )
        with contextlib.ExitStack() as stack:
            if engine is None:
                engine = stack.enter_context(Engine(config))
            result = fit_dataset(
                dataset,
                params=params,
                settings=settings,
                config=config,
                engine=engine,
                validation=validation,
                classes=classes,
                state=state,
                on_iteration=on_iteration,
                progress=progress,
            )
        self._set_fitted(result)
        return result

    def fit_dataset(
        self,
        data: Any,
        *,
        x_name: str = "X",
        y_name: str = "y",
        use_stored_validation: bool = True,
        state: Any = None,
        on_iteration: Any = None,
        progress: Any = None,
        config: ExecConfig | None = None,
    ) -> "_BaseRFM":
        """Fit from a dataset on disk, streaming it block by block (what ``bigrfm fit`` runs).

        Parameters
        ----------
        data : str, path or Dataset
            A Zarr group (local path or fsspec URL) with arrays ``x_name`` and
            ``y_name``, or an opened :class:`bigrfm.io.zarr_store.ZarrDataset`.
        x_name, y_name : str
            Array names inside the group.
        use_stored_validation : bool
            Use the group's ``X_val``/``y_val`` arrays, when present, to choose
            the best iteration (instead of holding out ``validation_fraction``).
        state : RFMState, optional
            Resume from a checkpointed loop state.
        on_iteration, progress : callable, optional
            Called after each RFM iteration with the loop state, and after each
            block of a pass with ``(done, total, rows)``.
        config : ExecConfig, optional
            Execution settings to use instead of the ones the estimator's
            parameters give (for settings it has no parameter for, such as a
            LocalCluster's per-worker memory limit; ``bigrfm fit`` passes its own).

        Returns
        -------
        self
        """
        from .io.zarr_store import open_dataset  # noqa: PLC0415

        self._validate_params()
        dataset = data if hasattr(data, "read") else open_dataset(str(data), x_name=x_name, y_name=y_name)
        if not dataset.has_y:
            raise InputError(f"The dataset {data} has no target array {y_name!r}; fitting needs targets.")
        validation = dataset.validation() if use_stored_validation and hasattr(dataset, "validation") else None
        return self._fit_streamed(dataset, validation, state=state, on_iteration=on_iteration, progress=progress,
                                  config=config)

    def _fit_streamed(self, dataset: Any, validation: Any, *, engine: Any = None, **kwargs: Any) -> "_BaseRFM":
        """Fit on a dataset read block by block; set the attributes scikit-learn's checks would."""
        classification = isinstance(self, ClassifierMixin)
        result = self._fit_data(dataset, validation, classification=classification, engine=engine, **kwargs)
        self.n_features_in_ = dataset.n_features
        names = getattr(dataset, "feature_names", None)
        if names:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        if classification:
            self.classes_ = result.preprocessing.classes
        self._y_ndim = 1 if len(getattr(dataset, "y_shape", (0,))) == 1 else 2
        return self

    def _fit_collection(self, X: Any, y: Any, X_val: Any, y_val: Any) -> "_BaseRFM":
        """``fit`` on a Dask collection or a zarr.Array: streamed through the engine, never loaded whole."""
        from .engine import Engine  # noqa: PLC0415

        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        if (X_val is None) != (y_val is None):
            raise InputError("Pass both X_val and y_val, or neither.")
        config = self._exec_config()
        with Engine(config) as engine:
            dataset = _dataset_of(X, y, engine.compute)
            validate_data(self, _proxy(X), reset=True, skip_check_array=True)  # n_features_in_, feature names
            validation = None
            if X_val is not None:
                validation = _dataset_of(X_val, y_val, engine.compute) if _is_streamed(X_val) else ArrayDataset(*self._validate_val(X_val, y_val))
                if validation.n_features != dataset.n_features:
                    raise InputError(f"X_val has {validation.n_features} features but X has {dataset.n_features}.")
            return self._fit_streamed(dataset, validation, engine=engine, config=config)

    def save(self, path: Any, *, overwrite: bool = False, provenance: dict | None = None) -> Any:
        """Write the fitted model to a folder (Zarr arrays + model.json, atomic; see :mod:`bigrfm.io.model_folder`).

        Parameters
        ----------
        path : str or PathLike
            The model folder; it appears complete or not at all.
        overwrite : bool
            Replace an existing folder.

        A ``random_state`` that is a ``RandomState`` instance is saved as the
        integer seed the fit drew from it (``clone(load_model(path))`` then
        refits the same model).
        provenance : dict, optional
            JSON-ready facts stored with the model (data path, rows, seconds...).

        Returns
        -------
        pathlib.Path
        """
        return write_model(path, self._to_contents(provenance), overwrite=overwrite)

    def _to_contents(self, provenance: dict | None = None) -> FolderContents:
        import time  # noqa: PLC0415

        check_is_fitted(self, "predictor_")
        kind, parts = predictor_arrays(self.predictor_)
        params = self.get_params(deep=False)
        if params["random_state"] is not None and not isinstance(params["random_state"], (Integral, np.integer)):
            params["random_state"] = getattr(self, "_fit_seed", None)  # a RandomState is no JSON value
        meta = {
            "estimator": type(self).__name__,
            "params": params,
            "kernel": kernel_to_dict(self.predictor_.kernel),
            "predictor": kind,
            "solver": self.solver_,
            "best_iter": self.best_iter_,
            "history": self.history_,
            "n_features_in": int(self.n_features_in_),
            "feature_names": None if not hasattr(self, "feature_names_in_") else [str(f) for f in self.feature_names_in_],
            "y_ndim": int(getattr(self, "_y_ndim", 1)),
            "provenance": {"bigrfm_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(provenance or {})},
        }
        arrays = {
            "M": self.M_,
            **parts,
            "x_mean": self.x_mean_,
            "x_scale": self.x_scale_,
            "impute_values": getattr(self, "impute_values_", None),
            "indicator_features": getattr(self, "indicator_features_", None),
            "y_mean": getattr(self, "_y_mean", None),
            "y_scale": getattr(self, "_y_scale", None),
            "classes": getattr(self, "classes_", None),
        }
        return FolderContents(meta, arrays)

    @classmethod
    def _from_contents(cls, c: FolderContents) -> "_BaseRFM":
        """The fitted estimator a model folder describes (keys, parameters and shapes checked).

        Raises ModelFormatError naming the missing key or array, the invalid
        parameter, or the shapes that disagree.
        """
        try:
            d = int(c.get("n_features_in"))
            M = c.array("M")
            est = cls(**c.get("params"))
            est._validate_params()
            pred = predictor_from_arrays(c.get("predictor"), kernel_from_dict(c.get("kernel")), M,
                                         {k: v for k, v in c.arrays.items() if v is not None})
            x_mean, x_scale = c.array("x_mean", False), c.array("x_scale", False)
            impute, indicators = c.array("impute_values", False), c.array("indicator_features", False)
            # the kernel sees the d features and, with add_indicator, one column per indicator
            dm = d + (0 if indicators is None else indicators.size)
            if (M.shape not in ((dm,), (dm, dm))
                    or (x_mean is not None and (x_mean.shape != (dm,) or x_scale is None or x_scale.shape != (dm,)))
                    or (impute is not None and impute.shape != (d,))
                    or (indicators is not None and (impute is None or np.any(indicators >= d)))):
                raise ModelFormatError(f"{c.where}: array shapes are inconsistent with n_features_in={d}; the folder is damaged.")
            est.predictor_ = pred
            est.M_ = M
            est.centers_ = getattr(pred, "centers", None)
            est.dual_coef_ = getattr(pred, "alpha", getattr(pred, "w", None))
            est.best_iter_ = int(c.get("best_iter"))
            est.history_ = list(c.get("history"))
            est.bandwidth_ = float(pred.kernel.bandwidth)
            est.reg_ = float(est.history_[est.best_iter_].get("reg") or est.reg)
            est.solver_ = str(c.get("solver"))
            est.x_mean_, est.x_scale_ = x_mean, x_scale
            est.impute_values_, est.indicator_features_ = impute, indicators
            est._y_mean, est._y_scale = c.array("y_mean", False), c.array("y_scale", False)
            if cls is RFMRegressor and (est._y_mean is None or est._y_scale is None):
                c.array("y_mean" if est._y_mean is None else "y_scale")  # raises, naming the array
            est._y_ndim = int(c.meta.get("y_ndim", 1))
            est.n_features_in_ = d
            if c.meta.get("feature_names"):
                est.feature_names_in_ = np.asarray(c.meta["feature_names"], dtype=object)
            if cls is RFMClassifier:
                est.classes_ = c.array("classes")
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # InvalidParameterError is a ValueError: a parameter no bigrfm accepts
            raise ModelFormatError(
                f"{c.where}: the model description is damaged or from another version of bigrfm "
                f"({type(exc).__name__}: {exc})."
            ) from None
        est.model_metadata_ = c.meta
        return est

    def _set_fitted(self, result: Any) -> None:
        state, pre = result.state, result.preprocessing
        predictor = state.best_predictor
        self.predictor_ = predictor
        self.M_ = np.asarray(state.best_M)
        self.centers_ = getattr(predictor, "centers", None)
        self.dual_coef_ = getattr(predictor, "alpha", getattr(predictor, "w", None))
        self.best_iter_ = int(state.best_iter)
        self.history_ = [r.as_dict() for r in state.history]
        self.bandwidth_ = float(predictor.kernel.bandwidth)
        self.reg_ = float(state.history[state.best_iter].reg)
        self.solver_ = pre.solver
        self.x_mean_ = pre.mean
        self.x_scale_ = pre.scale
        self.impute_values_ = None if pre.impute is None else pre.impute.values
        self.indicator_features_ = None if pre.impute is None or not pre.impute.indicators.size else pre.impute.indicators
        self._y_mean = pre.y_mean
        self._y_scale = pre.y_scale
        self._fit_seed = state.seed

    @property
    def feature_importances_(self) -> np.ndarray:
        """Diagonal of ``M_`` normalized to sum to 1 (how much each feature moves the predictor)."""
        check_is_fitted(self, "M_")
        dg = np.abs(self.M_ if self.M_.ndim == 1 else np.diag(self.M_))
        total = dg.sum()
        return dg / total if total > 0 else np.full(dg.shape, 1.0 / dg.size)

    def _validate_val(self, X_val: Any, y_val: Any) -> tuple[Any, Any]:
        if (X_val is None) != (y_val is None):
            raise InputError("Pass both X_val and y_val, or neither.")
        if X_val is None:
            return None, None
        X_val = validate_data(self, X_val, reset=False, ensure_all_finite=False, dtype=(np.float64, np.float32))
        y_val = np.asarray(y_val)
        if y_val.shape[0] != X_val.shape[0]:
            raise InputError(f"X_val has {X_val.shape[0]} rows but y_val has {y_val.shape[0]}; they must match.")
        check_finite_rows("X_val", X_val, allow_nan=self.missing == "mean")
        check_finite_rows("y_val", y_val)
        return X_val, y_val

    def _decision(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "predictor_")
        X = validate_data(self, X, reset=False, ensure_all_finite=False, dtype=(np.float64, np.float32))
        check_finite_rows("X", X, allow_nan=getattr(self, "impute_values_", None) is not None)
        Xs = prepare_of(self).transform_X(X)  # imputed, standardized, in the block dtype
        config = self._exec_config()
        xp = get_xp(config.device)
        return predict_in_blocks(self.predictor_, Xs, config.rows_per_block(Xs.shape[1], n_rows=Xs.shape[0]), config.dtype, xp)

    def _predict_collection(self, X: Any, kind: str) -> Any:
        """Predictions (``kind``, see :class:`bigrfm.inference.BlockPredict`) for a Dask collection
        (a lazy Dask array with X's row chunks; nothing is computed) or a zarr.Array (numpy, read block by block)."""
        check_is_fitted(self, "predictor_")
        fn = BlockPredict.of(self, kind)
        validate_data(self, _proxy(X), reset=False, skip_check_array=True)  # feature count and names
        if is_dask_collection(X):
            return map_row_blocks(X, fn, n_out=fn.n_out, dtype=fn.dtype)
        dataset = array_dataset(X)
        rows = self._exec_config().rows_per_block(dataset.n_features, dataset.chunk_rows, dataset.n_rows)
        return np.concatenate([fn(dataset.read(a, b)[0]) for a, b in block_bounds(dataset, rows)])

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _is_streamed(X: Any) -> bool:
    """Inputs read block by block instead of through ``validate_data``: Dask collections and zarr arrays."""
    return is_dask_collection(X) or is_zarr_array(X)


def _dataset_of(X: Any, y: Any, compute: Any) -> Any:
    """The dataset of a Dask collection or a zarr.Array X and its targets (see the README's "Your data")."""
    if is_dask_collection(X):
        return dask_dataset(X, y, compute=compute)
    if is_dask_collection(y):
        (y,) = compute(y)  # with a zarr X: n targets are small next to X
    return array_dataset(X, y)


def _proxy(X: Any) -> Any:
    """An empty stand-in of X for scikit-learn's feature count and name checks (``validate_data``)."""
    names = feature_names_of(X)
    if names is not None or (is_dask_collection(X) and hasattr(X, "columns")):
        import pandas as pd  # noqa: PLC0415 - a Dask DataFrame implies pandas

        return pd.DataFrame(columns=list(X.columns))
    return np.empty((0, int(X.shape[1])))


def _check_X_y(est: _BaseRFM, X: Any, y: Any, *, multi_output: bool) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y) if y is not None else None
    if y_arr is not None and y_arr.ndim >= 1 and y_arr.dtype.kind in "fc":
        check_finite_rows("y", y_arr)  # before scikit-learn's check, which does not name rows
    X, y = validate_data(
        est,
        X,
        y,
        ensure_all_finite=False,
        dtype=(np.float64, np.float32),
        ensure_min_samples=2,
        multi_output=multi_output,
        y_numeric=multi_output,
    )
    check_finite_rows("X", X, allow_nan=est.missing == "mean")
    check_finite_rows("y", y)
    return X, y


class RFMRegressor(RegressorMixin, _BaseRFM):
    __doc__ = (
        "Recursive Feature Machine regressor (kernel ridge regression with a learned Mahalanobis metric).\n\n"
        "Alternates kernel ridge regression under k_M with M <- AGOP of the fitted\n"
        "predictor (Radhakrishnan et al., Science 2024), keeping the iteration with\n"
        "the best validation score.\n\nParameters\n----------"
        + _PARAMS_DOC
        + "\nAttributes\n----------"
        + _ATTRS_DOC
        + """
    Examples
    --------
    >>> import numpy as np
    >>> from bigrfm import RFMRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 5)); y = X[:, 0] * X[:, 1]
    >>> model = RFMRegressor(iters=3, random_state=0).fit(X, y)
    >>> model.predict(X[:2]).shape
    (2,)
"""
    )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "RFMRegressor":
        """Fit on (X, y); ``X_val``/``y_val`` choose the best iteration if given.

        Returns
        -------
        self : RFMRegressor
        """
        if _is_streamed(X):
            return self._fit_collection(X, y, X_val, y_val)
        X, y = _check_X_y(self, X, y, multi_output=True)
        X_val, y_val = self._validate_val(X_val, y_val)
        self._y_ndim = y.ndim
        self._fit_arrays(X, np.asarray(y, dtype=np.float64), X_val, y_val, classes=None)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, shape (n,) or (n, n_outputs) like the y given to fit (lazy for a Dask collection)."""
        if _is_streamed(X):
            return self._predict_collection(X, "predict")
        pred = self._decision(X) * self._y_scale + self._y_mean
        return pred.ravel() if self._y_ndim == 1 else pred

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class RFMClassifier(ClassifierMixin, _BaseRFM):
    __doc__ = (
        "Recursive Feature Machine classifier (one-hot kernel regression with a learned metric, argmax).\n\n"
        "Binary and multi-class; labels may be integers or strings.\n\nParameters\n----------"
        + _PARAMS_DOC
        + "\nAttributes\n----------"
        + _ATTRS_DOC
        + """    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from bigrfm import RFMClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> clf = RFMClassifier(iters=2, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
"""
    )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "RFMClassifier":
        """Fit on (X, y); ``X_val``/``y_val`` choose the best iteration if given.

        Returns
        -------
        self : RFMClassifier
        """
        if _is_streamed(X):
            return self._fit_collection(X, y, X_val, y_val)
        X, y = _check_X_y(self, X, y, multi_output=False)
        check_classification_targets(y)
        X_val, y_val = self._validate_val(X_val, y_val)
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise InputError(
                f"y holds a single class ({self.classes_[0]!r}); a classifier needs at least 2 classes."
            )
        if y_val is not None:
            unseen = np.setdiff1d(np.unique(y_val), self.classes_)
            if unseen.size:
                raise InputError(f"y_val holds classes not present in y: {unseen[:10].tolist()}.")
        self._fit_arrays(X, y, X_val, y_val, classes=self.classes_)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """One-hot regression scores, shape (n, n_classes); for two classes the
        difference score[:, 1] - score[:, 0], shape (n,) (positive means ``classes_[1]``).
        Lazy (a Dask array) for a Dask collection."""
        if _is_streamed(X):
            return self._predict_collection(X, "decision")
        s = self._decision(X)
        return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities from the one-hot scores (see :func:`bigrfm.model.predictors.scores_to_proba`).

        They rank classes exactly like ``predict`` and ``decision_function`` but
        are not calibrated; wrap the model in
        ``sklearn.calibration.CalibratedClassifierCV`` when calibration matters.
        """
        check_is_fitted(self, "predictor_")
        if _is_streamed(X):
            return self._predict_collection(X, "proba")
        return scores_to_proba(self._decision(X))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels (lazy for a Dask collection)."""
        check_is_fitted(self, "predictor_")
        if _is_streamed(X):
            return self._predict_collection(X, "predict")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


#: Parameters :func:`load_model` may override: where and how the model computes, not what it is.
EXEC_PARAMS = ("device", "dtype", "block_rows", "scheduler", "n_workers", "memory_budget")


def load_model(path: Any, **exec_params: Any) -> _BaseRFM:
    """Load a model folder written by :meth:`RFMRegressor.save` / :meth:`RFMClassifier.save` (or ``bigrfm fit``).

    Reads JSON and arrays only (never pickle), and checks every shape.

    Parameters
    ----------
    path : str or PathLike
        The model folder.
    **exec_params
        Execution settings to use instead of the saved ones (``device``, ``dtype``,
        ``block_rows``, ``scheduler``, ``n_workers``, ``memory_budget``): a model
        fitted with ``device="cuda"`` predicts on a machine without a GPU with
        ``load_model(path, device="cpu")``.

    Raises
    ------
    ModelFormatError
        Missing files or arrays, an unknown format version, or arrays whose shapes disagree.
    InputError
        An unknown execution setting.
    """
    unknown = sorted(set(exec_params) - set(EXEC_PARAMS))
    if unknown:
        raise InputError(f"load_model: {unknown} are not execution settings; choose among {list(EXEC_PARAMS)}.")
    c = read_model(path)
    classes = {"RFMRegressor": RFMRegressor, "RFMClassifier": RFMClassifier}
    name = c.get("estimator")
    kernel = c.get("kernel")
    if name not in classes or not isinstance(kernel, dict) or kernel.get("name") not in KERNELS:
        raise ModelFormatError(f"{c.where}: unknown estimator or kernel ({name!r}, {kernel!r}).")
    est = classes[name]._from_contents(c)
    return est.set_params(**exec_params) if exec_params else est
