"""Outcome attribution of the next-best-action decisions, and the policy's measured lift against the holdout.

Every decision of gold ``nba_decisions`` (the holdout's included) gets the outcomes of its person from the day
it acts until the next decision of the person acts, or 7 days, whichever comes first (last touch, as the
``decision_outcomes`` mart attributes the campaigns' decisions). A decision dated D (features as of D 00:00
UTC) is made once D's data has landed and synced that night, so the CRM acts on it the day after: its window
starts at D + 1 day (``ACTION_LAG_DAYS``), the holdout's too. Outcomes: orders and their revenue
(``int_marts__person_orders``, order totals already net of the discount, loyalty reduction or free shipping
the action gave), and, when the CRM executed it, the activity that carries its decision id and the message's
cost (the policy file's ``message_cost``). Net revenue = revenue - message cost. A row is final
(``window_complete``) once its window has ended before the latest loaded data (``int_marts__data_window``),
so the figures of a date are point in time: only data that had arrived by then counts, and a later load
cannot move an order between decisions. Each row keeps the decision id, the model version and the policy
version that caused it: gold ``decision_attribution``.

The lift (gold ``policy_lift``) compares, per model and policy version, the treated decisions with the
randomised holdout, on the final rows: for the policy as a whole every decision that was not held out (the
intent to treat: no_action and exploration included) against the holdout; per action and channel the
greedy decisions of that action and channel against the holdout persons the policy would have given that
action (the highest positive value among their eligible actions in ``action_scores``: the holdout draw is
independent of the scores, so the two groups are comparable). Intervals are the guardrail's anytime-valid
ones (:func:`ml.guardrail.lift_interval`). The holdout's channel is not known (eligibility per channel is not
recorded), so the channels of one action share the action's holdout. The plot goes to the serving model
version's MLflow run (``attribution/<date>/lift.png`` and ``lift.json``).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from lake.settings import Settings, get_settings
from ml.guardrail import lift_interval
from ml.settings import MlSettings, get_ml_settings

ATTRIBUTION_TABLE = "decision_attribution"
LIFT_TABLE = "policy_lift"
DECISIONS_TABLE = "nba_decisions"
WINDOW_DAYS = 7
ACTION_LAG_DAYS = 1
"""Days from a decision's date to the day the CRM acts on it (and its outcome window starts)."""
ALL = "all"
ATTRIBUTION_SCHEMA = {
    "decision_id": pl.String,
    "decision_date": pl.Date,
    "person_id": pl.String,
    "action": pl.String,
    "channel": pl.String,
    "intended_action": pl.String,
    "is_holdout": pl.Boolean,
    "is_exploration": pl.Boolean,
    "decided_by": pl.String,
    "model_name": pl.String,
    "model_version": pl.String,
    "policy_version": pl.String,
    "window_start": pl.Datetime("us", "UTC"),
    "window_end": pl.Datetime("us", "UTC"),
    "window_complete": pl.Boolean,
    "executed": pl.Boolean,
    "activity_id": pl.Int64,
    "order_count": pl.Int64,
    "revenue": pl.Float64,
    "message_cost": pl.Float64,
    "net_revenue": pl.Float64,
    "converted": pl.Boolean,
}
"""The columns of gold ``decision_attribution``: one row per decision."""
LIFT_SCHEMA = {
    "model_version": pl.String,
    "policy_version": pl.String,
    "action": pl.String,
    "channel": pl.String,
    "through_date": pl.Date,
    "treated": pl.Int64,
    "holdout": pl.Int64,
    "treated_conversion": pl.Float64,
    "holdout_conversion": pl.Float64,
    "treated_net_revenue": pl.Float64,
    "holdout_net_revenue": pl.Float64,
    "lift": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "alpha": pl.Float64,
}
"""The columns of gold ``policy_lift``: per model and policy version, the policy (action and channel
``all``) and each action and channel; conversion = share of decisions followed by an order; net revenue per
decision in EUR; the lift of net revenue with its anytime-valid interval."""


