"""The simulator's truth as the decision models see the world: the true expected revenue of every action for
every person within the label horizon, and which true person a lake person is.

Expected revenue of action ``a`` for true person ``x`` over the 7-day label horizon (decision_at, decision_at
+ 7 days], in EUR, derived from the rules of :meth:`simulator.company.shop.Shop.step`:

- purchases: a day's purchase probability is ``clip(base_weekly + uplift, 0, 1) / 7 * weekday factor``, the
  uplift of the action applying from the day after the decision to the day its 7-day effect ends. The horizon
  spans the rest of the decision day (untreated), six whole treated days and the part of the eighth day before
  the decision's time of day (treated); over that span each weekday occurs once, so the weekday factor
  averages to its weekly mean. The share of a day's purchases before the decision time follows the shop's
  hourly traffic (``SESSION_HOURS``) and the campaign's sending hours (10:00-12:00 UTC by default).
- basket: the order's lines are drawn as the simulator draws them (the value
  ``basket_mean * basket_multiplier * lognormal(0, 0.3)`` sets the number of lines, ``value / 45 EUR``
  stochastically rounded, 1 to 8; each line a product of the favourite category with probability 0.6, else of
  any category, quantity 2 with probability 0.15), and the order total follows the rules: 10% off the subtotal
  with ``discount_10``, 5 EUR off a subtotal of at least 30 EUR with ``loyalty_offer``, shipping 4.95 EUR
  unless the subtotal reaches 50 EUR or the action is ``free_shipping``. The lognormal is integrated by
  Gauss-Hermite quadrature; the total given the number of lines and the favourite category by a fixed-seed
  Monte Carlo over the catalogue (prices at the start of the window; their small drift is ignored).
- orders that count: the label leaves out cancelled (3%) and refunded (4% of the rest) orders.

Approximations, documented: a person under another action's effect during the horizon, and the prices'
drift, are not modelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.company.common import SESSION_HOURS, WEEKDAY_FACTOR

HORIZON_DAYS = 7
KEPT_ORDER_SHARE = (1 - 0.03) * (1 - 0.04)
"""Share of orders the label counts: neither cancelled (3%) nor refunded (4% of the others)."""
LINE_VALUE_CENTS = 4500.0
MAX_LINES = 8
FAVOURITE_SHARE = 0.6
DOUBLE_QUANTITY_SHARE = 0.15
BASKET_SIGMA = 0.3
LOYALTY_THRESHOLD_CENTS, LOYALTY_REDUCTION_CENTS = 3000, 500
QUADRATURE_NODES = 40
BASKET_DRAWS = 40_000
MAP_IDENTIFIER_TYPES = ("crm_contact_id", "shop_customer_id", "app_user_id")
"""Identifiers that name the same thing in the lake and in the truth (no personal data)."""


def share_before(hours: tuple[float, float]) -> float:
    """The expected share of a day's purchases made before a decision sent uniformly within ``hours`` (UTC, as
    [from, to) in hours): purchase times follow the hourly traffic, uniform within each hour."""
    grid = np.linspace(hours[0], hours[1], 241)
    cdf_at_hours = np.concatenate([[0.0], np.cumsum(SESSION_HOURS)])
    return float(np.interp(grid, np.arange(25), cdf_at_hours).mean())


def basket_totals(products: pl.DataFrame, seed: int = 0, draws: int = BASKET_DRAWS) -> np.ndarray:
    """Expected order total (cents) per favourite category, number of lines (1..8) and action: an array of
    shape (categories, MAX_LINES, actions), by a fixed-seed Monte Carlo of the simulator's basket rules."""
    rng = np.random.default_rng(seed)
    categories = list(cat.CATEGORIES)
    code = products["category"].replace_strict(categories, list(range(len(categories)))).to_numpy()
    price = products["price_cents"].to_numpy()
    grid = np.stack([price[code == k] for k in range(len(categories))])
    out = np.zeros((len(categories), MAX_LINES, len(cat.ACTIONS)))
    for favourite in range(len(categories)):
        for lines in range(1, MAX_LINES + 1):
            shape = (draws, lines)
            category = np.where(
                rng.random(shape) < FAVOURITE_SHARE, favourite, rng.integers(0, len(categories), shape)
            )
            unit = grid[category, rng.integers(0, grid.shape[1], shape)]
            quantity = 1 + (rng.random(shape) < DOUBLE_QUANTITY_SHARE)
            subtotal = (unit * quantity).sum(axis=1)
            out[favourite, lines - 1] = [_total(subtotal, action).mean() for action in cat.ACTIONS]
    return out


def _total(subtotal: np.ndarray, action: str) -> np.ndarray:
    """The order total (cents) of subtotals under ``action``, by the shop's rules."""
    discount = np.zeros_like(subtotal)
    if action == "discount_10":
        discount = subtotal // 10
    elif action == "loyalty_offer":
        discount = np.where(subtotal >= LOYALTY_THRESHOLD_CENTS, LOYALTY_REDUCTION_CENTS, 0)
    free = (subtotal >= cat.FREE_SHIPPING_OVER_CENTS) | (action == "free_shipping")
    return subtotal - discount + np.where(free, 0, cat.SHIPPING_CENTS)


