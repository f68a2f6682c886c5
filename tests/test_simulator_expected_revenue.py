"""The truth's expected revenue per person and action against a Monte Carlo of the simulator's own purchase
rules, and the map from lake persons to true persons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simulator import catalog as cat
from simulator.company.common import SESSION_HOURS, WEEKDAY_FACTOR
from simulator.truth import expected_revenue, person_map

PERSONS = 12
WINDOWS = 30_000


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small truth folder: persons with high purchase rates (a precise Monte Carlo), uplifts of both signs,
    one rate clipped at 1, every favourite category."""
    folder = tmp_path_factory.mktemp("truth")
    rng = np.random.default_rng(3)
    ids = [f"P{i:07d}" for i in range(PERSONS)]
    base = rng.uniform(0.2, 0.8, PERSONS)
    base[0] = 0.98  # with a positive uplift the rate is clipped at 1
    pl.DataFrame(
        {
            "person_id": ids,
            "base_weekly": base,
            "basket_mean_eur": rng.uniform(15, 220, PERSONS),
            "preferred_category": [cat.CATEGORIES[i % len(cat.CATEGORIES)] for i in range(PERSONS)],
        }
    ).write_parquet(folder / "persons.parquet")
    uplift = rng.uniform(-0.15, 0.25, (PERSONS, len(cat.ACTIONS)))
    uplift[:, 0] = 0.0
    uplift[0, 1:] = 0.1
    multiplier = rng.uniform(0.85, 1.2, (PERSONS, len(cat.ACTIONS)))
    multiplier[:, 0] = 1.0
    pl.DataFrame(
        {
            "person_id": np.repeat(ids, len(cat.ACTIONS)),
            "action": np.tile(cat.ACTIONS, PERSONS),
            "weekly_purchase_uplift": uplift.ravel(),
            "basket_multiplier": multiplier.ravel(),
        }
    ).write_parquet(folder / "responses.parquet")
    category = np.repeat(np.arange(len(cat.CATEGORIES)), 20)
    price = (
        np.round(np.asarray(cat.CATEGORY_PRICE_EUR)[category] * rng.lognormal(0, 0.35, len(category)) * 20)
        * 5
        - 1
    )
    pl.DataFrame(
        {
            "product_id": np.arange(1, len(category) + 1),
            "category": [cat.CATEGORIES[k] for k in category],
            "price_cents": price.astype(np.int64),
        }
    ).write_parquet(folder / "products.parquet")
    return folder


