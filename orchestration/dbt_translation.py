"""How the dbt project appears in Dagster, without its manifest: the asset keys, groups and owners of the dbt
nodes, the daily partitions of the snapshot models, and how a backfill of those partitions is cut into dbt
invocations (windows sized by persons x dates, each with the ``--vars`` of its dates)."""

import json
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject

DAILY_PARTITIONS_SELECT = "tag:daily_partitions"
"""The incremental models Dagster partitions by day: a partition's half-open window goes to dbt as vars."""


INTERMEDIATE_FOLDER = "intermediate"
"""The folder of the intermediate models, one subfolder per area (``intermediate/<area>/``)."""


def model_folder(fqn: list[str]) -> str:
    """The folder that names a model's key and group: the first folder under ``models/`` (``models`` for a
    model at its root), or the area of an intermediate model (``intermediate/<area>/``), so that moving a
    model into its area's intermediate folder keeps its asset key, and so its run, partition and check
    history."""
    folders = fqn[1:-1]
    if len(folders) > 1 and folders[0] == INTERMEDIATE_FOLDER:
        return folders[1]
    return folders[0] if folders else "models"


class LakeDbtTranslator(DagsterDbtTranslator):
    """Model keys ``<folder>/<model>`` in a group per folder (staging, identity, ...; see
    :func:`model_folder`), owned as the project says; sources keep the silver asset keys their YAML names
    (``meta.dagster.asset_key``)."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id)
        if node is None or node["resource_type"] not in ("model", "seed", "snapshot"):
            return spec
        folder = model_folder(node["fqn"])
        owner = node.get("config", {}).get("meta", {}).get("owner")
        return spec.replace_attributes(
            key=dg.AssetKey([folder, node["name"]]),
            group_name=folder,
            owners=[owner] if owner else spec.owners,
        ).merge_attributes(kinds={"duckdb"})


TRANSLATOR = LakeDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_source_tests_as_checks=True))
"""The translator of every dbt asset of the project: dbt tests, source tests included, become asset checks."""


def daily_snapshot_partitions(first_snapshot_date: date) -> dg.DailyPartitionsDefinition:
    """One partition per snapshot date T from ``first_snapshot_date`` (a snapshot is taken at T 00:00 UTC),
    today's included."""
    return dg.DailyPartitionsDefinition(
        start_date=first_snapshot_date.isoformat(), end_offset=1, timezone="UTC"
    )


def dates_per_dbt_run(persons: int, person_dates_per_run: int) -> int:
    """How many snapshot dates one dbt invocation builds so that it holds at most ``person_dates_per_run``
    persons x dates, and at least one date."""
    if person_dates_per_run < 1:
        raise ValueError(f"person-dates per dbt run must be at least 1, not {person_dates_per_run}")
    return max(1, person_dates_per_run // max(persons, 1))


def snapshot_windows(start: date, end: date, dates_per_window: int) -> list[tuple[date, date]]:
    """The half-open window ``[start, end)`` of snapshot dates cut into consecutive windows of at most
    ``dates_per_window`` dates."""
    if dates_per_window < 1:
        raise ValueError(f"dates per window must be at least 1, not {dates_per_window}")
    step = timedelta(days=dates_per_window)
    windows = []
    day = start
    while day < end:
        windows.append((day, min(day + step, end)))
        day += step
    return windows


def snapshot_window_vars(start: date, end: date) -> str:
    """The dbt ``--vars`` that make the daily snapshot model replace the rows of the dates in
    ``[start, end)``."""
    return json.dumps({"snapshot_from": start.isoformat(), "snapshot_until": end.isoformat()})


def snapshot_dbt_runs(start: date, end: date, dates_per_run: int) -> list[tuple[date, date, list[str]]]:
    """The dbt invocations that build the snapshot dates in ``[start, end)``, at most ``dates_per_run`` dates
    each, in date order: the half-open window of each and the arguments that follow its dbt command."""
    return [
        (a, b, ["--vars", snapshot_window_vars(a, b)]) for a, b in snapshot_windows(start, end, dates_per_run)
    ]
