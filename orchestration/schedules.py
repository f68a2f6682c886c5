"""The schedules, in the execution time zone (``SCHEDULE_TIMEZONE``): the hourly run, the nightly chain, the
nightly care of the lake's tables. They start running unless ``AUTOMATION=off``."""

import dagster as dg

from data_contracts import Contract
from lake.feeds import feed_of
from lake.settings import Settings, get_settings
from orchestration.jobs import RunJobs
from orchestration.resources import LakeResource


def schedule_status() -> dg.DefaultScheduleStatus:
    """How the schedules start in a new Dagster instance: running, unless the setting ``AUTOMATION`` is
    off."""
    return dg.DefaultScheduleStatus.RUNNING if get_settings().automation else dg.DefaultScheduleStatus.STOPPED


def nothing_landed(settings: Settings, contracts: dict[str, Contract]) -> dg.SkipReason | None:
    """A skip reason when no feed has a file in the landing zone (a new lake: nothing to build yet)."""
    if any(feed_of(c).discover(settings.landing) for c in contracts.values()):
        return None
    return dg.SkipReason(f"nothing has landed in {settings.landing} yet")


def run_schedules(
    contracts: dict[str, Contract], jobs: RunJobs, partitions: dg.TimeWindowPartitionsDefinition
) -> list[dg.ScheduleDefinition]:
    """Hourly: the hourly run. Nightly, at 02:00: the newest started partition (of ``partitions``) of the
    daily feature snapshots, which starts the rest of the nightly chain. Both in the execution time zone, and
    both skip while nothing has landed."""

    @dg.schedule(
        name="hourly_refresh",
        job=jobs.hourly,
        cron_schedule="5 * * * *",
        execution_timezone=get_settings().schedule_timezone,
        default_status=schedule_status(),
        description="At five past every hour (SCHEDULE_TIMEZONE): landing into bronze and silver for every "
        "feed, the dbt models tagged hourly (staging, identity graph, sessions), then the syncs of the "
        "current decisions re-checked against the consents just ingested. Skips while nothing has landed.",
    )
    def hourly_refresh(context: dg.ScheduleEvaluationContext, lake: LakeResource):
        """One run per hour once something has landed."""
        return nothing_landed(lake.settings(), contracts) or dg.RunRequest()

    @dg.schedule(
        name="nightly_snapshots",
        job=jobs.snapshots,
        cron_schedule="0 2 * * *",
        execution_timezone=get_settings().schedule_timezone,
        default_status=schedule_status(),
        description="At 02:00 (SCHEDULE_TIMEZONE): the daily feature snapshot of the newest snapshot date "
        "(taken at 00:00 UTC); when it succeeds, after_nightly_snapshots starts nightly_refresh for that "
        "date (nightly dbt models, training when due, promotion gate, decisions, syncs, evaluation). Skips "
        "while nothing has landed.",
    )
    def nightly_snapshots(context: dg.ScheduleEvaluationContext, lake: LakeResource):
        """The newest partition started at the tick, once something has landed."""
        keys = partitions.get_partition_keys(current_time=context.scheduled_execution_time)
        skip = nothing_landed(lake.settings(), contracts)
        if skip or not keys:
            return skip or dg.SkipReason("no snapshot date has started yet")
        return dg.RunRequest(partition_key=keys[-1], run_key=keys[-1])

    return [hourly_refresh, nightly_snapshots]


def nightly_maintenance(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """The maintenance job at 03:30 in the schedule time zone."""
    return dg.ScheduleDefinition(
        name="nightly_lake_maintenance",
        job=job,
        cron_schedule="30 3 * * *",
        execution_timezone=get_settings().schedule_timezone,
        default_status=schedule_status(),
        description="At 03:30 (SCHEDULE_TIMEZONE): lake_maintenance (raw bronze records past retention "
        "expired, every Delta table compacted and vacuumed), after the night's dbt runs; its step shares the "
        "warehouse pool with the dbt steps, so it waits for a run still writing the warehouse.",
    )
