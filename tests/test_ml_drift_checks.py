"""Drift of the decisions, the registry's state and the retrain sensor, in Dagster, on a real lake and a real
MLflow store: a champion trained on the test company (xgboost, its reference profile logged with the run: the
persons scorable on the last decision date of its training set), then decision dates whose persons are that
very population (no drift), the same persons with one feature moved for a share of them (a warning) and for a
larger share (an error), and the test company's latest date as it is."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import polars as pl
import pytest
from conftest import lake_settings
from deltalake import write_deltalake

from lake.gold import gold_uri
from ml import registry
from ml.data import load_training_set
from ml.drift import DriftError, drift_report, psi, reference_profile, scoring_reference, summarize
from ml.retraining import Champion, DriftObservation, retrain_decision
from ml.scoring import latest_snapshot_date, scorable_features, score_and_decide
from ml.settings import get_ml_settings
from ml.tracking import REFERENCE_PROFILE_ARTIFACT, configure
from ml.train import ACTIONS, TrainingConfig, out_of_time_split, training_feature_columns
from orchestration.ml_assets import (
    FEATURE_DRIFT,
    PENDING_PROMOTION,
    SCORE_DRIFT,
    gate_check,
    model_registry,
    nba_decisions,
)
from orchestration.resources import LakeResource, MlflowResource
from orchestration.sensors import RETRAIN_CAUSES_TAG, TRAINING_INTERVAL_DAYS, TRAINING_TAG, training_plan

SAME, WARN, ERROR, FALLBACK = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3), date(2026, 10, 4)
LATEST = date(2026, 10, 6)
"""The date under which the test company's latest feature snapshot is decided in the test lake."""
MOVED = {SAME: 0.0, WARN: 0.15, ERROR: 0.5}
"""Share of the persons whose moved feature is set beyond anything the reference saw, per decision date."""
VALIDATION_DAYS = 2


