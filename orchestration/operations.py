"""Jobs, schedules and sensors of the lake: ingest when files land, care for the tables every night."""

import hashlib
from datetime import UTC, datetime

import dagster as dg
from dagster_dbt import build_dbt_asset_selection

from data_contracts import Contract
from lake import maintenance
from lake.ingest import backlog
from lake.settings import get_settings
from lake.warehouse import publish_silver
from orchestration.lake_assets import BRONZE_GROUP, SILVER_GROUP
from orchestration.resources import WAREHOUSE_POOL, LakeResource

ingest_job = dg.define_asset_job(
    "ingest_lake",
    selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP),
    description="Landing files into bronze and silver, for every feed, with the contracts' checks.",
)


def landing_sensor(contracts: dict[str, Contract]) -> dg.SensorDefinition:
    """Starts the ingestion job when files that the ledger has not taken in land."""

    @dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
    def new_landing_files(context: dg.SensorEvaluationContext, lake: LakeResource):
        """One run per new backlog (files not taken in, silver behind bronze); the same backlog is asked for
        again at most once an hour, so a failed run is retried."""
        waiting = backlog(lake.settings(), contracts)
        if not waiting:
            return dg.SkipReason("nothing new in the landing zone, silver up to date")
        digest = hashlib.sha256("\n".join(sorted(waiting)).encode()).hexdigest()[:16]
        hour = datetime.now(UTC).strftime("%Y%m%d%H")
        files = [w for w in waiting if not w.startswith("silver:")]
        context.log.info(
            f"{len(files)} new landing files; behind: {[w for w in waiting if w.startswith('silver:')]}"
        )
        return dg.RunRequest(run_key=f"backlog-{digest}-{hour}", tags={"landing_files": str(len(files))})

    return new_landing_files


def maintenance_job(contracts: dict[str, Contract]) -> dg.JobDefinition:
    """Compaction, checkpoint and vacuum of every lake table, and expiry of old raw bronze records."""

    @dg.op(description=maintenance.__doc__, pool=WAREHOUSE_POOL)
    def care_for_lake_tables(context: dg.OpExecutionContext, lake: LakeResource) -> None:
        settings = lake.settings()
        for care in maintenance.maintain(settings, contracts):
            context.log.info(
                f"{care.uri}: {care.files_before} -> {care.files_after} files, {care.files_vacuumed} vacuumed, "
                f"{care.rows_expired} expired rows"
            )
        publish_silver(settings, contracts)  # vacuum removed files the old views listed

    @dg.job(name="lake_maintenance", description="Nightly: compact and vacuum the lake's Delta tables.")
    def lake_maintenance():
        care_for_lake_tables()

    return lake_maintenance


def refresh_schedules(
    dbt_models: dg.AssetsDefinition, dbt_daily_snapshots: dg.AssetsDefinition
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """Hourly (schedule time zone): the lake and the dbt models tagged ``hourly`` (staging, identity). Nightly:
    at 02:00 UTC today's partition of the daily feature snapshots, and once it succeeded, the other models
    tagged ``nightly`` (profile, training sets, outcomes)."""
    hourly = dg.define_asset_job(
        "hourly_refresh",
        selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP)
        | build_dbt_asset_selection([dbt_models], dbt_select="tag:hourly"),
        description="Landing into bronze and silver, then the hourly dbt models.",
    )
    snapshots = dg.define_asset_job(
        "nightly_snapshots",
        selection=dg.AssetSelection.assets(dbt_daily_snapshots),
        partitions_def=dbt_daily_snapshots.partitions_def,
        description="The daily feature snapshots of one date (a partition) or a range of dates (a backfill).",
    )
    nightly = dg.define_asset_job(
        "nightly_refresh",
        selection=build_dbt_asset_selection([dbt_models], dbt_select="tag:nightly"),
        description="The nightly dbt models rebuilt whole: profile, training sets, outcomes.",
    )

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[snapshots],
        request_job=nightly,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def after_nightly_snapshots(context: dg.RunStatusSensorContext):
        """Rebuild the nightly marts once the day's feature snapshots are in."""
        return dg.RunRequest(run_key=context.dagster_run.run_id)

    schedules = [
        dg.ScheduleDefinition(
            name="hourly_refresh",
            job=hourly,
            cron_schedule="5 * * * *",
            execution_timezone=get_settings().schedule_timezone,
        ),
        dg.build_schedule_from_partitioned_job(snapshots, hour_of_day=2, name="nightly_snapshots"),
    ]
    return schedules, [after_nightly_snapshots]


def nightly_maintenance(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """The maintenance job at 03:30 in the schedule time zone."""
    return dg.ScheduleDefinition(
        name="nightly_lake_maintenance",
        job=job,
        cron_schedule="30 3 * * *",
        execution_timezone=get_settings().schedule_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
