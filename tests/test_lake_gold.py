"""Gold publication: warehouse tables written over Delta tables under ``gold/`` (real DuckDB file, real
Delta)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import lake_settings
from deltalake import DeltaTable

from lake.gold import gold_uri, gold_uris, publish_gold
from lake.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A lake and a warehouse under ``tmp_path``; the warehouse holds two marts and a table not published."""
    settings = replace(lake_settings(tmp_path / "lake"), warehouse_path=tmp_path / "warehouse.duckdb")
    warehouse(
        settings,
        """
        create table person_scores (
            person_id varchar, seen_at timestamp, decided_at timestamptz,
            amount decimal(10, 2), visits integer
        );
        insert into person_scores values
            ('p1', '2026-09-01 10:00:00', '2026-09-01 12:00:00+02', 12.50, 3),
            ('p''2', '2026-09-02 23:30:00', '2026-09-03 00:15:00+00', null, 0),
            ('p3', null, null, 0.10, null);
        create table orders_daily as select range::integer as day, range * 10 as total from range(5);
        create table not_gold as select 'raw' as value;
        """,
    )
    return settings


def warehouse(settings: Settings, sql: str) -> None:
    """Run ``sql`` on the settings' warehouse file (closed at once)."""
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(sql)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_publishes_each_named_table_with_its_rows_and_utc_timestamps(settings: Settings) -> None:
    assert publish_gold(settings, ["person_scores", "orders_daily"]) == {
        "person_scores": 3,
        "orders_daily": 5,
    }
    assert gold_uris(settings) == [gold_uri(settings, "orders_daily"), gold_uri(settings, "person_scores")]
    assert gold_uri(settings, "orders_daily") == f"{settings.lake_root}/gold/orders_daily"

    scores = pl.read_delta(gold_uri(settings, "person_scores")).sort("person_id")
    assert scores.schema == {
        "person_id": pl.String,
        "seen_at": pl.Datetime("us", "UTC"),  # naive in the warehouse: read as UTC
        "decided_at": pl.Datetime("us", "UTC"),
        "amount": pl.Decimal(10, 2),
        "visits": pl.Int32,
    }
    assert scores.rows() == [
        ("p'2", utc(2026, 9, 2, 23, 30), utc(2026, 9, 3, 0, 15), None, 0),
        ("p1", utc(2026, 9, 1, 10), utc(2026, 9, 1, 10), Decimal("12.50"), 3),  # 12:00+02 is 10:00 UTC
        ("p3", None, None, Decimal("0.10"), None),
    ]
    orders = pl.read_delta(gold_uri(settings, "orders_daily")).sort("day")
    assert orders.rows() == [(d, d * 10) for d in range(5)]
    # no naive timestamp column, so no reader needs the timestampNtz table feature
    assert "timestampNtz" not in (
        DeltaTable(gold_uri(settings, "person_scores")).protocol().writer_features or []
    )


def test_a_republication_overwrites_rows_and_schema_in_one_commit(settings: Settings) -> None:
    publish_gold(settings, ["orders_daily"])
    uri = gold_uri(settings, "orders_daily")
    first = pl.read_delta(uri)
    publish_gold(
        settings, ["orders_daily"]
    )  # the same warehouse table again: the same rows, one more version
    assert DeltaTable(uri).version() == 1
    assert pl.read_delta(uri).sort("day").equals(first.sort("day"))

    warehouse(
        settings,
        "create or replace table orders_daily as select range::integer as day, 'eur' as currency from "
        "range(2)",
    )
    assert publish_gold(settings, ["orders_daily"]) == {"orders_daily": 2}
    assert DeltaTable(uri).version() == 2
    now = pl.read_delta(uri).sort("day")
    assert now.columns == ["day", "currency"]  # the dropped column is gone, the new one is there
    assert now.rows() == [(0, "eur"), (1, "eur")]
    assert (
        pl.read_delta(uri, version=0).sort("day").equals(first.sort("day"))
    )  # earlier versions stay readable


def test_only_the_named_tables_are_published(settings: Settings) -> None:
    publish_gold(settings, ["orders_daily"])
    assert gold_uris(settings) == [gold_uri(settings, "orders_daily")]
    assert not Path(gold_uri(settings, "not_gold")).exists()
    (Path(settings.zone("gold")) / "not_a_table").mkdir()  # a folder without a Delta log is no gold table
    assert gold_uris(settings) == [gold_uri(settings, "orders_daily")]
    with pytest.raises(duckdb.CatalogException):
        publish_gold(settings, ["missing_mart"])
