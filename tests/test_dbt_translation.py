"""How the dbt project appears in Dagster, tested without a manifest and without dbt: the keys, groups, owners
and kinds the translator gives hand-written manifest nodes, the daily partitions, and the dbt invocations a
backfill of the snapshots is cut into."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import pytest

from lake.settings import REPO_ROOT
from orchestration.dbt_translation import (
    TRANSLATOR,
    daily_snapshot_partitions,
    dates_per_dbt_run,
    model_folder,
    snapshot_dbt_runs,
)

PROJECT = "engagement_lakehouse"
SOURCE_ID = f"source.{PROJECT}.silver.crm__contacts"


def model_node(path: list[str], name: str, owner: str | None = None) -> dict[str, Any]:
    """A model node as the manifest holds it: under ``models/<path>/``, reading the silver CRM contacts."""
    meta = {"owner": owner} if owner else {}
    return {
        "unique_id": f"model.{PROJECT}.{name}",
        "resource_type": "model",
        "name": name,
        "package_name": PROJECT,
        "fqn": [PROJECT, *path, name],
        "description": f"The {name} model.",
        "config": {"meta": meta, "materialized": "table", "tags": []},
        "meta": meta,
        "tags": [],
        "original_file_path": f"models/{'/'.join(path)}/{name}.sql",
        "depends_on": {"nodes": [SOURCE_ID]},
        "columns": {},
    }


def manifest(*models: dict[str, Any]) -> dict[str, Any]:
    """A manifest of ``models`` and the silver source they read, whose YAML names its Dagster asset key."""
    source = {
        "unique_id": SOURCE_ID,
        "resource_type": "source",
        "name": "crm__contacts",
        "source_name": "silver",
        "package_name": PROJECT,
        "fqn": [PROJECT, "silver", "crm__contacts"],
        "description": "The CRM's contacts in silver.",
        "config": {},
        "meta": {"dagster": {"asset_key": ["silver", "crm", "contacts"]}},
        "tags": [],
        "columns": {},
    }
    return {
        "nodes": {m["unique_id"]: m for m in models},
        "sources": {SOURCE_ID: source},
        "parent_map": {m["unique_id"]: [SOURCE_ID] for m in models},
        "child_map": {SOURCE_ID: [m["unique_id"] for m in models]},
        "metadata": {"project_name": PROJECT},
    }


def test_the_translation_imports_without_a_manifest_nor_the_dbt_project() -> None:
    code = (
        "import sys, orchestration.dbt_translation; "
        "print(sorted(m for m in sys.modules if m.startswith('orchestration')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert loaded.stdout.strip() == "['orchestration', 'orchestration.dbt_translation']"


def test_a_model_is_keyed_and_grouped_by_its_folder_and_owned_as_its_meta_says() -> None:
    node = model_node(["marts"], "person_features_daily", owner="team:ml")
    spec = TRANSLATOR.get_asset_spec(manifest(node), node["unique_id"], None)
    assert spec.key == dg.AssetKey(["marts", "person_features_daily"])
    assert spec.group_name == "marts"
    assert spec.owners == ["team:ml"]
    assert spec.kinds >= {"dbt", "duckdb"}
    assert spec.description.startswith("The person_features_daily model.")
    # lineage from the silver asset the source's YAML names
    assert [dep.asset_key for dep in spec.deps] == [dg.AssetKey(["silver", "crm", "contacts"])]


def test_a_model_without_an_owner_has_none() -> None:
    node = model_node(["identity"], "identity_person_map")
    spec = TRANSLATOR.get_asset_spec(manifest(node), node["unique_id"], None)
    assert (spec.key, spec.group_name, list(spec.owners)) == (
        dg.AssetKey(["identity", "identity_person_map"]),
        "identity",
        [],
    )


@pytest.mark.parametrize(
    ("path", "folder"),
    [
        (["staging", "crm"], "staging"),  # the first folder, not the source's subfolder
        (["marts"], "marts"),
        ([], "models"),  # a model at the root of models/
        (["intermediate", "identity"], "identity"),  # an intermediate model keeps its area's key
        (["intermediate"], "intermediate"),  # an intermediate model outside any area
    ],
)
def test_the_folder_of_a_models_key(path: list[str], folder: str) -> None:
    node = model_node(path, "some_model")
    assert model_folder(node["fqn"]) == folder
    spec = TRANSLATOR.get_asset_spec(manifest(node), node["unique_id"], None)
    assert (spec.key, spec.group_name) == (dg.AssetKey([folder, "some_model"]), folder)


def test_a_source_keeps_the_silver_key_its_yaml_names() -> None:
    spec = TRANSLATOR.get_asset_spec(manifest(), SOURCE_ID, None)
    assert spec.key == dg.AssetKey(["silver", "crm", "contacts"])
    assert "duckdb" not in spec.kinds  # the lake's asset, not a warehouse table


def test_source_tests_become_checks() -> None:
    assert TRANSLATOR.settings.enable_source_tests_as_checks
    assert TRANSLATOR.settings.enable_asset_checks


def test_the_daily_partitions_start_at_the_first_snapshot_date_and_include_today() -> None:
    partitions = daily_snapshot_partitions(date(2026, 9, 1))
    # on 3 September at 05:00 UTC: 1 and 2 September have ended, 3 September is today's (end offset 1)
    at = datetime(2026, 9, 3, 5, tzinfo=UTC)
    assert partitions.get_partition_keys(current_time=at) == ["2026-09-01", "2026-09-02", "2026-09-03"]
    assert partitions.timezone == "UTC"
    window = partitions.time_window_for_partition_key("2026-09-02")
    assert (window.start, window.end) == (datetime(2026, 9, 2, tzinfo=UTC), datetime(2026, 9, 3, tzinfo=UTC))


def test_a_backfill_goes_to_dbt_in_windows_with_their_dates_as_vars() -> None:
    # 7 dates of 1,400,000 persons with 5,000,000 person-dates per run: 5,000,000 // 1,400,000 = 3 dates a run
    dates = dates_per_dbt_run(persons=1_400_000, person_dates_per_run=5_000_000)
    runs = snapshot_dbt_runs(date(2026, 9, 1), date(2026, 9, 8), dates_per_run=dates)
    assert [(start, end) for start, end, _ in runs] == [
        (date(2026, 9, 1), date(2026, 9, 4)),
        (date(2026, 9, 4), date(2026, 9, 7)),
        (date(2026, 9, 7), date(2026, 9, 8)),
    ]
    for start, end, args in runs:
        assert args[0] == "--vars"
        assert json.loads(args[1]) == {"snapshot_from": start.isoformat(), "snapshot_until": end.isoformat()}


def test_one_partition_is_one_run_and_an_empty_window_none() -> None:
    runs = snapshot_dbt_runs(date(2026, 9, 5), date(2026, 9, 6), dates_per_run=357)
    assert [(s, e) for s, e, _ in runs] == [(date(2026, 9, 5), date(2026, 9, 6))]
    assert snapshot_dbt_runs(date(2026, 9, 5), date(2026, 9, 5), dates_per_run=3) == []


def test_the_vars_are_those_the_daily_snapshot_models_read() -> None:
    read = set()
    for sql in (REPO_ROOT / "dbt_project" / "models").rglob("*.sql"):
        read |= set(re.findall(r"var\(\s*['\"](snapshot_\w+)['\"]", sql.read_text()))
    _, _, args = snapshot_dbt_runs(date(2026, 9, 1), date(2026, 9, 2), dates_per_run=1)[0]
    assert set(json.loads(args[1])) == read == {"snapshot_from", "snapshot_until"}
