"""The people of the simulated company, their identifiers and devices, and the truth of how they respond.

Everything here is drawn once, up front, from the seed: who exists and since when, which CRM contacts, shop
accounts, app user ids and devices each person has, and the ground-truth response model (base purchase rate,
basket value, and the per-person effect of every action).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.config import US_PER_DAY, SimulationConfig, day_start_us
from simulator.encoding import random_hex, random_uuid


@dataclass
class World:
    """Arrays indexed by person (``persons``), contact (``contacts``) and device (``devices``)."""

    persons: pl.DataFrame
    contacts: pl.DataFrame
    devices: pl.DataFrame
    person_devices: pl.DataFrame
    products: pl.DataFrame
    uplift: np.ndarray
    """Weekly purchase-probability change of each action, shape (persons, actions)."""
    basket_multiplier: np.ndarray
    """Multiplier of the basket value under each action, shape (persons, actions)."""


def _choice(rng: np.random.Generator, values: tuple, n: int, p=None) -> pl.Series:
    return _pick(values, rng.choice(len(values), size=n, p=p))


def _pick(values: tuple[str, ...], codes: np.ndarray) -> pl.Series:
    """The strings ``values[code]`` of the codes."""
    return pl.Series(values, dtype=pl.String).gather(codes)


def build_world(config: SimulationConfig, rng: np.random.Generator) -> World:
    """Draw the people, their identifiers and devices, the product catalogue and the response model."""
    n = config.persons
    history_start = day_start_us(config.history_start)
    window_end = config.start_us + config.days * US_PER_DAY
    # 85% signed up before the observed window (most of them long before the history), the rest during it
    joined_early = rng.random(n) < 0.85
    created = np.where(
        joined_early,
        config.start_us - (rng.random(n) * (3 * 365 * US_PER_DAY)).astype(np.int64),
        config.start_us + (rng.random(n) * (window_end - config.start_us)).astype(np.int64),
    )
    created = np.maximum(created, history_start - 3 * 365 * US_PER_DAY)
    country = rng.choice(len(cat.COUNTRIES), size=n, p=cat.COUNTRY_WEIGHTS)
    tenure_days = np.clip((config.start_us - created) / US_PER_DAY, 0, None)

    # latent traits and the ground-truth response model
    engagement = rng.lognormal(0.0, 0.6, n)
    price_sensitivity = rng.beta(2.0, 3.0, n)
    loyalty = np.clip(tenure_days / 730.0, 0.0, 1.0)
    abandonment = np.clip(0.1 + 0.6 * price_sensitivity + rng.normal(0, 0.08, n), 0.05, 0.9)
    base_weekly = np.clip(
        0.025 * rng.lognormal(0.0, 0.5, n) * (0.6 + 0.8 * loyalty) * engagement**0.3, 0.002, 0.25
    )
    basket_mean = 6000.0 * rng.lognormal(0.0, 0.35, n) * (0.8 + 0.4 * loyalty)
    engaged = np.clip(engagement / 2.0, 0.0, 1.0)
    uplift = np.zeros((n, len(cat.ACTIONS)))
    uplift[:, 1] = 0.045 * price_sensitivity - 0.012 * (1 - price_sensitivity)  # discount_10
    uplift[:, 2] = 0.02 * price_sensitivity + 0.004  # free_shipping
    uplift[:, 3] = 0.06 * abandonment * engaged - 0.006  # cart_reminder
    uplift[:, 4] = 0.035 * loyalty - 0.015 * (1 - loyalty)  # loyalty_offer
    uplift[:, 1:] += rng.normal(0.0, 0.002, (n, len(cat.ACTIONS) - 1))
    basket = np.ones((n, len(cat.ACTIONS)))
    basket[:, 1] = 0.9 * (1 + 0.15 * price_sensitivity)
    basket[:, 2] = 1.05
    basket[:, 4] = 1.0 + 0.12 * loyalty

    has_account = rng.random(n) < np.where(joined_early, 0.7, 0.6)
    has_app = rng.random(n) < 0.45
    has_phone = rng.random(n) < 0.6
    first = rng.integers(0, len(cat.FIRST_NAMES), n)
    last = rng.integers(0, len(cat.LAST_NAMES), n)
    local_no = rng.permutation(n) + 1000
    national = rng.integers(100_000_000, 999_999_999, n)
    persons = pl.DataFrame(
        {
            "person": np.arange(n, dtype=np.int64),
            "created_us": created,
            "country": country.astype(np.int8),
            "first_name": _pick(cat.FIRST_NAMES, first),
            "last_name": _pick(cat.LAST_NAMES, last),
            "domain": _choice(rng, cat.EMAIL_DOMAINS, n),
            "local_no": local_no,
            "national": national,
            "has_phone": has_phone,
            "has_account": has_account,
            "has_app": has_app,
            "birth_days": rng.integers(-15_000, 7_000, n).astype(np.int32),
            "engagement": engagement,
            "price_sensitivity": price_sensitivity,
            "loyalty": loyalty,
            "abandonment": abandonment,
            "base_weekly": base_weekly,
            "basket_mean": basket_mean,
            "preferred_category": rng.integers(0, len(cat.CATEGORIES), n).astype(np.int8),
            "app_user_id": "usr_" + random_hex(rng, n, 8),
        }
    ).with_columns(
        pl.format("P{}", pl.col("person").cast(pl.String).str.zfill(7)).alias("person_id"),
        pl.concat_str(
            [
                pl.col("first_name"),
                pl.lit("."),
                pl.col("last_name").str.replace_all(" ", ""),
                pl.col("local_no").cast(pl.String),
                pl.lit("@"),
                pl.col("domain"),
            ]
        ).alias("email"),
        pl.when(pl.col("has_phone"))
        .then(
            pl.concat_str(
                [
                    pl.lit("+"),
                    pl.col("country").replace_strict(
                        list(range(len(cat.COUNTRIES))), list(cat.COUNTRY_DIAL), return_dtype=pl.String
                    ),
                    pl.col("national").cast(pl.String),
                ]
            )
        )
        .alias("phone_e164"),
    )
    contacts = _contacts(config, rng, persons)
    devices, person_devices = _devices(config, rng, persons)
    return World(persons, contacts, devices, person_devices, _products(rng), uplift, basket)


def _contacts(config: SimulationConfig, rng: np.random.Generator, persons: pl.DataFrame) -> pl.DataFrame:
    """CRM contacts: most people have one, some two (an e-mail that differs in case or spaces), and a few
    carry a shared placeholder address; ids follow creation time."""
    n = persons.height
    in_crm = rng.random(n) < 0.9
    owners = np.flatnonzero(in_crm)
    dup = owners[rng.random(len(owners)) < config.faults.duplicate_contact]
    created = persons["created_us"].to_numpy()
    person = np.concatenate([owners, dup])
    is_duplicate = np.concatenate([np.zeros(len(owners), bool), np.ones(len(dup), bool)])
    delay = (rng.exponential(3 * 3600, len(person)) * 1e6).astype(np.int64)
    delay[is_duplicate] += (rng.uniform(1, 120, is_duplicate.sum()) * US_PER_DAY).astype(np.int64)
    created_us = created[person] + delay
    placeholder = rng.random(len(person)) < config.faults.placeholder_email
    variant = rng.integers(0, 3, len(person))
    frame = pl.DataFrame(
        {
            "person": person,
            "created_us": created_us,
            "is_duplicate": is_duplicate,
            "placeholder": placeholder,
            "variant": variant,
            "placeholder_no": rng.integers(0, len(cat.PLACEHOLDER_EMAILS), len(person)),
            "phone_format": rng.integers(0, 3, len(person)),
        }
    ).sort(["created_us", "person"])
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("contact_id"))
    email = pl.col("email")
    raw_email = (
        pl.when(pl.col("placeholder"))
        .then(
            pl.col("placeholder_no").replace_strict(
                list(range(len(cat.PLACEHOLDER_EMAILS))), list(cat.PLACEHOLDER_EMAILS), return_dtype=pl.String
            )
        )
        .when(~pl.col("is_duplicate"))
        .then(email)
        .when(pl.col("variant") == 0)
        .then(email.str.to_uppercase())
        .when(pl.col("variant") == 1)
        .then(pl.lit(" ") + email + pl.lit(" "))
        .otherwise(email.str.slice(0, 1).str.to_uppercase() + email.str.slice(1))
    )
    return (
        frame.join(persons.select("person", "email", "phone_e164", "country"), on="person", how="left")
        .with_columns(
            raw_email.alias("email"),
            raw_phone(pl.col("phone_e164"), pl.col("phone_format"), pl.col("country")).alias("phone"),
        )
        .select("contact_id", "person", "created_us", "is_duplicate", "placeholder", "email", "phone")
    )


def raw_phone(e164: pl.Expr, style: pl.Expr, country: pl.Expr) -> pl.Expr:
    """A phone number as people type it: E.164 with spaces, national with a trunk 0, or 00-international."""
    digits = e164.str.slice(1)
    dial = country.replace_strict(
        list(range(len(cat.COUNTRIES))), list(cat.COUNTRY_DIAL), return_dtype=pl.String
    )
    national = digits.str.slice(dial.str.len_chars())
    return (
        pl.when(style == 0)
        .then(
            pl.concat_str(
                [pl.lit("+"), dial, pl.lit(" "), national.str.slice(0, 4), pl.lit(" "), national.str.slice(4)]
            )
        )
        .when(style == 1)
        .then(pl.lit("0") + national)
        .otherwise(pl.concat_str([pl.lit("00"), dial, pl.lit("-"), national]))
    )


def _devices(
    config: SimulationConfig, rng: np.random.Generator, persons: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Browsers and app installs, each with its anonymous id, clock skew and context; a few are shared."""
    n = persons.height
    has_app = persons["has_app"].to_numpy()
    count = 1 + np.minimum(rng.poisson(0.6, n), 3)
    owner = np.repeat(np.arange(n), count)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
    is_app = has_app[owner] & ((rank == 0) | (rng.random(len(owner)) < 0.4))
    m = len(owner)
    skewed = rng.random(m) < config.faults.skewed_device
    skew_seconds = np.exp(rng.uniform(np.log(120), np.log(3 * 86_400), m)) * rng.choice([-1, 1], m)
    skew_us = np.where(skewed, skew_seconds * 1e6, rng.normal(0, 0.4e6, m)).astype(np.int64)
    app_model = rng.integers(0, len(cat.APP_DEVICES), m)
    octets = rng.integers(1, 255, (m, 4))
    devices = pl.DataFrame(
        {
            "device": np.arange(m, dtype=np.int64),
            "owner": owner,
            "source": _pick((cat.WEB_SOURCE, cat.APP_SOURCE), is_app.astype(np.int64)),
            "anonymous_id": random_uuid(rng, m),
            "skew_us": skew_us,
            "skewed": skewed,
            "user_agent": _pick(cat.WEB_USER_AGENTS, rng.integers(0, len(cat.WEB_USER_AGENTS), m)).cast(
                pl.Enum(cat.WEB_USER_AGENTS)
            ),
            "app_model": app_model.astype(np.int8),
            "ip": pl.DataFrame(octets, schema=["a", "b", "c", "d"])
            .select(pl.concat_str(pl.all().cast(pl.String), separator="."))
            .to_series(),
            "locale": _pick(cat.COUNTRY_LOCALE, persons["country"].to_numpy()[owner]).cast(
                pl.Enum(sorted(set(cat.COUNTRY_LOCALE)))
            ),
        }
    )
    links = pl.DataFrame(
        {"person": owner, "device": np.arange(m, dtype=np.int64), "weight": rng.uniform(0.5, 2.0, m)}
    )
    # shared devices: a person's first device is used by a second person too (a family tablet)
    pairs = round(config.faults.shared_device * n / 2)
    chosen = rng.choice(n, size=2 * pairs, replace=False)
    first_device = np.cumsum(count) - count
    shared = pl.DataFrame(
        {
            "person": chosen[pairs:],
            "device": first_device[chosen[:pairs]],
            "weight": rng.uniform(0.3, 1.0, pairs),
        }
    )
    person_devices = pl.concat([links, shared]).sort(["person", "device"])
    devices = devices.with_columns(pl.col("device").is_in(shared["device"].implode()).alias("shared"))
    return devices, person_devices


def _products(rng: np.random.Generator) -> pl.DataFrame:
    """The catalogue: a few dozen products per category, priced around the category's typical price."""
    k = cat.PRODUCTS_PER_CATEGORY
    category = np.repeat(np.arange(len(cat.CATEGORIES)), k)
    typical = np.asarray(cat.CATEGORY_PRICE_EUR)[category]
    price = np.round(typical * rng.lognormal(0, 0.35, len(category)) * 100 / 5) * 5 - 1
    return (
        pl.DataFrame(
            {
                "product_id": np.arange(1, len(category) + 1, dtype=np.int64),
                "category": category.astype(np.int8),
                "price_cents": price.astype(np.int64),
            }
        )
        .with_columns(
            pl.format("SKU-{}", pl.col("product_id").cast(pl.String).str.zfill(5)).alias("sku"),
            pl.col("category")
            .replace_strict(list(range(len(cat.CATEGORIES))), list(cat.CATEGORIES), return_dtype=pl.String)
            .alias("category_name"),
        )
        .with_columns(
            pl.concat_str(
                [pl.col("category_name").str.to_titlecase(), pl.lit(" item "), pl.col("sku").str.slice(4)]
            ).alias("name"),
        )
    )
