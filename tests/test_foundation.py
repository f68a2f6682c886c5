"""The foundation: settings from the environment, the Dagster code location, the dbt project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lake.settings import REPO_ROOT, get_settings
from lake.summary import landing_summary


def test_settings_come_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    monkeypatch.setenv("PII_SECRET", "s3cret")
    monkeypatch.setenv("SCHEDULE_TIMEZONE", "Europe/Amsterdam")
    s = get_settings()
    assert s.landing == f"{tmp_path}/lake/landing" and s.is_local
    assert s.warehouse_path == tmp_path / "w.duckdb" and s.pii_secret == "s3cret"
    assert s.mlflow_tracking_uri == "sqlite:///x.db" and s.schedule_timezone == "Europe/Amsterdam"
    monkeypatch.setenv("LAKE_ROOT", "s3://bucket/prefix")
    assert get_settings().zone("bronze") == "s3://bucket/prefix/bronze" and not get_settings().is_local


def test_defaults_stay_inside_the_repository(monkeypatch) -> None:
    for name in ("LAKE_ROOT", "WAREHOUSE_PATH", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    s = get_settings()
    assert Path(s.lake_root).is_relative_to(REPO_ROOT / "var")
    assert s.warehouse_path.is_relative_to(REPO_ROOT / "var")


def materialize_small_company() -> dg.ExecuteInProcessResult:
    """The simulated company asset (300 persons x 2 days) materialized on an ephemeral instance, into the lake
    of the environment's settings."""
    from orchestration.definitions import defs

    asset = defs.resolve_assets_def(dg.AssetKey(["landing", "crm", "contacts"]))
    result = dg.materialize(
        [asset],
        run_config={"ops": {"simulated_company": {"config": {"persons": 300, "days": 2, "seed": 1}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    return result


def test_simulated_company_asset_materializes_into_the_lake_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    result = materialize_small_company()
    materialized = result.asset_materializations_for_node("simulated_company")
    assert {m.asset_key.to_user_string() for m in materialized} >= {
        "landing/crm/contacts",
        "landing/clickstream/events",
    }
    metadata = materialized[0].metadata
    summary = landing_summary(tmp_path / "lake" / "landing")
    assert sum(files for _, files, _ in summary) == metadata["files"].value
    assert {feed.split("/")[0] for feed, _, _ in summary} == {"cdc", "clickstream"}
    assert (tmp_path / "lake" / "simulator_truth" / "identifiers.parquet").exists()


def test_dagster_definitions_validate() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # a dbt parse of a copied project (about 20 s)
def test_dbt_parses_offline(tmp_path: Path) -> None:
    project = tmp_path / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    done = subprocess.run(
        [
            shutil.which("dbt") or "dbt",
            "parse",
            "--profiles-dir",
            ".",
            "--target-path",
            str(tmp_path / "target"),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "WAREHOUSE_PATH": str(tmp_path / "w.duckdb")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    assert manifest["metadata"]["project_name"] == "engagement_lakehouse"
    assert manifest["metadata"]["send_anonymous_usage_stats"] is False
