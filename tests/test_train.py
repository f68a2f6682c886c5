"""Uplift training on the test company's gold training set: real xgboost models, out of time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lake.settings import Settings
from ml.features import CATEGORICAL_COLUMNS, feature_columns, model_frame
from ml.train import ACTIONS, METHODS, TrainingConfig, UpliftModel, train_uplift

CONFIG = TrainingConfig(validation_days=2, max_rounds=60, early_stopping_rounds=10, min_child_weight=5.0)


@pytest.fixture(scope="module")
def training(gold_lake: Settings) -> pl.DataFrame:
    return pl.read_delta(f"{gold_lake.zone('gold')}/training_decisions")


@pytest.fixture(scope="module")
def trained(training: pl.DataFrame) -> dict:
    return {method: train_uplift(training, replace(CONFIG, method=method)) for method in METHODS}


def test_the_training_set_holds_randomised_and_rule_based_decisions(training: pl.DataFrame) -> None:
    assert set(training["action"]) == set(ACTIONS)
    assert training.filter(pl.col("campaign_id") == "bau-cart-reminder").height > 0
    assert training.filter(pl.col("campaign_id").str.starts_with("explore-")).height > 0


@pytest.mark.parametrize("method", METHODS)
def test_prediction_columns_and_out_of_time_split(trained: dict, method: str) -> None:
    result = trained[method]
    assert result.train["decision_date"].max() < result.validation["decision_date"].min()
    assert result.validation["decision_date"].n_unique() == CONFIG.validation_days
    assert result.split["train_until"] < result.split["validation_from"]
    predictions = result.validation_predictions
    assert predictions.height == result.validation.height
    expected = [f"expected_revenue__{a}" for a in ACTIONS] + [f"purchase_probability__{a}" for a in ACTIONS]
    assert sorted(predictions.columns) == sorted(expected)
    assert all(predictions[c].dtype == pl.Float64 for c in expected)
    probabilities = predictions.select(pl.col("^purchase_probability__.*$")).to_numpy()
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert predictions.select(pl.all().is_nan().any()).row(0) == (False,) * len(expected)
    for action in ACTIONS:
        assert f"brier__{action}" in result.metrics
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert result.importance and result.model.trees_and_depth["trees"] >= len(result.model.boosters)


def test_early_stopping_stops_before_the_round_limit(trained: dict) -> None:
    # on a few hundred noisy decisions the validation loss stops improving long before 60 rounds
    assert min(trained["t_learner"].rounds.values()) < CONFIG.max_rounds


@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_give_identical_predictions(trained: dict, method: str, tmp_path: Path) -> None:
    result = trained[method]
    result.model.save(tmp_path / "model")
    loaded = UpliftModel.load(tmp_path / "model")
    assert loaded.actions == result.model.actions and loaded.method == method
    assert loaded.predict(result.validation).equals(result.validation_predictions)


def test_same_seed_same_model_other_seed_other_model(training: pl.DataFrame, trained: dict) -> None:
    again = train_uplift(training, replace(CONFIG, method="t_learner"))
    assert again.validation_predictions.equals(trained["t_learner"].validation_predictions)
    other = train_uplift(training, replace(CONFIG, method="t_learner", seed=8))
    assert not other.validation_predictions.equals(trained["t_learner"].validation_predictions)


def test_unseen_and_missing_categories_are_handled_natively(trained: dict) -> None:
    model = trained["dr_learner"].model
    assert set(CATEGORICAL_COLUMNS) <= set(model.feature_columns)
    rows = trained["dr_learner"].validation.head(3)
    unseen = rows.with_columns(pl.Series("top_category", ["jewellery", None, "shoes"]))
    frame = model_frame(unseen, model.feature_columns)
    assert str(frame["top_category"].dtype) == "category"
    assert frame["top_category"].isna().tolist() == [True, True, False]
    predictions = model.predict(unseen)
    assert predictions.height == 3 and not predictions.select(pl.all().is_nan().any()).row(0)[0]
    # missing numbers stay missing for xgboost, not zero
    assert np.isnan(
        model_frame(rows.with_columns(tenure_days=None), model.feature_columns)["tenure_days"]
    ).all()


def test_feature_columns_are_every_column_but_the_keys(gold_lake: Settings) -> None:
    features = pl.read_delta(f"{gold_lake.zone('gold')}/person_features_daily")
    columns = feature_columns(features.schema)
    assert "person_id" not in columns and "snapshot_date" not in columns
    assert {"tenure_days", "has_profiling_consent", "top_category"} <= set(columns)
    assert len(columns) == features.width - 2


def test_an_unknown_method_or_too_few_dates_are_refused(training: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        train_uplift(training, replace(CONFIG, method="s_learner"))
    with pytest.raises(ValueError, match="validation dates"):
        train_uplift(training, replace(CONFIG, validation_days=training["decision_date"].n_unique()))
