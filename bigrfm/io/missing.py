"""Missing values: NaN features replaced by their training means, with optional indicator columns.

Owns the :class:`Imputation` a fit learns in its first pass (from
:class:`~bigrfm.io.stats.NanMoments` of the training rows) and applies to
every block afterwards, in training and in prediction, and the options of
``missing=``. Pure numpy on blocks; reads and writes nothing.

With ``add_indicator=True`` the features with a NaN among the training rows
(scikit-learn's ``MissingIndicator(features="missing-only")``) each get one
more column, 1.0 where the value was missing: the model sees d + k columns.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..exceptions import DataError, InputError
from .stats import NanMoments

__all__ = ["MISSING_OPTIONS", "Imputation", "imputation_from_stats", "imputed_standardization", "check_missing_option"]

#: Values of ``missing=``: refuse NaN (the default), or impute each feature's training mean.
MISSING_OPTIONS = ("error", "mean")


def check_missing_option(missing: str) -> str:
    if missing not in MISSING_OPTIONS:
        raise InputError(f"missing must be one of {list(MISSING_OPTIONS)}. Got {missing!r} instead.")
    return missing


@dataclasses.dataclass(frozen=True, eq=False)
class Imputation:
    """NaN in column j becomes ``values[j]``; columns ``indicators`` also get a 0/1 missing column each.

    Attributes
    ----------
    values : ndarray (d,) float64
        The training mean of each feature over its non-NaN values.
    indicators : ndarray (k,) int64
        Features whose indicator columns are appended, in this order (empty: none).
    """

    values: np.ndarray
    indicators: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray | None, indicators: np.ndarray | None) -> Imputation | None:
        """From a fitted model's arrays (``impute_values_``, ``indicator_features_``); None without imputation."""
        if values is None:
            return None
        ind = np.zeros(0, np.int64) if indicators is None else np.asarray(indicators, dtype=np.int64)
        return cls(np.asarray(values, dtype=np.float64), ind)

    @property
    def n_features_out(self) -> int:
        """Columns after imputation: d + k."""
        return int(self.values.size + self.indicators.size)

    def apply(self, X: np.ndarray) -> np.ndarray:
        """X (b, d) with NaN replaced, and the k indicator columns appended: (b, d + k).

        Float64 whenever a value is replaced or a column appended; otherwise X as it is.
        """
        X = np.asarray(X)
        nan = np.isnan(X) if X.dtype.kind in "fc" else None
        if nan is not None and nan.any():
            X = np.where(nan, self.values, X)  # (b, d) float64
        if self.indicators.size:
            flags = np.zeros((X.shape[0], self.indicators.size)) if nan is None else nan[:, self.indicators].astype(np.float64)
            X = np.concatenate([np.asarray(X, dtype=np.float64), flags], axis=1)  # (b, d + k)
        return X

    def output_names(self, names: Sequence[str]) -> list[str]:
        """Names of the d + k columns: the features', then ``missing(name)`` per indicator."""
        names = list(names)
        return names + [f"missing({names[j]})" for j in self.indicators]


def imputation_from_stats(x: NanMoments, *, add_indicator: bool, feature_names: Sequence[str] | None = None) -> Imputation:
    """The imputation of a fit from the first pass's moments of the training rows.

    Raises
    ------
    DataError
        A feature is NaN in every training row: there is no mean to impute.
    """
    empty = np.flatnonzero(x.count == 0)
    if empty.size:
        shown = [feature_names[j] if feature_names is not None else f"column {j}" for j in empty[:5]]
        more = f" and {empty.size - 5} more" if empty.size > 5 else ""
        raise DataError(
            f"Feature(s) {', '.join(map(str, shown))}{more} are NaN in every training row, so missing='mean' has "
            "no mean to impute; drop these columns."
        )
    indicators = np.flatnonzero(x.missing > 0).astype(np.int64) if add_indicator else np.zeros(0, np.int64)
    return Imputation(np.asarray(x.mean, dtype=np.float64), indicators)


def imputed_standardization(x: NanMoments, imputation: Imputation) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof=0; 0 becomes 1.0) of the d + k imputed columns.

    What a scaler fitted on the imputed training rows finds: the mean of an
    imputed feature is its mean, its spread shrinks (var = m2 / rows), and an
    indicator column with a fraction p of ones has mean p and variance p (1 - p).
    """
    p = x.missing[imputation.indicators] / max(x.rows, 1)  # (k,)
    std = np.sqrt(p * (1.0 - p))
    return np.concatenate([x.mean, p]), np.concatenate([x.imputed_std, np.where(std == 0, 1.0, std)])
