"""decision_outcomes on a real simulated company: last-touch attribution of orders to campaign decisions."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from conftest import read_warehouse

from lake.settings import Settings

ATTRIBUTION_DAYS = 7


@pytest.fixture(scope="module")
def outcomes(gold_lake: Settings) -> Settings:
    """The whole landing zone ingested and decision_outcomes built with its parents: the session's gold lake
    (its dbt build selects ``+decision_outcomes``; read-only)."""
    return gold_lake


def test_every_attributed_order_is_attributed_once(outcomes: Settings) -> None:
    decisions = read_warehouse(outcomes, "select * from decision_outcomes")
    assert decisions["activity_id"].is_unique().all() and decisions["order_count"].sum() > 0
    # the raw windows overlap for some persons, so last touch has something to decide
    overlapping = decisions.sort("decision_at").with_columns(
        pl.col("decision_at").shift(-1).over("person_id").alias("next_at")
    )
    assert overlapping.filter(pl.col("next_at") < pl.col("window_end_at")).height > 0
    matches = read_warehouse(
        outcomes,
        """
        select orders.order_id, decision_outcomes.activity_id
        from decision_outcomes
        inner join identity_person_map as customers
            on customers.person_id = decision_outcomes.person_id
            and customers.identifier_type = 'shop_customer_id'
        inner join stg_shop__orders as orders
            on customers.identifier = cast(orders.customer_id as varchar)
            and orders.status not in ('cancelled', 'refunded')
            and orders.created_at >= decision_outcomes.decision_at
            and orders.created_at < decision_outcomes.attributed_until
        """,
    )
    assert matches["order_id"].is_unique().all()
    assert matches.height == decisions["order_count"].sum()


def test_attributed_revenue_matches_a_last_touch_recount(outcomes: Settings) -> None:
    person_map = read_warehouse(
        outcomes, "select identifier_type, identifier, person_id from identity_person_map"
    )
    activities = read_warehouse(outcomes, "select activity_id, contact_id, sent_at from stg_crm__activities")
    orders = read_warehouse(
        outcomes, "select order_id, customer_id, status, total_amount, created_at from stg_shop__orders"
    )

    def person_of(identifier_type: str) -> pl.DataFrame:
        return person_map.filter(pl.col("identifier_type") == identifier_type).select(
            "identifier", "person_id"
        )

    decisions = (
        activities.with_columns(pl.col("contact_id").cast(pl.String).alias("identifier"))
        .join(person_of("crm_contact_id"), on="identifier")
        # the latest decision of an instant wins (the higher activity id)
        .sort("person_id", "sent_at", "activity_id")
        .unique(["person_id", "sent_at"], keep="last")
        .sort("sent_at")
    )
    person_orders = (
        orders.filter(~pl.col("status").is_in(["cancelled", "refunded"]))
        .with_columns(pl.col("customer_id").cast(pl.String).alias("identifier"))
        .join(person_of("shop_customer_id"), on="identifier")
        .sort("created_at")
    )
    # each order's last touch: the person's latest decision at or before it, if its window still runs
    touched = person_orders.join_asof(
        decisions.select("person_id", "activity_id", "sent_at"),
        left_on="created_at",
        right_on="sent_at",
        by="person_id",
        strategy="backward",
        check_sortedness=False,  # sorted by time overall, so within each person
    ).filter(pl.col("created_at") < pl.col("sent_at") + timedelta(days=ATTRIBUTION_DAYS))
    expected = touched.group_by("activity_id").agg(
        pl.len().alias("order_count"), pl.col("total_amount").sum().alias("revenue")
    )

    built = read_warehouse(
        outcomes, "select activity_id, order_count, revenue from decision_outcomes where order_count > 0"
    )
    assert built.height > 0
    compared = built.join(expected, on="activity_id", how="full", suffix="_expected", coalesce=True)
    assert compared.height == built.height == expected.height
    assert (compared["order_count"] == compared["order_count_expected"]).all()
    assert (
        compared["revenue"].cast(pl.Float64) - compared["revenue_expected"].cast(pl.Float64)
    ).abs().max() < 0.005
    assert built["revenue"].cast(pl.Float64).sum() == pytest.approx(
        touched["total_amount"].cast(pl.Float64).sum(), abs=0.01
    )
