"""The company's day-to-day state is explicit: a company built from a copy of another's state (and generator)
simulates the same next days, so the simulator can advance day by day from a saved state."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from simulator import SimulationConfig
from simulator.clickstream import ClickstreamWriter
from simulator.company import Company, CompanyState
from simulator.company.common import DayChanges
from simulator.debezium import Connector
from simulator.files import FileWriter
from simulator.tables import crm_server, shop_server
from simulator.world import World, build_world

CONFIG = SimulationConfig(persons=400, days=3, seed=5, history_days=6)


@contextmanager
def _company(
    world: World, rng: np.random.Generator, landing: Path, state: CompanyState | None = None
) -> Iterator[Company]:
    """A company whose feeds write nothing unless a day is run (only :meth:`Company.simulate_day` is used)."""
    writer = FileWriter()
    feed_rng = np.random.default_rng(0)
    crm = Connector(crm_server(CONFIG.days), landing, CONFIG, feed_rng, writer)
    shop = Connector(shop_server(CONFIG.days), landing, CONFIG, feed_rng, writer)
    clicks = ClickstreamWriter(
        landing, CONFIG, feed_rng, writer, world.devices, world.persons, world.products
    )
    try:
        yield Company(CONFIG, world, rng, crm, shop, clicks, state)
    finally:
        for feed in (crm, shop, clicks):
            feed.finish()
        writer.close()


def _frames(changes: DayChanges) -> dict[str, pl.DataFrame]:
    """The day's changes as one frame per table (``crm.contacts``, ...) and one of clicks."""
    out = {}
    for database, tables in (("crm", changes.crm), ("shop", changes.shop)):
        for table, parts in tables.items():
            parts = [p for p in parts if p is not None and p.height]
            out[f"{database}.{table}"] = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
    out["clicks"] = pl.concat([c for c in changes.clicks if c.height], how="diagonal_relaxed")
    return out


def _resumed_rng(rng: np.random.Generator) -> np.random.Generator:
    resumed = np.random.default_rng()
    resumed.bit_generator.state = copy.deepcopy(rng.bit_generator.state)
    return resumed


def test_a_company_resumed_from_a_copy_of_its_state_simulates_the_same_days(tmp_path: Path) -> None:
    world = build_world(CONFIG, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    with _company(world, rng, tmp_path / "a") as original:
        for day in range(-CONFIG.history_days, 1):
            original.simulate_day(day)
        saved = copy.deepcopy(original.state)
        with _company(world, _resumed_rng(rng), tmp_path / "b", saved) as resumed:
            for day in (1, 2):
                expected, got = _frames(original.simulate_day(day)), _frames(resumed.simulate_day(day))
                assert expected.keys() == got.keys()
                for name in expected:
                    assert_frame_equal(got[name], expected[name], check_exact=True)
                # the days are not empty: contacts, campaigns, orders and clicks all happen
                assert all(expected[t].height for t in ("crm.activities", "shop.orders", "clicks")), day
        assert resumed.state is saved and original.state is not saved
        np.testing.assert_array_equal(resumed.state.shop.customer_id, original.state.shop.customer_id)
        np.testing.assert_array_equal(resumed.state.crm.consent, original.state.crm.consent)


def test_the_state_is_what_carries_over(tmp_path: Path) -> None:
    """The same generator without the state (a company that never lived the earlier days) simulates another
    day: the days before matter only through the state."""
    world = build_world(CONFIG, np.random.default_rng(1))
    rng = np.random.default_rng(2)
    with _company(world, rng, tmp_path / "a") as original:
        for day in range(-CONFIG.history_days, 1):
            original.simulate_day(day)
        with _company(world, _resumed_rng(rng), tmp_path / "b") as fresh:
            expected, got = _frames(original.simulate_day(1)), _frames(fresh.simulate_day(1))
    # without the state, nobody is a contact yet (no campaign can target anyone) and every person who wants an
    # account opens it today
    assert expected["crm.activities"].height > 0 and got["crm.activities"].height == 0
    opened = {
        name: int((frames["shop.customers"]["_op"] == "c").sum())
        for name, frames in (("a", expected), ("b", got))
    }
    assert opened["b"] > 10 * max(opened["a"], 1), opened
