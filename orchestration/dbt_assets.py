"""The dbt models as Dagster assets: their sources are the silver assets, so lineage runs from the landing
files to the marts; dbt tests (source tests included) become asset checks. The incremental daily snapshots are
partitioned by day, the other models are rebuilt whole."""

import json
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliInvocation, DbtCliResource, dbt_assets

from data_contracts import scan_contracts
from lake import spark_warehouse
from lake.gold import publish_gold
from lake.settings import Settings, get_settings
from lake.warehouse import publish_silver
from orchestration.dbt_project import dbt_project
from orchestration.dbt_translation import (
    DAILY_PARTITIONS_SELECT,
    TRANSLATOR,
    daily_snapshot_partitions,
    dates_per_dbt_run,
    snapshot_dbt_runs,
)
from orchestration.resources import WAREHOUSE_POOL, LakeResource
from orchestration.snapshot_dates import warehouse_persons

daily_snapshots = daily_snapshot_partitions(get_settings().first_snapshot_date)
"""One partition per snapshot date T (a snapshot is taken at T 00:00 UTC), today's included: the code
location's partition set, fixed when the definitions load (``FIRST_SNAPSHOT_DATE``), so that partition history
carries over."""


def _release_warehouse(invocation: DbtCliInvocation) -> None:
    """Close the warehouse file that the row-count and column fetches opened in this process: dbt-duckdb keeps
    it open after its last connection, which would lock out the next dbt process and the gold publication."""
    if invocation.adapter is None:
        return
    invocation.adapter.cleanup_connections()
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    if DuckDBConnectionManager._ENV is not None:
        DuckDBConnectionManager._ENV.close()
        DuckDBConnectionManager.close_all_connections()


def _restore_spark_catalog(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: Settings, session
) -> None:
    """Give the Spark catalog back what a new server's empty catalog lost: the model tables written before are
    registered again, the views it does not know are run again (a selection reads them whether it builds them
    or not)."""
    manifest = json.loads(dbt_project.manifest_path.read_text())
    registered = spark_warehouse.register_models(settings, session, manifest)
    if registered:
        context.log.info(f"model tables registered again in the Spark catalog: {registered}")
    views = spark_warehouse.views_to_restore(session, manifest)
    if views:
        context.log.info(f"dbt run of {len(views)} views the Spark catalog does not know: {views}")
        # one argument: dagster-dbt takes the value after --select as the selection, dbt splits it at spaces
        dbt.cli(["run", "--select", " ".join(views)]).wait()


def _build(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    lake: LakeResource,
    args: list[str],
    runs_before: Sequence[list[str]] = (),
) -> Iterator[Any]:
    """Refresh the silver tables of the warehouse (views of the DuckDB file; on the Spark target, tables of
    the Spark catalog), ``dbt run`` the selected models once with each of ``runs_before``, ``dbt build`` them
    and their tests with ``args`` (each model's materialization with its row count, unless a view, and column
    schema, read from the warehouse once dbt has released it); on the Spark target, mirror the models built as
    views of the warehouse file; then publish those of the built marts marked ``meta: {gold: true}`` as Delta
    tables under ``gold/``."""
    settings = lake.settings()
    contracts = scan_contracts(settings.contracts_dir).contracts
    if settings.dbt_target == "spark":
        with spark_warehouse.connected(settings.spark_remote) as session:
            tables = spark_warehouse.publish_silver(settings, contracts, session)
            context.log.info(f"{len(tables)} silver tables registered in the Spark catalog")
            _restore_spark_catalog(context, dbt, settings, session)
    else:
        views = publish_silver(settings, contracts)
        context.log.info(f"{len(views)} silver views refreshed in {settings.warehouse_path}")
    for run_args in runs_before:
        dbt.cli(["run", *run_args], context=context).wait()
    invocation = dbt.cli(["build", *args], context=context)
    yield from invocation.stream().fetch_row_counts().fetch_column_metadata(with_column_lineage=False)
    _release_warehouse(invocation)
    built = {
        r["unique_id"]
        for r in invocation.get_artifact("run_results.json")["results"]
        if r["status"] == "success"
    }
    nodes = invocation.get_artifact("manifest.json")["nodes"]
    if settings.dbt_target == "spark":
        models = sorted(n["name"] for uid, n in nodes.items() if uid in built and uid.startswith("model."))
        mirrored = spark_warehouse.mirror_models(settings, models)
        context.log.info(f"{len(mirrored)} Spark models mirrored as views in {settings.warehouse_path}")
    gold = [
        n["name"]
        for uid, n in nodes.items()
        if uid in built and n.get("config", {}).get("meta", {}).get("gold")
    ]
    if gold:
        context.log.info(f"published to gold: {publish_gold(settings, sorted(gold))}")


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    exclude=DAILY_PARTITIONS_SELECT,
    dagster_dbt_translator=TRANSLATOR,
    pool=WAREHOUSE_POOL,
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource):
    """The dbt models that are rebuilt whole (staging views, identity graph, profile, training sets, outcomes)
    and their tests."""
    yield from _build(context, dbt, lake, [])


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=DAILY_PARTITIONS_SELECT,
    dagster_dbt_translator=TRANSLATOR,
    partitions_def=daily_snapshots,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def dbt_daily_snapshots(context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource):
    """The daily feature snapshots of the partitions (or backfill range) asked for: dbt gets their half-open
    window ``[snapshot_from, snapshot_until)`` as vars and replaces the rows of those dates. A long backfill
    goes to dbt in windows of at most ``SNAPSHOT_PERSON_DATES_PER_DBT_RUN`` persons x dates (``dbt run``, the
    last one ``dbt build``), so that its memory does not grow with the range."""
    window = context.partition_time_window
    settings = lake.settings()
    persons = warehouse_persons(settings.warehouse_path)
    dates = dates_per_dbt_run(persons, settings.snapshot_person_dates_per_dbt_run)
    context.log.info(f"{persons:,} persons in the identity map: up to {dates} snapshot dates per dbt run")
    args = []
    for start, end, run_args in snapshot_dbt_runs(window.start.date(), window.end.date(), dates):
        context.log.info(f"snapshot dates in [{start}, {end})")
        args.append(run_args)
    yield from _build(context, dbt, lake, args[-1], runs_before=args[:-1])