def intended_actions(decisions: pl.DataFrame) -> pl.DataFrame:
    """``decision_id`` and ``intended_action``: the eligible action of highest positive value in
    ``action_scores`` (``no_action`` when none), what the policy would choose without holdout, exploration
    and budgets."""
    scores = (
        decisions.select("decision_id", "action_scores")
        .explode("action_scores")
        .unnest("action_scores")
        .filter(pl.col("eligible") & (pl.col("value") > 0) & (pl.col("action") != "no_action"))
        .sort(["decision_id", "value", "action"], descending=[False, True, False])
        .group_by("decision_id", maintain_order=True)
        .first()
        .select("decision_id", pl.col("action").alias("intended_action"))
    )
    return (
        decisions.select("decision_id")
        .join(scores, on="decision_id", how="left")
        .with_columns(pl.col("intended_action").fill_null("no_action"))
    )


def attribute(
    decisions: pl.DataFrame,
    orders: pl.DataFrame,
    executed: pl.DataFrame,
    data_until: datetime,
    message_cost: dict[str, float],
) -> pl.DataFrame:
    """One :data:`ATTRIBUTION_SCHEMA` row per decision. ``decisions``: ``nba_decisions`` rows; ``orders``:
    ``person_id``, ``created_at``, ``total_amount`` (conversions only); ``executed``: ``decision_id``,
    ``activity_id`` of the CRM activities that executed a decision; ``data_until``: how far the loaded data
    reaches; ``message_cost``: EUR per message by channel."""
    start = pl.col("decision_date").cast(pl.Datetime("us", "UTC")) + timedelta(days=ACTION_LAG_DAYS)
    rows = (
        decisions.join(intended_actions(decisions), on="decision_id", how="left")
        .sort(["person_id", "decision_date"])
        .with_columns(
            start.alias("window_start"),
            pl.min_horizontal(start.shift(-1).over("person_id"), start + timedelta(days=WINDOW_DAYS)).alias(
                "window_end"
            ),
        )
        .with_columns(
            (pl.col("window_end") <= data_until).alias("window_complete"),
            pl.min_horizontal("window_end", pl.lit(data_until, pl.Datetime("us", "UTC"))).alias("_until"),
        )
    )
    attributed = (
        rows.select("decision_id", "person_id", "window_start", "_until")
        .join(orders.select("person_id", "created_at", "total_amount"), on="person_id", how="inner")
        .filter((pl.col("created_at") >= pl.col("window_start")) & (pl.col("created_at") < pl.col("_until")))
        .group_by("decision_id")
        .agg(pl.len().cast(pl.Int64).alias("order_count"), pl.col("total_amount").sum().alias("revenue"))
    )
    sent = executed.select("decision_id", "activity_id").unique("decision_id", keep="first")
    cost = pl.col("channel").replace_strict(message_cost, default=0.0, return_dtype=pl.Float64)
    return (
        rows.join(attributed, on="decision_id", how="left")
        .join(sent, on="decision_id", how="left")
        .with_columns(
            pl.col("activity_id").is_not_null().alias("executed"),
            pl.col("order_count").fill_null(0),
            pl.col("revenue").cast(pl.Float64).fill_null(0.0),
        )
        .with_columns(pl.when("executed").then(cost).otherwise(0.0).alias("message_cost"))
        .with_columns(
            (pl.col("revenue") - pl.col("message_cost")).alias("net_revenue"),
            (pl.col("order_count") > 0).alias("converted"),
        )
        .select(list(ATTRIBUTION_SCHEMA))
        .cast(ATTRIBUTION_SCHEMA)
        .sort(["decision_date", "decision_id"])
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _lift_row(
    keys: dict, treated: pl.DataFrame, holdout: pl.DataFrame, through: date | None, alpha: float, t_opt: float
) -> dict:
    interval = lift_interval(
        treated["net_revenue"].to_numpy(), holdout["net_revenue"].to_numpy(), alpha=alpha, t_opt=t_opt
    )
    return {
        **keys,
        "through_date": through,
        "treated": treated.height,
        "holdout": holdout.height,
        "treated_conversion": treated["converted"].mean() if treated.height else None,
        "holdout_conversion": holdout["converted"].mean() if holdout.height else None,
        "treated_net_revenue": _finite(interval.treated_mean),
        "holdout_net_revenue": _finite(interval.holdout_mean),
        "lift": _finite(interval.lift),
        "lower": _finite(interval.lower),
        "upper": _finite(interval.upper),
        "alpha": alpha,
    }


def lift_table(attribution: pl.DataFrame, alpha: float = 0.05, t_opt: float = 10_000.0) -> pl.DataFrame:
    """The measured lift (:data:`LIFT_SCHEMA`) of every model and policy version on the final rows of
    ``attribution``: the policy as a whole, then each action and channel its greedy decisions used."""
    final = attribution.filter(pl.col("window_complete") & (pl.col("decided_by") != "challenger"))
    rows = []
    for (version, policy), group in final.group_by(["model_version", "policy_version"], maintain_order=True):
        through = group["decision_date"].max()
        holdout = group.filter(pl.col("is_holdout"))
        treated = group.filter(~pl.col("is_holdout"))
        keys = {"model_version": version, "policy_version": policy}
        rows.append(
            _lift_row({**keys, "action": ALL, "channel": ALL}, treated, holdout, through, alpha, t_opt)
        )
        greedy = treated.filter(~pl.col("is_exploration"))
        for (action, channel), arm in greedy.group_by(["action", "channel"], maintain_order=True):
            control = holdout.filter(pl.col("intended_action") == action)
            keys_ac = {**keys, "action": action, "channel": channel or ""}
            rows.append(_lift_row(keys_ac, arm, control, through, alpha, t_opt))
    frame = pl.DataFrame(rows, schema=LIFT_SCHEMA, orient="row") if rows else pl.DataFrame(schema=LIFT_SCHEMA)
    return frame.sort(["model_version", "policy_version", "action", "channel"])


def load_inputs(settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, datetime | None]:
    """The decisions (gold ``nba_decisions``), the persons' orders and how far the data reaches (the
    warehouse's ``int_marts__person_orders`` and ``int_marts__data_window``), and the CRM activities that
    executed a decision (silver ``crm/activities`` rows carrying a ``decision_id``)."""
    from lake.gold import gold_uri

    options = settings.storage_options or None
    decisions = pl.read_delta(gold_uri(settings, DECISIONS_TABLE), storage_options=options)
    with duckdb.connect(
        str(settings.warehouse_path), read_only=True, config=settings.duckdb_config(warehouse=True)
    ) as con:
        con.execute("set TimeZone = 'UTC'")
        until = con.sql("select data_until from int_marts__data_window").fetchall()
        orders = pl.from_arrow(
            con.sql(
                "select person_id, created_at, total_amount from int_marts__person_orders"
            ).to_arrow_table()
        )
        columns = {row[0] for row in con.sql("describe silver.crm__activities").fetchall()}
        executed = (
            pl.from_arrow(
                con.sql(
                    "select decision_id, activity_id from silver.crm__activities "
                    "where decision_id is not null"
                ).to_arrow_table()
            )
            if "decision_id" in columns
            else pl.DataFrame(schema={"decision_id": pl.String, "activity_id": pl.Int64})
        )
    data_until = until[0][0] if until and until[0][0] is not None else None
    orders = orders.with_columns(
        pl.col("created_at").cast(pl.Datetime("us", "UTC")), pl.col("total_amount").cast(pl.Float64)
    )
    executed = executed.with_columns(
        pl.col("decision_id").cast(pl.String), pl.col("activity_id").cast(pl.Int64)
    )
    return decisions, orders, executed, data_until


@dataclass(frozen=True)
class AttributionReport:
    """What the attribution wrote: decisions attributed, the final ones, the lift table and the plot."""

    decisions: int
    final: int
    executed: int
    lift: pl.DataFrame
    plot_uri: str | None


def plot_lift(lift: pl.DataFrame, path: Path) -> None:
    """Bar chart of the lift of net revenue per decision with its anytime-valid interval, per action and
    channel (the policy as a whole first), one panel per model version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = lift["model_version"].unique(maintain_order=True).to_list()
    figure, axes = plt.subplots(len(versions), 1, figsize=(9, 2.2 + 0.45 * lift.height), squeeze=False)
    for axis, version in zip(axes[:, 0], versions, strict=True):
        rows = lift.filter(pl.col("model_version") == version).sort(
            pl.col("action") != ALL, "action", "channel"
        )
        labels = [
            ("policy (all decisions)" if a == ALL else f"{a} / {c}" if c else a)
            for a, c in rows.select("action", "channel").rows()
        ]
        value = rows["lift"].fill_null(np.nan).to_numpy()
        low = rows["lower"].fill_null(-np.inf).to_numpy()
        high = rows["upper"].fill_null(np.inf).to_numpy()
        span = np.nanmax(np.abs(value)) * 4 if np.isfinite(value).any() else 1.0
        errors = np.vstack([np.minimum(value - low, span), np.minimum(high - value, span)])
        y = np.arange(len(labels))
        axis.errorbar(value, y, xerr=errors, fmt="o", capsize=3)
        axis.axvline(0.0, color="grey", linewidth=0.8)
        axis.set_yticks(y, labels)
        axis.invert_yaxis()
        axis.set_title(
            f"model version {version or '(fallback)'}: lift of net revenue per decision, treated - holdout"
        )
        axis.set_xlabel("EUR per decision (95% anytime-valid interval)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _log_plot(lift: pl.DataFrame, through: date, ml: MlSettings) -> str | None:
    """Log the plot and the table to the MLflow run of the latest model version in ``lift``; its URI."""
    import mlflow

    versions = [v for v in lift["model_version"].unique().to_list() if v]
    if not versions:
        return None
    version = max(versions, key=int)
    client = mlflow.MlflowClient(tracking_uri=ml.tracking_uri, registry_uri=ml.tracking_uri)
    run_id = client.get_model_version(ml.model_name, version).run_id
    folder = f"attribution/{through.isoformat()}"
    with tempfile.TemporaryDirectory() as scratch:
        plot = Path(scratch) / "lift.png"
        figures = Path(scratch) / "lift.json"
        plot_lift(lift, plot)
        figures.write_text(
            json.dumps(lift.with_columns(pl.col("through_date").cast(pl.String)).to_dicts(), indent=1)
        )
        client.log_artifact(run_id, str(plot), folder)
        client.log_artifact(run_id, str(figures), folder)
    return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{folder}/lift.png"


def build_attribution(settings: Settings | None = None, ml: MlSettings | None = None) -> AttributionReport:
    """Attribute every decision, overwrite gold ``decision_attribution`` and ``policy_lift``, and log the lift
    plot to MLflow; the guardrail's alpha and t_opt set the intervals."""
    from deltalake import write_deltalake

    from lake.gold import gold_uri
    from ml.policy import load_policy

    settings = settings or get_settings()
    ml = ml or get_ml_settings()
    decisions, orders, executed, data_until = load_inputs(settings)
    if data_until is None:
        raise ValueError("the warehouse has no data window: build the dbt models first")
    policy = load_policy(ml.policy_file)
    attribution = attribute(decisions, orders, executed, data_until, dict(policy.message_cost))
    lift = lift_table(attribution, ml.guardrail_alpha, ml.guardrail_t_opt)
    options = settings.storage_options or None
    for table, frame in ((ATTRIBUTION_TABLE, attribution), (LIFT_TABLE, lift)):
        write_deltalake(
            gold_uri(settings, table),
            frame.to_arrow(),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=options,
        )
    final = attribution.filter("window_complete")
    plot_uri = None
    if lift.height and final.height:
        plot_uri = _log_plot(lift, final["decision_date"].max(), ml)
    return AttributionReport(
        attribution.height, final.height, int(attribution["executed"].sum()), lift, plot_uri
    )
