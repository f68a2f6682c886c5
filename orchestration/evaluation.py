"""The pipeline's output against the simulated company's ground truth, wired in by the orchestration: the
person map of the warehouse scored against the truth's identifiers (a check on
``identity/identity_person_map``, and the lines ``make demo`` prints). It lives here, not in the lake nor in
the simulator: it joins what dbt built (a model of the warehouse) with what the simulator knows, and the lake
and the simulator each run without the other."""

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from lake.settings import Settings
from ml.attribution import ACTION_LAG_DAYS
from orchestration.resources import WAREHOUSE_POOL, LakeResource
from simulator.scoring import IdentityQuality, identity_quality

PRECISION_TARGET = 0.99
RECALL_TARGET = 0.95
PERSON_MAP = "identity_person_map"
"""The dbt model scored: one row per identifier with the person it belongs to."""


def warehouse_identity_quality(warehouse_path: Path, truth_dir: Path) -> IdentityQuality | None:
    """Score the ``identity_person_map`` of the DuckDB warehouse against ``identifiers.parquet`` in
    ``truth_dir`` (None when either is missing)."""
    truth = truth_dir / "identifiers.parquet"
    if not truth.exists() or not warehouse_path.exists():
        return None
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        known = con.execute(
            "select 1 from information_schema.tables where table_name = ?", [PERSON_MAP]
        ).fetchall()
        if not known:
            return None
        rows = con.sql(f"select identifier_type, identifier, person_id from {PERSON_MAP}").to_arrow_table()
    return identity_quality(pl.from_arrow(rows), pl.read_parquet(truth))


def truth_summary(settings: Settings) -> list[str]:
    """Where the simulator's ground truth is and the person map's quality against it, as lines to print (none
    for a lake without the truth)."""
    truth = Path(settings.simulator_truth)
    if not truth.is_dir():
        return []
    lines = [f"simulator ground truth: {truth}"]
    quality = warehouse_identity_quality(settings.warehouse_path, truth)
    if quality is not None:
        lines.append(
            f"  identity_person_map against the simulator truth ({quality.identifiers:,} non-personal "
            f"identifiers): pairwise precision {quality.precision:.4f}, recall "
            f"{quality.evidenced_recall:.4f} over the pairs some message ties together ({quality.recall:.4f} "
            "over all true pairs)"
        )
    return lines


@dg.asset_check(
    asset=dg.AssetKey(["identity", PERSON_MAP]),
    name="quality_against_simulator_truth",
    pool=WAREHOUSE_POOL,
    description=f"Pairwise precision >= {PRECISION_TARGET} and recall >= {RECALL_TARGET} on the non-personal "
    "identifiers, against the simulator's truth; recall over the identifiers some message ties to their "
    "person (passes with a note when the lake has no simulator truth).",
)
def identity_quality_check(lake: LakeResource) -> dg.AssetCheckResult:
    """Score the person map against ``simulator_truth/identifiers.parquet``."""
    settings = lake.settings()
    quality = warehouse_identity_quality(settings.warehouse_path, Path(settings.simulator_truth))
    if quality is None:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no simulator truth in this lake"})
    return dg.AssetCheckResult(
        passed=quality.precision >= PRECISION_TARGET and quality.evidenced_recall >= RECALL_TARGET,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "precision": round(quality.precision, 4),
            "recall": round(quality.evidenced_recall, 4),
            "recall_all_pairs": round(quality.recall, 4),
            "identifiers": quality.identifiers,
            "predicted_persons": quality.predicted_persons,
            "true_persons": quality.true_persons,
            "shared_identifiers_left_out": quality.ambiguous,
        },
    )


LOOP_EXECUTED = "loop/executed.parquet"
"""The simulator's record of every decision its CRM executed, with the decision's true expected effect."""
EFFECT_DAYS = 7
"""Days an executed action works, from the day after it was sent (the simulator's response model)."""


def true_daily_effect(truth_dir: Path, model_version: str) -> pl.DataFrame:
    """Per calendar day (``date``): the true incremental revenue of the actions of ``model_version`` in
    effect that day (each executed decision's expected 7-day effect spread evenly over the 7 days after its
    send) less the cost of its messages sent that day, in EUR (``true_net_effect``); empty before the loop
    executed anything."""
    path = truth_dir / LOOP_EXECUTED
    if not path.exists():
        return pl.DataFrame(schema={"date": pl.Date, "true_net_effect": pl.Float64})
    executed = pl.read_parquet(
        path, columns=["date", "model_version", "true_incremental_revenue", "message_cost"]
    ).filter(pl.col("model_version") == model_version)
    spread = (
        executed.with_columns(
            pl.date_ranges(
                pl.col("date") + pl.duration(days=1), pl.col("date") + pl.duration(days=EFFECT_DAYS)
            ).alias("effect_date"),
            (pl.col("true_incremental_revenue") / EFFECT_DAYS).alias("effect"),
        )
        .explode("effect_date")
        .group_by(pl.col("effect_date").alias("date"))
        .agg(pl.col("effect").sum())
    )
    costs = executed.group_by("date").agg(pl.col("message_cost").sum().alias("cost"))
    return (
        spread.join(costs, on="date", how="full", coalesce=True)
        .select(
            "date", (pl.col("effect").fill_null(0.0) - pl.col("cost").fill_null(0.0)).alias("true_net_effect")
        )
        .sort("date")
    )


def true_lift(attribution: pl.DataFrame, truth_dir: Path, model_version: str) -> pl.DataFrame:
    """The true lift of net revenue per treated decision of ``model_version`` on each decision date whose
    outcomes are final (``decision_attribution`` rows: each decision owns its person's day after its date,
    when the CRM acts on it), the measure the estimated lift estimates: ``true_lift`` of the date and
    ``true_lift_to_date`` over the dates so far."""
    treated = (
        attribution.filter(
            pl.col("window_complete")
            & ~pl.col("is_holdout")
            & (pl.col("model_version") == model_version)
            & (pl.col("decided_by") == "champion")
        )
        .group_by("decision_date")
        .agg(pl.len().alias("treated"))
        .with_columns((pl.col("decision_date") + pl.duration(days=ACTION_LAG_DAYS)).alias("date"))
    )
    return (
        treated.join(true_daily_effect(truth_dir, model_version), on="date", how="left")
        .with_columns(pl.col("true_net_effect").fill_null(0.0))
        .sort("date")
        .with_columns(
            (pl.col("true_net_effect") / pl.col("treated")).alias("true_lift"),
            (pl.col("true_net_effect").cum_sum() / pl.col("treated").cum_sum()).alias("true_lift_to_date"),
        )
    )
