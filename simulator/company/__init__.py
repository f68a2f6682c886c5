"""The simulated retailer, one domain per module: CRM (:mod:`~simulator.company.crm`), shop
(:mod:`~simulator.company.shop`), campaigns (:mod:`~simulator.company.campaigns`) and browsing
(:mod:`~simulator.company.browsing`).

Each domain keeps what carries from day to day in a state dataclass (``CrmState``, ``ShopState``,
``CampaignState``, ``BrowsingState``) and turns a day into row changes for the two source databases and click
events for the Segment sources; every draw is vectorised over people, sessions or events. :class:`Company`
composes them and hands each day's changes to the feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator.clickstream import ClickstreamWriter
from simulator.company.browsing import Browsing, BrowsingState
from simulator.company.campaigns import Campaigns, CampaignState
from simulator.company.common import Day, DayChanges, People
from simulator.company.crm import Crm, CrmState
from simulator.company.shop import Shop, ShopState
from simulator.config import US_PER_DAY, SimulationConfig
from simulator.debezium import Connector
from simulator.world import World


def _column_added_on(connector: Connector, table: str, column: str) -> int:
    """The day ``column`` is added to ``table`` of the connector's server (far in the past if always
    there)."""
    spec = next(t for t in connector.server.tables if t.name == table)
    added = next(c for c in spec.columns if c.name == column).added_on_day
    return -(10**9) if added is None else added


@dataclass
class CompanyState:
    """Everything of the company that carries from one day to the next, one state per domain."""

    crm: CrmState
    shop: ShopState
    campaigns: CampaignState
    browsing: BrowsingState

    @classmethod
    def initial(cls, world: World) -> CompanyState:
        """Before the first simulated day."""
        return cls(
            crm=CrmState.initial(world),
            shop=ShopState.initial(world),
            campaigns=CampaignState.initial(world),
            browsing=BrowsingState.initial(world),
        )


class Company:
    """The simulated retailer, advanced one day at a time by :meth:`run_day` from ``state`` (by default the
    state before the first day); the domains share ``rng``."""

    def __init__(
        self,
        config: SimulationConfig,
        world: World,
        rng: np.random.Generator,
        crm: Connector,
        shop: Connector,
        clicks: ClickstreamWriter,
        state: CompanyState | None = None,
    ) -> None:
        self.config = config
        self.feeds = (crm, shop)
        self.clicks = clicks
        self.people = People.of(world)
        self.state = CompanyState.initial(world) if state is None else state
        self.browsing = Browsing(world, self.people, rng, self.state.browsing, self.state.shop)
        self.crm = Crm(
            world,
            self.people,
            rng,
            self.state.crm,
            _column_added_on(crm, "contacts", "preferred_language"),
        )
        self.campaigns = Campaigns(self.people, rng, self.state.campaigns, self.crm, self.browsing)
        self.shop = Shop(
            config,
            world,
            self.people,
            rng,
            self.state.shop,
            self.browsing,
            self.state.campaigns,
            _column_added_on(shop, "orders", "sales_channel"),
        )

    def day(self, number: int) -> Day:
        """Day ``number`` of the simulation (0 is the first day of the observed window)."""
        return Day(number, self.config.start_us + number * US_PER_DAY, number == -self.config.history_days)

    def simulate_day(self, number: int, recommendations: pl.DataFrame | None = None) -> DayChanges:
        """Advance the state by one day and return what the day produced; the campaign tool executes the
        due ``recommendations`` (see :meth:`Campaigns.execute`; what it did is in ``executions``)."""
        day = self.day(number)
        out = DayChanges()
        # the domains share one random generator: the order of these steps is the order of the draws
        self.shop.reprice(day, out)
        self.crm.step(day, out)
        self.shop.sign_ups(day, out)
        if recommendations is not None:
            out.executions = self.campaigns.execute(day, out, recommendations)
        self.campaigns.step(day, out)
        self.shop.step(day, out)
        if day.observed:
            self.browsing.step(day, out)
        return out

    def run_day(
        self,
        number: int,
        recommendations: pl.DataFrame | None = None,
        crm_changes: dict[str, pl.DataFrame] | None = None,
    ) -> DayChanges:
        """Simulate one day and hand its changes to the feeds, with further ``crm_changes`` of the CRM
        database made by others that day (the rows a reverse-ETL sync wrote); days before 0 only build the
        state that the CDC snapshot captures. Returns the day's changes."""
        out = self.simulate_day(number, recommendations)
        for table, frame in (crm_changes or {}).items():
            out.crm.setdefault(table, []).append(frame)
        observed = self.day(number).observed
        for connector, changes in zip(self.feeds, (out.crm, out.shop), strict=True):
            frames = {}
            for table, parts in changes.items():
                parts = [f for f in parts if f is not None and f.height]
                if parts:
                    frames[table] = pl.concat(parts, how="diagonal_relaxed").sort("_ts", maintain_order=True)
            connector.apply(number, frames, observed)
        if observed:
            parts = [c for c in out.clicks if c is not None and c.height]
            if parts:
                self.clicks.add(pl.concat(parts, how="diagonal_relaxed"))
        return out
