"""The identity graph over Segment messages written from the spec: alias links whatever previousId names (an
earlier user id or an anonymous id), decided from all the data when the graph is built, and placeholder ids
link nothing. Real ingestion, real Delta tables, a real dbt build."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from conftest import lake_settings, read_warehouse, run_dbt
from segment_messages import GRACE_TRAITS_CAMEL, land_segment, segment

from data_contracts import load_contracts
from lake.ingest import ingest_all
from lake.settings import Settings
from lake.warehouse import publish_silver

T = "2026-09-03T10:{:02d}:00.000Z"
MS = 1_788_393_600_000  # 2026-09-03T00:00:00Z in milliseconds


def pg_event(table: str, row: dict, lsn: int) -> str:
    """A Debezium PostgreSQL snapshot read of ``row`` (no schema envelope)."""
    source = {
        "connector": "postgresql",
        "name": "crm",
        "ts_ms": MS,
        "snapshot": "true",
        "db": "crm",
        "schema": "public",
        "table": table,
        "txId": lsn,
        "lsn": lsn,
    }
    return json.dumps({"before": None, "after": row, "source": source, "op": "r", "ts_ms": MS})


def mysql_event(table: str, row: dict, pos: int) -> str:
    """A Debezium MySQL snapshot read of ``row`` (no schema envelope)."""
    source = {
        "connector": "mysql",
        "name": "shop",
        "ts_ms": MS,
        "snapshot": "true",
        "db": "shop",
        "table": table,
        "server_id": 1,
        "file": "mysql-bin.000003",
        "pos": pos,
        "row": 0,
    }
    return json.dumps({"before": None, "after": row, "source": source, "op": "r", "ts_ms": MS})


def decimal(cents: int) -> str:
    """A numeric(12,2) as the MySQL connector writes it in precise mode: base64 two's-complement bytes."""
    return base64.b64encode(cents.to_bytes((cents.bit_length() + 8) // 8, "big", signed=True)).decode()


def land_cdc(landing: Path) -> None:
    """One CRM contact (Grace's e-mail), one activity, one shop customer and one order."""
    topics = {
        "crm.public.contacts": pg_event(
            "contacts",
            {
                "contact_id": 1,
                "email": "grace.hopper@example.com",
                "phone": None,
                "first_name": "Grace",
                "last_name": "Hopper",
                "country": "US",
                "birth_date": -23034,
                "attributes": "{}",
                "created_at": "2026-09-01T00:00:00Z",
                "updated_at": 1_788_220_800_000_000,
            },
            100,
        ),
        "crm.public.activities": pg_event(
            "activities",
            {
                "activity_id": 100,
                "contact_id": 1,
                "campaign_id": "cmp-1",
                "activity_type": "campaign_touch",
                "action": "no_action",
                "channel": "email",
                "propensity": 0.1,
                "offer_value": "0.00",
                "sent_at": "2026-09-02T08:00:00Z",
            },
            200,
        ),
        "shop.shop.customers": mysql_event(
            "customers",
            {
                "customer_id": 7,
                "email": "ada@example.org",
                "phone": None,
                "first_name": "Ada",
                "last_name": "Lovelace",
                "country": "GB",
                "created_at": MS - 86_400_000,
                "updated_at": "2026-09-02T00:00:00Z",
            },
            300,
        ),
        "shop.shop.orders": mysql_event(
            "orders",
            {
                "order_id": 70,
                "customer_id": 7,
                "status": "paid",
                "currency": "EUR",
                "subtotal_amount": decimal(1000),
                "discount_amount": decimal(0),
                "shipping_amount": decimal(0),
                "total_amount": decimal(1000),
                "ordered_on": 20699,
                "created_at": MS - 3_600_000,
                "updated_at": "2026-09-02T23:00:00Z",
                "sales_channel": "web",
            },
            400,
        ),
    }
    for topic, line in topics.items():
        path = landing / "cdc" / topic / f"{topic}+0+0000000000.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")
        os.utime(path, (1_800_000_000, 1_800_000_000))


def new_user_and_aliases() -> list[dict]:
    """Grace signs in on her phone as user-new, which an alias merges with her earlier user id user-old; an
    alias of an anonymous id; an alias of an id seen nowhere else; two people whose SDK sent userId "null"."""
    return [
        segment("new-identify", "identify", T.format(1), anonymousId="anon-app-2", userId="user-new"),
        segment("new-alias", "alias", T.format(2), userId="user-new", previousId="user-old"),
        segment("page-3", "page", T.format(3), name="Home", anonymousId="anon-web-3"),
        segment("alias-3", "alias", T.format(4), userId="user-3", previousId="anon-web-3"),
        segment("alias-4", "alias", T.format(5), userId="user-4", previousId="legacy-42"),
        segment("identify-a", "identify", T.format(6), anonymousId="anon-a", userId="user-a"),
        segment("identify-b", "identify", T.format(7), anonymousId="anon-b", userId="user-b"),
        segment("null-a", "track", T.format(8), event="Product Viewed", anonymousId="anon-a", userId="null"),
        segment("null-b", "track", T.format(9), event="Product Viewed", anonymousId="anon-b", userId="null"),
        segment(
            "undefined-b",
            "track",
            T.format(10),
            event="Product Viewed",
            anonymousId="anon-b",
            userId="undefined",
        ),
        segment("undef-anon-a", "page", T.format(11), name="Home", anonymousId="undefined", userId="user-a"),
        segment("undef-anon-b", "page", T.format(12), name="Home", anonymousId="undefined", userId="user-b"),
    ]


def old_user() -> list[dict]:
    """Grace's earlier sign-in on the web as user-old, with her e-mail (the CRM contact's)."""
    return [
        segment(
            "old-identify",
            "identify",
            T.format(0),
            anonymousId="anon-web-1",
            userId="user-old",
            traits=GRACE_TRAITS_CAMEL,
        )
    ]


def build(settings: Settings, scratch: Path) -> pl.DataFrame:
    ingest_all(settings)
    publish_silver(settings, load_contracts(settings.contracts_dir))
    run_dbt(settings, scratch, "build", "--select", "+identity_person_map", "identity_person_changes")
    return read_warehouse(settings, "select identifier_type, identifier, person_id from identity_person_map")


pytestmark = pytest.mark.slow  # the maps fixture runs two dbt builds of the identity models (about a minute)


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The person map after the alias arrived alone, and after the earlier user id's messages arrived
    later."""
    tmp = tmp_path_factory.mktemp("segment_identity")
    settings = replace(lake_settings(tmp / "lake"), warehouse_path=tmp / "warehouse.duckdb")
    land_cdc(Path(settings.landing))
    land_segment(Path(settings.landing), "app", "10", new_user_and_aliases(), 1_800_000_000)
    before = build(settings, tmp / "first")
    land_segment(Path(settings.landing), "web", "09", old_user(), 1_800_000_100)
    return before, build(settings, tmp / "second")


def person(frame: pl.DataFrame, kind: str, identifier: str) -> str:
    return frame.filter((pl.col("identifier_type") == kind) & (pl.col("identifier") == identifier))[
        "person_id"
    ].item()


def members(frame: pl.DataFrame, kind: str, identifier: str) -> set[tuple[str, str]]:
    """The identifiers (type, value) of the person that holds ``identifier``, tokens and CRM/shop ids aside
    from the clickstream ones."""
    people = frame.filter(pl.col("person_id") == person(frame, kind, identifier))
    return set(people.select("identifier_type", "identifier").iter_rows())


def test_alias_of_an_earlier_user_id_merges_the_two_users(maps) -> None:
    _, after = maps
    grace = members(after, "app_user_id", "user-new")
    assert {
        ("app_user_id", "user-old"),
        ("anonymous_id", "anon-web-1"),
        ("anonymous_id", "anon-app-2"),
        ("crm_contact_id", "1"),
    } <= grace
    assert ("anonymous_id", "user-old") not in set(after.select("identifier_type", "identifier").iter_rows())


def test_the_namespace_of_previous_id_is_decided_from_all_the_data(maps) -> None:
    before, after = maps
    # before user-old was seen as a user id, the alias could only name an anonymous id
    assert ("anonymous_id", "user-old") in members(before, "app_user_id", "user-new")
    assert before.filter(pl.col("identifier_type") == "app_user_id")["identifier"].sort().to_list() == [
        "user-3",
        "user-4",
        "user-a",
        "user-b",
        "user-new",
    ]
    # the same alias, once user-old's own messages arrived: the same partition as if they had come first
    assert ("app_user_id", "user-old") in members(after, "app_user_id", "user-new")


def test_alias_of_an_anonymous_id_and_of_an_unknown_id(maps) -> None:
    _, after = maps
    assert members(after, "app_user_id", "user-3") == {
        ("app_user_id", "user-3"),
        ("anonymous_id", "anon-web-3"),
    }
    assert members(after, "app_user_id", "user-4") == {
        ("app_user_id", "user-4"),
        ("anonymous_id", "legacy-42"),
    }


def test_placeholder_ids_link_nothing(maps) -> None:
    for frame in maps:
        assert not frame.filter(
            pl.col("identifier").str.strip_chars().str.to_lowercase().is_in(["null", "undefined", "none", ""])
        ).height
        assert members(frame, "app_user_id", "user-a") == {
            ("app_user_id", "user-a"),
            ("anonymous_id", "anon-a"),
        }
        assert members(frame, "app_user_id", "user-b") == {
            ("app_user_id", "user-b"),
            ("anonymous_id", "anon-b"),
        }
