"""The simulated CDC feeds are valid Debezium change events, with the faults of real delivery."""

from __future__ import annotations

import base64
import json
import math
import os
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from simulator.tables import crm_server, shop_server
from tests.conftest import Simulated, read_lines

OPS = {"c", "u", "d", "r"}
SNAPSHOT_MARKERS = {"true", "first", "first_in_data_collection", "last_in_data_collection", "last", "false"}


def _within(observed: int, trials: int, rate: float, sigmas: float = 4.0) -> bool:
    expected = trials * rate
    return abs(observed - expected) <= sigmas * math.sqrt(max(expected * (1 - rate), 1.0)) + 1


def _decimal(value: str, scale: int, precise: bool) -> float:
    if precise:
        return int.from_bytes(base64.b64decode(value), "big", signed=True) / 10**scale
    return float(value)


@pytest.fixture(scope="module")
def cdc(simulated: Simulated) -> dict:
    """Every CDC line, parsed: {topic: [(file name, partition, start offset, line number, value), ...]}."""
    topics: dict[str, list] = {}
    for folder in sorted((simulated.landing / "cdc").iterdir()):
        rows = []
        for path in sorted(folder.iterdir()):
            _, partition, offset = path.name.split(".json")[0].split("+")
            for number, line in enumerate(read_lines(path)):
                rows.append((path.name, int(partition), int(offset), number, json.loads(line)))
        topics[folder.name] = rows
    return topics


def test_topics_are_the_source_tables(cdc: dict, simulated: Simulated) -> None:
    days = simulated.config.days
    # the recommendations our sync writes into the CRM are captured only once the closed loop runs
    expected = {s.topic(t) for s in (crm_server(days), shop_server(days)) for t in s.tables}
    expected.remove("crm.public.nba_recommendations")
    assert set(cdc) == expected
    assert sum(len(rows) for rows in cdc.values()) == simulated.manifest["lines_by_feed"]["cdc"]


def test_every_line_is_a_debezium_envelope_or_a_tombstone_after_a_delete(
    cdc: dict, simulated: Simulated
) -> None:
    days = simulated.config.days
    servers = {s.name: s for s in (crm_server(days), shop_server(days))}
    for topic, rows in cdc.items():
        server = servers[topic.split(".")[0]]
        table = next(t for t in server.tables if server.topic(t) == topic)
        previous = None
        for name, _, _, number, value in rows:
            if value is None:
                assert previous is not None and previous["op"] == "d", (
                    f"{name}:{number} tombstone without a delete"
                )
                previous = None
                continue
            if server.schemas_enabled:
                assert set(value) == {"schema", "payload"}
                assert value["schema"]["name"] == f"{topic}.Envelope"
                schema_columns = [f["field"] for f in value["schema"]["fields"][1]["fields"]]
                value = value["payload"]
            source = value["source"]
            assert value["op"] in OPS and isinstance(value["ts_ms"], int)
            assert source["connector"] == server.connector and source["name"] == server.name
            assert source["table"] == table.name and source["snapshot"] in SNAPSHOT_MARKERS
            if server.connector == "postgresql":
                assert isinstance(source["lsn"], int) and isinstance(source["txId"], int)
            else:
                assert source["file"].startswith("mysql-bin.") and isinstance(source["pos"], int)
                assert isinstance(source["row"], int)
            if value["op"] in ("c", "u", "r"):
                assert value["after"] and value["after"][table.primary_key] is not None
                if server.schemas_enabled:
                    assert list(value["after"]) == schema_columns
            if value["op"] == "d":
                assert value["after"] is None and value["before"][table.primary_key] is not None
            if value["op"] == "r":
                assert value["before"] is None
            if server.connector == "postgresql" and value["op"] == "u":
                assert value["before"] is None, "the CRM runs with the default replica identity"
            if server.connector == "postgresql" and value["op"] == "d":
                assert [k for k, v in value["before"].items() if v is not None] == [table.primary_key]
            if server.connector == "mysql" and value["op"] == "u":
                assert value["before"][table.primary_key] == value["after"][table.primary_key]
            previous = value


def _payloads(rows: list):
    for *_, value in rows:
        if value is not None:
            yield value.get("payload", value)


