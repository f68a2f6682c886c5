"""The sensors: ingest when files land; after the day's snapshots, the rest of the nightly (training when due:
weekly, or when the champion drifts or ages). They start running unless ``AUTOMATION=off``."""

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import dagster as dg

from data_contracts import Contract
from lake.ingest import backlog
from lake.settings import get_settings
from orchestration.dbt_assets import daily_snapshots
from orchestration.jobs import RunJobs, ingest_job
from orchestration.ml_assets import CANDIDATE, DECISIONS, DRIFT_CHECKS
from orchestration.resources import LakeResource, MlflowResource

if TYPE_CHECKING:
    from ml.settings import MlSettings

PARTITION_TAG = "dagster/partition"
RANGE_END_TAG = "dagster/asset_partition_range_end"


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


def after_nightly_snapshots(jobs: RunJobs) -> dg.SensorDefinition:
    """Once a run of the daily snapshots succeeded: the rest of the nightly for the same date, with the
    training when due (:func:`training_plan`)."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[jobs.snapshots],
        request_job=jobs.nightly,
        default_status=sensor_status(),
        description="When a run of nightly_snapshots succeeds: one run of nightly_refresh for the newest "
        "snapshot date it built (nightly dbt models, registry, decisions, syncs, evaluation, outcomes and "
        "guardrail). Training is "
        "included when due: no training run for TRAINING_INTERVAL_DAYS (7), or the champion's latest "
        "feature_drift or score_drift check at or above DRIFT_ERROR_PSI, or the champion older than "
        "CHAMPION_MAX_AGE_DAYS; each drift or age cause once per champion version. The run's tags "
        "nightly/training and retrain/reason say why.",
    )
    def after_nightly_snapshots(context: dg.RunStatusSensorContext, mlflow: MlflowResource):
        """One nightly_refresh run per successful snapshots run, for the date that run built."""
        tags = context.dagster_run.tags
        partition = tags.get(PARTITION_TAG) or tags.get(RANGE_END_TAG)
        if not partition:
            keys = daily_snapshots.get_partition_keys()
            if not keys:
                return dg.SkipReason("no snapshot date yet")
            partition = keys[-1]
        plan = training_plan(context.instance, mlflow.settings(), datetime.now(UTC))
        context.log.info(f"nightly_refresh of {partition}: {plan.reason}")
        selection = jobs.nightly.selection
        if not plan.train:
            selection = selection - dg.AssetSelection.assets(CANDIDATE)
        assert context.repository_def is not None
        return dg.RunRequest(
            run_key=context.dagster_run.run_id,
            partition_key=partition,
            asset_selection=sorted(selection.resolve(context.repository_def.asset_graph)),
            tags={
                TRAINING_TAG: "yes" if plan.train else "no",
                RETRAIN_REASON_TAG: plan.reason[:200],
                RETRAIN_CAUSES_TAG: ",".join(plan.causes),
            },
        )

    return after_nightly_snapshots


REQUESTED_KEYS_KEPT = 100
"""Nightly runs with training whose causes count as requested (the newest)."""


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


TRAINING_INTERVAL_DAYS = 7
"""The nightly trains a candidate when no training ran for this many days (the weekly training)."""
TRAINING_TAG = "nightly/training"
RETRAIN_REASON_TAG = "retrain/reason"
RETRAIN_CAUSES_TAG = "retrain/causes"


class TrainingPlan(NamedTuple):
    """Whether tonight's nightly trains a candidate, why, and the drift or age causes it answers."""

    train: bool
    reason: str
    causes: tuple[str, ...] = ()


def last_training(instance: dg.DagsterInstance) -> datetime | None:
    """When a candidate was last trained or tried: the newer of its latest materialization and the latest
    nightly run that included the training (a failed training counts: it is not tried again every night)."""
    times = []
    event = instance.get_latest_materialization_event(CANDIDATE)
    if event is not None:
        times.append(event.timestamp)
    runs = instance.get_run_records(dg.RunsFilter(tags={TRAINING_TAG: "yes"}), limit=1)
    times += [r.create_timestamp.timestamp() for r in runs]
    return datetime.fromtimestamp(max(times), UTC) if times else None


def requested_causes(instance: dg.DagsterInstance) -> list[str]:
    """The drift and age causes the newest nightly runs with training answered (run tag
    ``retrain/causes``)."""
    runs = instance.get_runs(dg.RunsFilter(tags={TRAINING_TAG: "yes"}), limit=REQUESTED_KEYS_KEPT)
    return [key for run in runs for key in run.tags.get(RETRAIN_CAUSES_TAG, "").split(",") if key]


def training_plan(instance: dg.DagsterInstance, settings: "MlSettings", now: datetime) -> TrainingPlan:
    """Train tonight when no training ran for ``TRAINING_INTERVAL_DAYS`` (or ever), or when
    ``ml.retraining.retrain_decision`` asks for it (the champion's latest drift checks at ERROR, or the
    champion older than ``CHAMPION_MAX_AGE_DAYS``, each cause once per champion version)."""
    from ml.registry import registry_state
    from ml.retraining import Champion, retrain_decision

    last = last_training(instance)
    if last is None or now - last >= timedelta(days=TRAINING_INTERVAL_DAYS):
        since = f"since {last:%Y-%m-%d %H:%M} UTC" if last else "yet"
        return TrainingPlan(True, f"weekly training: no training {since}")
    state = registry_state(settings)
    champion = (
        Champion(settings.model_name, state.champion, state.registered_at[state.champion])
        if state.champion
        else None
    )
    decision = retrain_decision(
        champion,
        latest_drift(instance),
        now,
        settings.champion_max_age_days,
        requested=requested_causes(instance),
    )
    if decision.retrain:
        return TrainingPlan(True, decision.reason, tuple(decision.causes))
    return TrainingPlan(False, f"no training tonight (last {last:%Y-%m-%d %H:%M} UTC): {decision.reason}")
