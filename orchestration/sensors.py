"""The sensors: ingest when files land, rebuild the nightly marts after the day's snapshots, decide after the
nightly marts, retrain when the champion drifts or ages. They start running unless ``AUTOMATION=off``."""

import hashlib
import json
from datetime import UTC, datetime

import dagster as dg

from data_contracts import Contract
from lake.ingest import backlog
from lake.settings import get_settings
from orchestration.dbt_assets import daily_snapshots
from orchestration.jobs import RefreshJobs, decisions_job, ingest_job, training_job
from orchestration.ml_assets import DECISIONS, DRIFT_CHECKS
from orchestration.resources import LakeResource, MlflowResource


def sensor_status() -> dg.DefaultSensorStatus:
    """How the sensors start in a new Dagster instance: running, unless the setting ``AUTOMATION`` is off."""
    return dg.DefaultSensorStatus.RUNNING if get_settings().automation else dg.DefaultSensorStatus.STOPPED


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


def after_nightly_snapshots(jobs: RefreshJobs) -> dg.SensorDefinition:
    """Once a run of the daily snapshots succeeded: the nightly marts, which read them."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[jobs.snapshots],
        request_job=jobs.nightly,
        default_status=sensor_status(),
        description="When a run of nightly_snapshots succeeds: one run of nightly_refresh, so the nightly "
        "marts read the day's feature snapshots.",
    )
    def after_nightly_snapshots(context: dg.RunStatusSensorContext):
        """Rebuild the nightly marts once the day's feature snapshots are in."""
        return dg.RunRequest(run_key=context.dagster_run.run_id)

    return after_nightly_snapshots


def decisions_after(nightly_refresh: dg.JobDefinition) -> dg.SensorDefinition:
    """When the nightly marts are rebuilt: the next-best actions of the latest snapshot date."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[nightly_refresh],
        request_job=decisions_job,
        default_status=sensor_status(),
        description="When a run of nightly_refresh succeeds: daily_decisions for the latest snapshot date "
        "(the champion scores every person, the policy decides, the decisions are evaluated).",
    )
    def decisions_after_nightly_refresh(context: dg.RunStatusSensorContext):
        """One decisions run per successful nightly refresh, for the newest snapshot date."""
        keys = daily_snapshots.get_partition_keys()
        if not keys:
            return dg.SkipReason("no snapshot date yet")
        return dg.RunRequest(run_key=context.dagster_run.run_id, partition_key=keys[-1])

    return decisions_after_nightly_refresh


REQUESTED_KEYS_KEPT = 100
"""Cause keys the retrain sensor's cursor remembers (the newest)."""


def latest_drift(instance: dg.DagsterInstance) -> list:
    """The latest result of each drift check of the decisions, as ``ml.retraining.DriftObservation`` (checks
    that measured no model, or have not run, are left out)."""
    from ml.retraining import DriftObservation

    observations = []
    for name in DRIFT_CHECKS:
        record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(DECISIONS, name))
        evaluation = record.event.dagster_event.event_specific_data if record and record.event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue
        metadata = {key: value.value for key, value in evaluation.metadata.items()}
        if not metadata.get("model_version"):
            continue
        if evaluation.passed:
            status = "ok"
        else:
            status = "error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warn"
        observations.append(
            DriftObservation(
                check=name,
                model_version=str(metadata["model_version"]),
                decision_date=str(metadata.get("decision_date", "")),
                status=status,
                worst=str(metadata.get("worst", "")),
            )
        )
    return observations


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=3600,
    default_status=sensor_status(),
    description="Every hour: requests weekly_training when the latest feature_drift or score_drift check of "
    "the champion is at or above DRIFT_ERROR_PSI, or the champion version is older than "
    "CHAMPION_MAX_AGE_DAYS (since its registration). Each cause once per champion version (run key "
    "cause:model:version); otherwise it says why not.",
)
def retrain_when_drifted_or_stale(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    """Thin over ``ml.retraining.retrain_decision``: the registry's champion, the latest drift checks on the
    instance, and the cause keys already requested (the cursor)."""
    from ml.registry import registry_state
    from ml.retraining import Champion, retrain_decision

    settings = mlflow.settings()
    state = registry_state(settings)
    champion = (
        Champion(settings.model_name, state.champion, state.registered_at[state.champion])
        if state.champion
        else None
    )
    requested = json.loads(context.cursor) if context.cursor else []
    decision = retrain_decision(
        champion,
        latest_drift(context.instance),
        datetime.now(UTC),
        settings.champion_max_age_days,
        requested=requested,
    )
    if not decision.retrain:
        return dg.SkipReason(decision.reason)
    remembered = [key for key in requested if key not in decision.causes] + list(decision.causes)
    context.update_cursor(json.dumps(remembered[-REQUESTED_KEYS_KEPT:]))
    return dg.RunRequest(
        run_key=decision.run_key,
        tags={"retrain/reason": decision.reason[:200], "retrain/causes": ",".join(decision.causes)},
    )
