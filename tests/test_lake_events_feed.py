"""A third kind of feed, an append-only event table, through the lake's normal ingestion: its contract
(tests/fixtures/contracts) and its class (lake/feeds/events.py) are all it takes."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from conftest import lake_settings
from deltalake import DeltaTable

from data_contracts import load_contracts
from lake import bronze, maintenance, quality
from lake.dbt_sources import source_files
from lake.feeds import feed_of
from lake.ingest import backlog, ingest_all
from lake.ledger import Ledger
from lake.settings import Settings
from lake.warehouse import publish_silver

CONTRACTS = Path(__file__).parent / "fixtures" / "contracts"
FEED = "events"


def view(event_id: str, at: str, path: str, **extra) -> str:
    return json.dumps({"event_id": event_id, "viewed_at": at, "path": path, **extra})


FIRST = [
    view("e1", "2026-09-03T10:00:00Z", "/a", email=" Ada@Example.COM ", duration_ms=1200),
    view("e2", "2026-09-03T10:05:00Z", "/b"),
    json.dumps({"event_id": "e3", "path": "/c"}),  # no event time: breaks the contract
    "{not json",
]
SECOND = [
    view("e2", "2026-09-03T10:05:00Z", "/b-redelivered"),  # a second delivery of e2: dropped
    view("e4", "2026-09-03T09:00:00Z", "/d"),  # behind the event time silver has seen: late, kept
    view("e5", "2026-09-03T11:00:00Z", "/e"),
]


def land(landing: Path, name: str, lines: list[str], mtime: int) -> None:
    folder = landing / "events" / "2026-09-03"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.utime(path, (mtime, mtime))


def settings_for(tmp_path: Path) -> Settings:
    return lake_settings(
        tmp_path / "lake",
        tmp_path / "landing",
        contracts_dir=CONTRACTS,
        warehouse_path=tmp_path / "warehouse.duckdb",
    )


def silver(settings: Settings) -> pl.DataFrame:
    uri = feed_of(load_contracts(CONTRACTS)[FEED]).silver[0].uri(settings)
    return pl.read_delta(uri).sort("event_id")


def ledger_totals(settings: Settings) -> tuple[int, int, int]:
    files = Ledger(bronze.ledger_uri(settings), settings.storage_options).committed_files()
    mine = files.filter(pl.col("feed_id") == FEED)
    return int(mine["records"].sum()), int(mine["bronze_rows"].sum()), int(mine["quarantined"].sum())


def quarantine(settings: Settings) -> pl.DataFrame:
    return pl.read_delta(bronze.quarantine_uri(settings)).filter(pl.col("feed_id") == FEED).sort("line")


def test_an_append_only_event_feed_lands_dedups_quarantines_and_reruns(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    contracts = load_contracts(CONTRACTS)
    land(tmp_path / "landing", "part-0001.jsonl", FIRST, 1_800_000_000)
    assert backlog(settings, contracts) == ["events/2026-09-03/part-0001.jsonl"]

    run = ingest_all(settings)
    (ingested,) = run.ingested
    (applied,) = run.applied
    assert (ingested.feed_id, ingested.files, ingested.records) == (FEED, 1, 4)
    assert (ingested.bronze_rows, ingested.quarantined) == (2, 2)
    assert (applied.inserted, applied.duplicates, applied.late) == (2, 0, 0)
    assert applied.event_watermark == datetime(2026, 9, 3, 10, 5, tzinfo=UTC)

    rows = silver(settings)
    assert rows["event_id"].to_list() == ["e1", "e2"]
    assert rows["path"].to_list() == ["/a", "/b"]
    assert rows["duration_ms"].to_list() == [1200, None]
    assert rows["viewed_at"].to_list() == [
        datetime(2026, 9, 3, 10, 0, tzinfo=UTC),
        datetime(2026, 9, 3, 10, 5, tzinfo=UTC),
    ]
    assert (
        "email" not in rows.columns
    )  # no raw personal data in silver: a keyed hash of the normalised address
    expected = hmac.new(settings.pii_secret.encode(), b"ada@example.com", hashlib.sha256).hexdigest()
    assert rows["email_token"].to_list() == [expected, None]

    bad = quarantine(settings)
    assert bad["line"].to_list() == [3, 4]
    assert "viewed_at" in bad["reason"][0]
    assert bad["reason"][1] == "invalid JSON"
    assert bad["raw"].to_list() == FIRST[2:]
    records, in_bronze, quarantined = ledger_totals(settings)
    assert records == in_bronze + quarantined == 4
    assert pl.read_delta(bronze.bronze_uri(settings, contracts[FEED])).height == in_bronze == 2

    # nothing new: a second run changes no table
    uri = feed_of(contracts[FEED]).silver[0].uri(settings)
    version = DeltaTable(uri).version()
    again = ingest_all(settings)
    assert (again.ingested[0].files, again.applied[0].inserted) == (0, 0)
    assert DeltaTable(uri).version() == version
    assert silver(settings).equals(rows)
    assert ledger_totals(settings) == (4, 2, 2)
    assert backlog(settings, contracts) == []

    # a later file: a redelivery dropped, a late event kept, the event-time watermark moves on
    land(tmp_path / "landing", "part-0002.jsonl", SECOND, 1_800_003_600)
    later = ingest_all(settings)
    assert (later.applied[0].inserted, later.applied[0].duplicates, later.applied[0].late) == (2, 1, 1)
    assert later.applied[0].event_watermark == datetime(2026, 9, 3, 11, 0, tzinfo=UTC)
    rows = silver(settings)
    assert rows["event_id"].to_list() == ["e1", "e2", "e4", "e5"]
    assert rows.filter(pl.col("event_id") == "e2")["path"].item() == "/b"  # the first delivery
    assert ledger_totals(settings) == (7, 5, 2)
    assert quarantine(settings).height == 2


def test_the_rest_of_the_lake_asks_the_event_feed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    contracts = load_contracts(CONTRACTS)
    feed = feed_of(contracts[FEED])
    land(tmp_path / "landing", "part-0001.jsonl", FIRST + SECOND, 1_800_000_000)
    ingest_all(settings)

    assert publish_silver(settings, contracts) == ["web__page_views"]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        ids = [r[0] for r in con.sql('select event_id from silver."web__page_views" order by 1').fetchall()]
    assert ids == ["e1", "e2", "e4", "e5"]

    results = quality.contract_rules(settings, contracts[FEED])
    assert {r.name for r in results} == {rule.name for rule in contracts[FEED].rules}
    assert all(r.passed for r in results)

    uris = maintenance.table_uris(settings, contracts)
    assert feed.bronze_uri(settings) in uris and feed.silver[0].uri(settings) in uris

    (text,) = source_files(contracts).values()
    (table,) = yaml.safe_load(text)["sources"][0]["tables"]
    assert (table["identifier"], table["config"]["loaded_at_field"]) == ("web__page_views", "viewed_at")
    assert [c["name"] for c in table["columns"]] == [
        "event_id",
        "viewed_at",
        "path",
        "duration_ms",
        "email_token",
        "_source_file",
        "_line",
    ]


def test_the_event_feed_gets_its_assets_and_checks_without_a_history_check() -> None:
    from orchestration.lake_assets import lake_definitions

    assets, checks = lake_definitions(load_contracts(CONTRACTS), produced=set())
    keys = {tuple(k.path) for a in assets for k in (a.keys if hasattr(a, "keys") else [a.key])}
    assert keys == {(zone, "web", "page_views") for zone in ("landing", "bronze", "silver")}
    check_keys = {(tuple(k.asset_key.path), k.name) for c in checks for k in c.check_keys}
    assert check_keys == {
        (("silver", "web", "page_views"), r.name) for r in load_contracts(CONTRACTS)[FEED].rules
    }


def test_each_kind_of_feed_has_its_class_and_an_unknown_kind_is_named() -> None:
    from dataclasses import replace

    from lake.feeds import FEED_KINDS
    from lake.feeds.events import EventsFeed

    contract = load_contracts(CONTRACTS)[FEED]
    assert {"cdc", "clickstream", "events"} <= set(FEED_KINDS)
    assert type(feed_of(contract)) is EventsFeed
    with pytest.raises(ValueError, match="no feed class for kind 'stream'"):
        feed_of(replace(contract, feed="stream"))
