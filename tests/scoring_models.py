"""The pyfunc models of the scoring tests, in a module of their own: logged with it as their code
(``code_paths``), so that the Python workers of a Spark engine, which do not see the tests folder, load
them."""

from __future__ import annotations

import mlflow
import pandas as pd


class Uplift(mlflow.pyfunc.PythonModel):
    """Expected revenue 10 + order_count / 10 without action, plus a fixed uplift per action."""

    def __init__(self, uplift: dict[str, float], fail: bool = False):
        self.uplift = uplift
        self.fail = fail

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """The expected revenue of every action; RuntimeError for a model made to fail."""
        if self.fail:
            raise RuntimeError("the model cannot score")
        base = 10.0 + model_input["order_count"].astype(float) / 10 + 0.0 * model_input["monetary_value"]
        return pd.DataFrame({f"expected_revenue__{a}": base + u for a, u in self.uplift.items()})
