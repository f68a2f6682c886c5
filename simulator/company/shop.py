"""The shop domain: the product catalogue and its prices, customer accounts, orders with their lines, and the
status changes of orders (paid, shipped, delivered, cancelled and sometimes purged, refunded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.company.browsing import Browsing
from simulator.company.campaigns import CampaignState
from simulator.company.common import (
    HOUR_US,
    MINUTE_US,
    WEEKDAY_FACTOR,
    Day,
    DayChanges,
    People,
    constant,
    labels,
    products_by_category,
    stochastic_round,
    times,
)
from simulator.config import US_PER_DAY, SimulationConfig
from simulator.world import World, raw_phone


@dataclass
class ShopState:
    """What carries from day to day in the shop: accounts (arrays indexed by person), prices (indexed by
    product), the orders and lines not purged, the status changes scheduled for later days, and the next
    ids."""

    customer_id: np.ndarray
    """Per person, the shop customer id (-1 without an account)."""
    account_created: np.ndarray
    product_price: np.ndarray
    orders: pl.DataFrame
    order_lines: pl.DataFrame
    scheduled: pl.DataFrame
    """Order status changes due later: ``_ts``, ``order_id``, ``status``, ``purge`` (a delete of the
    order)."""
    next_customer_id: int = 1
    next_order_id: int = 100_001
    next_line_id: int = 1

    @classmethod
    def initial(cls, world: World) -> ShopState:
        """Before the first day: no account, no order, the catalogue's list prices."""
        n = world.persons.height
        return cls(
            customer_id=np.full(n, -1, dtype=np.int64),
            account_created=np.zeros(n, dtype=np.int64),
            product_price=world.products["price_cents"].to_numpy().copy(),
            orders=pl.DataFrame(),
            order_lines=pl.DataFrame(),
            scheduled=pl.DataFrame(
                schema={"_ts": pl.Int64, "order_id": pl.Int64, "status": pl.String, "purge": pl.Boolean}
            ),
        )


