"""What the domains of the simulated company share: the people, the day being simulated, the day's changes,
the daily rhythm of traffic, and helpers that build columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.config import US_PER_DAY
from simulator.world import World

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


@dataclass(frozen=True)
class Day:
    """The day being simulated: its number (negative before the observed window) and start (epoch us)."""

    number: int
    start: int
    first: bool
    """Whether it is the first simulated day (the start of the history)."""

    @property
    def end(self) -> int:
        """The start of the next day."""
        return self.start + US_PER_DAY

    @property
    def observed(self) -> bool:
        """Whether the day is in the observed window: before it, days only build the state the CDC snapshot
        captures, and no click is sent."""
        return self.number >= 0

    @property
    def start_date(self) -> date:
        """The calendar date of the day (UTC)."""
        return date(1970, 1, 1) + timedelta(microseconds=self.start)

    @property
    def weekday(self) -> int:
        """Monday 0 to Sunday 6."""
        return self.start_date.weekday()


@dataclass
class DayChanges:
    """What one day produces: row changes (``_ts``, ``_op``, columns) per table of the CRM and shop databases,
    and click events."""

    crm: dict[str, list[pl.DataFrame]] = field(
        default_factory=lambda: {"contacts": [], "consents": [], "activities": []}
    )
    shop: dict[str, list[pl.DataFrame]] = field(
        default_factory=lambda: {"products": [], "customers": [], "orders": [], "order_lines": []}
    )
    clicks: list[pl.DataFrame] = field(default_factory=list)
    executions: pl.DataFrame | None = None
    """The recommendations the campaign tool looked at that day (:meth:`Campaigns.execute`), if any."""


@dataclass(frozen=True)
class People:
    """What the domains read of each person (arrays indexed by person); fixed for the whole simulation."""

    created: np.ndarray
    base_weekly: np.ndarray
    basket_mean: np.ndarray
    engagement: np.ndarray
    abandonment: np.ndarray
    preferred: np.ndarray
    wants_account: np.ndarray
    user_ids: pl.Series
    profiles: pl.DataFrame
    """What CRM contacts and shop customers copy from their person."""
    loyal: np.ndarray
    country: np.ndarray
    birth_days: np.ndarray
    has_app: np.ndarray
    has_phone: np.ndarray

    @classmethod
    def of(cls, world: World) -> People:
        """The people of ``world``."""
        p = world.persons
        return cls(
            created=p["created_us"].to_numpy(),
            base_weekly=p["base_weekly"].to_numpy(),
            basket_mean=p["basket_mean"].to_numpy(),
            engagement=p["engagement"].to_numpy(),
            abandonment=p["abandonment"].to_numpy(),
            preferred=p["preferred_category"].to_numpy(),
            wants_account=p["has_account"].to_numpy(),
            user_ids=p["app_user_id"],
            profiles=p.select(
                "email",
                "phone_e164",
                pl.col("first_name").str.to_titlecase(),
                pl.col("last_name").str.to_titlecase(),
                pl.col("country").alias("country_code"),
                pl.col("country").replace_strict(
                    list(range(len(cat.COUNTRIES))), list(cat.COUNTRIES), return_dtype=pl.String
                ),
            ),
            loyal=p["loyalty"].to_numpy() > 0.6,
            country=p["country"].to_numpy(),
            birth_days=p["birth_days"].to_numpy(),
            has_app=p["has_app"].to_numpy(),
            has_phone=p["has_phone"].to_numpy(),
        )

    @property
    def count(self) -> int:
        """How many people there are."""
        return len(self.created)


def products_by_category(world: World) -> np.ndarray:
    """Product positions (``product_id - 1``) by category: shape (categories, products per category)."""
    category = world.products["category"].to_numpy()
    return np.stack([np.flatnonzero(category == k) for k in range(len(cat.CATEGORIES))])


def times(rng: np.random.Generator, day_start: int, n: int) -> np.ndarray:
    """Instants within a day that follow the daily rhythm of the shop's traffic."""
    hours = rng.choice(24, size=n, p=SESSION_HOURS)
    return day_start + hours * HOUR_US + (rng.random(n) * HOUR_US).astype(np.int64)


def stochastic_round(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """``x`` rounded down or up at random, up with probability its fractional part (unbiased)."""
    base = np.floor(x)
    return (base + (rng.random(len(x)) < x - base)).astype(np.int64)


def labels(codes: pl.Series | np.ndarray, values: tuple[str, ...] | pl.Series) -> pl.Series:
    """Strings looked up by code; a negative code gives null."""
    codes = np.asarray(codes)
    names = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.String)
    out = names.gather(np.maximum(codes, 0))
    missing = np.flatnonzero(codes < 0)
    return out.scatter(missing, None) if len(missing) else out


def constant(value: str, n: int) -> pl.Series:
    """``n`` times the string ``value``."""
    return pl.Series([value], dtype=pl.String).new_from_index(0, n)
