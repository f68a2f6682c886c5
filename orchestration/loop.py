"""``python -m orchestration.loop --days N`` (``make loop DAYS=N``): the closed loop, day by day, through
Dagster.

Each day the simulated company lives one more day (``simulator advance --days 1``: its CRM executes the
recommendations the sync wrote, its customers respond, the day's CDC and clickstream files land), then the
pipeline runs as the nightly run does, each step a Dagster run on the instance of ``DAGSTER_HOME``: ingest and
the dbt models, the new date's feature snapshot and the marts after it, the next-best actions of that date
(the serving champion; training stays weekly), the syncs to the CRM, and the outcomes: every decision's
attributed outcomes, the policy's lift against the holdout and the guardrail, which rolls the champion back
when the lift is confidently below its threshold. The day's line: the decisions, the records synced and
failed, the treated and holdout conversion and net revenue per decision of the decisions whose outcomes
became final, the estimated lift of the serving champion to date with its 95% anytime-valid interval, the true
lift from the simulator's truth beside it, and any rollback.

It needs ``make demo`` first (a lake, a champion and its decisions synced to the CRM); without one it runs
the demo itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from orchestration.demo import (
    AFTER_SNAPSHOTS,
    BEFORE_SNAPSHOTS,
    OUTCOMES,
    SNAPSHOTS,
    SYNCS,
    _values,
    materialize,
)
from orchestration.outcome_assets import GUARDRAIL
from orchestration.snapshot_dates import supported_snapshot_dates

LANDING = dg.AssetSelection.groups("landing")
INGEST = BEFORE_SNAPSHOTS - LANDING
"""Bronze, silver and the dbt models before the snapshots, without regenerating the simulated company."""
DECIDE = dg.AssetSelection.assets(dg.AssetKey(["ml", "model_registry"]), dg.AssetKey(["ml", "nba_decisions"]))
"""The registry's state and the decisions of the new date (no training: that is weekly)."""


@dataclass(frozen=True)
class DayReport:
    """What one day of the loop did and measured."""

    day: int
    decision_date: str
    decisions: int
    model_version: str
    synced: int
    failed: int
    final_date: str | None
    treated_conversion: float | None
    holdout_conversion: float | None
    treated_net_revenue: float | None
    holdout_net_revenue: float | None
    lift: float | None
    lower: float | None
    upper: float | None
    true_lift: float | None
    verdict: str
    rolled_back_to: str
    seconds: float


def _built(result: dg.JobExecutionResult) -> dict[dg.AssetKey, dict]:
    return {
        event.asset_key: _values(event.step_materialization_data.materialization.metadata)
        for event in result.get_asset_materialization_events()
    }


def measured(settings, model_version: str) -> dict:
    """The serving model version's figures from gold ``decision_attribution``: the newest final decision
    date's treated and holdout conversion and net revenue, the lift to date with its interval, and the true
    lift to date from the simulator's truth."""
    import polars as pl

    from lake.gold import gold_uri
    from ml.attribution import ATTRIBUTION_TABLE
    from ml.guardrail import champion_outcomes, lift_interval
    from ml.settings import get_ml_settings
    from orchestration.evaluation import true_lift

    attribution = pl.read_delta(
        gold_uri(settings, ATTRIBUTION_TABLE), storage_options=settings.storage_options or None
    )
    final = attribution.filter(
        pl.col("window_complete")
        & (pl.col("model_version") == model_version)
        & (pl.col("decided_by") == "champion")
    )
    figures: dict = {"final_date": None}
    if final.is_empty():
        return figures
    last = final["decision_date"].max()
    day = final.filter(pl.col("decision_date") == last)
    for arm, rows in (("treated", day.filter(~pl.col("is_holdout"))), ("holdout", day.filter("is_holdout"))):
        figures[f"{arm}_conversion"] = rows["converted"].mean() if rows.height else None
        figures[f"{arm}_net_revenue"] = rows["net_revenue"].mean() if rows.height else None
    ml = get_ml_settings()
    interval = lift_interval(
        *champion_outcomes(attribution, model_version), ml.guardrail_alpha, ml.guardrail_t_opt
    )
    truth = true_lift(attribution, Path(settings.simulator_truth), model_version)
    figures.update(
        final_date=last.isoformat(),
        lift=interval.lift,
        lower=interval.lower,
        upper=interval.upper,
        true_lift=truth["true_lift_to_date"][-1] if truth.height else None,
    )
    return figures


