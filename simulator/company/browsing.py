"""The browsing domain: people's devices, their sessions (page, screen and product views, abandoned carts)
and the click events every other domain sends through them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.company.common import (
    WEEKDAY_FACTOR,
    Day,
    DayChanges,
    People,
    constant,
    labels,
    products_by_category,
    times,
)
from simulator.world import World

if TYPE_CHECKING:
    from simulator.company.shop import ShopState

SESSIONS_PER_DAY = 0.12
"""Browsing sessions per person per day at engagement 1."""
LINKING_EVENTS = ("Email Link Clicked", "Checkout Started")
"""Anonymous events that name a person's identifier: the e-mail activity, the order."""


@dataclass
class BrowsingState:
    """What carries from day to day in browsing (arrays indexed by device link, a row of ``person_devices``,
    or by person)."""

    identified: np.ndarray
    """Links on which the person has signed in (an identify message was sent)."""
    evidenced: np.ndarray
    """Links (person, device) that some click message ties to an identifier of the person (a signed-in
    message, an e-mail click-through, a checkout naming the order): the only ones identity resolution can
    find."""
    abandoned_on: np.ndarray
    """Per person, the last day a session left a product in the cart."""

    @classmethod
    def initial(cls, world: World) -> BrowsingState:
        """Before the first day: no device identified, no cart abandoned."""
        links = world.person_devices.height
        return cls(
            identified=np.zeros(links, dtype=bool),
            evidenced=np.zeros(links, dtype=bool),
            abandoned_on=np.full(world.persons.height, -10_000, dtype=np.int64),
        )


