"""The closed loop inside the simulated company: continue a generated company day by day from the state it
persisted beside its truth, executing the recommendations the CRM received.

Each day: the CRM's campaign tool reads ``public.nba_recommendations`` (at ``CRM_DATABASE_URL``; without a URL
there are none and the company runs as before), executes the due ones whose channel still has consent
(activities carrying the decision id), its customers respond as the truth says (an executed action changes the
person's purchases for 7 days: :mod:`simulator.world`'s response model), and the day's CDC and clickstream
files land exactly as :func:`simulator.generate.generate` writes them. The rows the sync wrote come back
through the CRM's CDC (topic ``crm.public.nba_recommendations``) like every table of that database.

The truth grows by ``<truth>/loop/executed.parquet`` (one row per executed decision with its true expected
incremental effect), ``<truth>/loop/skipped.parquet`` (recommendations the campaign tool refused, and why) and
``<truth>/loop/days.parquet`` (counts per day). The same state and the same recommendations always write the
same bytes, and advancing 2 days then 1 writes what advancing 3 does.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
from tqdm import tqdm

from simulator import catalog as cat
from simulator.clickstream import ClickstreamWriter
from simulator.company import Company
from simulator.company.common import WEEKDAY_FACTOR, Day, People
from simulator.debezium import Connector
from simulator.files import FileWriter
from simulator.generate import rng_seeds
from simulator.state import (
    RECOMMENDATION_COLUMNS,
    SimulatorState,
    load_state,
    restored_rng,
    rng_state,
    save_state,
)
from simulator.tables import crm_server, shop_server
from simulator.truth import KEPT_ORDER_SHARE, basket_totals, expected_order_total
from simulator.world import World, build_world

RECOMMENDATIONS_TABLE = "public.nba_recommendations"
LOOP_FOLDER = "loop"
ECHO_DELAY_US = 3600 * 1_000_000
"""When in the day the CRM's CDC captures the rows the sync wrote overnight (01:00 UTC)."""
EFFECT_DAYS = 7
EXECUTED_SCHEMA = {
    "decision_id": pl.String,
    "day": pl.Int64,
    "date": pl.Date,
    "person_id": pl.String,
    "contact_id": pl.Int64,
    "action": pl.String,
    "channel": pl.String,
    "decision_date": pl.Date,
    "model_version": pl.String,
    "policy_version": pl.String,
    "activity_id": pl.Int64,
    "sent_at": pl.Datetime("us", "UTC"),
    "true_weekly_uplift": pl.Float64,
    "true_purchase_probability_treated": pl.Float64,
    "true_purchase_probability_untreated": pl.Float64,
    "true_incremental_purchase_probability": pl.Float64,
    "true_incremental_orders": pl.Float64,
    "true_incremental_revenue": pl.Float64,
    "message_cost": pl.Float64,
    "true_incremental_net_revenue": pl.Float64,
}
"""``loop/executed.parquet``: each executed decision and its true expected effect over the 7 days the action
works (from the day after the send), against no action: the probability of at least one purchase, the
counted orders and revenue in EUR (orders neither cancelled nor refunded, discounts deducted by the shop's
rules), and that revenue less the company's cost of the message (``catalog.MESSAGE_COST_EUR``)."""
SKIPPED_SCHEMA = {
    "decision_id": pl.String,
    "day": pl.Int64,
    "date": pl.Date,
    "contact_id": pl.Int64,
    "action": pl.String,
    "channel": pl.String,
    "reason": pl.String,
}


@dataclass
class AdvanceReport:
    """What one advance did, and how fast."""

    landing: Path
    truth: Path
    first_day: int
    days: int
    persons: int
    executed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    echo_changes: int = 0
    lines_by_feed: dict[str, int] = field(default_factory=dict)
    files: int = 0
    seconds: float = 0.0

    @property
    def person_days_per_second(self) -> float:
        """Simulated persons times days per second of wall time."""
        return self.persons * self.days / self.seconds if self.seconds else 0.0


