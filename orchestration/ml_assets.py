"""The models and decisions as Dagster assets, continuing the dbt lineage: the training set -> a trained
candidate (registered and gated in MLflow) -> the registry's state (which version serves, which waits for
approval) -> the next-best actions of each snapshot date (with their drift as checks) -> their evaluation
against the simulator's truth. The work is done by ``ml.pipeline``, ``ml.registry``, ``ml.scoring``,
``ml.drift`` and ``ml.evaluate``; MLflow is imported inside the asset bodies (it costs seconds). Their jobs,
schedule and sensors are in ``orchestration.jobs``, ``orchestration.schedules`` and
``orchestration.sensors``."""

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from orchestration.dbt_assets import daily_snapshots
from orchestration.resources import LakeResource, MlflowResource

if TYPE_CHECKING:
    from ml.drift import DriftReport, DriftSummary

ML_GROUP = "ml"
TRAINING_SET = dg.AssetKey(["marts", "training_decisions"])
FEATURES = dg.AssetKey(["marts", "person_features_daily"])
CANDIDATE = dg.AssetKey(["ml", "uplift_candidate"])
REGISTRY = dg.AssetKey(["ml", "model_registry"])
DECISIONS = dg.AssetKey(["ml", "nba_decisions"])
EVALUATION = dg.AssetKey(["ml", "policy_evaluation"])
PROMOTION_GATE = "promotion_gate"
PENDING_PROMOTION = "pending_promotion"
FEATURE_DRIFT = "feature_drift"
SCORE_DRIFT = "score_drift"
DRIFT_CHECKS = (FEATURE_DRIFT, SCORE_DRIFT)


