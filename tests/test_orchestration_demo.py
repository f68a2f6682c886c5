"""``make demo`` in one process (``python -m orchestration.demo``), and the version of the dbt installed
beside this Python known without starting it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster_dbt import DbtCliResource
from packaging.version import Version

from lake.gold import gold_uri
from lake.settings import REPO_ROOT
from orchestration.dbt_project import DBT_EXECUTABLE, LocalDbtCliResource, dbt_project

SNAPSHOTS = dg.AssetKey(["marts", "person_features_daily"])


def test_the_dbt_beside_this_python_has_the_version_that_dbt_prints() -> None:
    assert Path(DBT_EXECUTABLE).samefile(Path(sys.executable).with_name("dbt"))
    local = LocalDbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)
    asked = DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)
    assert local._cli_version == asked._cli_version  # dagster-dbt's own: `dbt --version`
    printed = subprocess.run([DBT_EXECUTABLE, "--version"], capture_output=True, text=True, check=True)
    assert f"installed: {local._cli_version}" in printed.stdout


def test_another_dbt_executable_is_asked_for_its_version(tmp_path: Path) -> None:
    other = tmp_path / "dbt"
    other.write_text("#!/bin/sh\nprintf 'Core:\\n  - installed: 1.10.7\\n'\n")
    other.chmod(0o755)
    resource = LocalDbtCliResource(project_dir=dbt_project, dbt_executable=str(other))
    assert resource._cli_version == Version("1.10.7")


def demo_runs(instance: dg.DagsterInstance) -> list[tuple[dg.DagsterRun, dict[dg.AssetKey, set]]]:
    """The instance's runs, oldest first, each with its materialized assets and their partition keys."""
    found = []
    for run in reversed(instance.get_runs()):
        built: dict[dg.AssetKey, set] = {}
        events = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        for record in events.records:
            built.setdefault(record.asset_key, set()).add(record.partition_key)
        found.append((run, built))
    return found


@pytest.mark.slow
def test_the_demo_materializes_every_asset_in_three_runs_on_the_instance(small_demo, monkeypatch) -> None:
    for name, value in small_demo.env.items():
        monkeypatch.setenv(name, value)
    assert small_demo.cwd_after == REPO_ROOT
    check_demo_runs()
    # what was built, and where to look; without the models no decision summary
    assert f"lake root: {small_demo.lake}" in small_demo.printed
    assert "gold/person_features_daily" in small_demo.printed
    assert "make mlflow  the MLflow UI on http://127.0.0.1:5000" in small_demo.printed
    assert "make dev     the Dagster UI on http://127.0.0.1:3000" in small_demo.printed
    assert "next-best actions of" not in small_demo.printed
    # no decisions, no syncs: neither the CRM's holdings nor the syncs' table
    assert "recommendations for" not in small_demo.printed
    assert "eligible persons of nba_current" not in small_demo.printed


def check_demo_runs() -> None:
    """The runs of the demo on the instance of ``DAGSTER_HOME``: the asset job's runs, all successful, that
    materialized every asset once, the daily snapshots over the dates the warehouse supports."""
    from orchestration.definitions import defs
    from orchestration.snapshot_dates import supported_snapshot_dates

    graph = defs.resolve_asset_graph()
    # trained, decided and synced by commands after these runs; the outcomes are measured by the loop
    models = dg.AssetSelection.groups("ml", "activation", "outcomes").resolve(graph)
    after = dg.AssetSelection.assets(SNAPSHOTS).downstream().resolve(graph) - {SNAPSHOTS} - models
    with dg.DagsterInstance.get() as instance:
        runs = demo_runs(instance)
    assert [run.status for run, _ in runs] == [dg.DagsterRunStatus.SUCCESS] * 3
    assert {run.job_name for run, _ in runs} == {"__ASSET_JOB"}
    # as `dg launch -m orchestration.definitions` would launch each from the directory it was started in
    pointers = {run.job_code_origin.repository_origin.code_pointer for run, _ in runs}
    assert [(p.module, p.fn_name, p.working_directory) for p in pointers] == [
        ("orchestration.definitions", "defs", str(REPO_ROOT))
    ]
    company = runs[0][0].run_config["ops"]["simulated_company"]["config"]
    assert company == {"persons": 300, "days": 3, "seed": 5}
    # every asset in exactly one run, all those of a run materialized: the snapshots between the others
    assert [set(built) for _, built in runs] == [set(run.asset_selection) for run, _ in runs]
    assert [set(run.asset_selection) for run, _ in runs] == [
        graph.materializable_asset_keys - after - {SNAPSHOTS} - models,
        {SNAPSHOTS},
        after,
    ]
    assert {dg.AssetKey(["landing", "crm", "contacts"]), dg.AssetKey(["silver", "crm", "contacts"])} <= set(
        runs[0][1]
    )
    first, last = supported_snapshot_dates()
    assert runs[1][0].tags["dagster/asset_partition_range_start"] == first
    assert runs[1][0].tags["dagster/asset_partition_range_end"] == last
    dates = defs.resolve_assets_def(SNAPSHOTS).partitions_def.get_partition_keys_in_range(
        dg.PartitionKeyRange(first, last)
    )
    assert len(dates) >= 2 and runs[1][1][SNAPSHOTS] == set(dates)


def fresh_instance(root: Path, monkeypatch) -> None:
    """A Dagster home under ``root`` (the project's dagster.yaml) as ``DAGSTER_HOME``."""
    home = root / "dagster"
    home.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))


