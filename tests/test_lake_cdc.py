"""CDC apply, bronze to silver: Debezium decoding, log-position order, deletes, truncates, history,
privacy."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import Simulated, lake_settings, lake_tables

from data_contracts import load_contracts
from lake import cdc
from lake.debezium import decode_images, precise_decimals
from lake.feeds import feed_of
from lake.ingest import ingest_all
from lake.settings import get_settings
from lake.warehouse import publish_silver

CONTACTS = "crm.public.contacts"
T0 = 1_788_000_000_000  # ms


def contact(contact_id: int, email: str, **extra) -> dict:
    """A full contacts row as the CRM connector writes it (no schema envelope, Debezium time encodings)."""
    return {
        "contact_id": contact_id,
        "email": email,
        "phone": None,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "country": "GB",
        "birth_date": 7000,
        "attributes": '{"tier":"gold"}',
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": 1_767_225_600_000_000,
        **extra,
    }


def event(op: str, lsn: int, after: dict | None = None, before: dict | None = None) -> str:
    """One Debezium PostgreSQL change event at log position ``lsn``."""
    source = {
        "connector": "postgresql",
        "name": "crm",
        "ts_ms": T0 + lsn,
        "snapshot": "false",
        "db": "crm",
        "schema": "public",
        "table": "contacts",
        "txId": lsn,
        "lsn": lsn,
    }
    return json.dumps({"before": before, "after": after, "source": source, "op": op, "ts_ms": T0 + lsn + 5})


def land(landing: Path, name: str, lines: list[str], mtime: int, topic: str = CONTACTS) -> None:
    """Write a topic file and give it an arrival time."""
    path = landing / "cdc" / topic / f"{topic}+0+{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, (mtime, mtime))


FILES = {
    "0000000000": [
        event("r", 100, contact(1, "A@x.com")),
        event("u", 200, contact(1, "b@x.com")),
        event("c", 150, contact(2, "c@x.com")),
    ],
    "0000000003": [
        event("d", 300, before={"contact_id": 1, **dict.fromkeys(["email", "phone"])}),
        "null",
        event("c", 400, contact(1, " C@X.com ")),
    ],
    "0000000006": [
        event("u", 200, contact(1, "b@x.com")),
        event("u", 500, contact(2, "c@x.com", preferred_language="de")),
    ],
}


def build(tmp: Path, order: list[str], split: int | None = None) -> dict[str, pl.DataFrame]:
    """Land FILES in ``order`` of arrival, ingest (all at once, or the first ``split`` files, then the
    rest)."""
    landing = tmp / "landing"
    settings = lake_settings(tmp / "lake", landing)
    for i, name in enumerate(order):
        if split is not None and i == split:
            ingest_all(settings, [CONTACTS])
        land(landing, name, FILES[name], 1_800_000_000 + i)
    ingest_all(settings, [CONTACTS])
    current, history = cdc.silver_uris(settings, load_contracts()[CONTACTS])
    return {
        "current": pl.read_delta(current).sort("contact_id"),
        "history": pl.read_delta(history).sort("contact_id", "_log_pos"),
    }


def test_the_highest_log_position_wins_whatever_the_arrival_order(tmp_path: Path) -> None:
    in_order = build(tmp_path / "a", ["0000000000", "0000000003", "0000000006"])
    shuffled = build(tmp_path / "b", ["0000000006", "0000000003", "0000000000"])
    incremental = build(tmp_path / "c", ["0000000003", "0000000006", "0000000000"], split=1)
    for other in (shuffled, incremental):
        assert in_order["current"].equals(other["current"])
        assert in_order["history"].equals(other["history"])
    current, history = in_order["current"], in_order["history"]
    assert current["contact_id"].to_list() == [1, 2]
    # contact 1 re-inserted after its delete, e-mail normalised then tokenised; contact 2 has the new column
    assert current["_log_pos"].to_list() == [400, 500]
    assert current["email_token"][0] == current["email_token"][1]  # " C@X.com " and "c@x.com"
    assert current.filter(pl.col("contact_id") == 2)["preferred_language"].item() == "de"
    assert current.filter(pl.col("contact_id") == 1)["preferred_language"].item() is None
    # history: every version once (the replayed update counts once), with contiguous validity intervals
    one = history.filter(pl.col("contact_id") == 1)
    assert one["_op"].to_list() == ["r", "u", "d", "c"]
    ts = [datetime.fromtimestamp((T0 + lsn) / 1000, UTC) for lsn in (100, 200, 300, 400)]
    assert one["_valid_from"].to_list() == ts
    assert one["_valid_to"].to_list() == [*ts[1:], None]


def test_a_truncate_ends_everything_before_it_even_rows_that_arrive_late(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    settings = lake_settings(tmp_path / "lake", landing)
    truncate = json.dumps(
        {
            "before": None,
            "after": None,
            "op": "t",
            "ts_ms": T0 + 205,
            "source": {"connector": "postgresql", "ts_ms": T0 + 200, "lsn": 200, "txId": 9},
        }
    )
    land(
        landing,
        "0000000000",
        [
            event("c", 100, contact(1, "a@x.com")),
            event("c", 110, contact(2, "b@x.com")),
            truncate,
            event("c", 300, contact(3, "c@x.com")),
            event("c", 310, contact(1, "a@x.com")),
        ],
        1_800_000_000,
    )
    ingest_all(settings, [CONTACTS])
    current_uri, history_uri = cdc.silver_uris(settings, load_contracts()[CONTACTS])
    assert pl.read_delta(current_uri)["contact_id"].sort().to_list() == [1, 3]
    land(
        landing, "0000000005", [event("u", 150, contact(2, "late@x.com"))], 1_800_000_100
    )  # before the truncate
    report = ingest_all(settings, [CONTACTS]).applied[0]
    assert report.changes == 1
    assert pl.read_delta(current_uri)["contact_id"].sort().to_list() == [1, 3]
    history = pl.read_delta(history_uri)
    at_truncate = datetime.fromtimestamp((T0 + 200) / 1000, UTC)
    closed = history.filter(pl.col("_log_pos") < 200).sort("_log_pos")
    assert closed["_log_pos"].to_list() == [100, 110, 150]
    assert closed["_valid_to"].to_list() == [
        at_truncate,
        datetime.fromtimestamp((T0 + 150) / 1000, UTC),
        at_truncate,
    ]
    assert history.filter(pl.col("_op") == "t").height == 1
    assert history.filter(pl.col("_valid_to").is_null() & (pl.col("_op") != "t"))[
        "contact_id"
    ].sort().to_list() == [1, 3]


def test_a_cdc_table_before_its_first_change_has_a_typed_empty_view(tmp_path: Path) -> None:
    # a source table can stay empty for long (the CRM's recommendations before the first sync): dbt's sources
    # and their tests need its view from the start, with the types the first change will bring
    built = build(tmp_path / "a", ["0000000000", "0000000003", "0000000006"])
    contract = load_contracts()[CONTACTS]
    for kind, history in (("current", False), ("history", True)):
        assert cdc.empty_silver(contract, get_settings().pii_secret, history).schema == built[kind].schema

    def views(settings) -> dict[str, tuple[list, int]]:
        published = publish_silver(settings, load_contracts())
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            return {
                view: (
                    con.execute(f'describe silver."{view}"').fetchall(),
                    con.execute(f'select count(*) from silver."{view}"').fetchone()[0],
                )
                for view in published
            }

    landed = views(lake_settings(tmp_path / "a" / "lake", warehouse_path=tmp_path / "a.duckdb"))
    empty = views(lake_settings(tmp_path / "empty", warehouse_path=tmp_path / "empty.duckdb"))
    assert landed["crm__contacts"][1] == 2 and landed["crm__contacts_history"][1] == 6
    for view in ("crm__contacts", "crm__contacts_history"):
        assert empty[view] == (landed[view][0], 0)  # same columns and types, no rows
    # every CDC table has its view before anything landed; a clickstream table only once it exists
    cdc_views = {t.view for c in load_contracts().values() if c.feed == "cdc" for t in feed_of(c).silver}
    assert set(empty) == cdc_views


def test_every_debezium_encoding_decodes_to_its_value() -> None:
    contracts = load_contracts()
    value_schema = json.dumps(
        {
            "fields": [
                {"type": "int64", "optional": False, "field": "order_id"},
                {
                    "type": "bytes",
                    "optional": False,
                    "name": "org.apache.kafka.connect.data.Decimal",
                    "parameters": {"scale": "2", "connect.decimal.precision": "12"},
                    "field": "total_amount",
                },
                {"type": "int32", "optional": False, "name": "io.debezium.time.Date", "field": "ordered_on"},
                {
                    "type": "int64",
                    "optional": False,
                    "name": "io.debezium.time.Timestamp",
                    "field": "created_at",
                },
                {
                    "type": "string",
                    "optional": False,
                    "name": "io.debezium.time.ZonedTimestamp",
                    "field": "updated_at",
                },
                {"type": "string", "optional": True, "field": "sales_channel"},
                {"type": "int32", "optional": True, "field": "gift_wrap_count"},
            ]
        }
    )
    unscaled = [3918, -125, 0, 2**36 + 7]
    encoded = [
        base64.b64encode(v.to_bytes((v.bit_length() + 8) // 8 or 1, "big", signed=True)).decode()
        for v in unscaled
    ]
    images = pl.Series(
        [
            json.dumps(
                {
                    "order_id": i,
                    "total_amount": e,
                    "ordered_on": 20669,
                    "created_at": 1785827472079,
                    "updated_at": "2026-08-07T10:43:48+02:00",
                    "gift_wrap_count": 2,
                }
            )
            for i, e in enumerate(encoded)
        ]
        + [None]
    )
    decoded = decode_images(images, contracts["shop.shop.orders"], value_schema)
    assert decoded["total_amount"].to_list()[:4] == [
        Decimal("39.18"),
        Decimal("-1.25"),
        Decimal("0.00"),
        Decimal(2**36 + 7) / 100,
    ]
    assert decoded["ordered_on"][0] == date(2026, 8, 4)
    assert decoded["created_at"][0] == datetime(2026, 8, 4, 7, 11, 12, 79000, tzinfo=UTC)
    assert decoded["updated_at"][0] == datetime(2026, 8, 7, 8, 43, 48, tzinfo=UTC)
    assert (
        decoded["gift_wrap_count"].dtype == pl.Int32 and decoded["gift_wrap_count"][0] == 2
    )  # unknown column
    assert decoded.row(4) == (None,) * decoded.width
    # without an envelope: the contract says how (string decimals, MicroTimestamp, Date, Json, ZonedTimestamp)
    crm = decode_images(
        pl.Series([json.dumps(contact(5, "x@y.z", preferred_language="fr"))]), contracts[CONTACTS], None
    )
    assert crm["birth_date"][0] == date(1989, 3, 2) and crm["preferred_language"][0] == "fr"
    assert crm["updated_at"][0] == datetime(2026, 1, 1, tzinfo=UTC) and crm["created_at"][0] == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    assert json.loads(crm["attributes"][0]) == {"tier": "gold"}
    activity = decode_images(
        pl.Series(['{"activity_id": 1, "offer_value": "-5.10", "propensity": 1}']),
        contracts["crm.public.activities"],
        None,
    )
    assert activity["offer_value"][0] == Decimal("-5.10") and activity["propensity"][0] == 1.0
    assert precise_decimals(pl.Series(["AA==", None]), 38, 4).to_list() == [Decimal("0.0000"), None]
    # a field no contract knows yet and no envelope types keeps its JSON text: one stable type across batches
    new = decode_images(
        pl.Series(['{"contact_id": 1, "score": 3}', '{"contact_id": 2, "score": 3.50, "tags": ["a"]}']),
        contracts[CONTACTS],
        None,
    )
    assert new["score"].to_list() == ["3", "3.5"] and new["tags"].to_list() == [None, '["a"]']


@pytest.fixture(scope="module")
def silver(ingested) -> dict[str, pl.DataFrame]:
    settings, _ = ingested
    return {name: frame for name, frame in lake_tables(settings).items() if name.startswith("silver/")}


def test_silver_matches_a_naive_replay_of_every_change(ingested, silver) -> None:
    """An independent reading of bronze (sort each key's events by position, take the last) gives silver's
    keys."""
    settings, _ = ingested
    contracts = load_contracts()
    for topic in ("crm.public.contacts", "crm.public.consents", "shop.shop.orders", "shop.shop.order_lines"):
        contract = contracts[topic]
        key = contract.primary_key[0]
        raw = pl.read_delta(f"{settings.lake_root}/bronze/cdc/{topic}").filter(~pl.col("is_tombstone"))
        image = pl.when(pl.col("op") == "d").then(pl.col("before")).otherwise(pl.col("after"))
        last = (
            raw.with_columns(
                image.str.json_path_match(f"$.{key}").cast(pl.Int64).alias("k"),
                pl.coalesce("source_lsn", "source_binlog_pos").alias("p"),
                pl.coalesce("source_binlog_row", 0).alias("r"),
            )
            .sort("k", "source_binlog_file", "p", "r")
            .group_by("k", maintain_order=True)
            .last()
        )
        alive = sorted(last.filter(pl.col("op") != "d")["k"].to_list())
        current = silver[f"silver/{contract.source_system}/{contract.name}"]
        assert sorted(current[key].to_list()) == alive, topic
        assert last.filter(pl.col("op") == "d").height > 0 or topic != "shop.shop.orders"
        history = silver[f"silver/{contract.source_system}/{contract.name}_history"]
        open_versions = history.filter(pl.col("_valid_to").is_null() & (pl.col("_op") != "d"))
        assert sorted(open_versions[key].to_list()) == alive
        assert history.filter(pl.col("_valid_to") < pl.col("_valid_from")).height == 0


def test_silver_holds_no_raw_personal_data(simulated: Simulated, silver) -> None:
    identifiers = simulated.identifiers()
    personal = identifiers.filter(pl.col("identifier_type").is_in(["email", "phone"]))["identifier"].to_list()
    assert personal
    for name, frame in silver.items():
        strings = frame.select(pl.col(pl.String))
        for column in strings.columns:
            values = strings[column].drop_nulls()
            assert not values.str.contains(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[a-z]{2,}").any(), (
                name,
                column,
            )
            assert not values.is_in(personal).any(), (name, column)
    contacts = silver["silver/crm/contacts"]
    assert {"email_token", "phone_token", "birth_year"} <= set(contacts.columns)
    assert not {"email", "phone", "first_name", "birth_date"} & set(contacts.columns)
    clicks = silver["silver/clickstream/events"]
    assert (
        "context_ip_prefix" in clicks.columns
        and clicks["context_ip_prefix"].drop_nulls().str.ends_with(".0").all()
    )


def test_shuffled_files_give_identical_silver_tables(simulated: Simulated, silver, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    shutil.copytree(simulated.landing, landing)
    files = sorted(p for p in landing.rglob("*.json*"))
    stamps = list(range(1_800_000_000, 1_800_000_000 + len(files)))
    random.Random(5).shuffle(stamps)
    for path, stamp in zip(files, stamps, strict=True):
        os.utime(path, (stamp, stamp))
    settings = lake_settings(tmp_path / "lake", landing)
    from data_contracts import load_contracts as contracts
    from lake import bronze, clickstream

    for contract in contracts().values():  # many small batches, applied one range at a time
        bronze.ingest(settings, contract, max_files_per_batch=40)
        if contract.feed == "clickstream":
            clickstream.apply(settings, contract, max_rows_per_step=5_000)
        else:
            cdc.apply(settings, contract, max_rows_per_step=500)
    shuffled = {name: frame for name, frame in lake_tables(settings).items() if name.startswith("silver/")}
    assert shuffled.keys() == silver.keys()
    for name, frame in silver.items():
        assert frame.equals(shuffled[name]), name


def test_a_batch_of_only_tombstones_or_truncates_applies_and_history_ignores_arrival_order(
    tmp_path: Path,
) -> None:
    truncate = json.dumps(
        {
            "before": None,
            "after": None,
            "op": "t",
            "ts_ms": T0 + 205,
            "source": {"connector": "postgresql", "ts_ms": T0 + 200, "lsn": 200},
        }
    )
    files = {
        "0000000000": [event("c", 100, contact(1, "a@x.com")), event("u", 300, contact(1, "b@x.com"))],
        "0000000002": ["null"],
        "0000000003": [truncate],
    }
    histories = []
    for run, order in enumerate(
        (["0000000000", "0000000002", "0000000003"], ["0000000003", "0000000002", "0000000000"])
    ):
        landing = tmp_path / f"landing{run}"
        settings = lake_settings(tmp_path / f"lake{run}", landing)
        for i, name in enumerate(order):
            land(landing, name, files[name], 1_800_000_000 + i)
            report = ingest_all(settings, [CONTACTS]).applied[0]  # one file at a time
            assert report.applied_batch == i + 1
        current_uri, history_uri = cdc.silver_uris(settings, load_contracts()[CONTACTS])
        assert pl.read_delta(current_uri).select("contact_id", "_log_pos").rows() == [(1, 300)]
        history = pl.read_delta(history_uri)
        histories.append(history.select(sorted(history.columns)).sort("_log_pos"))
    assert histories[0].equals(histories[1])
    ended = histories[0].filter(pl.col("_log_pos") == 100)["_valid_to"].item()
    assert ended == datetime.fromtimestamp((T0 + 200) / 1000, UTC)  # the truncate, not the next version


def test_validity_never_runs_backwards_when_change_times_do() -> None:
    """A snapshot read after a change that sits later in the log: intervals stay ordered by log position."""
    at = [
        datetime(2026, 9, 1, 12, tzinfo=UTC),
        datetime(2026, 9, 1, 11, tzinfo=UTC),
        datetime(2026, 9, 1, 13, tzinfo=UTC),
    ]
    versions = pl.DataFrame(
        {
            "contact_id": [1, 1, 1],
            "_op": ["r", "u", "u"],
            "_log_file": [""] * 3,
            "_log_pos": [10, 20, 30],
            "_log_row": [0, 0, 0],
            "_changed_at": at,
        }
    )
    history = cdc.history_versions(versions, pl.DataFrame(), ["contact_id"])
    assert history["_valid_from"].to_list() == [at[0], at[0], at[2]]
    assert history["_valid_to"].to_list() == [at[0], at[2], None]
    assert history.filter(pl.col("_valid_to") < pl.col("_valid_from")).height == 0