def read_recommendations(url: str | None) -> pl.DataFrame | None:
    """The CRM's recommendations table (``RECOMMENDATION_COLUMNS``, by contact id), None without a URL; an
    empty table when the sync has not created it yet."""
    if not url:
        return None
    with psycopg.connect(url, connect_timeout=10) as conn:
        exists = conn.execute("select to_regclass(%s)", [RECOMMENDATIONS_TABLE]).fetchone()[0]
        rows = (
            conn.execute(
                f"select {', '.join(RECOMMENDATION_COLUMNS)} from {RECOMMENDATIONS_TABLE} order by contact_id"
            ).fetchall()
            if exists is not None
            else []
        )
    return pl.DataFrame(rows, schema=RECOMMENDATION_COLUMNS, orient="row")


def recommendation_changes(seen: pl.DataFrame, now: pl.DataFrame, day: Day) -> pl.DataFrame | None:
    """The row changes of the recommendations table between two captures, as the CRM's CDC sees them:
    creates, updates and deletes (key only) by contact id, at ``ECHO_DELAY_US`` into ``day``; None when
    nothing changed."""
    key = "contact_id"
    created = now.join(seen, on=key, how="anti").with_columns(pl.lit("c").alias("_op"))
    changed = (
        now.join(seen, on=key, how="semi")
        .join(seen, on=list(RECOMMENDATION_COLUMNS), how="anti", nulls_equal=True)
        .with_columns(pl.lit("u").alias("_op"))
    )
    removed = seen.join(now, on=key, how="anti").select(key, pl.lit("d").alias("_op"))
    changes = pl.concat([created, changed, removed], how="diagonal_relaxed").sort(key)
    if changes.is_empty():
        return None
    ts = day.start + ECHO_DELAY_US + np.arange(changes.height, dtype=np.int64) * 1_000
    return changes.select(pl.Series("_ts", ts), "_op", *RECOMMENDATION_COLUMNS)


