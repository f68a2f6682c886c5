"""The closed loop's measurement as Dagster assets: the outcomes of every decision attributed to it, the
policy's measured lift against the holdout (``ml.attribution``), and the guardrail that rolls the champion
back when that lift is confidently below its threshold (``ml.guardrail``)."""

from typing import TYPE_CHECKING

import dagster as dg

from orchestration.resources import WAREHOUSE_POOL, LakeResource, MlflowResource

if TYPE_CHECKING:
    import polars as pl

OUTCOMES_GROUP = "outcomes"
DECISIONS = dg.AssetKey(["ml", "nba_decisions"])
ORDERS_MART = dg.AssetKey(["marts", "decision_outcomes"])
ATTRIBUTION = dg.AssetKey([OUTCOMES_GROUP, "decision_attribution"])
GUARDRAIL = dg.AssetKey([OUTCOMES_GROUP, "lift_guardrail"])


def markdown(frame: "pl.DataFrame") -> str:
    """A small table as Markdown (floats to 4 places)."""
    if frame.is_empty():
        return "no final decisions yet"
    rows = [
        "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.iter_rows()
    ]
    return "\n".join(["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width, *rows])


@dg.asset(
    key=ATTRIBUTION,
    deps=[DECISIONS, ORDERS_MART],
    group_name=OUTCOMES_GROUP,
    pool=WAREHOUSE_POOL,
    kinds={"delta", "mlflow"},
    description="Every next-best-action decision with the orders, revenue, message cost and net revenue "
    "attributed to it, its decision id, model and policy version (gold decision_attribution), and the "
    "policy's lift of net revenue against the holdout per model version, action and channel with "
    "anytime-valid intervals (gold policy_lift; plotted to the model version's MLflow run).",
)
def decision_attribution(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Attribute the outcomes and measure the lift."""
    from ml.attribution import ALL, build_attribution

    report = build_attribution(lake.settings(), mlflow.settings())
    overall = report.lift.filter(report.lift["action"] == ALL).to_dicts()
    for row in overall:
        context.log.info(
            f"model version {row['model_version'] or '(fallback)'}: lift {row['lift']} "
            f"[{row['lower']}, {row['upper']}] on {row['treated']} treated, {row['holdout']} holdout "
            "decisions"
        )
    return dg.MaterializeResult(
        metadata={
            "decisions": report.decisions,
            "final_decisions": report.final,
            "executed_decisions": report.executed,
            "lift": dg.MetadataValue.md(markdown(report.lift)),
            "plot": dg.MetadataValue.url(report.plot_uri) if report.plot_uri else "not plotted",
        }
    )


@dg.asset(
    key=GUARDRAIL,
    deps=[ATTRIBUTION],
    group_name=OUTCOMES_GROUP,
    kinds={"mlflow", "delta"},
    description="The serving champion's lift of net revenue against the holdout, on an interval valid at "
    "every daily look; the champion is rolled back to the previous one, the reason recorded on both versions "
    "and in gold guardrail_checks, when the interval lies below GUARDRAIL_LIFT_THRESHOLD.",
)
def lift_guardrail(context: dg.AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
    """Check the champion and roll it back when the rule says so."""
    import polars as pl

    from lake.gold import gold_uri
    from ml.attribution import ATTRIBUTION_TABLE
    from ml.guardrail import check_champion

    settings = lake.settings()
    attribution = pl.read_delta(
        gold_uri(settings, ATTRIBUTION_TABLE), storage_options=settings.storage_options or None
    )
    check = check_champion(attribution, settings, mlflow.settings())
    if check is None:
        return dg.MaterializeResult(metadata={"verdict": "no champion"})
    context.log.info(check.line())
    interval = check.interval
    return dg.MaterializeResult(
        metadata={
            "verdict": check.verdict,
            "model_version": check.model_version,
            "rolled_back_to": check.rolled_back_to or "",
            "lift": interval.lift,
            "lower": interval.lower,
            "upper": interval.upper,
            "treated": interval.treated,
            "holdout": interval.holdout,
            "threshold": check.rule.threshold,
            "reason": check.reason,
        }
    )