def run_day(instance: dg.DagsterInstance, day: int, crm_url: str, here: str) -> DayReport:
    """Advance the company one day, then run the pipeline through Dagster and measure (module docstring)."""
    from lake.settings import get_settings
    from simulator.advance import advance

    started = time.perf_counter()
    settings = get_settings()
    advance(Path(settings.landing), Path(settings.simulator_truth), 1, database_url=crm_url, progress=False)
    with contextlib.chdir(here):
        materialize(instance, INGEST)
    latest = supported_snapshot_dates()[1]
    with contextlib.chdir(here):
        materialize(instance, SNAPSHOTS, partition_range=(latest, latest))
    with contextlib.chdir(here):
        materialize(instance, AFTER_SNAPSHOTS)
    with contextlib.chdir(here):
        decided = _built(materialize(instance, DECIDE, partition_key=latest))
    with contextlib.chdir(here):
        synced = _built(materialize(instance, SYNCS))
    with contextlib.chdir(here):
        outcomes = _built(materialize(instance, OUTCOMES))
    decisions = decided.get(dg.AssetKey(["ml", "nba_decisions"]), {})
    guard = outcomes.get(GUARDRAIL, {})
    model_version = str(decisions.get("model_version", ""))
    crm = [m for key, m in synced.items() if key.path[-1] == "crm_recommendations"]
    figures = measured(settings, model_version)
    return DayReport(
        day=day,
        decision_date=latest,
        decisions=int(decisions.get("persons", 0)),
        model_version=model_version,
        synced=sum(int(m.get("sent", 0)) for m in crm),
        failed=sum(int(m.get("failed", 0)) for m in crm),
        final_date=figures["final_date"],
        treated_conversion=figures.get("treated_conversion"),
        holdout_conversion=figures.get("holdout_conversion"),
        treated_net_revenue=figures.get("treated_net_revenue"),
        holdout_net_revenue=figures.get("holdout_net_revenue"),
        lift=figures.get("lift"),
        lower=figures.get("lower"),
        upper=figures.get("upper"),
        true_lift=figures.get("true_lift"),
        verdict=str(guard.get("verdict", "")),
        rolled_back_to=str(guard.get("rolled_back_to", "")),
        seconds=time.perf_counter() - started,
    )


def _number(value: float | None, form: str, width: int) -> str:
    return f"{value:{form}}".rjust(width) if value is not None else "-".rjust(width)


HEADER = (
    f"{'day':>3} {'decided':>10} {'model':>5} {'persons':>8} {'synced':>7} {'failed':>6} | {'outcomes':>10} "
    f"{'conv T':>7} {'conv H':>7} {'net T':>7} {'net H':>7} | {'lift to date [95% anytime-valid]':>33} "
    f"{'true':>7} | guardrail"
)


def format_day(report: DayReport) -> str:
    """One line of the loop's table (EUR per decision; conversion = share of decisions followed by an
    order)."""
    interval = (
        f"{report.lift:+.3f} [{report.lower:+.3f}, {report.upper:+.3f}]"
        if report.lift is not None and report.lower is not None
        else "-"
    )
    guard = report.verdict + (f" -> v{report.rolled_back_to}" if report.rolled_back_to else "")
    return (
        f"{report.day:>3} {report.decision_date:>10} {'v' + report.model_version:>5} {report.decisions:>8,} "
        f"{report.synced:>7,} {report.failed:>6,} | {report.final_date or '-':>10} "
        f"{_number(report.treated_conversion, '.2%', 7)} {_number(report.holdout_conversion, '.2%', 7)} "
        f"{_number(report.treated_net_revenue, '.3f', 7)} {_number(report.holdout_net_revenue, '.3f', 7)} | "
        f"{interval:>33} {_number(report.true_lift, '+.3f', 7)} | {guard}"
    )


def demo_is_built() -> bool:
    """Whether ``make demo`` left what the loop continues from: the simulator's persisted state and the
    decisions."""
    from lake.gold import gold_uri
    from lake.settings import get_settings

    settings = get_settings()
    state = Path(settings.simulator_truth, "state")
    decisions = Path(gold_uri(settings, "nba_decisions"), "_delta_log")
    return settings.is_local and state.is_dir() and decisions.is_dir()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``--days`` days of the loop and print a line per day."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.loop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")

    from activation.crm_server import crm_database_url
    from lake.settings import get_settings
    from orchestration import demo

    if not demo_is_built():
        print("no demo lake to continue: running make demo first")
        demo.main([])
    here = os.getcwd()
    instance = dg.DagsterInstance.get()
    crm_url = crm_database_url(get_settings())
    legend = (
        "the closed loop: T = treated decisions, H = holdout; outcomes of the newest decision date whose day "
        "is complete, net revenue in EUR per decision (order totals, discounts deducted, less message cost); "
        "lift of the serving model to date against the holdout; true = the simulator's truth for the same "
        "decisions"
    )
    print(legend, HEADER, sep="\n")
    started = time.perf_counter()
    lines = []
    for day in range(1, args.days + 1):
        lines.append(format_day(run_day(instance, day, crm_url, here)))
        print(lines[-1], flush=True)
    # once more without the runs' logs between the days
    print("", legend, HEADER, *lines, sep="\n")
    print(
        f"{args.days} days in {time.perf_counter() - started:.0f} s; the guardrail's checks: "
        "python -m ml.guardrail --log"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