class _TrueEffects:
    """The true expected effect of executed decisions, from the world's response model."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.people = People.of(world)
        self._totals: np.ndarray | None = None

    @property
    def totals(self) -> np.ndarray:
        """Expected order totals per favourite category, lines and action (computed once, when needed)."""
        if self._totals is None:
            products = self.world.products.select(pl.col("category_name").alias("category"), "price_cents")
            self._totals = basket_totals(products)
        return self._totals

    def of(self, persons: np.ndarray, actions: np.ndarray, channels: np.ndarray, day: Day) -> dict:
        """Columns of ``EXECUTED_SCHEMA`` (the true effects) for actions sent on ``day``."""
        people, world = self.people, self.world
        base = np.clip(people.base_weekly[persons], 0, 1)
        uplift = world.uplift[persons, actions]
        treated = np.clip(people.base_weekly[persons] + uplift, 0, 1)
        factors = WEEKDAY_FACTOR[[(day.weekday + k) % 7 for k in range(1, EFFECT_DAYS + 1)]]
        p_treated = 1 - np.prod(1 - treated[:, None] / 7 * factors[None, :], axis=1)
        p_untreated = 1 - np.prod(1 - base[:, None] / 7 * factors[None, :], axis=1)
        orders_treated = treated / 7 * factors.sum() * KEPT_ORDER_SHARE
        orders_untreated = base / 7 * factors.sum() * KEPT_ORDER_SHARE
        basket, favourite = people.basket_mean[persons], people.preferred[persons].astype(np.int64)
        total_treated = np.zeros(len(persons))
        for action in np.unique(actions):
            at = actions == action
            total_treated[at] = expected_order_total(
                basket[at], world.basket_multiplier[persons[at], action], favourite[at], self.totals, action
            )
        total_untreated = expected_order_total(
            basket, world.basket_multiplier[persons, 0], favourite, self.totals, 0
        )
        revenue = (orders_treated * total_treated - orders_untreated * total_untreated) / 100.0
        cost = np.asarray([cat.MESSAGE_COST_EUR[c] for c in cat.CHANNELS])[channels]
        return {
            "true_weekly_uplift": uplift,
            "true_purchase_probability_treated": p_treated,
            "true_purchase_probability_untreated": p_untreated,
            "true_incremental_purchase_probability": p_treated - p_untreated,
            "true_incremental_orders": orders_treated - orders_untreated,
            "true_incremental_revenue": revenue,
            "message_cost": cost,
            "true_incremental_net_revenue": revenue - cost,
        }


def advance(
    landing: Path,
    truth: Path,
    days: int,
    *,
    database_url: str | None = None,
    progress: bool | None = None,
) -> AdvanceReport:
    """Continue the company persisted in ``truth`` by ``days`` days: execute the recommendations of the CRM
    database at ``database_url`` (default: the ``CRM_DATABASE_URL`` environment variable; none: no
    recommendations), land the days' files in ``landing`` and append the days' truth (module docstring)."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    landing, truth = Path(landing), Path(truth)
    url = database_url if database_url is not None else os.environ.get("CRM_DATABASE_URL")
    started = time.perf_counter()
    state = load_state(truth)
    config = state.config
    world = build_world(config, np.random.default_rng(rng_seeds(config)[0]))
    company_rng, crm_rng, shop_rng, click_rng = (
        restored_rng(state.rngs[name]) for name in ("company", "crm", "shop", "clicks")
    )
    effects = _TrueEffects(world)
    report = AdvanceReport(landing, truth, state.next_day, days, world.persons.height)
    executed, skipped, summaries = [], [], []
    seen = state.recommendations
    writer = FileWriter()
    try:
        crm = Connector(crm_server(config.days), landing, config, crm_rng, writer)
        shop = Connector(shop_server(config.days), landing, config, shop_rng, writer)
        crm.restore_state(state.connectors["crm"])
        shop.restore_state(state.connectors["shop"])
        clicks = ClickstreamWriter(
            landing, config, click_rng, writer, world.devices, world.persons, world.products
        )
        clicks.restore_state(state.clicks)
        company = Company(config, world, company_rng, crm, shop, clicks, state=state.company)
        show = sys.stderr.isatty() if progress is None else progress
        numbers = range(state.next_day, state.next_day + days)
        for number in tqdm(numbers, desc="advancing days", unit="day", disable=not show):
            day = company.day(number)
            recommendations = read_recommendations(url)
            echo = None
            if recommendations is not None:
                echo = recommendation_changes(seen, recommendations, day)
                seen = recommendations
            out = company.run_day(
                number, recommendations, {"nba_recommendations": echo} if echo is not None else None
            )
            handled = out.executions
            done = _executed_rows(handled, world, company, effects, day) if handled is not None else None
            refused = _skipped_rows(handled, day) if handled is not None else None
            executed.append(done)
            skipped.append(refused)
            summaries.append(
                {
                    "day": number,
                    "date": day.start_date,
                    "recommendations": 0 if recommendations is None else recommendations.height,
                    "echo_changes": 0 if echo is None else echo.height,
                    "executed": 0 if done is None else done.height,
                    "skipped": 0 if refused is None else refused.height,
                }
            )
        for feed in (crm, shop, clicks):
            feed.finish()
    finally:
        writer.close()
    _append(truth / LOOP_FOLDER / "executed.parquet", executed, EXECUTED_SCHEMA, numbers)
    _append(truth / LOOP_FOLDER / "skipped.parquet", skipped, SKIPPED_SCHEMA, numbers)
    _append(
        truth / LOOP_FOLDER / "days.parquet",
        [pl.DataFrame(summaries)],
        {
            "day": pl.Int64,
            "date": pl.Date,
            "recommendations": pl.Int64,
            "echo_changes": pl.Int64,
            "executed": pl.Int64,
            "skipped": pl.Int64,
        },
        numbers,
    )
    save_state(
        truth,
        SimulatorState(
            config=config,
            next_day=state.next_day + days,
            company=company.state,
            rngs={
                "company": rng_state(company_rng),
                "crm": rng_state(crm_rng),
                "shop": rng_state(shop_rng),
                "clicks": rng_state(click_rng),
            },
            connectors={"crm": crm.export_state(), "shop": shop.export_state()},
            clicks=clicks.export_state(),
            recommendations=seen,
        ),
    )
    report.executed = sum(s["executed"] for s in summaries)
    report.echo_changes = sum(s["echo_changes"] for s in summaries)
    reasons = pl.concat([s for s in skipped if s is not None] or [pl.DataFrame(schema=SKIPPED_SCHEMA)])
    report.skipped = dict(reasons.group_by("reason").len().sort("reason").iter_rows())
    report.lines_by_feed = {
        "cdc": sum(
            c.stats["events"] + c.stats["tombstones"] + c.stats["duplicate_events"] for c in (crm, shop)
        ),
        "clickstream": clicks.stats["lines"],
    }
    report.files = crm.stats["files"] + shop.stats["files"] + clicks.stats["files"]
    report.seconds = time.perf_counter() - started
    return report


