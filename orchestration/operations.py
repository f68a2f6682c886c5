"""Jobs, schedules and sensors of the lake: ingest when files land, refresh the dbt models every hour and every
night, care for the tables every night. They all start running unless ``AUTOMATION=off``."""

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg
from dagster_dbt import build_dbt_asset_selection

from data_contracts import Contract
from lake import maintenance
from lake.feeds import feed_of
from lake.ingest import backlog
from lake.settings import Settings, get_settings
from lake.warehouse import publish_silver
from orchestration.lake_assets import BRONZE_GROUP, SILVER_GROUP
from orchestration.resources import WAREHOUSE_POOL, LakeResource

if TYPE_CHECKING:  # what define_asset_job returns (not exported by dagster's top-level API)
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

ingest_job = dg.define_asset_job(
    "ingest_lake",
    selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP),
    description="Landing files into bronze and silver, for every feed, with the contracts' checks.",
)


def schedule_status() -> dg.DefaultScheduleStatus:
    """How the schedules start in a new Dagster instance: running, unless the setting ``AUTOMATION`` is off."""
    return dg.DefaultScheduleStatus.RUNNING if get_settings().automation else dg.DefaultScheduleStatus.STOPPED


def sensor_status() -> dg.DefaultSensorStatus:
    """How the sensors start in a new Dagster instance: running, unless the setting ``AUTOMATION`` is off."""
    return dg.DefaultSensorStatus.RUNNING if get_settings().automation else dg.DefaultSensorStatus.STOPPED


def nothing_landed(settings: Settings, contracts: dict[str, Contract]) -> dg.SkipReason | None:
    """A skip reason when no feed has a file in the landing zone (a new lake: nothing to build yet)."""
    if any(feed_of(c).discover(settings.landing) for c in contracts.values()):
        return None
    return dg.SkipReason(f"nothing has landed in {settings.landing} yet")


def landing_sensor(contracts: dict[str, Contract]) -> dg.SensorDefinition:
    """Starts the ingestion job when files that the ledger has not taken in land."""

    @dg.sensor(
        job=ingest_job,
        minimum_interval_seconds=60,
        default_status=sensor_status(),
        description="Every minute: when files land that the ledger has not taken in (or silver is behind "
        "bronze), one run of ingest_lake for that backlog; the same backlog is asked for again at most once "
        "an hour, so a failed run is retried.",
    )
    def new_landing_files(context: dg.SensorEvaluationContext, lake: LakeResource):
        """One run per new backlog (files not taken in, silver behind bronze)."""
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

    @dg.job(
        name="lake_maintenance",
        description="Expire raw bronze records past their contract's retention, then compact, checkpoint and "
        "vacuum every Delta table of the lake (bronze, silver, gold, ledger, quarantine).",
    )
    def lake_maintenance():
        care_for_lake_tables()

    return lake_maintenance


def refresh_schedules(
    contracts: dict[str, Contract], dbt_models: dg.AssetsDefinition, dbt_daily_snapshots: dg.AssetsDefinition
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition], "UnresolvedAssetJobDefinition"]:
    """Hourly (schedule time zone): the lake and the dbt models tagged ``hourly`` (staging, identity). Nightly:
    at 02:00 UTC today's partition of the daily feature snapshots, and once it succeeded, the other models
    tagged ``nightly`` (profile, training sets, outcomes). Both skip while nothing has landed. Also returns the
    nightly refresh job, which the decisions follow."""
    hourly = dg.define_asset_job(
        "hourly_refresh",
        selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP)
        | build_dbt_asset_selection([dbt_models], dbt_select="tag:hourly"),
        description="Landing into bronze and silver, then the hourly dbt models.",
    )
    snapshots = dg.define_asset_job(
        "nightly_snapshots",
        selection=dg.AssetSelection.assets(dbt_daily_snapshots),
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
        default_status=sensor_status(),
        description="When a run of nightly_snapshots succeeds: one run of nightly_refresh, so the nightly marts "
        "read the day's feature snapshots.",
    )
    def after_nightly_snapshots(context: dg.RunStatusSensorContext):
        """Rebuild the nightly marts once the day's feature snapshots are in."""
        return dg.RunRequest(run_key=context.dagster_run.run_id)

    @dg.schedule(
        name="hourly_refresh",
        job=hourly,
        cron_schedule="5 * * * *",
        execution_timezone=get_settings().schedule_timezone,
        default_status=schedule_status(),
        description="At five past every hour: landing into bronze and silver for every feed, then the dbt "
        "models tagged hourly (staging, identity graph, sessions). Skips while nothing has landed.",
    )
    def hourly_refresh(context: dg.ScheduleEvaluationContext, lake: LakeResource):
        """One run per hour once something has landed."""
        return nothing_landed(lake.settings(), contracts) or dg.RunRequest()

    partitions = dbt_daily_snapshots.partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)

    @dg.schedule(
        name="nightly_snapshots",
        job=snapshots,
        cron_schedule="0 2 * * *",
        execution_timezone=partitions.timezone,
        default_status=schedule_status(),
        description="At 02:00 UTC: the daily feature snapshot of the day (the partition of that date, taken at "
        "00:00 UTC); when it succeeds, after_nightly_snapshots starts nightly_refresh. Skips while nothing has "
        "landed.",
    )
    def nightly_snapshots(context: dg.ScheduleEvaluationContext, lake: LakeResource):
        """The partition of the day the tick falls on, once something has landed."""
        keys = partitions.get_partition_keys(current_time=context.scheduled_execution_time)
        skip = nothing_landed(lake.settings(), contracts)
        if skip or not keys:
            return skip or dg.SkipReason("no snapshot date has started yet")
        return dg.RunRequest(partition_key=keys[-1], run_key=keys[-1])

    return [hourly_refresh, nightly_snapshots], [after_nightly_snapshots], nightly


def nightly_maintenance(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """The maintenance job at 03:30 in the schedule time zone."""
    return dg.ScheduleDefinition(
        name="nightly_lake_maintenance",
        job=job,
        cron_schedule="30 3 * * *",
        execution_timezone=get_settings().schedule_timezone,
        default_status=schedule_status(),
        description="At 03:30: lake_maintenance (raw bronze records past retention expired, every Delta table "
        "compacted and vacuumed), after the night's dbt runs.",
    )