class Browsing:
    """Sessions on people's devices, advanced one day at a time by :meth:`step`; the other domains send their
    click events through :meth:`click_frame`. A person is signed in when they have a shop account
    (``accounts``)."""

    def __init__(
        self,
        world: World,
        people: People,
        rng: np.random.Generator,
        state: BrowsingState,
        accounts: ShopState,
    ) -> None:
        self.people, self.rng, self.state, self.accounts = people, rng, state, accounts
        # a person's devices, sampled by weight through one global cumulative array
        links = world.person_devices
        self.link_person = links["person"].to_numpy()
        self.link_device = links["device"].to_numpy()
        share = links.select((pl.col("weight").cum_sum() / pl.col("weight").sum()).over("person")).to_series()
        self.link_cum = self.link_person + share.to_numpy()
        self.link_cum[np.r_[self.link_person[1:] != self.link_person[:-1], True]] = (
            self.link_person[np.r_[self.link_person[1:] != self.link_person[:-1], True]] + 1.0
        )
        self.device_is_app = (world.devices["source"] == cat.APP_SOURCE).to_numpy()
        self.product_grid = products_by_category(world)

    def pick_links(self, persons: np.ndarray) -> np.ndarray:
        """One device link (a row of ``person_devices``) per requested person, drawn by device weight."""
        draw = np.maximum(self.rng.random(len(persons)), 1e-12)
        return np.searchsorted(self.link_cum, persons + draw, side="left")

    def on_app(self, links: np.ndarray) -> np.ndarray:
        """Whether each link's device is a phone app (else a web browser)."""
        return self.device_is_app[self.link_device[links]]

    def click_frame(
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
            signed_in = self.accounts.customer_id[persons] >= 0
        name = kind if name is None else name
        if "source" not in columns:  # a device's message (the server's carry no anonymous id)
            linking = isinstance(name, str) and name in LINKING_EVENTS
            self.state.evidenced[links if linking else links[signed_in]] = True
        n = len(links)
        return pl.DataFrame(
            {
                "ts": ts.astype(np.int64),
                "device": self.link_device[links],
                "person": persons,
                "user_id": labels(np.where(signed_in, persons, -1), self.people.user_ids),
                "type": constant(kind, n) if isinstance(kind, str) else kind,
                "name": constant(name, n) if isinstance(name, str) else name,
                **columns,
            }
        )

    def identify(self, links: np.ndarray, ts: np.ndarray) -> pl.DataFrame:
        """Identify messages: the person signs in on these device links."""
        self.state.identified[links] = True
        persons = self.link_person[links]
        return self.click_frame(
            links, ts, "identify", signed_in=np.ones(len(links), dtype=bool), trait_person=persons
        )

    def sessions(
        self, persons: np.ndarray, links: np.ndarray, start: np.ndarray, n_events: np.ndarray
    ) -> tuple[pl.DataFrame, np.ndarray]:
        """Page or screen views and product views of sessions; logged-in devices identify first."""
        rng = self.rng
        logged_in = (self.accounts.customer_id[persons] >= 0) & (
            rng.random(len(persons)) < np.where(self.on_app(links), 0.9, 0.5)
        )
        first_time = logged_in & ~self.state.identified[links]
        again = logged_in & (rng.random(len(persons)) < 0.05)
        ident = first_time | again
        frames = [self.identify(links[ident], start[ident] - 1_000_000)] if ident.any() else []
        session = np.repeat(np.arange(len(persons)), n_events)
        gap = rng.exponential(40 * 1_000_000, len(session)).astype(np.int64) + 2_000_000
        first_of = np.cumsum(n_events) - n_events
        offset = np.cumsum(gap) - np.repeat(np.cumsum(gap)[first_of] - gap[first_of], n_events)
        ts = start[session] + offset
        is_product = rng.random(len(session)) < 0.45
        favourite = rng.random(len(session)) < 0.6
        category = np.where(
            favourite,
            self.people.preferred[persons[session]],
            rng.integers(0, len(cat.CATEGORIES), len(session)),
        )
        product = self.product_grid[category, rng.integers(0, cat.PRODUCTS_PER_CATEGORY, len(session))]
        app = self.on_app(links[session])
        page = rng.integers(0, len(cat.WEB_PAGES), len(session))
        screen = rng.integers(0, len(cat.APP_SCREENS), len(session))
        # a view is a tracked product view, an app screen or a web page
        kind = np.where(is_product, 0, np.where(app, 1, 2))
        name = np.where(kind == 0, 0, np.where(kind == 1, 1 + screen, 1 + len(cat.APP_SCREENS) + page))
        frames.append(
            self.click_frame(
                links[session],
                ts,
                labels(kind, ("track", "screen", "page")),
                labels(name, ("Product Viewed", *cat.APP_SCREENS, *cat.WEB_PAGES)),
                signed_in=logged_in[session],
                product_id=pl.Series(product + 1).scatter(np.flatnonzero(~is_product), None),
            )
        )
        return pl.concat(frames, how="diagonal_relaxed"), logged_in

    def step(self, day: Day, out: DayChanges) -> None:
        """One day of browsing sessions; some put a product in the cart and leave (an abandoned cart)."""
        rng, people = self.rng, self.people
        start = day.start
        rate = SESSIONS_PER_DAY * people.engagement * WEEKDAY_FACTOR[day.weekday] * (people.created < start)
        count = rng.poisson(rate)
        persons = np.repeat(np.arange(people.count), count)
        starts = times(rng, start, len(persons))
        links = self.pick_links(persons)
        n_events = 1 + rng.poisson(3.0, len(persons))
        views, logged_in = self.sessions(persons, links, starts, n_events)
        carted = rng.random(len(persons)) < 0.1 + 0.3 * people.abandonment[persons]
        self.state.abandoned_on[persons[carted]] = day.number
        category = people.preferred[persons[carted]]
        product = self.product_grid[category, rng.integers(0, cat.PRODUCTS_PER_CATEGORY, carted.sum())]
        end_of = starts[carted] + (n_events[carted] + 1) * 45 * 1_000_000
        added = self.click_frame(
            links[carted],
            end_of,
            "track",
            "Product Added",
            signed_in=logged_in[carted],
            product_id=product + 1,
            quantity=np.ones(carted.sum(), dtype=np.int64),
        )
        out.clicks.append(pl.concat([views, added], how="diagonal_relaxed"))

    def purchase_sessions(
        self,
        buyers: np.ndarray,
        links: np.ndarray,
        ts: np.ndarray,
        order_ids: np.ndarray,
        line_order: np.ndarray,
        product: np.ndarray,
        quantity: np.ndarray,
        total: np.ndarray,
    ) -> pl.DataFrame:
        """The clicks of a purchase: views, one add per order line, checkout, and the server's Order
        Completed."""
        rng = self.rng
        n_views = 2 + rng.poisson(2.0, len(buyers))
        lead = (n_views + np.bincount(line_order, minlength=len(buyers)) + 2) * 50 * 1_000_000
        start = ts - lead
        views, _ = self.sessions(buyers, links, start, n_views)
        self.state.identified[links] = True
        line_ts = ts[line_order] - lead[line_order] // 2 + np.arange(len(line_order)) * 1_000_000
        adds = self.click_frame(
            links[line_order], line_ts, "track", "Product Added", product_id=product + 1, quantity=quantity
        )
        checkout = self.click_frame(
            links, ts - 30 * 1_000_000, "track", "Checkout Started", order_id=order_ids, value_cents=total
        )
        completed = self.click_frame(
            links,
            ts,
            "track",
            "Order Completed",
            signed_in=np.ones(len(links), dtype=bool),
            order_id=order_ids,
            value_cents=total,
            source=constant(cat.SERVER_SOURCE, len(links)),
        )
        return pl.concat([views, adds, checkout, completed], how="diagonal_relaxed")