class Shop:
    """The shop, advanced one day at a time in three steps (:meth:`reprice`, :meth:`sign_ups`, :meth:`step`)
    around the other domains; purchases respond to the action a person is under (``campaigns``) and send their
    clicks through ``browsing``."""

    def __init__(
        self,
        config: SimulationConfig,
        world: World,
        people: People,
        rng: np.random.Generator,
        state: ShopState,
        browsing: Browsing,
        campaigns: CampaignState,
        sales_channel_from: int,
    ) -> None:
        self.config, self.world, self.people, self.rng, self.state = config, world, people, rng, state
        self.browsing, self.campaigns = browsing, campaigns
        self.sales_channel_from = sales_channel_from
        """The day the ``sales_channel`` column is added to the orders table."""
        self.product_grid = products_by_category(world)

    # -- catalogue ------------------------------------------------------------------------------------------
    def reprice(self, day: Day, out: DayChanges) -> None:
        """The catalogue on the first day; afterwards, each day's price changes."""
        if day.first:
            out.shop["products"].append(self._new_products(day.start))
        else:
            out.shop["products"].append(self._price_changes(day.start))

    def _new_products(self, start: int) -> pl.DataFrame:
        prod = self.world.products
        return pl.DataFrame(
            {
                "_ts": start + prod["product_id"].to_numpy(),
                "_op": "c",
                "product_id": prod["product_id"],
                "sku": prod["sku"],
                "category": prod["category_name"],
                "name": prod["name"],
                "price": prod["price_cents"],
                "updated_at": start + prod["product_id"].to_numpy(),
            }
        )

    def _price_changes(self, start: int) -> pl.DataFrame | None:
        price = self.state.product_price
        changed = np.flatnonzero(self.rng.random(len(price)) < 0.003)
        if not len(changed):
            return None
        price[changed] = np.maximum(
            99, (price[changed] * self.rng.uniform(0.85, 1.15, len(changed))) // 5 * 5 - 1
        )
        rows = self.world.products[changed]
        ts = start + 6 * HOUR_US + changed.astype(np.int64) * 1_000
        return pl.DataFrame(
            {
                "_ts": ts,
                "_op": constant("u", len(changed)),
                "product_id": rows["product_id"],
                "sku": rows["sku"],
                "category": rows["category_name"],
                "name": rows["name"],
                "price": price[changed],
                "updated_at": ts,
            }
        )

    # -- accounts -------------------------------------------------------------------------------------------
    def _customer_rows(self, persons: np.ndarray, ts: np.ndarray, op: str) -> pl.DataFrame:
        profile = self.people.profiles[persons]
        style = self.rng.integers(0, 3, len(persons))
        capitalised = self.rng.random(len(persons)) < 0.2
        email = pl.col("email")
        entered = profile.with_columns(
            pl.Series("style", style), pl.Series("capitalised", capitalised)
        ).select(
            pl.when("capitalised")
            .then(email.str.slice(0, 1).str.to_uppercase() + email.str.slice(1))
            .otherwise(email)
            .alias("email"),
            raw_phone(pl.col("phone_e164"), pl.col("style"), pl.col("country_code")).alias("phone"),
        )
        return pl.concat(
            [
                entered,
                profile.select("first_name", "last_name", "country"),
                pl.DataFrame(
                    {
                        "_ts": ts,
                        "_op": constant(op, len(persons)),
                        "customer_id": self.state.customer_id[persons],
                        "created_at": ts,
                        "updated_at": ts,
                    }
                ),
            ],
            how="horizontal",
        )

    def open_accounts(
        self, persons: np.ndarray, ts: np.ndarray, out: DayChanges, created_at: np.ndarray | None = None
    ) -> None:
        """Open shop accounts (customer rows) for people who have none; a web sign-up aliases the browser."""
        state = self.state
        created_at = ts if created_at is None else created_at
        fresh = state.customer_id[persons] < 0
        persons, first = np.unique(persons[fresh], return_index=True)
        ts, created_at = ts[fresh][first], created_at[fresh][first]
        order = np.argsort(created_at, kind="stable")
        persons, ts, created_at = persons[order], ts[order], created_at[order]
        if not len(persons):
            return
        state.customer_id[persons] = state.next_customer_id + np.arange(len(persons))
        state.account_created[persons] = created_at
        state.next_customer_id += len(persons)
        out.shop["customers"].append(
            self._customer_rows(persons, ts, "c").with_columns(pl.Series("created_at", created_at))
        )
        if ts[0] >= self.config.start_us:
            links = self.browsing.pick_links(persons)
            on_web = ~self.browsing.on_app(links)
            out.clicks.append(self.browsing.click_frame(links[on_web], ts[on_web] - 2_000_000, "alias"))
            out.clicks.append(self.browsing.identify(links, ts))

    def sign_ups(self, day: Day, out: DayChanges) -> None:
        """Accounts opened by people who want one, and profile edits of existing customers."""
        state, people, start = self.state, self.people, day.start
        signing_up = np.flatnonzero(
            people.wants_account & (state.customer_id < 0) & (people.created < day.end)
        )
        created_at = people.created[signing_up] + (self.rng.random(len(signing_up)) * MINUTE_US).astype(
            np.int64
        )
        self.open_accounts(signing_up, np.maximum(created_at, start), out, created_at)
        existing = np.flatnonzero((state.customer_id >= 0) & (people.created < start))
        edited = existing[self.rng.random(len(existing)) < 0.001]
        if len(edited):
            rows = self._customer_rows(edited, times(self.rng, start, len(edited)), "u")
            out.shop["customers"].append(
                rows.with_columns(pl.Series("created_at", state.account_created[edited]))
            )

    # -- orders ---------------------------------------------------------------------------------------------
    def step(self, day: Day, out: DayChanges) -> None:
        """The day's purchases (orders, lines and their clicks), then the order status changes due today."""
        self._purchases(day, out)
        out.shop["orders"].append(self._status_changes(day, out))

    def _purchases(self, day: Day, out: DayChanges) -> None:
        rng, state, people = self.rng, self.state, self.people
        start = day.start
        n = people.count
        exists = people.created < start
        active, action = self.campaigns.action_on(start)
        persons = np.arange(n)
        weekly = people.base_weekly + np.where(active, self.world.uplift[persons, action], 0.0)
        daily = np.clip(weekly, 0.0, 1.0) / 7.0 * WEEKDAY_FACTOR[day.weekday]
        buyers = np.flatnonzero(exists & (rng.random(n) < daily))
        if not len(buyers):
            return
        ts = np.sort(times(rng, start, len(buyers)))
        buyers = buyers[rng.permutation(len(buyers))]
        self.open_accounts(buyers, ts - 5 * MINUTE_US, out)
        act = action[buyers]
        value = (
            people.basket_mean[buyers]
            * self.world.basket_multiplier[buyers, act]
            * rng.lognormal(0, 0.3, len(buyers))
        )
        n_lines = np.clip(stochastic_round(rng, value / 4500.0), 1, 8)
        order_ids = state.next_order_id + np.arange(len(buyers))
        state.next_order_id += len(buyers)
        line_order = np.repeat(np.arange(len(buyers)), n_lines)
        favourite = rng.random(len(line_order)) < 0.6
        category = np.where(
            favourite,
            people.preferred[buyers][line_order],
            rng.integers(0, len(cat.CATEGORIES), len(line_order)),
        )
        product = self.product_grid[category, rng.integers(0, cat.PRODUCTS_PER_CATEGORY, len(line_order))]
        quantity = 1 + (rng.random(len(line_order)) < 0.15).astype(np.int64)
        price = state.product_price[product]
        subtotal = np.bincount(line_order, weights=price * quantity, minlength=len(buyers)).astype(np.int64)
        discount = np.where(act == cat.ACTIONS.index("discount_10"), subtotal // 10, 0)
        discount = np.where((act == cat.ACTIONS.index("loyalty_offer")) & (subtotal >= 3000), 500, discount)
        free = (subtotal >= cat.FREE_SHIPPING_OVER_CENTS) | (act == cat.ACTIONS.index("free_shipping"))
        shipping = np.where(free, 0, cat.SHIPPING_CENTS)
        total = subtotal - discount + shipping
        links = self.browsing.pick_links(buyers)
        channel = self.browsing.on_app(links).astype(np.int64)
        orders = pl.DataFrame(
            {
                "order_id": order_ids,
                "customer_id": state.customer_id[buyers],
                "currency": constant("EUR", len(buyers)),
                "subtotal_amount": subtotal,
                "discount_amount": discount,
                "shipping_amount": shipping,
                "total_amount": total,
                "ordered_on": (ts // US_PER_DAY).astype(np.int32),
                "created_at": ts,
                "sales_channel": labels(
                    np.where(day.number >= self.sales_channel_from, channel, -1), ("web", "app")
                ),
            }
        )
        state.orders = pl.concat([state.orders, orders]) if state.orders.height else orders
        out.shop["orders"].append(
            orders.with_columns(
                pl.col("created_at").alias("_ts"),
                pl.lit("c").alias("_op"),
                pl.lit("pending").alias("status"),
                pl.col("created_at").alias("updated_at"),
            )
        )
        line_ids = state.next_line_id + np.arange(len(line_order))
        state.next_line_id += len(line_order)
        lines = pl.DataFrame(
            {
                "_ts": ts[line_order],
                "_op": constant("c", len(line_order)),
                "line_id": line_ids,
                "order_id": order_ids[line_order],
                "product_id": product + 1,
                "quantity": quantity.astype(np.int32),
                "unit_price": price,
                "created_at": ts[line_order],
            }
        )
        out.shop["order_lines"].append(lines)
        state.order_lines = (
            pl.concat([state.order_lines, lines.drop("_op")])
            if state.order_lines.height
            else lines.drop("_op")
        )
        self._schedule_statuses(order_ids, ts)
        if day.observed:
            out.clicks.append(
                self.browsing.purchase_sessions(
                    buyers, links, ts, order_ids, line_order, product, quantity, total
                )
            )

    def _schedule_statuses(self, order_ids: np.ndarray, ts: np.ndarray) -> None:
        """Paid within minutes; then shipped and delivered, or cancelled (and sometimes purged), or
        refunded."""
        rng = self.rng
        n = len(order_ids)
        paid = ts + (rng.uniform(0.5, 5, n) * MINUTE_US).astype(np.int64)
        cancelled = rng.random(n) < 0.03
        shipped = paid + (rng.uniform(0.4, 2.0, n) * US_PER_DAY).astype(np.int64)
        delivered = shipped + (rng.uniform(1.0, 4.0, n) * US_PER_DAY).astype(np.int64)
        refunded = ~cancelled & (rng.random(n) < 0.04)
        refund_at = delivered + (rng.uniform(2, 14, n) * US_PER_DAY).astype(np.int64)
        cancel_at = paid + (rng.uniform(1, 20, n) * HOUR_US).astype(np.int64)
        purged = cancelled & (rng.random(n) < 0.5)
        events = [
            (paid, np.ones(n, bool), "paid", False),
            (cancel_at, cancelled, "cancelled", False),
            (cancel_at + 3 * US_PER_DAY, purged, "cancelled", True),
            (shipped, ~cancelled, "shipped", False),
            (delivered, ~cancelled, "delivered", False),
            (refund_at, refunded, "refunded", False),
        ]
        frames = [
            pl.DataFrame(
                {
                    "_ts": when[mask],
                    "order_id": order_ids[mask],
                    "status": constant(status, int(mask.sum())),
                    "purge": np.full(mask.sum(), purge),
                }
            )
            for when, mask, status, purge in events
            if mask.any()
        ]
        self.state.scheduled = pl.concat([self.state.scheduled, *frames])

    def _status_changes(self, day: Day, out: DayChanges) -> pl.DataFrame | None:
        """The order updates due before the end of ``day`` (a purge deletes the order and its lines)."""
        state = self.state
        due = state.scheduled.filter(pl.col("_ts") < day.end)
        if due.is_empty():
            return None
        state.scheduled = state.scheduled.filter(pl.col("_ts") >= day.end)
        rows = due.join(state.orders, on="order_id", how="left").with_columns(
            pl.when(pl.col("purge")).then(pl.lit("d")).otherwise(pl.lit("u")).alias("_op"),
            pl.col("_ts").alias("updated_at"),
        )
        purged = rows.filter(pl.col("purge"))
        if purged.height:
            lines = state.order_lines.join(
                purged.select("order_id", pl.col("_ts").alias("_purge_ts")), on="order_id"
            )
            out.shop["order_lines"].append(
                lines.select(pl.col("_purge_ts").alias("_ts"), pl.lit("d").alias("_op"), "line_id")
            )
            state.orders = state.orders.join(purged.select("order_id"), on="order_id", how="anti")
            state.order_lines = state.order_lines.join(purged.select("order_id"), on="order_id", how="anti")
        return rows.drop("purge")
