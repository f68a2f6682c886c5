"""What an operator sees and runs in Dagster: the code location loads from a fresh clone, descriptions of jobs,
schedules and sensors, what runs by default, metadata of dbt and lake assets, freshness and retention from the
contracts, maintenance of every zone."""

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lake.settings import REPO_ROOT

CLONE_PARTS = ("data_contracts", "dbt_project", "lake", "orchestration", "simulator")
CLONE_FILES = ("workspace.yaml", "pyproject.toml", "dagster.yaml")


def fresh_clone(root: Path) -> Path:
    """The repository's tracked parts copied under ``root``, without a dbt manifest or logs."""
    clone = root / "clone"
    for part in CLONE_PARTS:
        shutil.copytree(
            REPO_ROOT / part, clone / part, ignore=shutil.ignore_patterns("target", "logs", "__pycache__")
        )
    for name in CLONE_FILES:
        shutil.copy(REPO_ROOT / name, clone / name)
    return clone


@pytest.mark.slow
def test_a_fresh_clone_validates_without_a_dbt_manifest(tmp_path: Path) -> None:
    """`dagster definitions validate` parses the dbt project itself when the manifest is missing, with the dbt
    beside the Python even when the environment's bin folder is not on the PATH."""
    clone = fresh_clone(tmp_path)
    assert not (clone / "dbt_project" / "target").exists()
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent
        ),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (clone / "dbt_project" / "target" / "manifest.json").exists()


def test_every_job_schedule_and_sensor_says_what_it_does_and_the_loop_runs_by_default() -> None:
    from orchestration.definitions import defs

    repository = defs.get_repository_def()
    jobs = [j for j in repository.get_all_jobs() if not j.name.startswith("__")]  # __ASSET_JOB is hidden
    described = [*jobs, *repository.schedule_defs, *repository.sensor_defs]
    assert {d.name for d in described} >= {
        "ingest_lake",
        "lake_maintenance",
        "hourly_refresh",
        "nightly_snapshots",
        "nightly_refresh",
        "nightly_lake_maintenance",
        "new_landing_files",
        "after_nightly_snapshots",
    }
    assert [d.name for d in described if not (d.description or "").strip()] == []
    assert {s.name: s.default_status.value for s in repository.schedule_defs} == {
        "hourly_refresh": "RUNNING",
        "nightly_snapshots": "RUNNING",
        "nightly_lake_maintenance": "RUNNING",
    }
    assert {s.name: s.default_status.value for s in repository.sensor_defs} == {
        "new_landing_files": "RUNNING",
        "after_nightly_snapshots": "RUNNING",
    }


def test_automation_off_starts_every_schedule_and_sensor_stopped(tmp_path: Path) -> None:
    code = (
        "from orchestration.definitions import defs; r = defs.get_repository_def(); "
        "print(sorted({d.default_status.value for d in [*r.schedule_defs, *r.sensor_defs]}))"
    )
    env = {**os.environ, "AUTOMATION": "off", "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['STOPPED']"


def test_the_refresh_schedules_skip_until_something_lands(tmp_path: Path) -> None:
    import dagster as dg

    from orchestration.definitions import defs
    from orchestration.resources import LakeResource

    lake = LakeResource(lake_root=str(tmp_path / "lake"))
    repository = defs.get_repository_def()
    tick = datetime(2026, 9, 10, 2, 0, tzinfo=UTC)
    for name in ("hourly_refresh", "nightly_snapshots"):
        schedule = repository.get_schedule_def(name)
        with dg.instance_for_test() as instance:
            context = dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=tick,
                resources={"lake": lake},
                repository_def=repository,
            )
            result = schedule.evaluate_tick(context)
        assert result.run_requests == [] and "nothing has landed" in result.skip_message
    folder = tmp_path / "lake" / "landing" / "cdc" / "crm.public.contacts"
    folder.mkdir(parents=True)
    (folder / "crm.public.contacts+0+0000000000.json").write_text("{}\n")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            resources={"lake": lake},
            repository_def=repository,
        )
        hourly = repository.get_schedule_def("hourly_refresh").evaluate_tick(context).run_requests
        nightly = repository.get_schedule_def("nightly_snapshots").evaluate_tick(context).run_requests
    assert len(hourly) == 1
    assert [r.partition_key for r in nightly] == ["2026-09-10"]  # the snapshot taken at 2026-09-10 00:00 UTC


@pytest.mark.slow
def test_dbt_materializations_carry_row_counts_and_column_schemas(
    ingested, tmp_path: Path, monkeypatch
) -> None:
    """The hourly models built under Dagster: tables report their row count as the warehouse holds it, every
    model its columns; the gold table published after them is written from the same warehouse."""
    import dagster as dg
    import duckdb
    import polars as pl
    from dagster_dbt import DbtCliResource, build_dbt_asset_selection

    from lake.gold import gold_uri
    from orchestration.dbt_assets import dbt_models
    from orchestration.dbt_project import dbt_project
    from orchestration.resources import LakeResource

    settings, _ = ingested
    warehouse = tmp_path / "engagement.duckdb"  # the manifest's relations name the database after the file
    monkeypatch.setenv("WAREHOUSE_PATH", str(warehouse))
    result = dg.materialize(
        [dbt_models],
        selection=build_dbt_asset_selection([dbt_models], dbt_select="tag:hourly"),
        resources={
            "lake": LakeResource(lake_root=settings.lake_root),
            "dbt": DbtCliResource(project_dir=dbt_project),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    materialized = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    person_map = materialized["identity/identity_person_map"].materialization.metadata
    staging = materialized["staging/stg_crm__contacts"].materialization.metadata
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.sql("select count(*) from main.identity_person_map").fetchall()[0][0]
        columns = [c[0] for c in con.sql("describe main.stg_crm__contacts").fetchall()]
    assert person_map["dagster/row_count"].value == rows > 0
    assert (
        person_map["dagster/row_count"].value
        == pl.read_delta(gold_uri(settings, "identity_person_map")).height
    )
    assert [c.name for c in staging["dagster/column_schema"].value.columns] == columns
    assert "dagster/row_count" not in staging  # a view: counting would run its query
    assert "person_id" in {c.name for c in person_map["dagster/column_schema"].value.columns}
