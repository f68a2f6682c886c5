"""MLflow tracking of a training run on the test company's gold tables, in a real SQLite MLflow store: what
the run records, the served pyfunc, and a reproduction after the table version it read was vacuumed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow.tracking import MlflowClient

from ml.data import GoldRef, load_training_set, read_gold
from ml.model import pyfunc_input
from ml.policy import load_policy
from ml.settings import MlSettings, get_ml_settings
from ml.tracking import (
    CONFIG_ARTIFACT,
    MODEL_CARD_ARTIFACT,
    REFERENCE_PROFILE_ARTIFACT,
    SNAPSHOT_ARTIFACT,
    LoggedRun,
    log_training_run,
    reproduce,
    reproduce_and_compare,
)
from ml.train import TrainingConfig, TrainingResult, train_uplift

CONFIG = TrainingConfig(validation_days=2, max_rounds=60)


class Logged(NamedTuple):
    settings: MlSettings
    result: TrainingResult
    ref: GoldRef
    run: LoggedRun


@pytest.fixture(scope="module")
def lake(gold_lake, tmp_path_factory):
    """A writable copy of the test company's gold ``training_decisions`` (version 0) in a fresh lake."""
    root = tmp_path_factory.mktemp("tracking_lake")
    settings = replace(gold_lake, lake_root=str(root / "lake"))
    frame, _ = read_gold("training_decisions", gold_lake)
    write_deltalake(f"{settings.zone('gold')}/training_decisions", frame.to_arrow(), mode="overwrite")
    return settings


@pytest.fixture(scope="module")
def logged(lake, tmp_path_factory):
    """One training run logged to a fresh SQLite store, with the learned and logging policies' values."""
    from ml.ope import logging_policy_value
    from ml.pipeline import ope_logs, value_policy

    store = tmp_path_factory.mktemp("mlflow")
    settings = replace(get_ml_settings(), tracking_uri=f"sqlite:///{store}/mlflow.db")
    training, ref = load_training_set(lake)
    result = train_uplift(training, CONFIG)
    policy = load_policy(settings.policy_file)
    evaluation = value_policy(result.validation_predictions, result.validation, policy, result.model.actions)
    logging_value = logging_policy_value(ope_logs(result.validation, policy))
    run = log_training_run(result, ref, evaluation, logging_value, settings, config=CONFIG)
    return Logged(settings, result, ref, run)


def test_run_records_params_metrics_plots_data_and_snapshot(logged):
    settings, result, ref, run = logged
    client = MlflowClient(settings.tracking_uri)
    recorded = client.get_run(run.run_id)
    params, metrics = recorded.data.params, recorded.data.metrics

    assert params["method"] == result.model.method
    assert params["features"].split(",") == list(result.model.feature_columns)
    assert params["config.seed"] == str(CONFIG.seed)
    assert params["config.max_rounds"] == "60"
    for key, value in result.split.items():
        assert params[f"split.{key}"] == str(value)
    assert (params["data.uri"], params["data.version"]) == (ref.uri, "0")
    assert {key.split("__")[1] for key in result.metrics} == set(result.model.actions)
    for (
        key,
        value,
    ) in result.metrics.items():  # every metric the training computed (it leaves out the undefined)
        assert metrics[key] == pytest.approx(value, nan_ok=True)
    for estimator in ("ips", "snips", "dr", "logging"):
        assert (
            metrics[f"ope.{estimator}.ci_low"]
            <= metrics[f"ope.{estimator}.value"]
            <= metrics[f"ope.{estimator}.ci_high"]
        )
        assert 0 <= metrics[f"ope.{estimator}.support"] <= 1
        assert metrics[f"ope.{estimator}.effective_sample_size"] > 0

    artifacts = {
        a.path
        for folder in ("plots", "training_snapshot", "drift", "reproduction")
        for a in client.list_artifacts(run.run_id, folder)
    }
    assert {"plots/feature_importance.png", "plots/calibration.png", "plots/qini.png"} <= artifacts
    assert {SNAPSHOT_ARTIFACT, REFERENCE_PROFILE_ARTIFACT, CONFIG_ARTIFACT} <= artifacts
    for plot in ("feature_importance", "calibration", "qini"):
        assert (
            Path(mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path=f"plots/{plot}.png"))
            .stat()
            .st_size
            > 5000
        )

    # the gold table and version as the run's input dataset
    (data_input,) = recorded.inputs.dataset_inputs
    assert data_input.dataset.name == "training_decisions@v0"
    assert data_input.dataset.source_type == "delta_table"
    assert json.loads(data_input.dataset.source)["path"] == ref.uri
    assert [t.value for t in data_input.tags if t.key == "mlflow.data.context"] == ["training"]

    # the snapshot is exactly the rows and columns trained and validated on
    snapshot = pl.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path=SNAPSHOT_ARTIFACT)
    )
    assert snapshot.equals(
        pl.concat([result.train, result.validation], how="vertical_relaxed").select(snapshot.columns)
    )
    assert set(result.model.feature_columns) <= set(snapshot.columns)
    assert "has_profiling_consent" not in snapshot.columns

    profile = mlflow.artifacts.load_dict(f"{recorded.info.artifact_uri}/{REFERENCE_PROFILE_ARTIFACT}")
    assert set(profile["columns"]) == set(result.model.feature_columns) | {
        f"expected_revenue__{a}" for a in result.model.actions
    }
    # without a population of persons to describe, the training rows and their scores
    assert profile["rows"] == result.train.height
    assert profile["population"] == {
        "kind": "training_rows",
        "from": result.split["train_from"],
        "until": result.split["train_until"],
    }

    card = mlflow.artifacts.load_text(f"{recorded.info.artifact_uri}/{MODEL_CARD_ARTIFACT}")
    assert f"`{ref.uri}`, version 0" in card
    assert "Known limits" in card and "| logging | on-policy |" in card


