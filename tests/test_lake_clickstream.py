"""Clickstream, bronze to silver: one row per messageId, clock skew corrected, personal data protected."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from conftest import Simulated, lake_settings

from lake import clickstream
from lake.ingest import ingest_all


def message(message_id: str, received: str, sent: str, original: str, **extra) -> dict:
    return {
        "messageId": message_id,
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-1",
        "properties": {"product_id": "SKU-1", "price": 9.5, "quantity": 2},
        "context": {"ip": "203.0.113.77"},
        "receivedAt": received,
        "sentAt": sent,
        "originalTimestamp": original,
        **extra,
    }


def land(landing: Path, hour: str, messages: list[dict], mtime: int) -> None:
    folder = landing / "clickstream" / "app" / "2026-09-03" / hour
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "part-0002.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(m) + "\n" for m in messages))
    os.utime(path, (mtime, mtime))


def silver_of(tmp: Path, order: list[str], together: bool = False, step_rows: int = 250_000) -> pl.DataFrame:
    """Silver after the files of ``order`` landed in that order, each ingested in a run of its own, or all in
    one run (``together``) applied ``step_rows`` bronze rows at a time."""
    files = {
        "10": [
            # a device clock two days behind: the event happened 1.5 s before Segment received it
            message(
                "skewed", "2026-09-03T10:00:02.000Z", "2026-09-01T10:00:01.000Z", "2026-09-01T10:00:00.500Z"
            ),
            message(
                "dup", "2026-09-03T10:30:00.000Z", "2026-09-03T10:29:59.000Z", "2026-09-03T10:29:58.000Z"
            ),
            # a server-side message: its explicit timestamp is kept
            message(
                "server",
                "2026-09-03T10:40:00.000Z",
                "2026-09-03T10:39:00.000Z",
                "2026-09-03T10:38:00.000Z",
                timestamp="2026-09-03T09:00:00.000Z",
            ),
            # received just before midnight with the device clock right: its event date is the 3rd
            message(
                "moved", "2026-09-03T23:59:59.000Z", "2026-09-03T23:59:58.500Z", "2026-09-03T23:59:58.000Z"
            ),
            {
                "messageId": "who",
                "type": "identify",
                "userId": "usr_1",
                "anonymousId": "anon-1",
                "traits": {"email": " Ada@Example.COM ", "plan": "gold"},
                "receivedAt": "2026-09-03T10:50:00Z",
                "sentAt": "2026-09-03T10:50:00Z",
                "originalTimestamp": "2026-09-03T10:50:00Z",
            },
        ],
        # the client retried: the same message delivered again an hour later
        "11": [
            message(
                "dup", "2026-09-03T11:30:00.000Z", "2026-09-03T11:29:59.000Z", "2026-09-03T10:29:58.000Z"
            ),
            # retried the next day by a device whose clock is now two hours behind: this delivery's corrected
            # event time falls on the 4th, so the two deliveries belong to different partitions of silver
            message(
                "moved", "2026-09-04T10:00:00.000Z", "2026-09-04T08:00:00.000Z", "2026-09-03T23:59:58.000Z"
            ),
        ],
    }
    landing = tmp / "landing"
    settings = lake_settings(tmp / "lake", landing, apply_step_rows=step_rows)
    for i, hour in enumerate(order):
        land(landing, hour, files[hour], 1_800_000_000 + i)
        if not together:
            ingest_all(settings, ["clickstream"])
    if together:
        ingest_all(settings, ["clickstream"])
    return pl.read_delta(clickstream.silver_uri(settings)).sort("message_id")


def test_duplicates_skew_and_pii_whatever_the_delivery_order(tmp_path: Path) -> None:
    first = silver_of(tmp_path / "a", ["10", "11"])
    reversed_order = silver_of(tmp_path / "b", ["11", "10"])
    assert first.equals(reversed_order)
    # one run, one message per step: the steps find what the earlier steps wrote
    assert first.equals(silver_of(tmp_path / "d", ["11", "10"], together=True, step_rows=1))
    assert first["message_id"].to_list() == ["dup", "moved", "server", "skewed", "who"]
    rows = {r["message_id"]: r for r in first.iter_rows(named=True)}
    assert rows["dup"]["received_at"] == datetime(2026, 9, 3, 10, 30, tzinfo=UTC)  # the first delivery
    assert rows["moved"]["received_at"] == datetime(2026, 9, 3, 23, 59, 59, tzinfo=UTC)
    assert rows["moved"]["event_date"].isoformat() == "2026-09-03"
    assert rows["skewed"]["event_at"] == datetime(2026, 9, 3, 10, 0, 1, 500000, tzinfo=UTC)
    assert rows["skewed"]["event_date"].isoformat() == "2026-09-03"
    assert rows["server"]["event_at"] == datetime(2026, 9, 3, 9, 0, tzinfo=UTC)
    assert (rows["dup"]["product_id"], rows["dup"]["price"], rows["dup"]["quantity"]) == ("SKU-1", 9.5, 2)
    assert rows["dup"]["context_ip_prefix"] == "203.0.113.0"
    assert json.loads(rows["who"]["traits"]) == {"plan": "gold"}
    other = silver_of(tmp_path / "c", ["10"])
    assert (
        rows["who"]["traits_email_token"]
        == other.filter(pl.col("message_id") == "who")["traits_email_token"].item()
    )
    assert len(rows["who"]["traits_email_token"]) == 64


def test_real_clickstream_has_one_row_per_valid_message(simulated: Simulated, ingested) -> None:
    settings, run = ingested
    events = pl.read_delta(clickstream.silver_uri(settings))
    bronze_rows = next(r for r in run.ingested if r.feed_id == "clickstream").bronze_rows
    faults = simulated.manifest["faults"]
    assert events["message_id"].n_unique() == events.height
    raw = pl.read_delta(f"{settings.lake_root}/bronze/clickstream/events")
    assert raw.height == bronze_rows and events.height == raw["message_id"].n_unique()
    # every dropped row is an injected duplicate delivery (some duplicates were quarantined with their twin)
    assert (
        0.9 * faults["click_duplicate_deliveries"]
        <= bronze_rows - events.height
        <= faults["click_duplicate_deliveries"]
    )
    assert events.filter(pl.col("event_at").is_null() | pl.col("event_date").is_null()).height == 0
    # skew corrected: the corrected time never lies after Segment received the message
    assert events.filter(pl.col("event_at") > pl.col("received_at")).height == 0
    assert set(events["source"].unique()) == {"web", "app", "server"}
