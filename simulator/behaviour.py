"""One simulated day of the company: sign-ups, consents, campaigns, purchases and browsing.

:class:`Company` holds what carries from day to day (accounts, consents, active offers, scheduled order status
changes) and turns each day into row changes for the two source databases and click events for the Segment
sources. Every draw is vectorised over people, sessions or events.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.clickstream import ClickstreamWriter
from simulator.config import US_PER_DAY, SimulationConfig
from simulator.debezium import Connector
from simulator.world import World, raw_phone

HOUR_US = 3600 * 1_000_000
MINUTE_US = 60 * 1_000_000
SESSION_HOURS = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.2,
        2.5,
        3.5,
        3.8,
        4,
        4.2,
        4.8,
        4.6,
        4.3,
        4.2,
        4.5,
        5,
        5.8,
        6.8,
        7.4,
        6.6,
        4.4,
        2.2,
    ]
)
SESSION_HOURS = SESSION_HOURS / SESSION_HOURS.sum()
WEEKDAY_FACTOR = np.array([0.95, 0.92, 0.94, 0.98, 1.05, 1.15, 1.12])  # Monday .. Sunday
SESSIONS_PER_DAY = 0.12
"""Browsing sessions per person per day at engagement 1."""
GRANTED, REVOKED = 1, 2
EFFECT_US = 7 * US_PER_DAY
"""How long an action changes a person's purchase probability after it was sent."""
EXPLORATION_SHARE = 0.03
"""Share of the contacts not under an action's effect that the always-on randomised campaign picks each day."""
NO_ACTION = 0
CONTACT_ATTRIBUTES = tuple(
    f'{{"tier":"{tier}","source":"{source}"}}'
    for tier in ("standard", "gold")
    for source in ("signup", "import")
)
"""A contact's ``attributes`` JSON by code: 2 if its person is loyal (gold tier), plus 1 if it was imported."""


def _times(rng: np.random.Generator, day_start: int, n: int) -> np.ndarray:
    """Instants within a day that follow the daily rhythm of the shop's traffic."""
    hours = rng.choice(24, size=n, p=SESSION_HOURS)
    return day_start + hours * HOUR_US + (rng.random(n) * HOUR_US).astype(np.int64)


def _stochastic_round(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    base = np.floor(x)
    return (base + (rng.random(len(x)) < x - base)).astype(np.int64)


def _labels(codes: pl.Series | np.ndarray, values: tuple[str, ...] | pl.Series) -> pl.Series:
    """Strings looked up by code; a negative code gives null."""
    codes = np.asarray(codes)
    labels = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.String)
    out = labels.gather(np.maximum(codes, 0))
    missing = np.flatnonzero(codes < 0)
    return out.scatter(missing, None) if len(missing) else out


def _constant(value: str, n: int) -> pl.Series:
    """``n`` times the string ``value``."""
    return pl.Series([value], dtype=pl.String).new_from_index(0, n)


def _column_added_on(connector: Connector, table: str, column: str) -> int:
    spec = next(t for t in connector.server.tables if t.name == table)
    added = next(c for c in spec.columns if c.name == column).added_on_day
    return -(10**9) if added is None else added


LINKING_EVENTS = ("Email Link Clicked", "Checkout Started")
"""Anonymous events that name a person's identifier: the e-mail activity, the order."""


