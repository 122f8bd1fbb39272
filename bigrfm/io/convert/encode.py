"""Table columns to numbers: numeric columns, one-hot text columns, and the target.

:func:`plan_table` chooses the columns and finds every category in one pass;
:class:`Encoder` turns a pandas block into X (float64) and y. Reads through
:class:`~bigrfm.io.convert.sources.Table` only; writes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from ...exceptions import DataError, InputError
from .sources import Table

__all__ = ["Encoder", "plan_table", "table_rows"]

def _is_numeric_column(series: Any) -> bool:
    import pandas as pd  # noqa: PLC0415

    return bool(pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype))


def _missing_label(series: Any, start: int, src: str) -> DataError:
    row = start + int(np.flatnonzero(series.isna().to_numpy())[0])
    return DataError(
        f"The target column {series.name!r} of {src} is empty in row {row} (0-based, header not counted); "
        "every row needs a target: fill it or drop the row."
    )


@dataclasses.dataclass(frozen=True)
class Encoder:
    """How one table block becomes X (b, d) float64 and y (b,) or None."""

    features: tuple[str, ...]
    target: str | None
    categories: dict[str, tuple[str, ...]]  # one-hot columns and their sorted categories
    text_target: bool

    @property
    def feature_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for c in self.features:
            names.extend([f"{c}={v}" for v in self.categories[c]] if c in self.categories else [c])
        return tuple(names)

    def encode(self, df: Any, start: int, src: str) -> tuple[np.ndarray, np.ndarray | None]:
        import pandas as pd  # noqa: PLC0415

        b = len(df)
        parts = []
        for c in self.features:
            col = df[c]
            if c in self.categories:
                # a missing value matches no category: an all-zero group of columns
                codes = pd.Categorical(col, categories=self.categories[c]).codes
                onehot = np.zeros((b, len(self.categories[c])))  # (b, k)
                hit = codes >= 0
                onehot[np.flatnonzero(hit), codes[hit]] = 1.0
                parts.append(onehot)
                continue
            if not _is_numeric_column(col):
                values = pd.to_numeric(col, errors="coerce")
                bad = np.flatnonzero(values.isna().to_numpy() & col.notna().to_numpy())
                if bad.size:
                    raise DataError(
                        f"Column {c!r} of {src} holds the non-numeric value {col.iloc[bad[0]]!r} in row {start + int(bad[0])}; "
                        "fix it, expand text columns with --one-hot, or leave the column out with --features."
                    )
                col = values
            parts.append(col.to_numpy(dtype=np.float64, na_value=np.nan).reshape(b, 1))
        X = np.concatenate(parts, axis=1) if parts else np.zeros((b, 0))
        if self.target is None:
            return X, None
        t = df[self.target]
        if t.isna().any() and (self.text_target or not pd.api.types.is_float_dtype(t.dtype)):
            raise _missing_label(t, start, src)
        if self.text_target:
            y = t.to_numpy(dtype=str)
        elif pd.api.types.is_bool_dtype(t.dtype):
            y = t.to_numpy(dtype=np.int64)
        elif pd.api.types.is_integer_dtype(t.dtype):
            y = t.to_numpy(dtype=np.int64)
        elif _is_numeric_column(t):
            y = t.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            y = t.astype("str").to_numpy(dtype=str)  # text after numbers: the writer refuses it
        return X, y


def plan_table(table: Table, target: str | None, features: list[str] | None, one_hot: bool) -> Encoder:
    """Choose the columns, find the text columns, and (for --one-hot) every category: one pass."""
    cols = table.columns
    shown = ", ".join(repr(c) for c in cols[:20]) + (" ..." if len(cols) > 20 else "")
    if target is not None and target not in cols:
        raise DataError(f"{table.src} has no column {target!r} for --target; columns: {shown}.")
    if features is None:
        features = [c for c in cols if c != target]
    missing = [c for c in features if c not in cols]
    if missing:
        raise DataError(f"{table.src} has no column(s) {missing} named in --features; columns: {shown}.")
    if target is not None and target in features:
        raise InputError(f"Column {target!r} is both the target and a feature; remove it from --features.")
    if not features:
        raise DataError(f"{table.src} has no feature column besides the target {target!r}.")

    first = next(table.blocks(), None)
    if first is None or len(first) == 0:
        raise DataError(f"{table.src} holds no data rows (only a header); nothing to convert.")
    text = [c for c in features if not _is_numeric_column(first[c])]
    text_target = target is not None and not _is_numeric_column(first[target])
    if text and not one_hot:
        raise DataError(
            f"Feature column(s) {text} of {table.src} are not numeric; expand them into indicator "
            "columns with --one-hot, or leave them out with --features."
        )
    categories: dict[str, tuple[str, ...]] = {}
    if text:
        found: dict[str, set] = {c: set() for c in text}
        for df in table.blocks(columns=text, text_columns=frozenset(text)):
            for c in text:
                found[c].update(df[c].dropna().unique().tolist())
        categories = {c: tuple(sorted(str(v) for v in found[c])) for c in text}
    return Encoder(tuple(features), target, categories, text_target)


def table_rows(table: Table, enc: Encoder) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    text = frozenset(enc.categories) | ({enc.target} if enc.text_target else set())
    # CSV parses every column anyway (a ragged line must fail); Parquet reads only these
    columns = [*enc.features, *([enc.target] if enc.target is not None else [])]
    start = 0
    for df in table.blocks(columns=columns, text_columns=text):
        X, y = enc.encode(df, start, table.src)
        yield start, X, y
        start += len(df)