def test_debezium_encodings_decode_to_consistent_values(cdc: dict) -> None:
    orders = [p["after"] for p in _payloads(cdc["shop.shop.orders"]) if p["after"]]
    assert orders
    for order in orders:
        sub, disc, ship, total = (
            _decimal(order[k], 2, precise=True)
            for k in ("subtotal_amount", "discount_amount", "shipping_amount", "total_amount")
        )
        assert total == pytest.approx(sub - disc + ship) and total > 0
        created = datetime.fromtimestamp(order["created_at"] / 1000, UTC)  # io.debezium.time.Timestamp (ms)
        assert date.fromordinal(date(1970, 1, 1).toordinal() + order["ordered_on"]) == created.date()  # Date
        updated = datetime.strptime(order["updated_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)  # Zoned
        assert updated >= created.replace(microsecond=0)
    offers = [p["after"]["offer_value"] for p in _payloads(cdc["crm.public.activities"]) if p["after"]]
    assert {"10.00", "4.95", "0.00"} <= set(offers)  # decimal.handling.mode=string
    contacts = [p["after"] for p in _payloads(cdc["crm.public.contacts"]) if p["after"]]
    for contact in contacts[:500]:
        created = datetime.strptime(contact["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")  # ZonedTimestamp
        assert (
            contact["updated_at"] >= int(created.replace(tzinfo=UTC).timestamp() * 1e6) - 1
        )  # MicroTimestamp
        assert json.loads(contact["attributes"])["tier"] in ("gold", "standard")  # io.debezium.data.Json


def test_snapshot_comes_first_then_changes_in_log_order(cdc: dict) -> None:
    markers = Counter()
    for topic, rows in cdc.items():
        positions = defaultdict(list)
        for *_, value in rows:
            if value is None:
                continue
            value = value.get("payload", value)
            source = value["source"]
            markers[source["snapshot"]] += 1
            key = source.get("lsn") if "lsn" in source else (source["file"], source["pos"], source["row"])
            positions[value["op"] == "r"].append(key)
        if positions[True] and positions[False]:
            assert max(positions[True]) < min(positions[False]), topic
    assert markers["first"] == 2 and markers["last"] == 2  # one snapshot per connector
    assert markers["true"] > 0 and markers["false"] > 0


def test_duplicate_deliveries_at_the_configured_rate(cdc: dict, simulated: Simulated) -> None:
    seen: Counter = Counter()
    streamed = 0
    for topic, rows in cdc.items():
        for value in _payloads(rows):
            if value["op"] == "r":
                continue
            streamed += 1
            source = value["source"]
            position = (
                source.get("lsn") if "lsn" in source else (source["file"], source["pos"], source["row"])
            )
            seen[(topic, position, json.dumps(value["after"] or value["before"], sort_keys=True))] += 1
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates == simulated.manifest["faults"]["cdc_duplicate_events"]
    assert _within(duplicates, streamed - duplicates, simulated.config.faults.cdc_duplicate, sigmas=6)


def test_some_files_arrive_out_of_order(simulated: Simulated) -> None:
    late = files = 0
    for folder in (simulated.landing / "cdc").iterdir():
        by_partition = defaultdict(list)
        for path in folder.iterdir():
            _, partition, offset = path.name.split(".json")[0].split("+")
            by_partition[partition].append((int(offset), os.stat(path).st_mtime_ns))
        for entries in by_partition.values():
            entries.sort()
            files += len(entries)
            late += sum(a[1] > b[1] for a, b in pairwise(entries))
    injected = simulated.manifest["faults"]["cdc_out_of_order_files"]
    assert 0 < late <= injected
    assert _within(injected, files, simulated.config.faults.cdc_out_of_order_file, sigmas=5)


def test_a_column_appears_part_way_through_the_history(cdc: dict, simulated: Simulated) -> None:
    start = datetime.combine(simulated.config.start, datetime.min.time(), UTC).timestamp() * 1000
    for topic, column in (
        ("crm.public.contacts", "preferred_language"),
        ("shop.shop.orders", "sales_channel"),
    ):
        with_column = [column in p["after"] for p in _payloads(cdc[topic]) if p["after"]]
        assert not with_column[0] and with_column[-1], f"{column} must be added during the window"
        days = [
            (p["source"]["ts_ms"] - start) // 86_400_000
            for p in _payloads(cdc[topic])
            if p["after"] and column in p["after"]
        ]
        assert min(days) > 0
    schemas = {len(v["schema"]["fields"][1]["fields"]) for *_, v in cdc["shop.shop.orders"] if v is not None}
    assert len(schemas) == 2, "the schema envelope changes with the new column"


def test_a_deleted_row_only_comes_back_through_a_create(cdc: dict, simulated: Simulated) -> None:
    days = simulated.config.days
    keys = {s.topic(t): t.primary_key for s in (crm_server(days), shop_server(days)) for t in s.tables}
    reinserts = 0
    for topic, rows in cdc.items():
        history = defaultdict(list)
        for value in _payloads(rows):
            source = value["source"]
            position = (
                source.get("lsn") if "lsn" in source else (source["file"], source["pos"], source["row"])
            )
            history[(value["after"] or value["before"])[keys[topic]]].append((position, value["op"]))
        for changes in history.values():
            ops = [op for _, op in sorted(set(changes))]
            for before, after in pairwise(ops):
                if before == "d":
                    assert after == "c", f"{topic}: {after} after a delete"
                    reinserts += 1
    assert reinserts > 0, "some deleted contacts are restored"