class Company:
    """The simulated retailer, advanced one day at a time by :meth:`run_day`."""

    def __init__(
        self,
        config: SimulationConfig,
        world: World,
        rng: np.random.Generator,
        crm: Connector,
        shop: Connector,
        clicks: ClickstreamWriter,
    ) -> None:
        self.config, self.world, self.rng = config, world, rng
        self.crm, self.shop, self.clicks = crm, shop, clicks
        p = world.persons
        n = p.height
        self.created = p["created_us"].to_numpy()
        self.base_weekly = p["base_weekly"].to_numpy()
        self.basket_mean = p["basket_mean"].to_numpy()
        self.engagement = p["engagement"].to_numpy()
        self.abandonment = p["abandonment"].to_numpy()
        self.preferred = p["preferred_category"].to_numpy()
        self.wants_account = p["has_account"].to_numpy()
        self.user_ids = p["app_user_id"]
        # what CRM contacts and shop customers copy from their person
        self.profiles = p.select(
            "email",
            "phone_e164",
            pl.col("first_name").str.to_titlecase(),
            pl.col("last_name").str.to_titlecase(),
            pl.col("country").alias("country_code"),
            pl.col("country").replace_strict(
                list(range(len(cat.COUNTRIES))), list(cat.COUNTRIES), return_dtype=pl.String
            ),
        )
        self.loyal = p["loyalty"].to_numpy() > 0.6
        self.country = p["country"].to_numpy()
        self.birth_days = p["birth_days"].to_numpy()
        self.customer_id = np.full(n, -1, dtype=np.int64)
        self.next_customer_id = 1
        self.account_created = np.zeros(n, dtype=np.int64)
        self.active_action = np.zeros(n, dtype=np.int64)
        self.active_until = np.zeros(n, dtype=np.int64)
        self.abandoned_on = np.full(n, -10_000, dtype=np.int64)
        # CRM contacts and their consents per channel
        c = world.contacts
        self.contacts = c.select("contact_id", "email", "phone", pl.col("created_us").alias("created_at"))
        self.contact_id = c["contact_id"].to_numpy()
        self.contact_imported = c["is_duplicate"].to_numpy()
        self.contact_person = c["person"].to_numpy()
        self.contact_created = c["created_us"].to_numpy()
        self.contact_alive = np.zeros(c.height, dtype=bool)
        self.contact_deleted = np.zeros(c.height, dtype=bool)
        self.consent = np.zeros((c.height, len(cat.CONSENT_CHANNELS)), dtype=np.int8)
        self.primary_contact = np.full(n, -1, dtype=np.int64)
        primary = np.flatnonzero(~c["is_duplicate"].to_numpy())
        self.primary_contact[self.contact_person[primary]] = primary
        self.has_app = p["has_app"].to_numpy()
        self.has_phone = p["has_phone"].to_numpy()
        # a person's devices, sampled by weight through one global cumulative array
        links = world.person_devices
        self.link_person = links["person"].to_numpy()
        self.link_device = links["device"].to_numpy()
        share = links.select((pl.col("weight").cum_sum() / pl.col("weight").sum()).over("person")).to_series()
        self.link_cum = self.link_person + share.to_numpy()
        self.link_cum[np.r_[self.link_person[1:] != self.link_person[:-1], True]] = (
            self.link_person[np.r_[self.link_person[1:] != self.link_person[:-1], True]] + 1.0
        )
        self.link_identified = np.zeros(len(links), dtype=bool)
        self.link_evidenced = np.zeros(len(links), dtype=bool)
        """Links (person, device) that some click message ties to an identifier of the person (a signed-in message,
        an e-mail click-through, a checkout naming the order): the only ones identity resolution can find."""
        self.device_is_app = (world.devices["source"] == cat.APP_SOURCE).to_numpy()
        # products, orders and the order status changes scheduled for later days
        self.product_category = world.products["category"].to_numpy()
        self.product_price = world.products["price_cents"].to_numpy().copy()
        self.product_grid = np.stack(
            [np.flatnonzero(self.product_category == k) for k in range(len(cat.CATEGORIES))]
        )
        self.orders = pl.DataFrame()
        self.scheduled = pl.DataFrame(
            schema={"_ts": pl.Int64, "order_id": pl.Int64, "status": pl.String, "purge": pl.Boolean}
        )
        self.order_lines = pl.DataFrame()
        self.next_order_id = 100_001
        self.next_line_id = 1
        self.next_activity_id = 1
        self.language_from = _column_added_on(crm, "contacts", "preferred_language")
        self.sales_channel_from = _column_added_on(shop, "orders", "sales_channel")

    def day_start(self, day: int) -> int:
        return self.config.start_us + day * US_PER_DAY

    def pick_links(self, persons: np.ndarray) -> np.ndarray:
        """One device link (a row of ``person_devices``) per requested person, drawn by device weight."""
        draw = np.maximum(self.rng.random(len(persons)), 1e-12)
        return np.searchsorted(self.link_cum, persons + draw, side="left")

    # -- the day ------------------------------------------------------------------------------------------
    def run_day(self, day: int) -> None:
        """Simulate one day; days before 0 only build the state that the CDC snapshot captures."""
        emit = day >= 0
        start = self.day_start(day)
        end = start + US_PER_DAY
        crm: dict[str, list[pl.DataFrame]] = {"contacts": [], "consents": [], "activities": []}
        shop: dict[str, list[pl.DataFrame]] = {
            "products": [],
            "customers": [],
            "orders": [],
            "order_lines": [],
        }
        clicks: list[pl.DataFrame] = []
        if day == -self.config.history_days:
            shop["products"].append(self._new_products(start))
        else:
            shop["products"].append(self._price_changes(start))
        self._contacts_day(day, start, end, crm)
        self._accounts_day(start, end, shop, clicks)
        self._campaigns_day(day, start, crm, clicks)
        self._purchases_day(day, start, shop, clicks)
        shop["orders"].append(self._status_changes(day, end, shop))
        if emit:
            clicks.append(self._browsing_day(day, start))
        for connector, changes in ((self.crm, crm), (self.shop, shop)):
            frames = {}
            for table, parts in changes.items():
                parts = [f for f in parts if f is not None and f.height]
                if parts:
                    frames[table] = pl.concat(parts, how="diagonal_relaxed").sort("_ts", maintain_order=True)
            connector.apply(day, frames, emit)
        if emit:
            parts = [c for c in clicks if c is not None and c.height]
            if parts:
                self.clicks.add(pl.concat(parts, how="diagonal_relaxed"))

    # -- CRM ----------------------------------------------------------------------------------------------
    def _contact_rows(self, idx: np.ndarray, ts: np.ndarray, op: str, day: int) -> pl.DataFrame:
        persons = self.contact_person[idx]
        profile = self.profiles[persons]
        n = len(idx)
        if day < self.language_from:
            language = pl.Series([None] * n, dtype=pl.String)
        else:
            language = _labels(self.country[persons], cat.LANGUAGES)
        birth = self.birth_days[persons].astype(np.float64)
        birth[self.contact_id[idx] % 3 == 0] = np.nan
        return pl.concat(
            [
                self.contacts[idx],
                pl.DataFrame(
                    {
                        "_ts": ts,
                        "_op": _constant(op, n),
                        "first_name": profile["first_name"],
                        "last_name": profile["last_name"],
                        "country": profile["country"],
                        "birth_date": pl.Series(birth, nan_to_null=True).cast(pl.Int32),
                        "attributes": _labels(
                            2 * self.loyal[persons] + self.contact_imported[idx], CONTACT_ATTRIBUTES
                        ),
                        "updated_at": ts,
                        "preferred_language": language,
                    }
                ),
            ],
            how="horizontal",
        )

    def _consent_rows(
        self, contacts: np.ndarray, channels: np.ndarray, ts: np.ndarray, op: str
    ) -> pl.DataFrame:
        status = self.consent[contacts, channels]
        return pl.DataFrame(
            {
                "_ts": ts,
                "_op": _constant(op, len(contacts)),
                "consent_id": (contacts * len(cat.CONSENT_CHANNELS) + channels + 1).astype(np.int64),
                "contact_id": self.contact_id[contacts],
                "channel": _labels(channels, cat.CONSENT_CHANNELS),
                "status": _labels(np.where(status == GRANTED, 0, 1), ("granted", "revoked")),
                "source": _constant("signup" if op == "c" else "preference_center", len(contacts)),
                "updated_at": ts,
            }
        )

    def _contacts_day(self, day: int, start: int, end: int, out: dict) -> None:
        rng = self.rng
        since = start if day > -self.config.history_days else np.iinfo(np.int64).min
        new = np.flatnonzero((self.contact_created >= since) & (self.contact_created < end))
        if len(new):
            self.contact_alive[new] = True
            new_ts = np.maximum(self.contact_created[new], start)
            out["contacts"].append(self._contact_rows(new, new_ts, "c", day))
            persons = self.contact_person[new]
            wants = np.stack(
                [
                    rng.random(len(new)) < 0.7,
                    self.has_phone[persons] & (rng.random(len(new)) < 0.4),
                    self.has_app[persons] & (rng.random(len(new)) < 0.6),
                    rng.random(len(new)) >= cat.PROFILING_OBJECTION_SHARE,
                ],
                axis=1,
            )
            asked = np.stack(
                [
                    np.ones(len(new), bool),
                    self.has_phone[persons],
                    self.has_app[persons],
                    np.ones(len(new), bool),
                ],
                axis=1,
            )
            for ch in range(len(cat.CONSENT_CHANNELS)):
                rows = new[asked[:, ch]]
                self.consent[rows, ch] = np.where(wants[asked[:, ch], ch], GRANTED, REVOKED)
                ts = np.maximum(self.contact_created[rows], start) + 1_000 * (ch + 1)
                out["consents"].append(self._consent_rows(rows, np.full(len(rows), ch), ts, "c"))
        alive = np.flatnonzero(self.contact_alive & (self.contact_created < start))
        # preference-centre changes: revoke a granted channel or grant a revoked one
        has = self.consent[alive] > 0
        flip_p = np.where(self.consent[alive] == GRANTED, 0.002, 0.001)
        flips = has & (rng.random(has.shape) < flip_p)
        rows, chans = np.nonzero(flips)
        if len(rows):
            contacts = alive[rows]
            self.consent[contacts, chans] = np.where(
                self.consent[contacts, chans] == GRANTED, REVOKED, GRANTED
            )
            out["consents"].append(self._consent_rows(contacts, chans, _times(rng, start, len(rows)), "u"))
        # profile edits, deletions (with their consents) and restores of deleted contacts
        edited = alive[rng.random(len(alive)) < 0.003]
        if len(edited):
            out["contacts"].append(self._contact_rows(edited, _times(rng, start, len(edited)), "u", day))
        deleted = alive[rng.random(len(alive)) < 0.0003]
        # a row changed earlier today is not deleted today: no change event may follow a delete the same day
        touched = np.concatenate([edited, alive[rows]]) if len(rows) else edited
        deleted = deleted[~np.isin(deleted, touched)]
        if len(deleted):
            ts = _times(rng, start, len(deleted))
            out["contacts"].append(
                pl.DataFrame(
                    {"_ts": ts, "_op": _constant("d", len(deleted)), "contact_id": self.contact_id[deleted]}
                )
            )
            rows, chans = np.nonzero(self.consent[deleted] > 0)
            out["consents"].append(self._consent_rows(deleted[rows], chans, ts[rows], "d"))
            self.consent[deleted] = 0
            self.contact_alive[deleted] = False
            self.contact_deleted[deleted] = True
        gone = np.flatnonzero(self.contact_deleted & ~np.isin(np.arange(len(self.contact_alive)), deleted))
        restored = gone[rng.random(len(gone)) < 0.05]
        if len(restored):
            self.contact_alive[restored] = True
            self.contact_deleted[restored] = False
            out["contacts"].append(self._contact_rows(restored, _times(rng, start, len(restored)), "c", day))

    # -- shop accounts --------------------------------------------------------------------------------------
    def _customer_rows(self, persons: np.ndarray, ts: np.ndarray, op: str) -> pl.DataFrame:
        profile = self.profiles[persons]
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
                        "_op": _constant(op, len(persons)),
                        "customer_id": self.customer_id[persons],
                        "created_at": ts,
                        "updated_at": ts,
                    }
                ),
            ],
            how="horizontal",
        )

    def open_accounts(
        self,
        persons: np.ndarray,
        ts: np.ndarray,
        shop: dict,
        clicks: list,
        created_at: np.ndarray | None = None,
    ) -> None:
        """Open shop accounts (customer rows) for people who have none; a web sign-up aliases the browser."""
        created_at = ts if created_at is None else created_at
        fresh = self.customer_id[persons] < 0
        persons, first = np.unique(persons[fresh], return_index=True)
        ts, created_at = ts[fresh][first], created_at[fresh][first]
        order = np.argsort(created_at, kind="stable")
        persons, ts, created_at = persons[order], ts[order], created_at[order]
        if not len(persons):
            return
        self.customer_id[persons] = self.next_customer_id + np.arange(len(persons))
        self.account_created[persons] = created_at
        self.next_customer_id += len(persons)
        shop["customers"].append(
            self._customer_rows(persons, ts, "c").with_columns(pl.Series("created_at", created_at))
        )
        if ts[0] >= self.config.start_us:
            links = self.pick_links(persons)
            on_web = ~self.device_is_app[self.link_device[links]]
            clicks.append(self._click_frame(links[on_web], ts[on_web] - 2_000_000, "alias"))
            clicks.append(self._identify(links, ts))

    def _accounts_day(self, start: int, end: int, shop: dict, clicks: list) -> None:
        signing_up = np.flatnonzero(self.wants_account & (self.customer_id < 0) & (self.created < end))
        created_at = self.created[signing_up] + (self.rng.random(len(signing_up)) * MINUTE_US).astype(
            np.int64
        )
        self.open_accounts(signing_up, np.maximum(created_at, start), shop, clicks, created_at)
        existing = np.flatnonzero((self.customer_id >= 0) & (self.created < start))
        edited = existing[self.rng.random(len(existing)) < 0.001]
        if len(edited):
            rows = self._customer_rows(edited, _times(self.rng, start, len(edited)), "u")
            shop["customers"].append(rows.with_columns(pl.Series("created_at", self.account_created[edited])))

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

    def _price_changes(self, start: int) -> pl.DataFrame:
        changed = np.flatnonzero(self.rng.random(len(self.product_price)) < 0.003)
        if not len(changed):
            return None
        self.product_price[changed] = np.maximum(
            99, (self.product_price[changed] * self.rng.uniform(0.85, 1.15, len(changed))) // 5 * 5 - 1
        )
        rows = self.world.products[changed]
        ts = start + 6 * HOUR_US + changed.astype(np.int64) * 1_000
        return pl.DataFrame(
            {
                "_ts": ts,
                "_op": _constant("u", len(changed)),
                "product_id": rows["product_id"],
                "sku": rows["sku"],
                "category": rows["category_name"],
                "name": rows["name"],
                "price": self.product_price[changed],
                "updated_at": ts,
            }
        )

    # -- campaigns ------------------------------------------------------------------------------------------
    def _campaigns_day(self, day: int, start: int, crm: dict, clicks: list) -> None:
        """The always-on randomised campaign and the daily rule-based cart reminders."""
        rng = self.rng
        decisions = []
        # a random share of the contacts whose person is under no action's effect gets an action drawn
        # uniformly (no_action included), through a channel drawn uniformly among the consented ones
        eligible = np.flatnonzero(
            self.contact_alive
            & (self.contact_created < start)
            & (self.active_until[self.contact_person] <= start)
        )
        chosen = eligible[rng.random(len(eligible)) < EXPLORATION_SHARE]
        granted = self.consent[chosen, : len(cat.CHANNELS)] == GRANTED
        granted[:, 2] &= self.has_app[self.contact_person[chosen]]
        n_channels = granted.sum(axis=1)
        action = np.where(n_channels > 0, rng.integers(0, len(cat.ACTIONS), len(chosen)), NO_ACTION)
        # channel: uniform among the granted ones
        pick = (rng.random(len(chosen)) * np.maximum(n_channels, 1)).astype(np.int64)
        channel = np.argmax(np.cumsum(granted, axis=1) > pick[:, None], axis=1)
        channel = np.where(action == NO_ACTION, -1, channel)
        propensity = np.where(n_channels > 0, 1.0 / len(cat.ACTIONS), 1.0)
        propensity = np.where(action == NO_ACTION, propensity, propensity / np.maximum(n_channels, 1))
        ts = start + 10 * HOUR_US + (rng.random(len(chosen)) * 2 * HOUR_US).astype(np.int64)
        label = (date(1970, 1, 1) + timedelta(microseconds=start)).isoformat()
        decisions.append((chosen, action, channel, propensity, ts, f"explore-{label}"))
        # cart reminders to yesterday's abandoners who accept e-mail, 80% of them (the rest is a holdout)
        persons = np.flatnonzero(self.abandoned_on == day - 1)
        contacts = self.primary_contact[persons]
        ok = contacts >= 0
        contacts = contacts[ok]
        ok = self.contact_alive[contacts] & (self.consent[contacts, 0] == GRANTED)
        contacts = contacts[ok]
        contacts = contacts[rng.random(len(contacts)) < 0.8]
        if len(contacts):
            n = len(contacts)
            decisions.append(
                (
                    contacts,
                    np.full(n, cat.ACTIONS.index("cart_reminder")),
                    np.zeros(n, np.int64),
                    np.full(n, 0.8),
                    start + 9 * HOUR_US + (rng.random(n) * HOUR_US).astype(np.int64),
                    "bau-cart-reminder",
                )
            )
        for contacts, action, channel, propensity, ts, campaign in decisions:
            if not len(contacts):
                continue
            ids = self.next_activity_id + np.arange(len(contacts))
            self.next_activity_id += len(contacts)
            offer = np.asarray([cat.OFFER_VALUE_CENTS[a] for a in cat.ACTIONS])[action]
            crm["activities"].append(
                pl.DataFrame(
                    {
                        "_ts": ts,
                        "_op": _constant("c", len(contacts)),
                        "activity_id": ids,
                        "contact_id": self.contact_id[contacts],
                        "campaign_id": _constant(campaign, len(contacts)),
                        "activity_type": _labels(
                            (action == NO_ACTION).astype(np.int64), ("campaign_touch", "control")
                        ),
                        "action": _labels(action, cat.ACTIONS),
                        "channel": _labels(channel, cat.CHANNELS),
                        "propensity": propensity,
                        "offer_value": offer,
                        "sent_at": ts,
                    }
                )
            )
            treated = action != NO_ACTION
            persons = self.contact_person[contacts[treated]]
            self.active_action[persons] = action[treated]
            self.active_until[persons] = ts[treated] + EFFECT_US
            if day >= 0:
                emailed = treated & (channel == 0)
                who = self.contact_person[contacts[emailed]]
                clicked = rng.random(len(who)) < 0.04 + 0.08 * np.clip(self.engagement[who] / 2, 0, 1)
                when = ts[emailed][clicked] + (rng.exponential(3 * HOUR_US, clicked.sum())).astype(np.int64)
                clicks.append(
                    self._click_frame(
                        self.pick_links(who[clicked]),
                        when,
                        "track",
                        "Email Link Clicked",
                        campaign_id=_constant(campaign, int(clicked.sum())),
                        activity_id=ids[emailed][clicked],
                    )
                )

    # -- purchases ------------------------------------------------------------------------------------------
    def _purchases_day(self, day: int, start: int, shop: dict, clicks: list) -> None:
        rng = self.rng
        n = len(self.created)
        exists = self.created < start
        active = self.active_until > start
        action = np.where(active, self.active_action, NO_ACTION)
        people = np.arange(n)
        weekly = self.base_weekly + np.where(active, self.world.uplift[people, action], 0.0)
        weekday = (date(1970, 1, 1) + timedelta(microseconds=start)).weekday()
        daily = np.clip(weekly, 0.0, 1.0) / 7.0 * WEEKDAY_FACTOR[weekday]
        buyers = np.flatnonzero(exists & (rng.random(n) < daily))
        if not len(buyers):
            return
        ts = np.sort(_times(rng, start, len(buyers)))
        buyers = buyers[rng.permutation(len(buyers))]
        self.open_accounts(buyers, ts - 5 * MINUTE_US, shop, clicks)
        act = action[buyers]
        value = (
            self.basket_mean[buyers]
            * self.world.basket_multiplier[buyers, act]
            * rng.lognormal(0, 0.3, len(buyers))
        )
        n_lines = np.clip(_stochastic_round(rng, value / 4500.0), 1, 8)
        order_ids = self.next_order_id + np.arange(len(buyers))
        self.next_order_id += len(buyers)
        line_order = np.repeat(np.arange(len(buyers)), n_lines)
        favourite = rng.random(len(line_order)) < 0.6
        category = np.where(
            favourite,
            self.preferred[buyers][line_order],
            rng.integers(0, len(cat.CATEGORIES), len(line_order)),
        )
        product = self.product_grid[category, rng.integers(0, cat.PRODUCTS_PER_CATEGORY, len(line_order))]
        quantity = 1 + (rng.random(len(line_order)) < 0.15).astype(np.int64)
        price = self.product_price[product]
        subtotal = np.bincount(line_order, weights=price * quantity, minlength=len(buyers)).astype(np.int64)
        discount = np.where(act == cat.ACTIONS.index("discount_10"), subtotal // 10, 0)
        discount = np.where((act == cat.ACTIONS.index("loyalty_offer")) & (subtotal >= 3000), 500, discount)
        free = (subtotal >= cat.FREE_SHIPPING_OVER_CENTS) | (act == cat.ACTIONS.index("free_shipping"))
        shipping = np.where(free, 0, cat.SHIPPING_CENTS)
        total = subtotal - discount + shipping
        links = self.pick_links(buyers)
        channel = self.device_is_app[self.link_device[links]].astype(np.int64)
        orders = pl.DataFrame(
            {
                "order_id": order_ids,
                "customer_id": self.customer_id[buyers],
                "currency": _constant("EUR", len(buyers)),
                "subtotal_amount": subtotal,
                "discount_amount": discount,
                "shipping_amount": shipping,
                "total_amount": total,
                "ordered_on": (ts // US_PER_DAY).astype(np.int32),
                "created_at": ts,
                "sales_channel": _labels(
                    np.where(day >= self.sales_channel_from, channel, -1), ("web", "app")
                ),
            }
        )
        self.orders = pl.concat([self.orders, orders]) if self.orders.height else orders
        shop["orders"].append(
            orders.with_columns(
                pl.col("created_at").alias("_ts"),
                pl.lit("c").alias("_op"),
                pl.lit("pending").alias("status"),
                pl.col("created_at").alias("updated_at"),
            )
        )
        line_ids = self.next_line_id + np.arange(len(line_order))
        self.next_line_id += len(line_order)
        lines = pl.DataFrame(
            {
                "_ts": ts[line_order],
                "_op": _constant("c", len(line_order)),
                "line_id": line_ids,
                "order_id": order_ids[line_order],
                "product_id": product + 1,
                "quantity": quantity.astype(np.int32),
                "unit_price": price,
                "created_at": ts[line_order],
            }
        )
        shop["order_lines"].append(lines)
        self.order_lines = (
            pl.concat([self.order_lines, lines.drop("_op")]) if self.order_lines.height else lines.drop("_op")
        )
        self._schedule_statuses(order_ids, ts)
        if day >= 0:
            clicks.append(
                self._purchase_sessions(buyers, links, ts, order_ids, line_order, product, quantity, total)
            )

    def _schedule_statuses(self, order_ids: np.ndarray, ts: np.ndarray) -> None:
        """Paid within minutes; then shipped and delivered, or cancelled (and sometimes purged), or refunded."""
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
                    "status": _constant(status, int(mask.sum())),
                    "purge": np.full(mask.sum(), purge),
                }
            )
            for when, mask, status, purge in events
            if mask.any()
        ]
        self.scheduled = pl.concat([self.scheduled, *frames])

    def _status_changes(self, day: int, end: int, shop: dict) -> pl.DataFrame | None:
        due = self.scheduled.filter(pl.col("_ts") < end)
        if due.is_empty():
            return None
        self.scheduled = self.scheduled.filter(pl.col("_ts") >= end)
        rows = due.join(self.orders, on="order_id", how="left").with_columns(
            pl.when(pl.col("purge")).then(pl.lit("d")).otherwise(pl.lit("u")).alias("_op"),
            pl.col("_ts").alias("updated_at"),
        )
        purged = rows.filter(pl.col("purge"))
        if purged.height:
            lines = self.order_lines.join(
                purged.select("order_id", pl.col("_ts").alias("_purge_ts")), on="order_id"
            )
            shop["order_lines"].append(
                lines.select(pl.col("_purge_ts").alias("_ts"), pl.lit("d").alias("_op"), "line_id")
            )
            self.orders = self.orders.join(purged.select("order_id"), on="order_id", how="anti")
            self.order_lines = self.order_lines.join(purged.select("order_id"), on="order_id", how="anti")
        return rows.drop("purge")

    # -- clickstream ------------------------------------------------------------------------------------------
    def _click_frame(
        self,
        links: np.ndarray,
        ts: np.ndarray,
        kind: str | pl.Series,
        name: str | pl.Series | None = None,
        signed_in: np.ndarray | None = None,
        **columns: pl.Series | np.ndarray,
    ) -> pl.DataFrame:
        """Click events on the given device links at the given true times, of one kind and name (``name``
        defaults to the kind) or one per event, and further ``columns``. Events carry the person's user id
        when they are ``signed_in`` (by default: when the person has a shop account)."""
        persons = self.link_person[links]
        if signed_in is None:
            signed_in = self.customer_id[persons] >= 0
        name = kind if name is None else name
        if "source" not in columns:  # a device's message (the server's carry no anonymous id)
            linking = isinstance(name, str) and name in LINKING_EVENTS
            self.link_evidenced[links if linking else links[signed_in]] = True
        n = len(links)
        return pl.DataFrame(
            {
                "ts": ts.astype(np.int64),
                "device": self.link_device[links],
                "person": persons,
                "user_id": _labels(np.where(signed_in, persons, -1), self.user_ids),
                "type": _constant(kind, n) if isinstance(kind, str) else kind,
                "name": _constant(name, n) if isinstance(name, str) else name,
                **columns,
            }
        )

    def _identify(self, links: np.ndarray, ts: np.ndarray) -> pl.DataFrame:
        self.link_identified[links] = True
        persons = self.link_person[links]
        return self._click_frame(
            links, ts, "identify", signed_in=np.ones(len(links), dtype=bool), trait_person=persons
        )

    def _sessions(
        self, persons: np.ndarray, links: np.ndarray, start: np.ndarray, n_events: np.ndarray
    ) -> tuple[pl.DataFrame, np.ndarray]:
        """Page or screen views and product views of sessions; logged-in devices identify first."""
        rng = self.rng
        logged_in = (self.customer_id[persons] >= 0) & (
            rng.random(len(persons)) < np.where(self.device_is_app[self.link_device[links]], 0.9, 0.5)
        )
        first_time = logged_in & ~self.link_identified[links]
        again = logged_in & (rng.random(len(persons)) < 0.05)
        ident = first_time | again
        frames = [self._identify(links[ident], start[ident] - 1_000_000)] if ident.any() else []
        session = np.repeat(np.arange(len(persons)), n_events)
        gap = rng.exponential(40 * 1_000_000, len(session)).astype(np.int64) + 2_000_000
        first_of = np.cumsum(n_events) - n_events
        offset = np.cumsum(gap) - np.repeat(np.cumsum(gap)[first_of] - gap[first_of], n_events)
        ts = start[session] + offset
        is_product = rng.random(len(session)) < 0.45
        favourite = rng.random(len(session)) < 0.6
        category = np.where(
            favourite, self.preferred[persons[session]], rng.integers(0, len(cat.CATEGORIES), len(session))
        )
        product = self.product_grid[category, rng.integers(0, cat.PRODUCTS_PER_CATEGORY, len(session))]
        app = self.device_is_app[self.link_device[links[session]]]
        page = rng.integers(0, len(cat.WEB_PAGES), len(session))
        screen = rng.integers(0, len(cat.APP_SCREENS), len(session))
        # a view is a tracked product view, an app screen or a web page
        kind = np.where(is_product, 0, np.where(app, 1, 2))
        name = np.where(kind == 0, 0, np.where(kind == 1, 1 + screen, 1 + len(cat.APP_SCREENS) + page))
        frames.append(
            self._click_frame(
                links[session],
                ts,
                _labels(kind, ("track", "screen", "page")),
                _labels(name, ("Product Viewed", *cat.APP_SCREENS, *cat.WEB_PAGES)),
                signed_in=logged_in[session],
                product_id=pl.Series(product + 1).scatter(np.flatnonzero(~is_product), None),
            )
        )
        return pl.concat(frames, how="diagonal_relaxed"), logged_in

    def _browsing_day(self, day: int, start: int) -> pl.DataFrame:
        rng = self.rng
        n = len(self.created)
        weekday = (date(1970, 1, 1) + timedelta(microseconds=start)).weekday()
        rate = SESSIONS_PER_DAY * self.engagement * WEEKDAY_FACTOR[weekday] * (self.created < start)
        count = rng.poisson(rate)
        persons = np.repeat(np.arange(n), count)
        starts = _times(rng, start, len(persons))
        links = self.pick_links(persons)
        n_events = 1 + rng.poisson(3.0, len(persons))
        views, logged_in = self._sessions(persons, links, starts, n_events)
        # some sessions put a product in the cart and leave: an abandoned cart
        carted = rng.random(len(persons)) < 0.1 + 0.3 * self.abandonment[persons]
        self.abandoned_on[persons[carted]] = day
        category = self.preferred[persons[carted]]
        product = self.product_grid[category, rng.integers(0, cat.PRODUCTS_PER_CATEGORY, carted.sum())]
        end_of = starts[carted] + (n_events[carted] + 1) * 45 * 1_000_000
        added = self._click_frame(
            links[carted],
            end_of,
            "track",
            "Product Added",
            signed_in=logged_in[carted],
            product_id=product + 1,
            quantity=np.ones(carted.sum(), dtype=np.int64),
        )
        return pl.concat([views, added], how="diagonal_relaxed")

    def _purchase_sessions(
        self, buyers, links, ts, order_ids, line_order, product, quantity, total
    ) -> pl.DataFrame:
        """The clicks of a purchase: views, one add per order line, checkout, and the server's Order Completed."""
        rng = self.rng
        n_views = 2 + rng.poisson(2.0, len(buyers))
        lead = (n_views + np.bincount(line_order, minlength=len(buyers)) + 2) * 50 * 1_000_000
        start = ts - lead
        views, _ = self._sessions(buyers, links, start, n_views)
        self.link_identified[links] = True
        line_ts = ts[line_order] - lead[line_order] // 2 + np.arange(len(line_order)) * 1_000_000
        adds = self._click_frame(
            links[line_order], line_ts, "track", "Product Added", product_id=product + 1, quantity=quantity
        )
        checkout = self._click_frame(
            links, ts - 30 * 1_000_000, "track", "Checkout Started", order_id=order_ids, value_cents=total
        )
        completed = self._click_frame(
            links,
            ts,
            "track",
            "Order Completed",
            signed_in=np.ones(len(links), dtype=bool),
            order_id=order_ids,
            value_cents=total,
            source=_constant(cat.SERVER_SOURCE, len(links)),
        )
        return pl.concat([views, adds, checkout, completed], how="diagonal_relaxed")
