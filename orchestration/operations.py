"""Jobs, schedules and sensors of the lake: ingest when files land, care for the tables every night."""

import hashlib

import dagster as dg

from data_contracts import Contract
from lake import bronze, maintenance
from lake.landing import discover
from lake.ledger import Ledger
from lake.settings import get_settings
from orchestration.lake_assets import BRONZE_GROUP, SILVER_GROUP
from orchestration.resources import LakeResource

ingest_job = dg.define_asset_job(
    "ingest_lake",
    selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP),
    description="Landing files into bronze and silver, for every feed, with the contracts' checks.",
)


def pending_files(lake: LakeResource, contracts: dict[str, Contract]) -> list[str]:
    """Landed files of every contracted feed that the ingestion ledger has not committed yet."""
    settings = lake.settings()
    done = Ledger(bronze.ledger_uri(settings), settings.storage_options).committed_files()
    seen = set(done.select("relpath", "size", "mtime_ns").iter_rows())
    return [
        f.relpath
        for feed_id in contracts
        for f in discover(settings.landing, feed_id)
        if (f.relpath, f.size, f.mtime_ns) not in seen
    ]


def landing_sensor(contracts: dict[str, Contract]) -> dg.SensorDefinition:
    """Starts the ingestion job when files that the ledger has not taken in land."""

    @dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
    def new_landing_files(context: dg.SensorEvaluationContext, lake: LakeResource):
        """One run per new set of landed files (the run key is a hash of their paths)."""
        pending = pending_files(lake, contracts)
        if not pending:
            return dg.SkipReason("no new files in the landing zone")
        digest = hashlib.sha256("\n".join(sorted(pending)).encode()).hexdigest()[:16]
        context.log.info(f"{len(pending)} new landing files")
        return dg.RunRequest(run_key=f"landing-{digest}", tags={"landing_files": str(len(pending))})

    return new_landing_files


def maintenance_job(contracts: dict[str, Contract]) -> dg.JobDefinition:
    """Compaction, checkpoint and vacuum of every lake table, and expiry of old raw bronze records."""

    @dg.op(description=maintenance.__doc__)
    def care_for_lake_tables(context: dg.OpExecutionContext, lake: LakeResource) -> None:
        for care in maintenance.maintain(lake.settings(), contracts):
            context.log.info(
                f"{care.uri}: {care.files_before} -> {care.files_after} files, {care.files_vacuumed} vacuumed, "
                f"{care.rows_expired} expired rows"
            )

    @dg.job(name="lake_maintenance", description="Nightly: compact and vacuum the lake's Delta tables.")
    def lake_maintenance():
        care_for_lake_tables()

    return lake_maintenance


def nightly_maintenance(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """The maintenance job at 03:30 in the schedule time zone."""
    return dg.ScheduleDefinition(
        name="nightly_lake_maintenance",
        job=job,
        cron_schedule="30 3 * * *",
        execution_timezone=get_settings().schedule_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