def _executed_rows(
    handled: pl.DataFrame, world: World, company: Company, effects: _TrueEffects, day: Day
) -> pl.DataFrame | None:
    """The executed decisions of a day with their true effects (``EXECUTED_SCHEMA``)."""
    done = handled.filter("executed")
    if done.is_empty():
        return None
    persons = company.crm.person[done["contact"].to_numpy()]
    actions = done["action"].replace_strict(cat.ACTIONS, range(len(cat.ACTIONS))).to_numpy()
    channels = done["channel"].replace_strict(cat.CHANNELS, range(len(cat.CHANNELS))).to_numpy()
    return done.select(
        "decision_id",
        pl.lit(day.number, pl.Int64).alias("day"),
        pl.lit(day.start_date).alias("date"),
        pl.Series("person_id", world.persons["person_id"].gather(persons)),
        "contact_id",
        "action",
        "channel",
        "decision_date",
        "model_version",
        "policy_version",
        "activity_id",
        pl.col("sent_at_us").cast(pl.Datetime("us", "UTC")).alias("sent_at"),
        *(pl.Series(name, values) for name, values in effects.of(persons, actions, channels, day).items()),
    ).cast(EXECUTED_SCHEMA)


def _skipped_rows(handled: pl.DataFrame, day: Day) -> pl.DataFrame | None:
    """The recommendations the campaign tool refused on a day, with the reason (``SKIPPED_SCHEMA``)."""
    refused = handled.filter(~pl.col("executed"))
    if refused.is_empty():
        return None
    return refused.select(
        "decision_id",
        pl.lit(day.number, pl.Int64).alias("day"),
        pl.lit(day.start_date).alias("date"),
        "contact_id",
        "action",
        "channel",
        pl.col("skipped").alias("reason"),
    ).cast(SKIPPED_SCHEMA)


def _append(path: Path, frames: list[pl.DataFrame | None], schema: dict, numbers: range) -> None:
    """Replace the rows of days ``numbers`` in the parquet file at ``path`` by ``frames`` (a rerun of the
    same days writes the same file)."""
    parts = [f for f in frames if f is not None]
    if path.exists():
        parts.insert(
            0, pl.read_parquet(path).filter(~pl.col("day").is_between(numbers.start, numbers.stop - 1))
        )
    table = pl.concat([pl.DataFrame(schema=schema), *(p.cast(schema) for p in parts)])
    key = [c for c in ("day", "decision_id") if c in schema]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    table.sort(key).write_parquet(partial)
    os.replace(partial, path)
