"""The model's view of the person features: which columns are features, and the frame xgboost takes.

Numbers and booleans become floats with missing values kept missing (xgboost routes them natively); the
categorical columns become pandas ``category`` columns with a fixed category list, so that a category the
training never saw is missing for the model rather than an error, and xgboost splits on categories natively
(``enable_categorical``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import polars as pl

from simulator.catalog import CATEGORIES

KEY_COLUMNS = ("person_id", "snapshot_date")
CATEGORICAL_COLUMNS = ("top_category",)
CATEGORY_VALUES = {"top_category": CATEGORIES}
"""The fixed category list of each categorical column (the shop's product categories)."""


def feature_columns(schema: Mapping[str, pl.DataType]) -> list[str]:
    """Every column of ``person_features_daily`` (given its schema) but the keys, in table order."""
    return [name for name in schema if name not in KEY_COLUMNS]


def model_frame(frame: pl.DataFrame | pd.DataFrame, feature_columns: Sequence[str]) -> pd.DataFrame:
    """The pandas frame of ``feature_columns`` that xgboost takes: floats (booleans as 0/1, nulls as NaN) and
    the categorical columns as ``category`` dtype over their fixed category list (unknown values missing)."""
    if isinstance(frame, pd.DataFrame):
        frame = pl.from_pandas(frame)
    columns = {}
    for name in feature_columns:
        series = frame[name]
        if name in CATEGORICAL_COLUMNS:
            known = list(CATEGORY_VALUES[name])
            values = series.cast(pl.String)
            values = values.set(~values.is_in(known).fill_null(False), None)
            columns[name] = pd.Categorical(values.to_pandas(), categories=known)
        else:
            columns[name] = series.cast(pl.Float64).to_numpy()
    return pd.DataFrame(columns)