@pytest.fixture(scope="module")
def world(gold_lake, tmp_path_factory):
    """A champion trained on the test company in a fresh MLflow store, and a lake whose feature snapshots of
    three dates are the population of the champion's reference profile (the persons scorable on the last
    decision date of its training set), the moved feature beyond the reference's range for ``MOVED`` of them,
    and whose ``LATEST`` snapshot is the test company's latest one; the lake, ML settings, the reference
    population, the moved feature and the training report."""
    from ml.pipeline import train_candidate

    root = tmp_path_factory.mktemp("drift_world")
    ml = replace(get_ml_settings(), tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db")
    report = train_candidate(
        ml,
        TrainingConfig(validation_days=VALIDATION_DAYS, max_rounds=10, method="t_learner"),
        lake_settings=gold_lake,
    )
    assert report.outcome == "champion"
    training, _ = load_training_set(gold_lake)
    last_decision_date = training.filter(pl.col("action").is_in(ACTIONS))["decision_date"].max()
    schema = pl.scan_delta(gold_uri(gold_lake, "person_features_daily")).collect_schema()
    columns = [c for c in schema.names() if c not in ("person_id", "snapshot_date")]
    rows = (
        scorable_features(last_decision_date, gold_lake, columns)
        .select(columns)
        .with_columns(
            pl.format("x{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(6)).alias("person_id"),
            pl.lit(True).alias("has_profiling_consent"),
        )
    )
    moved = "monetary_value"
    beyond = rows[moved].cast(pl.Float64).max() * 10 + 100
    rng = np.random.default_rng(3)
    settings = lake_settings(root / "lake")
    # nobody linked to a CRM contact or app user: the decisions need no address to be measured
    write_deltalake(
        gold_uri(settings, "identity_person_map"),
        pl.scan_delta(gold_uri(gold_lake, "identity_person_map")).head(0).collect().to_arrow(),
    )
    for day, share in {**MOVED, FALLBACK: 0.0}.items():
        chosen = pl.Series(rng.random(rows.height) < share)
        frame = rows.with_columns(
            pl.lit(day).alias("snapshot_date"),
            pl.when(chosen).then(pl.lit(beyond)).otherwise(pl.col(moved)).cast(schema[moved]).alias(moved),
        ).select(schema.names())
        write_deltalake(
            gold_uri(settings, "person_features_daily"), frame.to_arrow(), mode="append", partition_by=None
        )
    latest = scorable_features(latest_snapshot_date(gold_lake), gold_lake, columns).with_columns(
        pl.lit(LATEST).alias("snapshot_date")
    )
    write_deltalake(
        gold_uri(settings, "person_features_daily"),
        latest.select(schema.names()).to_arrow(),
        mode="append",
        partition_by=None,
    )
    return settings, ml, rows, moved, report


@pytest.fixture(scope="module")
def decided(world):
    """The registry's state and the decisions of the three dates materialized in Dagster, one run per date
    (the error date last), on a test instance: the instance and each date's result."""
    settings, ml, *_ = world
    resources = {
        "lake": LakeResource(lake_root=settings.lake_root),
        "mlflow": MlflowResource(tracking_uri=ml.tracking_uri),
    }
    with dg.instance_for_test() as instance:
        results = {
            day: dg.materialize(
                [model_registry, nba_decisions],
                partition_key=day.isoformat(),
                instance=instance,
                resources=resources,
            )
            for day in MOVED
        }
        yield instance, results, resources


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    """The check evaluations of a run, by check name."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def feature_frame(world, day: date) -> pl.DataFrame:
    """The feature snapshot of ``day`` in the test lake."""
    settings, *_ = world
    return pl.read_delta(gold_uri(settings, "person_features_daily")).filter(pl.col("snapshot_date") == day)


def test_drift_report_finds_no_drift_on_the_reference_population_and_the_moved_feature_past_each_threshold(
    world, decided
):
    settings, ml, population, moved, report = world
    features = training_feature_columns(population.columns)
    # the reference the test computes itself from the population the champion's reference describes
    own_reference = reference_profile(population.select(features), features)
    same = drift_report(SAME, settings, ml, log_artifacts=False)
    assert (same.model_name, same.model_version, same.run_id) == (ml.model_name, "1", report.run_id)
    assert same.persons == population.height
    assert same.status == "ok" and same.plot_uri is None
    # the very persons of the reference and the scores the champion gives them: nothing moved
    assert set(same.features.psi) == set(features)
    assert len(same.scores.psi) == len(ACTIONS)
    assert all(
        v == pytest.approx(0.0, abs=1e-12) for v in [*same.features.psi.values(), *same.scores.psi.values()]
    )

    for day, status in ((WARN, "warn"), (ERROR, "error")):
        measured = drift_report(day, settings, ml, log_artifacts=False)
        assert measured.features.status == status
        assert getattr(measured.features, status) == (moved,)
        expected = psi(own_reference, feature_frame(world, day))[moved]
        assert measured.features.psi[moved] == pytest.approx(expected, rel=1e-12)
        assert [c for c, v in measured.features.psi.items() if v != 0.0] == [moved]


def test_the_reference_is_the_scorable_population_of_the_last_training_date(world, gold_lake):
    """The logged reference describes the persons scorable on the last decision date of the training set, all
    of them (the test company is smaller than the bound), or a seeded sample of the bound's size."""
    _settings, ml, population, _moved, report = world
    configure(ml)
    profile = mlflow.artifacts.load_dict(f"runs:/{report.run_id}/{REFERENCE_PROFILE_ARTIFACT}")
    training, _ = load_training_set(gold_lake)
    last = training.filter(pl.col("action").is_in(ACTIONS))["decision_date"].max()
    features = pl.scan_delta(gold_uri(gold_lake, "person_features_daily")).filter(
        pl.col("snapshot_date") == last
    )
    objected = features.filter(pl.col("has_profiling_consent").not_()).select(pl.len()).collect().item()
    persons = features.select(pl.len()).collect().item()
    assert objected > 0 and population.height <= persons - objected  # objections (and erasures) left out
    assert profile["population"] == {
        "kind": "scorable",
        "snapshot_date": last.isoformat(),
        "persons": population.height,
        "profiled": population.height,
        "seed": 0,
    }
    assert profile["rows"] == population.height
    assert population.height < ml.drift_reference_persons  # the whole population, no sample

    model = trained_model(ml, report)
    sampled = scoring_reference(model, last, gold_lake, max_persons=500, seed=3)
    assert sampled["rows"] == 500 and sampled["population"]["persons"] == population.height
    assert sampled == scoring_reference(model, last, gold_lake, max_persons=500, seed=3)
    assert sampled != scoring_reference(model, last, gold_lake, max_persons=500, seed=4)


def test_the_latest_date_of_the_test_company_measures_time_not_selection_against_a_champion_trained_on_it(
    world, gold_lake
):
    """The test company's latest snapshot, decided in full by the champion, against the champion's reference
    (the persons scorable on its last training date, a week earlier) and against the training rows (the
    campaigns' selection) as references: what was in error through the selection is calm (tenure), the errors
    left are fewer and smaller, and they are the company's own change over the week (its 30-day windows still
    filling from a two-week history): a reference of the same population two days before the latest date has
    none."""
    settings, ml, _population, _moved, report = world
    decided = score_and_decide(LATEST, settings, ml)
    assert decided.decided_by == "champion" and decided.persons > 0
    measured = drift_report(LATEST, settings, ml, log_artifacts=False)
    assert measured.persons == decided.persons
    assert measured.scores.status != "error"

    # the same persons against the training rows (the reference a run logs without a population)
    training, _ = load_training_set(gold_lake)
    train, _ = out_of_time_split(training.filter(pl.col("action").is_in(ACTIONS)), VALIDATION_DAYS)
    model = trained_model(ml, report)
    columns = list(model.feature_columns)
    current = pl.read_delta(gold_uri(settings, "person_features_daily")).filter(
        pl.col("snapshot_date") == LATEST
    )
    old = summarize(psi(reference_profile(train, columns), current), measured.features.thresholds)
    assert "tenure_days" in old.error
    assert measured.features.psi["tenure_days"] < measured.features.thresholds.warn
    assert set(measured.features.error) < set(old.error)
    assert all(measured.features.psi[c] < old.psi[c] for c in measured.features.error)

    # what is left is time: the population of two days before the latest date is within the warning threshold
    recent = latest_snapshot_date(gold_lake) - timedelta(days=2)
    later = scoring_reference(model, recent, gold_lake)
    assert summarize(psi(later, current.join(scores_of(model, current), on="person_id"))).status == "ok"


def trained_model(ml, report):
    """The :class:`ml.train.UpliftModel` of the training run of ``report``, loaded from the MLflow store."""
    configure(ml)
    return mlflow.pyfunc.load_model(report.model_uri).unwrap_python_model().model


def scores_of(model, frame: pl.DataFrame) -> pl.DataFrame:
    """``person_id`` and the expected revenues ``model`` gives the persons of ``frame``."""
    scores = model.predict(frame).select(f"expected_revenue__{a}" for a in model.actions)
    return pl.concat([frame.select("person_id"), scores], how="horizontal")


def test_drift_checks_pass_warn_and_fail_with_error_with_the_worst_columns_and_the_plot(world, decided):
    settings, ml, population, moved, report = world
    _instance, results, _resources = decided
    found = {day: checks(result) for day, result in results.items()}
    assert all(
        set(evaluations) == {FEATURE_DRIFT, SCORE_DRIFT, PENDING_PROMOTION} for evaluations in found.values()
    )
    assert found[SAME][FEATURE_DRIFT].passed and found[SAME][SCORE_DRIFT].passed
    assert not found[WARN][FEATURE_DRIFT].passed
    assert found[WARN][FEATURE_DRIFT].severity == dg.AssetCheckSeverity.WARN
    assert not found[ERROR][FEATURE_DRIFT].passed
    assert found[ERROR][FEATURE_DRIFT].severity == dg.AssetCheckSeverity.ERROR
    client = mlflow.MlflowClient(tracking_uri=ml.tracking_uri)
    for day, evaluations in found.items():
        metadata = {k: v.value for k, v in evaluations[FEATURE_DRIFT].metadata.items()}
        assert evaluations[FEATURE_DRIFT].partition is None  # unpartitioned checks of the partitioned asset
        assert metadata["decision_date"] == day.isoformat()
        assert metadata["model_version"] == "1" and metadata["mlflow_run_id"] == report.run_id
        assert metadata["persons"] == population.height
        assert metadata["status"] == {SAME: "ok", WARN: "warn", ERROR: "error"}[day]
        if day != SAME:
            assert metadata["worst"].startswith(f"{moved} ")
            assert metadata["max_psi"] == pytest.approx(
                drift_report(day, settings, ml, log_artifacts=False).features.psi[moved]
            )
            assert f"| {moved} |" in metadata["worst_columns"]
        # the plot and the figures: artifacts of the champion's training run, beside its reference profile
        plot = Path(metadata["plot"])
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        figures = json.loads(Path(metadata["figures"]).read_text())
        assert figures["status"] == metadata["status"] and figures["decision_date"] == day.isoformat()
        logged = {a.path for a in client.list_artifacts(report.run_id, f"drift/{day.isoformat()}")}
        assert logged == {f"drift/{day.isoformat()}/drift.png", f"drift/{day.isoformat()}/psi.json"}
        # no person id reaches Dagster
        text = " ".join(str(v.value) for e in evaluations.values() for v in e.metadata.values())
        assert "x000" not in text
    materialized = results[SAME].asset_materializations_for_node("ml__nba_decisions")
    assert [m.partition for m in materialized] == [SAME.isoformat()]


def test_the_registry_state_shows_the_champion_and_no_pending_promotion(decided):
    _instance, results, _resources = decided
    registry_state = results[SAME].asset_materializations_for_node("ml__model_registry")[0]
    metadata = {k: v.value for k, v in registry_state.metadata.items()}
    assert metadata["champion"] == "1" and metadata["pending_approval"] == "none"
    assert metadata["gate_outcome"] == "champion" and metadata["gate_reason"].startswith(
        "bootstrap promotion"
    )
    assert 0 <= metadata["champion_age_days"] < 1
    assert checks(results[SAME])[PENDING_PROMOTION].passed


def test_a_pending_promotion_shows_in_dagster_until_approved(world, decided):
    """With approval required, a candidate that passed the gate waits (a WARN check with the approve command)
    while the champion stays; approving promotes it; a rollback restores the first champion."""
    _settings, ml, _population, _moved, report = world
    _instance, _results, resources = decided
    ml_approval = replace(ml, promotion_requires_approval=True)
    version = registry.register_candidate(
        report.model_uri, report.run_id, report.candidate_value, report.logging_value, "card", ml_approval
    )
    decision = registry.GateDecision(
        promote=True, bootstrap=False, reason="promoted: better by the margin (test)"
    )
    assert registry.apply_gate(version, decision, requires_approval=True, settings=ml_approval) == "pending"
    with dg.instance_for_test() as instance:
        waiting = dg.materialize([model_registry], instance=instance, resources=resources)
        check = checks(waiting)[PENDING_PROMOTION]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        command = f"python -m ml.registry approve --version {version.version}"
        assert check.metadata["approve_command"].value == command
        assert check.metadata["gate_reason"].value == decision.reason
        shown = {
            k: v.value
            for k, v in waiting.asset_materializations_for_node("ml__model_registry")[0].metadata.items()
        }
        assert shown["pending_approval"] == str(version.version) and shown["champion"] == "1"
        assert shown["approve_command"] == command

        registry.approve(by="operator", settings=ml)
        approved = dg.materialize([model_registry], instance=instance, resources=resources)
        assert checks(approved)[PENDING_PROMOTION].passed
        shown = {
            k: v.value
            for k, v in approved.asset_materializations_for_node("ml__model_registry")[0].metadata.items()
        }
        assert shown["champion"] == str(version.version) and shown["pending_approval"] == "none"
        assert "rollback_command" in shown
    registry.rollback("restore the first champion", settings=ml)
    assert registry.registry_state(ml).champion == "1"


@dg.asset
def nightly_marker() -> None:
    """Stands for a nightly run: only its tags matter to the training plan."""


def test_the_nightly_trains_weekly_and_once_per_drift_or_age_cause(world, decided, monkeypatch):
    _settings, ml, *_ = world
    instance, _results, resources = decided

    def plan(now: datetime | None = None):
        return training_plan(instance, resources["mlflow"].settings(), now or datetime.now(UTC))

    def nightly_with_training(causes: tuple[str, ...] = ()) -> None:
        tags = {TRAINING_TAG: "yes", RETRAIN_CAUSES_TAG: ",".join(causes)}
        dg.materialize([nightly_marker], instance=instance, tags=tags)

    # no training on this instance yet: the weekly training is due
    first = plan()
    assert first.train and first.reason == "weekly training: no training yet" and first.causes == ()
    nightly_with_training()
    # trained tonight: the latest drift check of the champion (the error date) passed the error threshold
    drifted = plan()
    assert drifted.train and drifted.causes == (f"drift:{ml.model_name}:v1",)
    assert "feature_drift error on 2026-10-03" in drifted.reason
    nightly_with_training(drifted.causes)
    # the same cause is not trained for again
    again = plan()
    assert not again.train and "already requested" in again.reason
    # a champion older than the limit is another cause
    monkeypatch.setenv("CHAMPION_MAX_AGE_DAYS", "0")
    aged = plan()
    assert aged.train and f"age:{ml.model_name}:v1" in aged.causes
    monkeypatch.setenv("CHAMPION_MAX_AGE_DAYS", "14")
    # a week after the last training, the weekly training is due again
    week_later = plan(datetime.now(UTC) + timedelta(days=TRAINING_INTERVAL_DAYS, minutes=1))
    assert week_later.train and week_later.reason.startswith("weekly training: no training since")
    # once the latest drift is below the error threshold, nothing to do
    dg.materialize([nba_decisions], partition_key=SAME.isoformat(), instance=instance, resources=resources)
    calm = plan()
    assert not calm.train
    assert "below the error threshold" in calm.reason and "feature_drift ok on 2026-10-01" in calm.reason


def test_no_drift_to_measure_when_the_fallback_decided_and_an_error_without_decisions(world, monkeypatch):
    settings, ml, *_ = world
    monkeypatch.setenv("MLFLOW_MODEL_NAME", "no_such_model")  # no champion: the rule-based fallback decides
    resources = {
        "lake": LakeResource(lake_root=settings.lake_root),
        "mlflow": MlflowResource(tracking_uri=ml.tracking_uri),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [nba_decisions], partition_key=FALLBACK.isoformat(), instance=instance, resources=resources
        )
    found = checks(result)
    assert found[FEATURE_DRIFT].passed and found[SCORE_DRIFT].passed
    assert found[FEATURE_DRIFT].metadata["status"].value == "no_model"
    assert drift_report(FALLBACK, settings, ml, log_artifacts=False) is None
    with pytest.raises(DriftError, match="no decisions for 2026-10-05"):
        drift_report(date(2026, 10, 5), settings, ml, log_artifacts=False)


def test_the_gate_check_of_each_outcome():
    outcomes = {
        o: gate_check("7", o, f"reason {o}") for o in ("champion", "pending", "challenger", "rejected")
    }
    assert outcomes["champion"].passed
    assert [outcomes[o].passed for o in ("pending", "challenger", "rejected")] == [False] * 3
    assert outcomes["challenger"].severity == dg.AssetCheckSeverity.WARN
    assert outcomes["rejected"].severity == dg.AssetCheckSeverity.ERROR
    assert (
        outcomes["pending"].metadata["approve_command"].value == "python -m ml.registry approve --version 7"
    )
    assert "approve_command" not in outcomes["challenger"].metadata


NOW = datetime(2026, 10, 20, 12, tzinfo=UTC)
CHAMPION = Champion("nba_uplift", "3", NOW - timedelta(days=5))


def observed(status: str, version: str = "3", check: str = "feature_drift") -> DriftObservation:
    return DriftObservation(check, version, "2026-10-19", status, "monetary_value 0.300")


def test_retrain_decision_on_drift_of_the_serving_version_only():
    decision = retrain_decision(CHAMPION, [observed("error")], NOW, max_age_days=14)
    assert decision.retrain and decision.run_key == "drift:nba_uplift:v3"
    assert decision.causes == ("drift:nba_uplift:v3",)
    assert "feature_drift error on 2026-10-19 (monetary_value 0.300)" in decision.reason
    # a drift measured on another version does not count: it no longer serves
    other = retrain_decision(CHAMPION, [observed("error", version="2")], NOW, max_age_days=14)
    assert not other.retrain and "no drift check yet" in other.reason
    # a warning only warns, unless the trigger is warn
    assert not retrain_decision(CHAMPION, [observed("warn")], NOW, max_age_days=14).retrain
    assert retrain_decision(CHAMPION, [observed("warn")], NOW, max_age_days=14, trigger="warn").retrain
    with pytest.raises(ValueError):
        observed("bad")
    with pytest.raises(ValueError):
        retrain_decision(CHAMPION, [], NOW, max_age_days=14, trigger="ok")


def test_retrain_decision_on_age_and_each_cause_once():
    # 5 days old: older than a 4-day limit, not than a 5-day one (strictly older)
    assert not retrain_decision(CHAMPION, [], NOW, max_age_days=5).retrain
    aged = retrain_decision(CHAMPION, [], NOW, max_age_days=4)
    assert aged.retrain and aged.run_key == "age:nba_uplift:v3" and "5.0 days old (limit 4)" in aged.reason
    both = retrain_decision(CHAMPION, [observed("ok"), observed("error", check="score_drift")], NOW, 4)
    assert both.run_key == "drift:nba_uplift:v3+age:nba_uplift:v3"
    assert both.causes == ("drift:nba_uplift:v3", "age:nba_uplift:v3")
    done = retrain_decision(CHAMPION, [observed("error")], NOW, 4, requested=both.causes)
    assert not done.retrain and "already requested" in done.reason
    # a new champion starts afresh
    newer = Champion("nba_uplift", "4", NOW - timedelta(days=6))
    assert retrain_decision(newer, [], NOW, 4, requested=both.causes).run_key == "age:nba_uplift:v4"
    none = retrain_decision(None, [observed("error")], NOW, 4)
    assert not none.retrain and "no champion" in none.reason
