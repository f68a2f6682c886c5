"""The models and decisions as Dagster assets, continuing the dbt lineage: the training set -> a trained candidate
(registered and gated in MLflow) -> the next-best actions of each snapshot date -> their evaluation against the
simulator's truth. The work is done by ``ml.pipeline``, ``ml.scoring`` and ``ml.evaluate``; MLflow is imported
inside the asset bodies (it costs seconds)."""

from pathlib import Path

import dagster as dg

from ml.settings import MlSettings, get_ml_settings
from orchestration.dbt_assets import daily_snapshots
from orchestration.operations import schedule_status, sensor_status
from orchestration.resources import LakeResource

ML_GROUP = "ml"
TRAINING_SET = dg.AssetKey(["marts", "training_decisions"])
FEATURES = dg.AssetKey(["marts", "person_features_daily"])
CANDIDATE = dg.AssetKey(["ml", "uplift_candidate"])
DECISIONS = dg.AssetKey(["ml", "nba_decisions"])
EVALUATION = dg.AssetKey(["ml", "policy_evaluation"])


class MlflowResource(dg.ConfigurableResource):
    """Where models are tracked and registered (``ml.settings``), with the tracking URI overridable per run."""

    tracking_uri: str | None = None

    def settings(self) -> MlSettings:
        """The ML settings the assets of this run use."""
        from dataclasses import replace

        settings = get_ml_settings()
        return replace(settings, tracking_uri=self.tracking_uri) if self.tracking_uri else settings


@dg.asset(
    key=CANDIDATE,
    deps=[TRAINING_SET],
    group_name=ML_GROUP,
    kinds={"xgboost", "mlflow"},
    description="An uplift model trained on gold training_decisions (out-of-time split), logged to MLflow, "
    "registered as a version of the registered model and put through the promotion gate (off-policy value "
    "against the champion and the logging policy on the latest out-of-time decisions).",
)
def uplift_candidate(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Train, log, register and gate one candidate; the run, the version and the gate's decision as metadata."""
    from ml.pipeline import train_candidate

    report = train_candidate(mlflow.settings(), lake_settings=lake.settings())
    context.log.info(report.describe())
    value = report.candidate_value
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": report.run_id,
            "model_uri": report.model_uri,
            "model_version": report.model_version,
            "gate_outcome": report.outcome,
            "gate_reason": report.reason,
            "bootstrap_promotion": report.bootstrap,
            "training_data": f"{report.data.uri}@v{report.data.version}",
            "policy_value_dr": float(value.value),
            "policy_value_dr_ci_low": float(value.ci_low),
            "logging_policy_value": float(report.logging_value.value),
            **{name: float(figure) for name, figure in sorted(report.metrics.items())},
        }
    )


@dg.asset_check(
    asset=CANDIDATE,
    name="promotion_gate",
    description="The registry's state after the gate: passes when a champion serves, warns when the latest "
    "candidate was refused (it stays challenger, the reason on its version) or waits for approval "
    "(python -m ml.registry approve).",
)
def promotion_gate(mlflow: MlflowResource) -> dg.AssetCheckResult:
    """Where the aliases point and the latest gate reason."""
    from ml.registry import registry_state

    state = registry_state(mlflow.settings())
    latest = state.pending or state.challenger or state.champion
    reason = state.versions.get(latest, {}).get("gate.reason", "") if latest else ""
    return dg.AssetCheckResult(
        passed=state.champion is not None and state.pending is None and latest == state.champion,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "champion": state.champion or "none",
            "challenger": state.challenger or "none",
            "pending_approval": state.pending or "none",
            "gate_reason": reason,
        },
    )


@dg.asset(
    key=DECISIONS,
    deps=[FEATURES, CANDIDATE],
    partitions_def=daily_snapshots,
    group_name=ML_GROUP,
    kinds={"delta", "mlflow"},
    description="The next-best action of every person on a snapshot date (a partition): the champion's scores, "
    "the policy file's eligibility, budgets, holdout, exploration and canary; gold nba_decisions (that date "
    "replaced), nba_current and the challenger's nba_shadow_decisions. A rule-based fallback decides when no "
    "champion is usable.",
)
def nba_decisions(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Score and decide the partition's date; the decisions' aggregate (no personal data) as metadata."""
    from ml.scoring import score_and_decide

    report = score_and_decide(context.partition_time_window.start.date(), lake.settings(), mlflow.settings())
    context.log.info(report.summary())
    return dg.MaterializeResult(
        metadata={
            "persons": report.persons,
            "decided_by": report.decided_by,
            "fallback_reason": report.fallback_reason or "",
            "model_version": report.model_version or "",
            "challenger_version": report.challenger_version or "",
            "policy_version": report.policy_version,
            "holdout_share": report.holdout_share,
            "exploration_share": report.exploration_share,
            "canary_share": report.canary_share,
            "expected_value_total": report.expected_value_total,
            "decisions": dg.MetadataValue.json(report.decisions),
            "excluded_erased": report.excluded_erased,
            "excluded_profiling_objection": report.excluded_profiling_objection,
        }
    )


@dg.asset(
    key=EVALUATION,
    deps=[DECISIONS],
    partitions_def=daily_snapshots,
    group_name=ML_GROUP,
    kinds={"delta"},
    description="The true value of the learned, logging, single-action, random and oracle policies on a decision "
    "date, against the simulated company's truth (gold policy_evaluation); skipped for a lake without it.",
)
def policy_evaluation(context: dg.AssetExecutionContext, lake: LakeResource):
    """Evaluate the partition's decisions against ``simulator_truth/``."""
    from ml.evaluate import evaluate_decisions, format_table

    settings = lake.settings()
    if not Path(settings.simulator_truth, "responses.parquet").exists():
        return dg.MaterializeResult(metadata={"note": "no simulator truth in this lake"})
    report = evaluate_decisions(settings, context.partition_time_window.start.date())
    context.log.info(format_table(report.table))
    return dg.MaterializeResult(
        metadata={
            "persons": report.persons,
            "persons_with_truth": report.persons_with_truth,
            "model": report.model,
            "table": dg.MetadataValue.md(format_table(report.table)),
        }
    )


training_job = dg.define_asset_job(
    "weekly_training",
    selection=dg.AssetSelection.assets(CANDIDATE),
    description="Train an uplift candidate on the current training set, register it and apply the promotion gate.",
)
decisions_job = dg.define_asset_job(
    "daily_decisions",
    selection=dg.AssetSelection.assets(DECISIONS, EVALUATION),
    description="The next-best actions of one snapshot date, and their evaluation against the simulator's truth.",
)


weekly_training_schedule = dg.ScheduleDefinition(
    name="weekly_training",
    job=training_job,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Mondays at 04:00 UTC, after the night's dbt runs: train, register and gate an uplift candidate.",
)


def decisions_after(nightly_refresh: dg.JobDefinition) -> dg.SensorDefinition:
    """When the nightly marts are rebuilt: the next-best actions of the latest snapshot date."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[nightly_refresh],
        request_job=decisions_job,
        default_status=sensor_status(),
        description="When a run of nightly_refresh succeeds: daily_decisions for the latest snapshot date (the "
        "champion scores every person, the policy decides, the decisions are evaluated).",
    )
    def decisions_after_nightly_refresh(context: dg.RunStatusSensorContext):
        """One decisions run per successful nightly refresh, for the newest snapshot date."""
        keys = daily_snapshots.get_partition_keys()
        if not keys:
            return dg.SkipReason("no snapshot date yet")
        return dg.RunRequest(run_key=context.dagster_run.run_id, partition_key=keys[-1])

    return decisions_after_nightly_refresh
