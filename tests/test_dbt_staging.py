"""dbt over the lake: silver views in the warehouse, staging models and their tests, under Dagster and
alone."""

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_dbt import DbtCliResource

from data_contracts import load_contracts
from lake.settings import REPO_ROOT
from lake.warehouse import publish_silver, silver_tables
from orchestration.dbt_assets import dbt_daily_snapshots, dbt_models
from orchestration.dbt_project import dbt_project
from orchestration.resources import LakeResource
from orchestration.snapshot_dates import supported_snapshot_dates


@pytest.mark.parametrize("small_commit", ["first", "last"])
def test_a_silver_view_gives_duckdb_an_estimate_of_its_rows_near_their_count(
    small_commit: str, tmp_path: Path
) -> None:
    """DuckDB estimates a list of parquet files from the first one: a table of one small file and four large
    ones, the small one committed first or last (delta-rs lists the files in its own order), is estimated
    within a factor 2 of its rows, not at five times the small file's."""
    from deltalake import DeltaTable, write_deltalake

    from lake.settings import get_settings
    from lake.warehouse import delta_view_sql

    uri = str(tmp_path / "events")
    commits = [range(part * 50_000, (part + 1) * 50_000) for part in range(4)]
    small = range(200_000, 200_010)
    commits = [small, *commits] if small_commit == "first" else [*commits, small]
    for ids in commits:
        write_deltalake(uri, pl.DataFrame({"id": ids}).to_arrow(), mode="append")
    settings = replace(get_settings(), lake_root=str(tmp_path), warehouse_path=tmp_path / "w.duckdb")
    with duckdb.connect() as con:
        con.execute(delta_view_sql("events", uri, DeltaTable(uri), settings))
        plan = con.execute("explain select id from events").fetchall()[0][1]
        rows = con.execute("select count(*) from events").fetchone()[0]
    estimate = next(line for line in plan.splitlines() if "rows" in line).split("~")[1].split()[0]
    assert rows == 200_010
    assert rows / 2 <= int(estimate.replace(",", "")) <= rows * 2, plan


def test_silver_views_hold_exactly_the_live_rows(ingested, tmp_path: Path) -> None:
    settings, _ = ingested
    settings = replace(settings, warehouse_path=tmp_path / "w.duckdb")
    views = publish_silver(settings, load_contracts())
    # every contracted table, the CRM's recommendations too (nothing landed for them before the loop: empty)
    assert sorted(views) == sorted(t.view for t in silver_tables(settings, load_contracts()))
    assert len(views) == 17
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for view, uri in (
            ("crm__contacts", "silver/crm/contacts"),
            ("clickstream__events", "silver/clickstream/events"),
        ):
            expected = pl.read_delta(f"{settings.lake_root}/{uri}")
            got = con.sql(
                f"select count(*), count(distinct {expected.columns[0]}) from silver.{view}"
            ).fetchall()[0]
            assert got == (expected.height, expected[expected.columns[0]].n_unique())
        assert con.sql("select typeof(event_date) from silver.clickstream__events limit 1").fetchall()[0] == (
            "DATE",
        )


@pytest.mark.slow  # materializes the dbt assets in Dagster (minutes)
def test_dbt_assets_continue_the_lake_lineage_and_build(ingested, tmp_path: Path, monkeypatch) -> None:
    settings, _ = ingested
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "w.duckdb"))
    specs = {spec.key.to_user_string(): spec for spec in dbt_models.specs}
    contacts = specs["staging/stg_crm__contacts"]
    assert {dep.asset_key.to_user_string() for dep in contacts.deps} == {"silver/crm/contacts"}
    assert contacts.group_name == "staging" and "dbt" in contacts.kinds
    resources = {
        "lake": LakeResource(lake_root=settings.lake_root),
        "dbt": DbtCliResource(project_dir=dbt_project),
    }
    instance = dg.DagsterInstance.ephemeral()
    snapshots = dg.AssetSelection.assets(dbt_daily_snapshots)
    # as `make demo` runs them: the models before the snapshots, one snapshot partition, the models after
    runs = [
        dg.materialize(
            [dbt_models, dbt_daily_snapshots],
            selection=dg.AssetSelection.assets(dbt_models) - snapshots.downstream(),
            resources=resources,
            instance=instance,
        )
    ]
    first, last = supported_snapshot_dates()
    assert first <= last
    runs.append(
        dg.materialize([dbt_daily_snapshots], partition_key=last, resources=resources, instance=instance)
    )
    runs.append(
        dg.materialize(
            [dbt_models, dbt_daily_snapshots],
            selection=snapshots.downstream() - snapshots,
            resources=resources,
            instance=instance,
        )
    )
    assert all(run.success for run in runs)
    checks = [c for run in runs for c in run.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks)
    assert any(
        c.asset_key.to_user_string() == "silver/crm/contacts" for c in checks
    )  # source tests as checks
    built = {m.asset_key.to_user_string() for run in runs for m in run.get_asset_materialization_events()}
    assert {
        "identity/identity_person_map",
        "marts/person_features_daily",
        "marts/training_decisions",
    } <= built
    # and plain `dbt build` works on its own against the same warehouse
    project = tmp_path / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    done = subprocess.run(
        ["dbt", "build", "--profiles-dir", ".", "--select", "staging"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "WAREHOUSE_PATH": str(tmp_path / "w.duckdb")},
    )
    assert done.returncode == 0, done.stdout[-2000:]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert (
            con.sql("select count(*) from main.stg_crm__contacts").fetchall()[0][0]
            == pl.read_delta(f"{settings.lake_root}/silver/crm/contacts").height
        )


def test_the_nightly_schedule_builds_the_snapshot_of_the_day_then_the_marts() -> None:
    from orchestration.definitions import defs

    schedule = defs.get_schedule_def("nightly_snapshots")  # its ticks: test_orchestration_ops
    assert schedule.job_name == "nightly_snapshots"
    sensor = defs.get_sensor_def("after_nightly_snapshots")
    assert isinstance(sensor, dg.RunStatusSensorDefinition)
    assert sensor.job_name == "nightly_refresh"
    nightly = defs.resolve_job_def("nightly_refresh")
    keys = {key.to_user_string() for key in nightly.asset_layer.executable_asset_keys}
    assert {"marts/training_decisions", "marts/training_propensity"} <= keys
    assert "marts/person_features_daily" not in keys


def test_intermediate_models_keep_the_keys_and_groups_of_their_area() -> None:
    # models/intermediate/<area>/ is laid out by area: a model there is the asset <area>/<model> in group
    # <area>, and the ephemeral feature groups of the daily snapshots are no assets (their SQL is the
    # snapshots' query)
    specs = {spec.key.to_user_string(): spec for spec in [*dbt_models.specs, *dbt_daily_snapshots.specs]}
    intermediate = {
        (path.parent.relative_to(REPO_ROOT / "dbt_project/models/intermediate").parts[0], path.stem)
        for path in (REPO_ROOT / "dbt_project/models/intermediate").rglob("int_*.*")
        if path.suffix in (".sql", ".py")
    }
    areas = {area for area, _ in intermediate}
    assert {"identity", "marts", "features"} <= areas
    for area, model in intermediate:
        if area == "features":
            assert not any(key.endswith(f"/{model}") for key in specs)
        else:
            assert specs[f"{area}/{model}"].group_name == area
    assert not any(key.startswith("intermediate/") for key in specs)
