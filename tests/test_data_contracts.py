"""The data contracts: they load, describe the simulator's real feeds, validate raw records in DuckDB, build
Great Expectations suites for the decoded tables, and guard against breaking changes without a major bump."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from data_contracts import (
    CONTRACTS_DIR,
    Contract,
    ContractError,
    breaking_changes,
    check_versions,
    key_violation_sql,
    lint,
    load_contract,
    load_contracts,
    validate_frame,
    violation_sql,
)
from data_contracts.__main__ import check, main
from simulator.debezium.envelope import connect_schema
from simulator.tables import crm_server, shop_server
from tests.conftest import Simulated, read_lines

CDC_FEEDS = (
    "crm.public.activities",
    "crm.public.consents",
    "crm.public.contacts",
    "shop.shop.customers",
    "shop.shop.order_lines",
    "shop.shop.orders",
    "shop.shop.products",
)
LOOP_FEED = "crm.public.nba_recommendations"
"""The recommendations our sync writes into the CRM, captured only once the closed loop runs."""
LOOP_COLUMNS = {"crm.public.activities": {"decision_id"}}
"""Columns the CRM adds when the closed loop starts (absent from the generated window)."""


@pytest.fixture(scope="module")
def contracts() -> dict[str, Contract]:
    return load_contracts()


@pytest.fixture(scope="module")
def landing(simulated: Simulated) -> duckdb.DuckDBPyConnection:
    """DuckDB with the raw landing lines: ``cdc(topic, payload)`` (the Debezium value, schema envelope
    removed; tombstones left out) and ``clicks(line)``."""
    topics, lines = [], []
    for folder in sorted((simulated.landing / "cdc").iterdir()):
        for path in sorted(folder.iterdir()):
            for line in read_lines(path):
                topics.append(folder.name)
                lines.append(line)
    clicks = [
        line
        for path in sorted((simulated.landing / "clickstream").rglob("*.jsonl.gz"))
        for line in read_lines(path)
    ]
    con = duckdb.connect()
    con.register("cdc_lines", pa.table({"topic": topics, "line": lines}))
    con.register("click_lines", pa.table({"line": clicks}))
    con.execute(
        "CREATE TABLE cdc AS SELECT topic, CASE WHEN json_exists(line, '$.payload') THEN line->'payload' "
        "ELSE line::JSON END AS payload FROM cdc_lines WHERE line <> 'null'"
    )
    con.execute("CREATE TABLE clicks AS SELECT line FROM click_lines")
    return con


def _violation(contract: Contract, record: str | None, key_only: bool = False) -> str | None:
    sql = (key_violation_sql if key_only else violation_sql)(contract, "r")
    return duckdb.execute(f"SELECT {sql} FROM (SELECT ?::VARCHAR AS r)", [record]).fetchall()[0][0]


# -- the contract files ----------------------------------------------------------------------------------


def test_one_valid_contract_per_feed(contracts: dict[str, Contract]) -> None:
    assert list(contracts) == ["clickstream", *sorted([*CDC_FEEDS, LOOP_FEED])]
    for feed_id, contract in contracts.items():
        assert contract.path.name == f"{contract.id}.odcs.yaml"
        # the consents contract took a major version when it accepted the profiling channel
        # and activities a minor one when it gained the decision id of the closed loop
        expected_version = {"crm.public.consents": "2.0.0", "crm.public.activities": "1.1.0"}.get(
            feed_id, "1.0.0"
        )
        assert contract.version == expected_version and contract.status == "active"
        if feed_id == "clickstream":
            assert (contract.feed, contract.topic, contract.source_system) == ("clickstream", None, "segment")
            assert contract.connector is None and contract.decimal_handling is None
        else:
            server = feed_id.split(".")[0]
            assert (contract.feed, contract.topic, contract.source_system) == ("cdc", feed_id, server)
            assert contract.name == feed_id.split(".")[-1]
            assert contract.owner == f"team:{server}-data"
            expected = ("postgresql", "string") if server == "crm" else ("mysql", "precise")
            assert (contract.connector, contract.decimal_handling) == expected
        assert {"latency", "freshness", "retention"} <= set(contract.sla)
        assert contract.sla["retention"]["unit"] == "d"
        assert contract.primary_key and all(contract.column(k).required for k in contract.primary_key)


def test_columns_are_the_simulator_tables_with_their_debezium_encodings(
    contracts: dict[str, Contract], simulated: Simulated
) -> None:
    days = simulated.config.days
    for server in (crm_server(days), shop_server(days)):
        for table in server.tables:
            contract = contracts[server.topic(table)]
            assert [c.name for c in contract.columns] == [c.name for c in table.columns]
            assert contract.primary_key == (table.primary_key,)
            fields = connect_schema(server, table, table.columns)["fields"][1]["fields"]
            for source, wire in zip(table.columns, fields, strict=True):
                column = contract.column(source.name)
                assert column.required == (not wire["optional"]), column.name
                assert column.debezium_type == wire.get("name"), column.name
                if source.added_on_day is not None:
                    assert not column.required, f"{column.name} appears part way through"
                if wire.get("name") == "org.apache.kafka.connect.data.Decimal":
                    precision = int(wire["parameters"]["connect.decimal.precision"])
                    scale = int(wire["parameters"]["scale"])
                    assert column.arrow_type == pa.decimal128(precision, scale), column.name


def test_arrow_schema_holds_the_decoded_types(contracts: dict[str, Contract]) -> None:
    orders = contracts["shop.shop.orders"].arrow_schema()
    assert orders.field("total_amount").type == pa.decimal128(12, 2)
    assert not orders.field("total_amount").nullable and orders.field("sales_channel").nullable
    assert orders.field("ordered_on").type == pa.date32()
    for name in ("created_at", "updated_at"):
        assert orders.field(name).type == pa.timestamp("us", tz="UTC")
    lines = contracts["shop.shop.order_lines"].arrow_schema()
    assert lines.field("unit_price").type == pa.decimal128(10, 2)
    assert lines.field("quantity").type == pa.int32() and lines.field("line_id").type == pa.int64()
    contacts = contracts["crm.public.contacts"]
    assert contacts.arrow_schema().field("attributes").type == pa.string()
    assert contacts.arrow_schema().field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert contacts.column("birth_date").wire_json_types == ("BIGINT", "UBIGINT")
    assert contacts.column("created_at").wire_json_types == ("VARCHAR",)
    activities = contracts["crm.public.activities"]
    assert activities.column("offer_value").arrow_type == pa.decimal128(10, 2)
    assert activities.column("propensity").arrow_type == pa.float64()
    assert activities.column("propensity").wire_json_types == ("DOUBLE", "BIGINT", "UBIGINT")
    clicks = contracts["clickstream"].arrow_schema()
    assert (
        clicks.field("receivedAt").type == pa.timestamp("us", tz="UTC")
        and not clicks.field("receivedAt").nullable
    )
    assert clicks.field("context").type == pa.string() and clicks.field("version").type == pa.int32()
    with pytest.raises(KeyError, match=r"shop\.shop\.orders has no column 'nope'"):
        contracts["shop.shop.orders"].column("nope")


def test_personal_data_is_marked(contracts: dict[str, Contract]) -> None:
    for feed_id in ("crm.public.contacts", "shop.shop.customers"):
        contract = contracts[feed_id]
        pii = {c.name: c.pii for c in contract.pii_columns}
        assert pii["email"] == "email" and pii["phone"] == "phone"
        assert pii["first_name"] == pii["last_name"] == "name"
        assert all(c.classification == "restricted" for c in contract.pii_columns)
        assert contract.column("country").pii is None
    assert contracts["crm.public.contacts"].column("birth_date").pii == "birth_date"
    clicks = contracts["clickstream"]
    assert clicks.pii_columns == ()
    assert clicks.pii_paths["context"]["$.ip"] == "ip"
    assert clicks.pii_paths["traits"]["$.email"] == "email"
    assert clicks.pii_paths["traits"]["$.phone"] == "phone"
    assert clicks.pii_paths["context"]["$.traits.email"] == "email"
    assert set(clicks.pii_paths) == {"context", "traits"}
    assert not any(c.pii_paths for c in contracts["shop.shop.orders"].columns)


def test_invalid_contracts_are_rejected_naming_the_file(tmp_path: Path) -> None:
    source = CONTRACTS_DIR / "crm.public.contacts.odcs.yaml"
    broken = tmp_path / "broken.odcs.yaml"
    broken.write_text("id: [unclosed\n")
    with pytest.raises(ContractError, match=r"broken\.odcs\.yaml"):
        load_contract(broken)
    data = yaml.safe_load(source.read_text())
    data["colour"] = "blue"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractError, match=r"(?s)broken\.odcs\.yaml.*colour"):
        load_contract(broken)
    data = yaml.safe_load(source.read_text())
    email = next(p for p in data["schema"][0]["properties"] if p["name"] == "email")
    email["classification"] = "internal"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractError, match="email holds personal data"):
        load_contract(broken)
    data = yaml.safe_load(source.read_text())
    data["customProperties"] = [p for p in data["customProperties"] if p["property"] != "connector"]
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractError, match="connector"):
        load_contract(broken)


# -- raw records ------------------------------------------------------------------------------------------


def test_real_change_events_satisfy_their_contracts(
    landing: duckdb.DuckDBPyConnection, contracts: dict[str, Contract]
) -> None:
    for feed_id in CDC_FEEDS:
        contract = contracts[feed_id]
        keys = {
            k
            for (k,) in landing.execute(
                "SELECT DISTINCT unnest(json_keys(payload->'after')) FROM cdc "
                "WHERE topic = ? AND payload->>'op' <> 'd'",
                [feed_id],
            ).fetchall()
        }
        assert keys == {c.name for c in contract.columns} - LOOP_COLUMNS.get(feed_id, set()), feed_id
        after = violation_sql(contract, "payload->'after'")
        key = key_violation_sql(contract, "payload->'before'")
        rows = landing.execute(
            f"SELECT payload->>'op', {after}, {key} FROM cdc WHERE topic = ?", [feed_id]
        ).fetchall()
        checked = [(op, after) for op, after, _ in rows if op != "d"]
        deletes = [(op, key) for op, _, key in rows if op == "d"]
        assert checked and all(v is None for _, v in checked), (feed_id, {v for _, v in checked})
        assert all(v is None for _, v in deletes), (feed_id, {v for _, v in deletes})


def test_real_clickstream_violations_are_exactly_the_injected_faults(
    landing: duckdb.DuckDBPyConnection, contracts: dict[str, Contract], simulated: Simulated
) -> None:
    contract = contracts["clickstream"]
    reasons = dict(
        landing.execute(
            f"SELECT v, count(*) FROM (SELECT {violation_sql(contract, 'line')} AS v FROM clicks) GROUP BY v"
        ).fetchall()
    )
    faults = simulated.manifest["faults"]
    assert reasons.pop("record is not valid JSON") == faults["click_malformed_lines"]
    valid = reasons.pop(None)
    assert valid > 1000
    assert set(reasons) <= {  # the simulator drops messageId, type, or both identities
        "missing required field messageId",
        "missing required field type",
        "message has neither anonymousId nor userId",
        "alias message without userId",
    }
    assert sum(reasons.values()) == faults["click_missing_field_messages"]
    keys = {
        k
        for (k,) in landing.execute(
            f"SELECT DISTINCT unnest(json_keys(line)) FROM clicks WHERE {violation_sql(contract, 'line')} IS "
            "NULL"
        ).fetchall()
    }
    assert keys <= {c.name for c in contract.columns}
    assert {"messageId", "type", "event", "anonymousId", "userId", "previousId", "traits", "context"} <= keys


@pytest.fixture(scope="module")
def samples(landing: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """One real record per feed to craft bad ones from: the first ``after`` of each topic, and the first
    valid message of each Segment type (``clickstream.<type>``)."""
    found = {
        topic: json.loads(after)
        for topic, after in landing.execute(
            "SELECT topic, first(payload->'after') FROM cdc WHERE payload->>'op' = 'c' GROUP BY topic"
        ).fetchall()
    }
    for kind, line in landing.execute(
        "SELECT line->>'type', first(line) FROM clicks WHERE json_valid(line) AND line->>'messageId' IS NOT "
        "NULL GROUP BY ALL"
    ).fetchall():
        found[f"clickstream.{kind}"] = json.loads(line)
    return found


def _changed(record: dict, **changes: object) -> str:
    """The record as JSON text with fields set (a value of ``...`` removes the field)."""
    out = {k: v for k, v in record.items() if changes.get(k) is not ...}
    out.update({k: v for k, v in changes.items() if v is not ...})
    return json.dumps(out)


@pytest.mark.parametrize(
    ("feed", "sample", "changes", "reason"),
    [
        ("shop.shop.orders", "shop.shop.orders", {}, None),
        ("shop.shop.orders", "shop.shop.orders", {"gift_wrap": True}, None),
        ("shop.shop.customers", "shop.shop.customers", {"email": ...}, "missing required field email"),
        ("shop.shop.customers", "shop.shop.customers", {"email": None}, "required field email is null"),
        (
            "shop.shop.order_lines",
            "shop.shop.order_lines",
            {"quantity": "2"},
            "field quantity has JSON type VARCHAR, expected BIGINT|UBIGINT",
        ),
        (
            "shop.shop.orders",
            "shop.shop.orders",
            {"total_amount": 12.5},
            "field total_amount has JSON type DOUBLE, expected VARCHAR",
        ),
        (
            "shop.shop.orders",
            "shop.shop.orders",
            {"ordered_on": "2026-09-01"},
            "field ordered_on has JSON type VARCHAR, expected BIGINT|UBIGINT",
        ),
        (
            "shop.shop.orders",
            "shop.shop.orders",
            {"status": "lost"},
            "field status has value 'lost' not in accepted values",
        ),
        ("shop.shop.orders", "shop.shop.orders", {"sales_channel": None}, None),
        (
            "shop.shop.orders",
            "shop.shop.orders",
            {"order_id": ..., "status": 3},
            "missing required field order_id",
        ),
        ("crm.public.contacts", "crm.public.contacts", {"email": None, "phone": ...}, None),
        (
            "crm.public.activities",
            "crm.public.activities",
            {"propensity": 1},
            None,
        ),
        (
            "shop.shop.orders",
            "shop.shop.orders",
            {"total_amount": "12.50"},
            "field total_amount is not base64 decimal bytes: '12.50'",
        ),
        (
            "shop.shop.orders",
            "shop.shop.orders",
            {"updated_at": "yesterday"},
            "field updated_at is not an ISO timestamp with a zone: 'yesterday'",
        ),
        (
            "crm.public.activities",
            "crm.public.activities",
            {"offer_value": "5,00"},
            "field offer_value is not a decimal(10,2): '5,00'",
        ),
        ("clickstream", "clickstream.track", {}, None),
        ("clickstream", "clickstream.track", {"event": ...}, "track message without event"),
        (
            "clickstream",
            "clickstream.page",
            {"type": "foo"},
            "field type has value 'foo' not in accepted values",
        ),
        ("clickstream", "clickstream.alias", {"previousId": None}, "alias message without previousId"),
        (
            "clickstream",
            "clickstream.page",
            {"anonymousId": None, "userId": ...},
            "message has neither anonymousId nor userId",
        ),
        ("clickstream", "clickstream.identify", {"anonymousId": ...}, None),
        (
            "clickstream",
            "clickstream.screen",
            {"context": "ios"},
            "field context has JSON type VARCHAR, expected OBJECT",
        ),
    ],
)
def test_crafted_records_get_the_reason_of_their_first_violation(
    contracts: dict[str, Contract],
    samples: dict[str, dict],
    feed: str,
    sample: str,
    changes: dict,
    reason: str | None,
) -> None:
    assert _violation(contracts[feed], _changed(samples[sample], **changes)) == reason


def test_records_that_are_not_json_objects(contracts: dict[str, Contract]) -> None:
    for contract in (contracts["clickstream"], contracts["shop.shop.orders"]):
        assert _violation(contract, None) == "record is null"
        assert _violation(contract, '{"messageId": "abc", "ty') == "record is not valid JSON"
        assert _violation(contract, "[1, 2]") == "record is JSON ARRAY, expected OBJECT"
        assert _violation(contract, "null") == "record is JSON NULL, expected OBJECT"


def test_key_violations_check_only_the_primary_key(contracts: dict[str, Contract]) -> None:
    contacts = contracts["crm.public.contacts"]
    assert _violation(contacts, '{"contact_id": 5, "email": null, "created_at": null}', key_only=True) is None
    assert _violation(contacts, '{"contact_id": 5, "email": 3}', key_only=True) is None
    assert _violation(contacts, '{"contact_id": null}', key_only=True) == "required field contact_id is null"
    assert _violation(contacts, '{"email": "a@b.c"}', key_only=True) == "missing required field contact_id"
    assert (
        _violation(contacts, '{"contact_id": "5"}', key_only=True)
        == "field contact_id has JSON type VARCHAR, expected BIGINT|UBIGINT"
    )
    track = '{"messageId": "m1", "type": "track", "receivedAt": "2026-09-01T00:00:00Z", "userId": "u"}'
    assert _violation(contracts["clickstream"], track, key_only=True) is None
    assert _violation(contracts["clickstream"], track) == "track message without event"


# -- versions and breaking changes -------------------------------------------------------------------------


def _variant(tmp_path: Path, feed_file: str, version: str | None, mutate) -> tuple[Path, Path]:
    """The contract as committed (``old/``) and a changed copy (``new/``) under the same file name."""
    old, new = tmp_path / "old" / feed_file, tmp_path / "new" / feed_file
    old.parent.mkdir(exist_ok=True)
    new.parent.mkdir(exist_ok=True)
    shutil.copy(CONTRACTS_DIR / feed_file, old)
    data = yaml.safe_load(old.read_text())
    mutate(data["schema"][0]["properties"])
    if version:
        data["version"] = version
    new.write_text(yaml.safe_dump(data, sort_keys=False))
    return old, new


def _remove(name: str):
    return lambda props: props.remove(next(p for p in props if p["name"] == name))


def _retype(name: str, logical: str, physical: str):
    def mutate(props: list[dict]) -> None:
        prop = next(p for p in props if p["name"] == name)
        prop.update(logicalType=logical, physicalType=physical)

    return mutate


def _add(name: str, required: bool):
    return lambda props: props.append(
        {"name": name, "logicalType": "string", "physicalType": "varchar(8)", "required": required}
    )


@pytest.mark.parametrize(
    ("feed_file", "mutate", "field"),
    [
        ("shop.shop.order_lines.odcs.yaml", _remove("unit_price"), "unit_price"),
        ("shop.shop.order_lines.odcs.yaml", _retype("quantity", "string", "varchar(8)"), "quantity"),
        ("crm.public.contacts.odcs.yaml", _add("loyalty_tier", required=True), "loyalty_tier"),
    ],
)
def test_breaking_change_needs_a_major_version_bump(
    tmp_path: Path, feed_file: str, mutate, field: str
) -> None:
    old, new = _variant(tmp_path, feed_file, "1.1.0", mutate)
    changes = breaking_changes(old, new)
    assert changes and all(field in change for change in changes), changes
    problems = check_versions(old, new)
    assert problems and all("without a major version bump (1.0.0 -> 1.1.0)" in p for p in problems)
    assert all(p.startswith(feed_file) and field in p for p in problems)
    old, bumped = _variant(tmp_path, feed_file, "2.0.0", mutate)
    assert check_versions(old, bumped) == []


def test_compatible_changes_need_no_major_bump(tmp_path: Path) -> None:
    old, new = _variant(tmp_path, "shop.shop.orders.odcs.yaml", "1.1.0", _add("coupon_code", required=False))
    assert breaking_changes(old, new) == []
    assert check_versions(old, new) == []
    old, same = _variant(tmp_path, "shop.shop.orders.odcs.yaml", None, lambda props: None)
    assert check_versions(old, same) == []
    old, down = _variant(tmp_path, "shop.shop.orders.odcs.yaml", "0.9.0", lambda props: None)
    assert check_versions(old, down) == ["shop.shop.orders.odcs.yaml: version went down from 1.0.0 to 0.9.0"]


def _git(repo: Path, *args: str) -> None:
    config = ["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *config, *args], cwd=repo, check=True, capture_output=True)


def test_lint_finds_what_the_odcs_schema_forbids(tmp_path: Path) -> None:
    data = yaml.safe_load((CONTRACTS_DIR / "shop.shop.products.odcs.yaml").read_text())
    path = tmp_path / "shop.shop.products.odcs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert lint(path) == []
    data["schema"][0]["properties"][1]["requird"] = True
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert any("unknown fields" in p and "requird" in p for p in lint(path))
    data["schema"][0]["properties"][1]["logicalType"] = "text"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert any("'text' is not one of" in p for p in lint(path)), lint(path)


def test_check_command_compares_with_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    folder = repo / "data_contracts" / "contracts"
    folder.mkdir(parents=True)
    for name in ("shop.shop.order_lines.odcs.yaml", "crm.public.consents.odcs.yaml"):
        shutil.copy(CONTRACTS_DIR / name, folder / name)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "contracts")
    assert check("HEAD", folder) == []
    changed = folder / "shop.shop.order_lines.odcs.yaml"
    data = yaml.safe_load(changed.read_text())
    _remove("unit_price")(data["schema"][0]["properties"])
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / "crm.public.consents.odcs.yaml").unlink()
    problems = check("HEAD", folder)
    assert any(p.startswith("shop.shop.order_lines.odcs.yaml") and "unit_price" in p for p in problems)
    assert "crm.public.consents.odcs.yaml: contract removed without being retired first" in problems[-1]
    assert check("no-such-ref", folder)[0].startswith("cannot compare with git revision 'no-such-ref'")


def test_check_command_passes_on_the_repository(capsys: pytest.CaptureFixture) -> None:
    assert main(["check"]) == 0
    assert "ok: 9 contracts valid" in capsys.readouterr().out


# -- decoded tables: Great Expectations ---------------------------------------------------------------------


def _orders_frame() -> pd.DataFrame:
    when = pd.Timestamp("2026-09-01T10:00:00Z")
    return pd.DataFrame(
        {
            "order_id": [100001, 100002, 100003],
            "customer_id": [1, 2, 2],
            "status": ["paid", "pending", "delivered"],
            "currency": ["EUR"] * 3,
            "subtotal_amount": [Decimal("40.00"), Decimal("9.90"), Decimal("120.00")],
            "discount_amount": [Decimal("4.00"), Decimal("0.00"), Decimal("0.00")],
            "shipping_amount": [Decimal("4.95"), Decimal("4.95"), Decimal("0.00")],
            "total_amount": [Decimal("40.95"), Decimal("14.85"), Decimal("120.00")],
            "ordered_on": [date(2026, 9, 1)] * 3,
            "created_at": [when] * 3,
            "updated_at": [when] * 3,
            "sales_channel": ["web", None, "app"],
        }
    )


def test_quality_rules_on_a_decoded_frame(contracts: dict[str, Contract]) -> None:
    orders = contracts["shop.shop.orders"]
    results = validate_frame(orders, _orders_frame())
    assert [r.name for r in results] == [r.name for r in orders.rules]
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert {"order_id_required", "orders_primary_key_unique", "orders_status_accepted"} <= {
        r.name for r in results
    }

    frame = _orders_frame()
    frame.loc[1, "order_id"] = None
    frame.loc[2, "total_amount"] = Decimal("-1.00")
    failed = {r.name: r for r in validate_frame(orders, frame) if r.failed}
    assert set(failed) == {"order_id_required", "orders_total_amount_non_negative"}
    assert failed["order_id_required"].severity == "error" and failed["order_id_required"].observed == 1

    frame = _orders_frame().drop(columns=["currency"])
    frame.loc[2, "order_id"] = 100001
    results = {r.name: r for r in validate_frame(orders, frame)}
    assert (
        results["orders_primary_key_unique"].failed
        and results["orders_primary_key_unique"].column == "order_id"
    )
    assert results["orders_primary_key_unique"].severity == "error"
    assert results["orders_currency_iso_code"].skipped and results["currency_required"].skipped
    assert "currency" in results["orders_currency_iso_code"].observed


def _decode(contract: Contract, record: dict) -> dict:
    """A raw record decoded the way silver holds it: Debezium dates, timestamps and decimals, ISO timestamps
    as timestamps, objects as JSON text."""
    out = {}
    for column in contract.columns:
        value = record.get(column.name)
        kind = column.debezium_type or ""
        if value is None:
            out[column.name] = None
        elif kind.endswith("time.Date"):
            out[column.name] = date(1970, 1, 1) + timedelta(days=value)
        elif kind.endswith(("time.Timestamp", "time.MicroTimestamp")):
            out[column.name] = pd.Timestamp(
                value, unit="ms" if kind.endswith(".Timestamp") else "us", tz="UTC"
            )
        elif kind.endswith("Decimal"):
            scale = column.arrow_type.scale
            if contract.decimal_handling == "precise":
                value = Decimal(int.from_bytes(base64.b64decode(value), "big", signed=True)).scaleb(-scale)
            out[column.name] = Decimal(value)
        elif column.logical_type == "timestamp":
            out[column.name] = pd.Timestamp(value)
        elif isinstance(value, dict | list):
            out[column.name] = json.dumps(value)
        else:
            out[column.name] = value
    return out


def test_quality_rules_pass_on_the_decoded_sample(
    landing: duckdb.DuckDBPyConnection, contracts: dict[str, Contract]
) -> None:
    for feed_id in CDC_FEEDS:
        contract = contracts[feed_id]
        position = (
            "(payload->'source'->>'lsn')::BIGINT"
            if contract.connector == "postgresql"
            else (
                "payload->'source'->>'file', (payload->'source'->>'pos')::BIGINT, "
                "(payload->'source'->>'row')::INT"
            )
        )
        current: dict = {}
        for op, after, before in landing.execute(
            f"SELECT payload->>'op', payload->>'after', payload->>'before' FROM cdc WHERE topic = ? "
            f"ORDER BY {position}",
            [feed_id],
        ).fetchall():
            key = tuple(json.loads(before if op == "d" else after)[k] for k in contract.primary_key)
            if op == "d":
                current.pop(key, None)
            else:
                current[key] = _decode(contract, json.loads(after))
        frame = pd.DataFrame(list(current.values()))
        results = validate_frame(contract, frame)
        assert not [r for r in results if not r.passed], feed_id
    clicks = contracts["clickstream"]
    messages = [
        _decode(clicks, json.loads(line))
        for (line,) in landing.execute(
            f"SELECT line FROM clicks WHERE {violation_sql(clicks, 'line')} IS NULL"
        ).fetchall()
    ]
    frame = pd.DataFrame(messages).drop_duplicates("messageId")
    assert not [r for r in validate_frame(clicks, frame) if not r.passed]