def test_model_has_signature_example_and_explicit_requirements(logged):
    _settings, result, _ref, run = logged
    info = mlflow.models.get_model_info(run.model_uri)
    assert info.signature.inputs.input_names() == list(result.model.feature_columns)
    assert set(info.signature.outputs.input_names()) == {
        f"{kind}__{a}" for kind in ("expected_revenue", "purchase_probability") for a in result.model.actions
    }
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=run.model_uri))
    requirements = (folder / "requirements.txt").read_text().split()
    assert any(r.startswith("xgboost-cpu==") for r in requirements)
    assert not any(r == "xgboost" or r.startswith(("xgboost=", "xgboost>", "xgboost<")) for r in requirements)
    example = json.loads((folder / "serving_input_example.json").read_text())["dataframe_split"]
    assert example["columns"] == list(result.model.feature_columns)
    assert "person_id" not in example["columns"] and len(example["data"]) == 5


def test_served_pyfunc_predicts_what_the_model_predicts(logged):
    _settings, result, _ref, run = logged
    served = mlflow.pyfunc.load_model(run.model_uri)
    features = list(result.model.feature_columns)
    through_mlflow = served.predict(pyfunc_input(result.validation, features))
    direct = result.model.predict(result.validation).to_pandas()
    assert list(through_mlflow.columns) == list(direct.columns)
    np.testing.assert_array_equal(through_mlflow.to_numpy(dtype=float), direct.to_numpy(dtype=float))


def test_the_batch_scores_through_the_served_uplift_model(logged):
    """The batch unwraps the pyfunc (no pandas round trip): the same expected revenue as the pyfunc's
    ``predict``, and, for the S-learner, as its boosters on a fresh frame per action."""
    from ml.features import model_frame
    from ml.scoring import predict_scores, uplift_model
    from ml.train import action_frame

    _settings, result, _ref, run = logged
    served = mlflow.pyfunc.load_model(run.model_uri)
    model = uplift_model(served)
    assert model is not None and model.method == result.model.method == "s_learner"
    features = list(result.model.feature_columns)
    actions = result.model.actions
    batch = predict_scores(served, result.validation, features, actions)
    through_mlflow = served.predict(pyfunc_input(result.validation, features))
    assert batch["person_id"].to_list() == result.validation["person_id"].to_list()
    frame = model_frame(result.validation, features)
    for action in actions:
        column = f"expected_revenue__{action}"
        np.testing.assert_array_equal(batch[column].to_numpy(), through_mlflow[column].to_numpy(dtype=float))
        with_action = action_frame(frame, action, actions)
        boosters = model.boosters
        expected = boosters["purchase"].inplace_predict(with_action) * boosters[
            "order_value"
        ].inplace_predict(with_action)
        np.testing.assert_allclose(batch[column].to_numpy(), expected, rtol=1e-6)


def test_reproduce_after_the_table_version_was_vacuumed(logged, lake):
    settings, result, _ref, run = logged
    uri = f"{lake.zone('gold')}/training_decisions"
    current, _ = read_gold("training_decisions", lake)
    write_deltalake(uri, current.head(100).to_arrow(), mode="overwrite")
    DeltaTable(uri).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(Exception):  # noqa: B017 - delta-rs reports the missing files as a generic error
        read_gold("training_decisions", lake, version=0)

    again = reproduce(run.run_id, settings)
    assert again.split == result.split
    assert again.model.feature_columns == result.model.feature_columns
    np.testing.assert_array_equal(
        again.validation_predictions.to_numpy(), result.validation_predictions.to_numpy()
    )
    assert reproduce_and_compare(run.run_id, settings) == 0.0


def test_reproduce_command(logged, monkeypatch, capsys):
    from ml.pipeline import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.settings.tracking_uri)
    assert main(["reproduce", logged.run.run_id]) == 0
    assert f"run {logged.run.run_id} reproduced: largest prediction difference 0" in capsys.readouterr().out


def test_training_config_is_recovered_from_the_model_parameters(logged):
    from ml.tracking import training_config

    assert training_config(logged.result.model.params) == CONFIG