def monte_carlo(truth: Path, person: int, action: int, rng: np.random.Generator) -> np.ndarray:
    """Revenue (EUR) of WINDOWS simulated label windows for one person and action, drawn with the simulator's
    rules day by day: a decision at 10:00-12:00 UTC on a random weekday, the action's uplift and basket from
    the next day until 7 days after it, orders counted in (decision, decision + 7 days] unless cancelled or
    refunded."""
    persons = pl.read_parquet(truth / "persons.parquet").row(person, named=True)
    responses = pl.read_parquet(truth / "responses.parquet").filter(
        pl.col("person_id") == persons["person_id"]
    )
    products = pl.read_parquet(truth / "products.parquet")
    uplift = responses["weekly_purchase_uplift"].to_numpy()
    multiplier = responses["basket_multiplier"].to_numpy()
    favourite = cat.CATEGORIES.index(persons["preferred_category"])
    code = np.asarray([cat.CATEGORIES.index(c) for c in products["category"]])
    grid = np.stack([products["price_cents"].to_numpy()[code == k] for k in range(len(cat.CATEGORIES))])
    first_weekday = rng.integers(0, 7, WINDOWS)
    decision_hour = rng.uniform(10, 12, WINDOWS)
    revenue = np.zeros(WINDOWS)
    for day in range(8):
        treated = day >= 1
        act = action if treated else 0
        weekly = persons["base_weekly"] + (uplift[action] if treated else 0.0)
        daily = np.clip(weekly, 0, 1) / 7 * WEEKDAY_FACTOR[(first_weekday + day) % 7]
        hour = rng.choice(24, size=WINDOWS, p=SESSION_HOURS) + rng.random(WINDOWS)
        counted = (hour > decision_hour) if day == 0 else (hour < decision_hour) if day == 7 else True
        buys = np.flatnonzero((rng.random(WINDOWS) < daily) & counted)
        value = persons["basket_mean_eur"] * 100 * multiplier[act] * rng.lognormal(0, 0.3, len(buys))
        x = value / 4500.0
        lines = np.clip(np.floor(x) + (rng.random(len(buys)) < x - np.floor(x)), 1, 8).astype(np.int64)
        owner = np.repeat(np.arange(len(buys)), lines)
        category = np.where(
            rng.random(len(owner)) < 0.6, favourite, rng.integers(0, len(cat.CATEGORIES), len(owner))
        )
        price = grid[category, rng.integers(0, grid.shape[1], len(owner))]
        quantity = 1 + (rng.random(len(owner)) < 0.15)
        subtotal = np.bincount(owner, weights=price * quantity, minlength=len(buys)).astype(np.int64)
        name = cat.ACTIONS[act]
        discount = np.where(name == "discount_10", subtotal // 10, 0)
        discount = np.where((name == "loyalty_offer") & (subtotal >= 3000), 500, discount)
        free = (subtotal >= cat.FREE_SHIPPING_OVER_CENTS) | (name == "free_shipping")
        total = subtotal - discount + np.where(free, 0, cat.SHIPPING_CENTS)
        cancelled = rng.random(len(buys)) < 0.03
        refunded = ~cancelled & (rng.random(len(buys)) < 0.04)
        np.add.at(revenue, buys, np.where(cancelled | refunded, 0, total) / 100.0)
    return revenue


def test_expected_revenue_matches_a_monte_carlo_of_the_simulator_rules(truth: Path) -> None:
    expected = expected_revenue(truth)
    assert expected.height == PERSONS * len(cat.ACTIONS)
    rng = np.random.default_rng(11)
    z_scores, ratios = [], []
    for person in range(PERSONS):
        person_id = f"P{person:07d}"
        for action, name in enumerate(cat.ACTIONS):
            draws = monte_carlo(truth, person, action, rng)
            analytic = expected.filter((pl.col("true_person_id") == person_id) & (pl.col("action") == name))[
                "expected_revenue"
            ].item()
            standard_error = draws.std() / np.sqrt(WINDOWS)
            z_scores.append((draws.mean() - analytic) / standard_error)
            ratios.append(analytic / draws.mean())
    z_scores = np.asarray(z_scores)
    # 60 comparisons: each within 4 standard errors, and no systematic bias (mean z near 0, ratio near 1)
    assert np.abs(z_scores).max() < 4, z_scores
    assert abs(z_scores.mean()) < 4 / np.sqrt(len(z_scores)), z_scores.mean()
    assert abs(np.mean(ratios) - 1) < 0.005


def test_person_map_picks_the_true_person_holding_most_identifiers(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "identifier_type": [
                "crm_contact_id",
                "crm_contact_id",
                "shop_customer_id",
                "app_user_id",
                "email",
            ],
            "identifier": ["1", "2", "10", "usr_a", "x@example.com"],
            "evidenced": [True] * 5,
            "person_id": ["P1", "P2", "P1", "P1", "P1"],
        }
    ).write_parquet(tmp_path / "identifiers.parquet")
    lake = pl.DataFrame(
        {
            "identifier_type": [
                "crm_contact_id",
                "crm_contact_id",
                "shop_customer_id",
                "app_user_id",
                "email_token",
            ],
            "identifier": ["1", "2", "10", "usr_a", "tok"],
            # lake person a wrongly merged P1 and P2 (3 identifiers of P1, 1 of P2); b holds only an email
            # token
            "person_id": ["a", "a", "a", "a", "b"],
        }
    )
    mapped = person_map(lake, tmp_path)
    assert mapped.to_dicts() == [{"person_id": "a", "true_person_id": "P1", "identifiers": 4, "purity": 0.75}]