def expected_order_total(
    basket_mean_cents: np.ndarray,
    multiplier: np.ndarray,
    favourite: np.ndarray,
    totals: np.ndarray,
    action: int,
) -> np.ndarray:
    """Expected order total (cents) per person under one action: the lognormal basket value integrated by
    Gauss-Hermite quadrature, its stochastically rounded number of lines, and ``totals``
    (``basket_totals``)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
    weights = weights / weights.sum()
    x = (basket_mean_cents * multiplier)[:, None] * np.exp(BASKET_SIGMA * nodes)[None, :] / LINE_VALUE_CENTS
    low = np.floor(x)
    up_share = x - low
    low_lines = np.clip(low, 1, MAX_LINES).astype(np.int64)
    high_lines = np.clip(low + 1, 1, MAX_LINES).astype(np.int64)
    table = totals[:, :, action]
    fav = favourite[:, None]
    per_node = (1 - up_share) * table[fav, low_lines - 1] + up_share * table[fav, high_lines - 1]
    return per_node @ weights


def expected_revenue(
    truth: Path, decision_hours: tuple[float, float] = (10.0, 12.0), seed: int = 0
) -> pl.DataFrame:
    """The true expected revenue (EUR) in the label horizon and the expected number of counted orders, per
    true person and action: columns ``true_person_id``, ``action``, ``expected_orders``, ``expected_revenue``
    (one row per person and action of the catalogue)."""
    persons = pl.read_parquet(truth / "persons.parquet")
    responses = pl.read_parquet(truth / "responses.parquet")
    totals = basket_totals(pl.read_parquet(truth / "products.parquet"), seed)
    share = share_before(decision_hours)
    treated_days, untreated_days = HORIZON_DAYS - 1 + share, 1 - share
    day_factor = float(WEEKDAY_FACTOR.mean()) / 7.0
    base = persons["base_weekly"].to_numpy()
    basket = persons["basket_mean_eur"].to_numpy() * 100
    favourite = (
        persons["preferred_category"]
        .replace_strict(list(cat.CATEGORIES), list(range(len(cat.CATEGORIES))))
        .to_numpy()
    )
    wide = responses.pivot(
        on="action", index="person_id", values=["weekly_purchase_uplift", "basket_multiplier"]
    )
    wide = persons.select("person_id").join(wide, on="person_id", how="left", maintain_order="left")
    frames = []
    for index, action in enumerate(cat.ACTIONS):
        uplift = wide[f"weekly_purchase_uplift_{action}"].to_numpy()
        multiplier = wide[f"basket_multiplier_{action}"].to_numpy()
        treated_orders = np.clip(base + uplift, 0, 1) * treated_days * day_factor
        untreated_orders = np.clip(base, 0, 1) * untreated_days * day_factor
        treated_total = expected_order_total(basket, multiplier, favourite, totals, index)
        untreated_total = expected_order_total(basket, wide["basket_multiplier_no_action"].to_numpy(),
                                               favourite, totals, 0)  # fmt: skip
        orders = (treated_orders + untreated_orders) * KEPT_ORDER_SHARE
        revenue = (treated_orders * treated_total + untreated_orders * untreated_total) * KEPT_ORDER_SHARE
        frames.append(
            pl.DataFrame(
                {
                    "true_person_id": persons["person_id"],
                    "action": pl.Series([action] * persons.height, dtype=pl.String),
                    "expected_orders": orders,
                    "expected_revenue": revenue / 100.0,
                }
            )
        )
    return pl.concat(frames).sort("true_person_id", "action")


def person_map(identity_person_map: pl.DataFrame, truth: Path) -> pl.DataFrame:
    """Which true person each lake person is, through the identifiers both know by the same value
    (``crm_contact_id``, ``shop_customer_id``, ``app_user_id``): the true person holding most of the lake
    person's identifiers (ties: the smallest id). Columns ``person_id``, ``true_person_id``, ``identifiers``
    (matched), ``purity`` (share of them held by that true person). Lake persons with no such identifier are
    left out."""
    identifiers = pl.read_parquet(truth / "identifiers.parquet").filter(
        pl.col("identifier_type").is_in(MAP_IDENTIFIER_TYPES)
    )
    matched = (
        identity_person_map.filter(pl.col("identifier_type").is_in(MAP_IDENTIFIER_TYPES))
        .select("identifier_type", "identifier", "person_id")
        .join(
            identifiers.select("identifier_type", "identifier", pl.col("person_id").alias("true_person_id")),
            on=["identifier_type", "identifier"],
        )
    )
    counts = matched.group_by("person_id", "true_person_id").agg(pl.len().alias("held"))
    return (
        counts.with_columns(pl.col("held").sum().over("person_id").alias("identifiers"))
        .sort(["person_id", "held", "true_person_id"], descending=[False, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
        .select(
            "person_id",
            "true_person_id",
            pl.col("identifiers").cast(pl.Int64),
            (pl.col("held") / pl.col("identifiers")).alias("purity"),
        )
    )


def lake_expected_revenue(identity_person_map: pl.DataFrame, truth: Path, **options) -> pl.DataFrame:
    """The true expected revenue per lake person and action: ``person_id``, ``true_person_id``, ``action``,
    ``expected_orders``, ``expected_revenue`` (lake persons mapped by :func:`person_map`)."""
    mapping = person_map(identity_person_map, truth).select("person_id", "true_person_id")
    return mapping.join(expected_revenue(truth, **options), on="true_person_id").sort("person_id", "action")