@pytest.fixture
def mlflow_uris():
    """MLflow's process-wide tracking and registry URIs put back after the test (the models run sets them)."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


@pytest.mark.slow
def test_a_demo_too_small_to_train_stops_at_the_training_and_says_why(
    small_demo, tmp_path, monkeypatch, mlflow_uris
) -> None:
    from orchestration import demo
    from orchestration.snapshot_dates import supported_snapshot_dates

    for name, value in small_demo.env.items():
        monkeypatch.setenv(name, value)
    fresh_instance(tmp_path, monkeypatch)  # the demo's own instance stays as the demo left it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(REPO_ROOT)
    latest = supported_snapshot_dates()[1]
    with dg.DagsterInstance.get() as instance, pytest.raises(SystemExit) as stopped:
        demo.materialize_models(instance, latest)
    message = str(stopped.value)
    assert "  ml__uplift_candidate: ValueError: " in message
    assert "decision dates cannot be split into training dates and 7 validation dates" in message
    assert message.endswith(demo.TOO_LITTLE_DATA)
    with dg.DagsterInstance.get() as instance:
        [(run, built)] = demo_runs(instance)
        failed = {e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)}
    assert run.status == dg.DagsterRunStatus.FAILURE and run.tags["dagster/partition"] == latest
    assert failed == {"ml__uplift_candidate"} and built == {}  # nothing decided without a model


@pytest.mark.slow
def test_the_models_run_trains_promotes_decides_and_evaluates_the_latest_date(
    gold_lake, simulated, tmp_path, monkeypatch, mlflow_uris
) -> None:
    """The last run of ``make demo`` on the test company's lake (3,000 persons x 14 days, built by ingestion,
    dbt and the gold publication): what the demo must leave behind, and what it prints."""
    from mlflow import MlflowClient

    from ml.policy import NO_ACTION, load_policy
    from ml.scoring import latest_snapshot_date
    from ml.settings import get_ml_settings
    from ml.train import TrainingConfig
    from orchestration import demo

    lake = tmp_path / "lake"
    shutil.copytree(gold_lake.lake_root, lake, symlinks=True)
    (lake / "simulator_truth").symlink_to(simulated.truth, target_is_directory=True)
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(gold_lake.warehouse_path, warehouse)
    fresh_instance(tmp_path, monkeypatch)
    monkeypatch.setenv("LAKE_ROOT", str(lake))
    monkeypatch.setenv("WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    monkeypatch.chdir(REPO_ROOT)
    settings = replace(gold_lake, lake_root=str(lake), warehouse_path=warehouse)
    latest = latest_snapshot_date(settings)

    # the test company's training set holds 6 decision dates: 2 validate instead of the default 7, and fewer
    # boosting rounds on its 3,000 persons
    monkeypatch.setattr("ml.train.TrainingConfig", partial(TrainingConfig, validation_days=2, max_rounds=60))
    with dg.DagsterInstance.get() as instance:
        result = demo.materialize_models(instance, latest.isoformat())
        [(run, built)] = demo_runs(instance)
    from orchestration.definitions import defs

    models = dg.AssetSelection.groups("ml").resolve(defs.resolve_asset_graph())
    assert run.status == dg.DagsterRunStatus.SUCCESS and set(built) == set(run.asset_selection) == models
    assert built[demo.CANDIDATE] == {None}
    assert built[demo.DECISIONS] == built[demo.EVALUATION] == {latest.isoformat()}

    # a champion in the MLflow store: the version this run trained, promoted at bootstrap
    ml = get_ml_settings()
    champion = MlflowClient(ml.tracking_uri, ml.tracking_uri).get_model_version_by_alias(
        ml.model_name, "champion"
    )
    lines = demo.models_summary(result)
    assert lines[0] == f"model version {champion.version}: champion (bootstrap promotion)"

    decisions = pl.read_delta(gold_uri(settings, "nba_decisions")).filter(pl.col("decision_date") == latest)
    current = pl.read_delta(gold_uri(settings, "nba_current"))
    features = pl.read_delta(gold_uri(settings, "person_features_daily")).filter(
        pl.col("snapshot_date") == latest
    )
    assert decisions.height > 2000 and current.height == decisions.height
    assert decisions["person_id"].n_unique() == decisions.height == features["has_profiling_consent"].sum()
    assert set(decisions["decided_by"]) == {"champion"}
    assert set(decisions["model_version"]) == {str(champion.version)}
    assert ((decisions["probability"] > 0) & (decisions["probability"] <= 1)).all()
    sent = decisions.filter(pl.col("action") != NO_ACTION).join(features, on="person_id")
    assert sent.height > 0 and set(sent["channel"]) <= {"email", "sms", "push"}
    for channel in ("email", "sms", "push"):
        assert sent.filter(pl.col("channel") == channel)[f"has_{channel}_consent"].all()
    holdout = decisions["is_holdout"].mean()
    assert abs(holdout - load_policy(ml.policy_file).holdout_share) <= 0.01
    assert decisions.filter("is_holdout")["action"].unique().to_list() == [NO_ACTION]
    evaluation = pl.read_delta(gold_uri(settings, "policy_evaluation"))
    assert evaluation.height > 0

    # the decision summary printed: shares and counts as in the gold table, actions per channel
    printed = "\n".join(lines)
    assert f"by model version {champion.version}: {decisions.height:,} persons" in printed
    assert f"holdout {holdout:.2%}, exploration {decisions['is_exploration'].mean():.2%}" in printed
    assert f"expected incremental value {decisions['expected_value'].sum():,.2f} EUR" in printed
    per_channel = decisions.group_by("channel", "action").len()
    for channel, action, n in per_channel.iter_rows():
        assert f"  {channel or '-':<8} {action:<16} {n:>9,}" in lines
    assert "decision quality against the simulator's truth" in printed and "oracle" in printed
