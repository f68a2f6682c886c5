"""The served model: the uplift model wrapped as an MLflow pyfunc, and the input frame it takes.

The pyfunc's input is one row per person with the model's feature columns only (no person ids): numbers and
booleans as floats (missing values as NaN), categories as strings. Its output is :meth:`UpliftModel.predict`
as pandas: ``expected_revenue__<action>`` and ``purchase_probability__<action>`` for every action.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import polars as pl

MODEL_ARTIFACT = "uplift_model"
"""The key of the :meth:`UpliftModel.save` folder among the pyfunc's artifacts."""

PIP_PACKAGES = ("mlflow", "xgboost-cpu", "pandas", "polars", "pyarrow", "numpy")
"""The packages the served model needs, pinned to the versions it was trained with (``xgboost-cpu``, never the
plain ``xgboost`` wheel that drags NVIDIA libraries)."""


def pip_requirements() -> list[str]:
    """The explicit pip requirements of the logged model: :data:`PIP_PACKAGES` at their installed versions
    (a package that is not installed is left out)."""
    pinned = []
    for package in PIP_PACKAGES:
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:  # not installed here, so the model cannot need it
            continue
    return pinned


def pyfunc_input(frame: pl.DataFrame, feature_columns: Sequence[str]) -> pd.DataFrame:
    """The pyfunc input of ``frame``: its ``feature_columns`` only, numbers and booleans as float64 (nulls as
    NaN), everything else as strings."""
    columns = []
    for name in feature_columns:
        dtype = frame.schema[name]
        if dtype.is_numeric() or dtype == pl.Boolean:
            columns.append(pl.col(name).cast(pl.Float64))
        else:
            columns.append(pl.col(name).cast(pl.String))
    return frame.select(columns).to_pandas()


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """An :class:`ml.train.UpliftModel` served through MLflow (``mlflow.pyfunc.load_model(uri).predict``)."""

    def load_context(self, context) -> None:
        """Load the uplift model from the pyfunc's ``uplift_model`` artifact folder."""
        from ml.train import UpliftModel

        self.model = UpliftModel.load(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Expected revenue and purchase probability of every action for every row of ``model_input``."""
        frame = (
            pl.from_pandas(model_input)
            if isinstance(model_input, pd.DataFrame)
            else pl.DataFrame(model_input)
        )
        return self.model.predict(frame).to_pandas()
