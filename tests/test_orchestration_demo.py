"""``make demo`` in one process (``python -m orchestration.demo``), and the version of the dbt installed beside
this Python known without starting it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_dbt import DbtCliResource
from packaging.version import Version

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
def test_the_demo_materializes_every_asset_in_three_runs_on_the_instance(monkeypatch, tmp_path: Path) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "warehouse" / "engagement.duckdb"))
    from orchestration import demo

    monkeypatch.chdir(REPO_ROOT)
    assert demo.main(["--persons", "300", "--days", "3", "--seed", "5"]) == 0
    assert Path.cwd() == REPO_ROOT
    check_demo_runs()


def check_demo_runs() -> None:
    """The runs of the demo on the instance of ``DAGSTER_HOME``: the asset job's runs, all successful, that
    materialized every asset once, the daily snapshots over the dates the warehouse supports."""
    from orchestration.definitions import defs
    from orchestration.snapshot_dates import supported_snapshot_dates

    graph = defs.resolve_asset_graph()
    models = dg.AssetSelection.groups("ml").resolve(graph)  # trained and decided by commands after these runs
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