@dg.asset(
    key=CANDIDATE,
    deps=[TRAINING_SET],
    group_name=ML_GROUP,
    kinds={"xgboost", "mlflow"},
    description="An uplift model trained on gold training_decisions (out-of-time split), logged to MLflow, "
    "registered as a version of the registered model and put through the promotion gate (off-policy value "
    "against the champion and the logging policy on the latest out-of-time decisions).",
    check_specs=[
        dg.AssetCheckSpec(
            PROMOTION_GATE,
            asset=CANDIDATE,
            description="The promotion gate on this candidate: passes when it became champion; warns when it "
            "was refused (it stays challenger, the reason on its version) or waits for approval (python -m "
            "ml.registry approve); an error when it failed its quality checks. A refused candidate never "
            "gets the champion alias, and the decisions use the champion only.",
        )
    ],
)
def uplift_candidate(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Train, log, register and gate one candidate; the run, the version and the gate's decision as
    metadata."""
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
        },
        check_results=[gate_check(report.model_version, report.outcome, report.reason)],
    )


def gate_check(version: str, outcome: str, reason: str) -> dg.AssetCheckResult:
    """The promotion gate's result on one candidate version: passed when it became champion, WARN when refused
    or pending approval, ERROR when it failed its quality checks."""
    from ml.registry import APPROVE_COMMAND, OUTCOME_CHAMPION, OUTCOME_PENDING, OUTCOME_REJECTED

    metadata = {"model_version": version, "gate_outcome": outcome, "gate_reason": reason}
    if outcome == OUTCOME_PENDING:
        metadata["approve_command"] = f"{APPROVE_COMMAND} --version {version}"
    return dg.AssetCheckResult(
        check_name=PROMOTION_GATE,
        passed=outcome == OUTCOME_CHAMPION,
        severity=dg.AssetCheckSeverity.ERROR if outcome == OUTCOME_REJECTED else dg.AssetCheckSeverity.WARN,
        description=f"version {version}: {outcome}",
        metadata=metadata,
    )


@dg.asset(
    key=REGISTRY,
    deps=[CANDIDATE],
    group_name=ML_GROUP,
    kinds={"mlflow"},
    description="The registered model's state: which version is champion (it decides), challenger (scored in "
    "shadow) and pending approval, the champion's age, the latest gate outcome and reason, and the commands "
    "to approve a pending promotion or roll back. Refreshed by every training and every decisions run.",
    check_specs=[
        dg.AssetCheckSpec(
            PENDING_PROMOTION,
            asset=REGISTRY,
            description="Warns while a candidate that passed the gate waits for approval "
            "(PROMOTION_REQUIRES_APPROVAL=on): the champion keeps deciding until an operator runs the "
            "approve command of the metadata.",
        )
    ],
)
def model_registry(context: dg.AssetExecutionContext, mlflow: MlflowResource):
    """Read the registry's aliases; the operator's overview as metadata and the pending promotion as a
    check."""
    from ml.registry import registry_state

    state = registry_state(mlflow.settings())
    overview = state.overview(datetime.now(UTC))
    context.log.info(state.describe())
    metadata = {name: value for name, value in overview.items() if value is not None}
    pending = state.pending
    return dg.MaterializeResult(
        metadata={**metadata, "pending_approval": pending or "none", "champion": state.champion or "none"},
        check_results=[
            dg.AssetCheckResult(
                check_name=PENDING_PROMOTION,
                passed=pending is None,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"version {pending} waits for approval: {overview['approve_command']}"
                    if pending
                    else "no promotion waits for approval"
                ),
                metadata={
                    "pending_approval": pending or "none",
                    "champion": state.champion or "none",
                    **(
                        {
                            "gate_reason": state.versions[pending].get("gate.reason", ""),
                            "pending_since": state.versions[pending].get("promotion.pending_since", ""),
                            "approve_command": overview["approve_command"],
                        }
                        if pending
                        else {}
                    ),
                },
            )
        ],
    )


@dg.asset(
    key=DECISIONS,
    deps=[FEATURES, REGISTRY],
    partitions_def=daily_snapshots,
    group_name=ML_GROUP,
    kinds={"delta", "mlflow"},
    description="The next-best action of every person on a snapshot date (a partition): the champion's "
    "scores, the policy file's eligibility, budgets, holdout, exploration and canary; gold nba_decisions "
    "(that date replaced), nba_current and the challenger's nba_shadow_decisions. A rule-based fallback "
    "decides when no champion is usable. Checks: the drift of the features and of the scores from the "
    "champion's training reference.",
    check_specs=[
        dg.AssetCheckSpec(
            FEATURE_DRIFT,
            asset=DECISIONS,
            description="Population stability index of every model feature between the champion's training "
            "reference and the date's scoring population: passes below DRIFT_WARN_PSI, warns below "
            "DRIFT_ERROR_PSI, an error from it (the retrain sensor then requests training). The plot and the "
            "figures are artifacts of the champion's MLflow run (drift/<date>/).",
        ),
        dg.AssetCheckSpec(
            SCORE_DRIFT,
            asset=DECISIONS,
            description="Population stability index of the champion's scores (expected revenue per action) "
            "between its training reference and the date's scoring population, with the same thresholds as "
            "feature_drift.",
        ),
    ],
)
def nba_decisions(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Score and decide the partition's date; the decisions' aggregate (no personal data) as metadata, and the
    drift of the features and scores as checks."""
    from ml.scoring import score_and_decide

    decision_date = context.partition_time_window.start.date()
    ml_settings = mlflow.settings()
    report = score_and_decide(decision_date, lake.settings(), ml_settings)
    context.log.info(f"{report.summary()} (scored on the {ml_settings.scoring_engine} engine)")
    return dg.MaterializeResult(
        metadata={
            "persons": report.persons,
            "scoring_engine": ml_settings.scoring_engine,
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
        },
        check_results=drift_checks(decision_date, lake, mlflow, context.log),
    )


def drift_checks(
    decision_date: date, lake: LakeResource, mlflow: MlflowResource, log: logging.Logger
) -> list[dg.AssetCheckResult]:
    """The results of ``feature_drift`` and ``score_drift`` for a decided date (``ml.drift.drift_report``)."""
    from ml.drift import DriftError, drift_report

    try:
        report = drift_report(decision_date, lake.settings(), mlflow.settings())
    except DriftError as error:
        log.warning(f"drift of {decision_date} not measured: {error}")
        return [
            dg.AssetCheckResult(
                check_name=name,
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"drift not measured: {error}",
                metadata={"decision_date": decision_date.isoformat(), "status": "not_measured"},
            )
            for name in DRIFT_CHECKS
        ]
    if report is None:
        return [
            dg.AssetCheckResult(
                check_name=name,
                passed=True,
                description="the rule-based fallback decided: no model, no drift to measure",
                metadata={"decision_date": decision_date.isoformat(), "status": "no_model"},
            )
            for name in DRIFT_CHECKS
        ]
    log.info(f"drift of {decision_date}: {report.status}; worst {report.worst(3)}")
    return [
        drift_check(name, summary, report)
        for name, summary in ((FEATURE_DRIFT, report.features), (SCORE_DRIFT, report.scores))
    ]


def _location(uri: str) -> dg.MetadataValue:
    """An artifact's location for the UI: a path for a local artifact store, the URI otherwise."""
    return (
        dg.MetadataValue.path(uri.removeprefix("file://"))
        if uri.startswith("file://")
        else dg.MetadataValue.url(uri)
    )


def drift_check(name: str, summary: "DriftSummary", report: "DriftReport") -> dg.AssetCheckResult:
    """One drift check's result: passed below the warn threshold, WARN below the error one, ERROR from it; the
    worst columns with their PSI, the model version, the date and the plot's location as metadata."""
    worst = sorted(summary.psi.items(), key=lambda item: item[1], reverse=True)
    table = "\n".join(["| column | PSI |", "|---|---|", *(f"| {c} | {v:.4f} |" for c, v in worst[:10])])
    top = f"{worst[0][0]} {worst[0][1]:.3f}" if worst else "no columns"
    return dg.AssetCheckResult(
        check_name=name,
        passed=summary.status == "ok",
        severity=dg.AssetCheckSeverity.ERROR if summary.status == "error" else dg.AssetCheckSeverity.WARN,
        description=f"{summary.status}: worst {top} (warn {summary.thresholds.warn:g}, error "
        f"{summary.thresholds.error:g})",
        metadata={
            "status": summary.status,
            "decision_date": report.decision_date.isoformat(),
            "model_name": report.model_name,
            "model_version": report.model_version,
            "mlflow_run_id": report.run_id,
            "persons": report.persons,
            "max_psi": worst[0][1] if worst else 0.0,
            "worst": top,
            "warn_threshold": summary.thresholds.warn,
            "error_threshold": summary.thresholds.error,
            "columns_warn": ", ".join(summary.warn),
            "columns_error": ", ".join(summary.error),
            "worst_columns": dg.MetadataValue.md(table),
            "psi": dg.MetadataValue.json(dict(worst)),
            "plot": _location(report.plot_uri or ""),
            "figures": _location(report.psi_uri or ""),
        },
    )


@dg.asset(
    key=EVALUATION,
    deps=[DECISIONS],
    partitions_def=daily_snapshots,
    group_name=ML_GROUP,
    kinds={"delta"},
    description="The true value of the learned, logging, single-action, random and oracle policies on a "
    "decision date, against the simulated company's truth (gold policy_evaluation); skipped for a lake "
    "without it, and while no champion is registered (the fallback rules decide).",
)
def policy_evaluation(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Evaluate the partition's decisions against ``simulator_truth/``."""
    from ml.evaluate import evaluate_decisions, format_table
    from ml.registry import champion

    settings = lake.settings()
    if not Path(settings.simulator_truth, "responses.parquet").exists():
        return dg.MaterializeResult(metadata={"note": "no simulator truth in this lake"})
    if champion(mlflow.settings()) is None:
        context.log.warning("no champion registered yet: the fallback rules decided, nothing to evaluate")
        return dg.MaterializeResult(metadata={"note": "no champion registered yet"})
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
