"""Debezium change events written by hand from the connector documentation, fed through real ingestion into
real Delta tables: the schema envelope decides how a value is encoded, documented type mappings are converted,
anything else is quarantined with its reason, and records quarantined by a wrong rule are replayed.

Sources (the Debezium reference documentation, ``documentation/modules/ROOT/pages/connectors/``):
- MySQL, "Data type mappings": basic types (``TINYINT`` -> ``INT16``, ``JSON`` -> ``STRING`` with
  ``io.debezium.data.Json``, ``TIMESTAMP[(M)]`` -> ``STRING`` with ``io.debezium.time.ZonedTimestamp``),
  temporal types (``DATE`` -> ``INT32`` ``io.debezium.time.Date``; ``DATETIME(0-3)`` -> ``INT64``
  ``io.debezium.time.Timestamp``; ``DATETIME(4-6)`` -> ``INT64`` ``io.debezium.time.MicroTimestamp``; with
  ``time.precision.mode=connect`` the ``org.apache.kafka.connect.data`` Date and Timestamp), decimal types
  (``decimal.handling.mode`` precise: ``BYTES`` ``org.apache.kafka.connect.data.Decimal`` with a ``scale``
  parameter; double: ``FLOAT64``; string: ``STRING``), and boolean values (``BOOLEAN`` is ``TINYINT(1)`` in
  MySQL; snapshots see ``TINYINT(1)``, so the column arrives as an integer unless a converter maps it).
  Its examples: ``DATETIME`` ``2018-06-20 06:37:03`` becomes ``1529476623000``; ``TIMESTAMP``
  ``2018-06-20 06:37:03`` in America/Los_Angeles becomes ``2018-06-20T13:37:03Z``.
- PostgreSQL, "Data type mappings": basic types (``BOOLEAN`` -> ``BOOLEAN``, ``SMALLINT`` -> ``INT16``,
  ``TIMESTAMPTZ`` -> ``STRING`` ``io.debezium.time.ZonedTimestamp``, ``JSON``/``JSONB`` -> ``STRING``
  ``io.debezium.data.Json``), temporal types (``DATE`` -> ``INT32`` ``io.debezium.time.Date``, ``TIME(4-6)``
  -> ``INT64`` ``io.debezium.time.MicroTime``, ``TIMESTAMP`` -> ``INT64`` ``io.debezium.time.MicroTimestamp``;
  its example: ``2018-06-20 15:13:16.945104`` is ``1529507596945104``) and decimal types (the same three
  modes; ``MONEY`` too; ``NUMERIC`` without scale as ``io.debezium.data.VariableScaleDecimal`` in precise
  mode).
- The envelope layout (``schema`` with ``before``/``after`` structs, ``source``, ``op``, ``ts_ms``, then
  ``payload``) is the one of the "Data change events" sections of both pages, with ``schemas.enable=true``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import lake_settings, lake_tables

from data_contracts import load_contracts
from lake import bronze, cdc
from lake.ingest import ingest_all
from lake.ledger import Ledger
from lake.settings import REPO_ROOT, Settings

DECIMAL = "org.apache.kafka.connect.data.Decimal"
T0 = 1_788_000_000_000


def column(name: str, logical: str, physical: str, debezium: str | None = None, **extra) -> dict:
    """One contract property (ODCS), with its Debezium semantic type when it has one."""
    prop = {"name": name, "logicalType": logical, "physicalType": physical, "classification": "internal"}
    if debezium:
        prop["customProperties"] = [{"property": "debeziumType", "value": debezium}]
    return prop | extra


def key(name: str) -> dict:
    return column(name, "integer", "bigint", required=True, primaryKey=True, primaryKeyPosition=1)


def write_contract(folder: Path, topic: str, connector: str, mode: str, properties: list[dict]) -> None:
    """A minimal CDC contract for ``topic`` whose default decimal handling is ``mode``."""
    system, _, table = topic.split(".")
    custom = {
        "feed": "cdc",
        "topic": topic,
        "sourceSystem": system,
        "connector": connector,
        "decimalHandlingMode": mode,
        "owner": "team:test",
    }
    document = {
        "apiVersion": "v3.1.0",
        "kind": "DataContract",
        "id": topic,
        "name": table,
        "version": "1.0.0",
        "status": "active",
        "team": {"name": "test"},
        "customProperties": [{"property": k, "value": v} for k, v in custom.items()],
        "schema": [
            {"name": table, "physicalType": "table", "logicalType": "object", "properties": properties}
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{topic}.odcs.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def field(name: str, kafka_type: str, semantic: str | None = None, optional: bool = True, **params) -> dict:
    """A Kafka Connect field schema as the JSON converter writes it (``parameters`` values are strings)."""
    spec = {"type": kafka_type, "optional": optional, "field": name}
    if semantic:
        spec["name"] = semantic
    if params:
        spec["parameters"] = {k.replace("_", "."): str(v) for k, v in params.items()}
    return spec


def decimal_field(name: str, scale: int, precision: int) -> dict:
    """``decimal.handling.mode=precise``: BYTES, org.apache.kafka.connect.data.Decimal, ``scale``
    parameter."""
    return field(name, "bytes", DECIMAL, scale=scale, connect_decimal_precision=precision)


def precise(unscaled: int) -> str:
    """Kafka Connect Decimal bytes: the unscaled value, big-endian two's complement, base64 in JSON."""
    width = (unscaled.bit_length() + 8) // 8
    return base64.b64encode(unscaled.to_bytes(width, "big", signed=True)).decode()


def change(
    connector: str,
    position: int,
    after: dict | None,
    value_fields: list[dict] | None = None,
    op: str = "c",
    before: dict | None = None,
) -> str:
    """One change event of ``connector`` at ``position`` (the PostgreSQL LSN, or the MySQL binlog position);
    with its schema envelope when ``value_fields`` are given (``schemas.enable=true``)."""
    if connector == "mysql":
        source = {"version": "2.7.0.Final", "connector": "mysql", "name": "shop", "ts_ms": T0 + position}
        source |= {"snapshot": "false", "db": "shop", "table": "items", "server_id": 223344, "gtid": None}
        source |= {"file": "mysql-bin.000003", "pos": position, "row": 0, "thread": 7, "query": None}
        source_fields = [field("file", "string", optional=False), field("pos", "int64", optional=False)]
    else:
        source = {"version": "2.7.0.Final", "connector": "postgresql", "name": "crm", "ts_ms": T0 + position}
        source |= {"snapshot": "false", "db": "crm", "schema": "public", "table": "accounts"}
        source |= {"txId": position, "lsn": position, "xmin": None}
        source_fields = [field("lsn", "int64"), field("txId", "int64")]
    payload = {"before": before, "after": after, "source": source, "op": op, "ts_ms": T0 + position + 5}
    if value_fields is None:
        return json.dumps(payload)
    value = f"{source['name']}.{source['db']}.{source['table']}.Value"
    schema = {
        "type": "struct",
        "fields": [
            {"type": "struct", "fields": value_fields, "optional": True, "name": value, "field": "before"},
            {"type": "struct", "fields": value_fields, "optional": True, "name": value, "field": "after"},
            {
                "type": "struct",
                "fields": source_fields,
                "optional": False,
                "name": f"io.debezium.connector.{connector}.Source",
                "field": "source",
            },
            field("op", "string", optional=False),
            field("ts_ms", "int64"),
        ],
        "optional": False,
        "name": value.removesuffix("Value") + "Envelope",
    }
    return json.dumps({"schema": schema, "payload": payload})


def land(settings: Settings, topic: str, lines: list[str], name: str = "0000000000") -> None:
    path = Path(settings.landing) / "cdc" / topic / f"{topic}+0+{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def lake(tmp_path: Path, topic: str, connector: str, mode: str, properties: list[dict]) -> Settings:
    """A lake under ``tmp_path`` whose only contract is the one given."""
    contracts = tmp_path / "contracts"
    write_contract(contracts, topic, connector, mode, properties)
    return lake_settings(tmp_path / "lake", contracts_dir=contracts)


def ingest(settings: Settings, topic: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Ingest the landing zone; (silver current table sorted by its key, quarantine rows of the topic)."""
    ingest_all(settings)
    contract = load_contracts(settings.contracts_dir)[topic]
    current, _ = cdc.silver_uris(settings, contract)
    quarantine_uri = bronze.quarantine_uri(settings)
    quarantined = (
        pl.read_delta(quarantine_uri).filter(pl.col("feed_id") == topic).sort("line")
        if os.path.isdir(quarantine_uri)
        else pl.DataFrame(schema={"line": pl.Int64, "reason": pl.String})
    )
    silver = (
        pl.read_delta(current).sort(contract.primary_key[0]) if os.path.isdir(current) else pl.DataFrame()
    )
    return silver, quarantined


ITEMS = "shop.shop.items"
ITEM_COLUMNS = [
    key("item_id"),
    column("price", "number", "decimal(10,2)", DECIMAL, required=True),
    column("in_stock", "boolean", "tinyint(1)"),
    column("added_on", "date", "date", "io.debezium.time.Date"),
    column("created_at", "timestamp", "datetime(3)", "io.debezium.time.Timestamp"),
    column("changed_at", "timestamp", "datetime(6)", "io.debezium.time.MicroTimestamp"),
    column("updated_at", "timestamp", "timestamp", "io.debezium.time.ZonedTimestamp"),
    column("details", "object", "json", "io.debezium.data.Json"),
]
ITEM_FIELDS = [
    field("item_id", "int64", optional=False),
    decimal_field("price", 2, 10),  # DECIMAL(10,2), decimal.handling.mode=precise (the connector's default)
    field(
        "in_stock", "int16"
    ),  # TINYINT(1): INT16 by default (snapshots cannot tell BOOLEAN from TINYINT(1))
    field("added_on", "int32", "io.debezium.time.Date"),
    field("created_at", "int64", "io.debezium.time.Timestamp"),  # DATETIME(3)
    field("changed_at", "int64", "io.debezium.time.MicroTimestamp"),  # DATETIME(6)
    field("updated_at", "string", "io.debezium.time.ZonedTimestamp"),  # TIMESTAMP
    field("details", "string", "io.debezium.data.Json"),  # JSON
]
DOC_DATETIME_MS = 1529476623000  # MySQL doc: DATETIME 2018-06-20 06:37:03 becomes 1529476623000
DOC_ZONED = "2018-06-20T13:37:03Z"  # MySQL doc: TIMESTAMP 2018-06-20 06:37:03 (Los Angeles) becomes this
DOC_MICROS = 1529507596945104  # PostgreSQL doc: TIMESTAMP 2018-06-20 15:13:16.945104 as MicroTimestamp
DAYS_2018_06_20 = (date(2018, 6, 20) - date(1970, 1, 1)).days


def item(item_id: int, price: object, in_stock: object = 1, **extra) -> dict:
    return {
        "item_id": item_id,
        "price": price,
        "in_stock": in_stock,
        "added_on": DAYS_2018_06_20,
        "created_at": DOC_DATETIME_MS,
        "changed_at": DOC_MICROS,
        "updated_at": DOC_ZONED,
        "details": '{"colour": "red", "sizes": [38, 40]}',
    } | extra


def test_a_precise_envelope_decides_though_the_contract_says_string(tmp_path: Path) -> None:
    settings = lake(tmp_path, ITEMS, "mysql", "string", ITEM_COLUMNS)
    land(
        settings,
        ITEMS,
        [
            change("mysql", 100, item(1, "D04="), ITEM_FIELDS),  # 0x0F4E = 3918 -> 39.18
            change("mysql", 200, item(2, "gw==", in_stock=0), ITEM_FIELDS),  # 0x83 = -125 -> -1.25
            change("mysql", 300, item(3, precise(9_999_999_999)), ITEM_FIELDS),  # the largest DECIMAL(10,2)
        ],
    )
    silver, quarantined = ingest(settings, ITEMS)
    assert quarantined.height == 0, quarantined["reason"].to_list()
    assert silver["price"].to_list() == [Decimal("39.18"), Decimal("-1.25"), Decimal("99999999.99")]
    assert silver["in_stock"].to_list() == [True, False, True]
    row = silver.row(0, named=True)
    assert row["added_on"] == date(2018, 6, 20)
    assert row["created_at"] == datetime(2018, 6, 20, 6, 37, 3, tzinfo=UTC)
    assert row["changed_at"] == datetime(2018, 6, 20, 15, 13, 16, 945104, tzinfo=UTC)
    assert row["updated_at"] == datetime(2018, 6, 20, 13, 37, 3, tzinfo=UTC)
    assert json.loads(row["details"]) == {"colour": "red", "sizes": [38, 40]}


ACCOUNTS = "crm.public.accounts"
ACCOUNT_COLUMNS = [
    key("account_id"),
    column("balance", "number", "numeric(12,2)", DECIMAL, required=True),
    column("active", "boolean", "boolean"),
    column("opened_at", "timestamp", "timestamptz", "io.debezium.time.ZonedTimestamp"),
]


def account_fields(balance: dict, active: dict | None = None, opened_at: dict | None = None) -> list[dict]:
    return [
        field("account_id", "int64", optional=False),
        balance,
        active or field("active", "boolean"),
        opened_at or field("opened_at", "string", "io.debezium.time.ZonedTimestamp"),
    ]


def account(account_id: int, balance: object, active: object = True, opened_at: object = DOC_ZONED) -> dict:
    return {"account_id": account_id, "balance": balance, "active": active, "opened_at": opened_at}


def test_each_message_is_read_with_its_own_envelope_whatever_the_contract_mode(tmp_path: Path) -> None:
    """One topic whose connector changed decimal.handling.mode twice: precise, then string, then double
    (PostgreSQL doc, "Decimal types"), under a contract whose default is precise: every message follows its
    own schema."""
    settings = lake(tmp_path, ACCOUNTS, "postgresql", "precise", ACCOUNT_COLUMNS)
    as_precise = account_fields(decimal_field("balance", 2, 12))
    as_string = account_fields(field("balance", "string"))
    as_double = account_fields(field("balance", "double"))
    land(
        settings,
        ACCOUNTS,
        [
            change("postgresql", 100, account(1, "MDk="), as_precise),  # 0x3039 = 12345 -> 123.45
            change("postgresql", 200, account(2, "-7.50"), as_string),
            change("postgresql", 300, account(3, "1234.5600"), as_string),  # trailing zeros lose nothing
            change("postgresql", 400, account(4, 19.99), as_double),
            change(
                "postgresql", 500, account(5, 3), as_double
            ),  # a whole double the JSON converter wrote as 3
            change("postgresql", 600, account(6, "12.345"), as_string),  # a third decimal digit: not a (12,2)
            change("postgresql", 700, account(7, "12345678901.00"), as_string),  # 11 integer digits > 10
            change("postgresql", 800, account(8, "NaN"), as_string),  # the doc's NaN, in string mode
        ],
    )
    silver, quarantined = ingest(settings, ACCOUNTS)
    assert silver["account_id"].to_list() == [1, 2, 3, 4, 5]
    assert silver["balance"].to_list() == [
        Decimal("123.45"),
        Decimal("-7.50"),
        Decimal("1234.56"),
        Decimal("19.99"),
        Decimal("3.00"),
    ]
    assert quarantined["line"].to_list() == [6, 7, 8]
    assert all(r.startswith("field balance is not a decimal(12,2)") for r in quarantined["reason"]), (
        quarantined["reason"].to_list()
    )
    assert "'12.345'" in quarantined["reason"][0] and "'NaN'" in quarantined["reason"][2]


def test_without_an_envelope_the_contract_mode_decides(tmp_path: Path) -> None:
    settings = lake(tmp_path, ACCOUNTS, "postgresql", "precise", ACCOUNT_COLUMNS)
    land(
        settings,
        ACCOUNTS,
        [
            change("postgresql", 100, account(1, "MDk=")),
            change(
                "postgresql", 200, account(2, "12.50")
            ),  # string mode text where the contract says precise
            change("postgresql", 300, account(3, 12.5)),  # double mode where the contract says precise
            change(
                "postgresql", 400, account(4, precise(-(10**12) + 1))
            ),  # -9999999999.99: the smallest (12,2)
            change(
                "postgresql", 500, account(5, precise(10**12))
            ),  # 13 digits: more than numeric(12,2) holds
        ],
    )
    silver, quarantined = ingest(settings, ACCOUNTS)
    assert silver["balance"].to_list() == [Decimal("123.45"), Decimal("-9999999999.99")]
    assert quarantined["reason"].to_list() == [
        "field balance is not base64 decimal bytes: '12.50'",
        "field balance has JSON type DOUBLE, expected VARCHAR",
        f"field balance is not a decimal(12,2): '{precise(10**12)}'",
    ]


def test_a_numeric_without_scale_arrives_as_a_variable_scale_decimal(tmp_path: Path) -> None:
    """PostgreSQL doc, "Decimal types": NUMERIC and DECIMAL without scale constraint, in precise mode, are a
    STRUCT io.debezium.data.VariableScaleDecimal of scale (INT32) and value (BYTES, unscaled). The contract's
    numeric(12,2) takes the values that fit it exactly."""
    settings = lake(tmp_path, ACCOUNTS, "postgresql", "precise", ACCOUNT_COLUMNS)
    struct = [field("scale", "int32", optional=False), field("value", "bytes", optional=False)]
    variable = account_fields(
        {
            "type": "struct",
            "fields": struct,
            "optional": False,
            "name": "io.debezium.data.VariableScaleDecimal",
            "version": 1,
            "doc": "Variable scaled decimal",
            "field": "balance",
        }
    )

    def numeric(unscaled: int, scale: int) -> dict:
        return {"scale": scale, "value": precise(unscaled)}

    land(
        settings,
        ACCOUNTS,
        [
            change("postgresql", 100, account(1, numeric(12345, 2)), variable),
            change("postgresql", 200, account(2, numeric(-123, 0)), variable),
            change("postgresql", 300, account(3, numeric(12345600, 4)), variable),  # 1234.5600: zeros only
            change("postgresql", 400, account(4, numeric(12345, 3)), variable),  # 12.345: a third digit
            change("postgresql", 500, account(5, numeric(10**10, 0)), variable),  # 11 integer digits
            change(
                "postgresql", 600, account(6, numeric(9_999_999_999_99, 2)), variable
            ),  # the largest (12,2)
        ],
    )
    silver, quarantined = ingest(settings, ACCOUNTS)
    assert silver["balance"].to_list() == [
        Decimal("123.45"),
        Decimal("-123.00"),
        Decimal("1234.56"),
        Decimal("9999999999.99"),
    ]
    assert quarantined["line"].to_list() == [4, 5]
    assert all(
        r.startswith("field balance is not a VariableScaleDecimal that fits decimal(12,2)")
        for r in quarantined["reason"]
    ), quarantined["reason"].to_list()


def test_tinyint_1_becomes_a_boolean_on_mysql_only(tmp_path: Path) -> None:
    """MySQL TINYINT(1) arrives as INT16 0/1 (MySQL doc, "Boolean values") and may be declared boolean; a
    value other than 0 or 1 is no boolean; PostgreSQL maps only BOOLEAN and BIT(1) to BOOLEAN, so a PostgreSQL
    INT16 (SMALLINT) for a boolean column is refused."""
    settings = lake(tmp_path / "mysql", ITEMS, "mysql", "precise", ITEM_COLUMNS)
    as_boolean = {"in_stock": field("in_stock", "boolean")}  # TINYINT(1) through TinyIntOneToBooleanConverter
    land(
        settings,
        ITEMS,
        [
            change("mysql", 100, item(1, "D04=", in_stock=1), ITEM_FIELDS),
            change("mysql", 200, item(2, "D04=", in_stock=0), ITEM_FIELDS),
            change("mysql", 300, item(3, "D04=", in_stock=None), ITEM_FIELDS),
            change("mysql", 400, item(4, "D04=", in_stock=2), ITEM_FIELDS),
            # without an envelope: the contract's physical type tinyint(1) says the same
            change("mysql", 500, item(5, "D04=", in_stock=1)),
            change("mysql", 600, item(6, "D04=", in_stock=False)),  # a TinyIntOneToBooleanConverter's BOOLEAN
            change(
                "mysql",
                700,
                item(7, "D04=", in_stock=True),
                [as_boolean.get(f["field"], f) for f in ITEM_FIELDS],
            ),
        ],
    )
    silver, quarantined = ingest(settings, ITEMS)
    assert silver.select("item_id", "in_stock").rows() == [
        (1, True),
        (2, False),
        (3, None),
        (5, True),
        (6, False),
        (7, True),
    ]
    assert quarantined.select("line", "reason").rows() == [(4, "field in_stock is not 0 or 1: '2'")]

    settings = lake(tmp_path / "pg", ACCOUNTS, "postgresql", "precise", ACCOUNT_COLUMNS)
    smallint = account_fields(decimal_field("balance", 2, 12), active=field("active", "int16"))
    land(
        settings,
        ACCOUNTS,
        [
            change("postgresql", 100, account(1, "MDk=", active=1), smallint),
            change("postgresql", 200, account(2, "MDk=", active=None), smallint),  # null converts to null
            change("postgresql", 300, account(3, "MDk=", active=1)),  # no envelope: boolean means BOOLEAN
        ],
    )
    silver, quarantined = ingest(settings, ACCOUNTS)
    assert silver.select("account_id", "active").rows() == [(2, None)]
    assert quarantined["reason"].to_list() == [
        "field active arrives as int16, which the postgresql connector does not map to boolean",
        "field active has JSON type UBIGINT, expected BOOLEAN",
    ]


def test_every_documented_temporal_encoding_gives_the_same_instant(tmp_path: Path) -> None:
    """The contract names one Debezium temporal type per column, the envelope another documented one (other
    column precision, time.precision.mode=connect, a TIMESTAMP turned TIMESTAMPTZ): the envelope decides. A
    type with no documented way to the contract's (MicroTime is a time of day, not a timestamp) is refused."""
    settings = lake(tmp_path, ITEMS, "mysql", "precise", ITEM_COLUMNS)

    def fields(**overrides: dict) -> list[dict]:
        return [overrides.get(f["field"], f) for f in ITEM_FIELDS]

    micros = DOC_DATETIME_MS * 1000
    land(
        settings,
        ITEMS,
        [
            change("mysql", 100, item(1, "D04=")),  # no envelope: the contract's types
            change(  # DATETIME(6) where the contract says DATETIME(3), and the reverse
                "mysql",
                200,
                item(2, "D04=", created_at=micros, changed_at=DOC_MICROS // 1000),
                fields(
                    created_at=field("created_at", "int64", "io.debezium.time.MicroTimestamp"),
                    changed_at=field("changed_at", "int64", "io.debezium.time.Timestamp"),
                ),
            ),
            change(  # time.precision.mode=connect: Kafka Connect's own Date and Timestamp
                "mysql",
                300,
                item(3, "D04="),
                fields(
                    added_on=field("added_on", "int32", "org.apache.kafka.connect.data.Date"),
                    created_at=field("created_at", "int64", "org.apache.kafka.connect.data.Timestamp"),
                ),
            ),
            change(  # the column became a TIMESTAMP: ZonedTimestamp where the contract says Timestamp
                "mysql",
                400,
                item(4, "D04=", created_at="2018-06-20T06:37:03Z"),
                fields(created_at=field("created_at", "string", "io.debezium.time.ZonedTimestamp")),
            ),
            change(  # a TIME(6) column where the contract expects a timestamp
                "mysql",
                500,
                item(5, "D04=", changed_at=55036945104),
                fields(changed_at=field("changed_at", "int64", "io.debezium.time.MicroTime")),
            ),
            change(  # a date as plain text: not a Debezium encoding of DATE
                "mysql",
                600,
                item(6, "D04=", added_on="2018-06-20"),
                fields(added_on=field("added_on", "string")),
            ),
        ],
    )
    silver, quarantined = ingest(settings, ITEMS)
    assert silver["item_id"].to_list() == [1, 2, 3, 4]
    assert silver["added_on"].unique().to_list() == [date(2018, 6, 20)]
    assert silver["created_at"].unique().to_list() == [datetime(2018, 6, 20, 6, 37, 3, tzinfo=UTC)]
    assert silver.filter(pl.col("item_id") != 2)["changed_at"].unique().to_list() == [
        datetime(2018, 6, 20, 15, 13, 16, 945104, tzinfo=UTC)
    ]
    assert silver.filter(pl.col("item_id") == 2)["changed_at"].item() == datetime(
        2018, 6, 20, 15, 13, 16, 945000, tzinfo=UTC
    )
    assert quarantined["reason"].to_list() == [
        "field changed_at arrives as int64 io.debezium.time.MicroTime, which the mysql connector does not "
        "map to timestamp",
        "field added_on arrives as string, which the mysql connector does not map to date",
    ]


def test_json_and_values_that_cannot_be_decoded_are_quarantined_not_crashing_the_apply(
    tmp_path: Path,
) -> None:
    settings = lake(tmp_path, ITEMS, "mysql", "precise", ITEM_COLUMNS)
    land(
        settings,
        ITEMS,
        [
            change(
                "mysql", 100, item(1, "D04=", details="[1, 2]"), ITEM_FIELDS
            ),  # JSON holds arrays and scalars
            change("mysql", 200, item(2, "D04=", details="{not json"), ITEM_FIELDS),
            change("mysql", 300, item(3, "D04=", updated_at="yesterday"), ITEM_FIELDS),
            change("mysql", 400, item(4, None), ITEM_FIELDS),
            change(
                "mysql",
                500,
                item(5, "D04="),
                [*ITEM_FIELDS[:1], decimal_field("price", 4, 12), *ITEM_FIELDS[2:]],
            ),
        ],
    )
    silver, quarantined = ingest(settings, ITEMS)
    assert silver["item_id"].to_list() == [1]
    assert json.loads(silver["details"][0]) == [1, 2]
    assert quarantined["reason"].to_list() == [
        "field details is not JSON text: '{not json'",
        "field updated_at is not an ISO timestamp with a zone: 'yesterday'",
        "required field price is null",
        "field price arrives as bytes org.apache.kafka.connect.data.Decimal(12,4), which does not fit "
        "decimal(10,2)",
    ]


def ledger_totals(settings: Settings, topic: str) -> tuple[int, int, int]:
    files = Ledger(bronze.ledger_uri(settings)).committed_files().filter(pl.col("feed_id") == topic)
    return files["records"].sum(), files["bronze_rows"].sum(), files["quarantined"].sum()


def counts(settings: Settings, topic: str) -> tuple[int, int]:
    contract = load_contracts(settings.contracts_dir)[topic]
    rows = pl.read_delta(bronze.bronze_uri(settings, contract)).height
    quarantined = pl.read_delta(bronze.quarantine_uri(settings)).filter(pl.col("feed_id") == topic).height
    return rows, quarantined


STRICT_ACCOUNT_COLUMNS = [  # the wrong rule: balance declared an integer, so every record is refused
    key("account_id"),
    column("balance", "integer", "bigint", required=True),
    column("active", "boolean", "boolean"),
    column("opened_at", "timestamp", "timestamptz", "io.debezium.time.ZonedTimestamp"),
]


def quarantined_by_a_wrong_rule(tmp_path: Path) -> Settings:
    """A feed ingested under a contract that refuses every record, then the contract fixed."""
    settings = lake(tmp_path, ACCOUNTS, "postgresql", "precise", STRICT_ACCOUNT_COLUMNS)
    fields = account_fields(decimal_field("balance", 2, 12))
    lines = [change("postgresql", 100 * i, account(i, precise(1000 * i)), fields) for i in range(1, 8)]
    lines.append(change("postgresql", 800, account(8, precise(800), opened_at="soon"), fields))
    lines.append("{not json")
    land(settings, ACCOUNTS, lines)
    # a record whose bytes are not UTF-8: its quarantine row holds a repaired text, never to be replayed as is
    broken = (
        change("postgresql", 900, account(9, precise(900)), fields)
        .encode()
        .replace(b'"crm"', b'"crm\xff"', 1)
    )
    path = Path(settings.landing) / "cdc" / ACCOUNTS / f"{ACCOUNTS}+0+0000000009.json"
    path.write_bytes(broken + b"\n")
    ingest_all(settings)
    write_contract(settings.contracts_dir, ACCOUNTS, "postgresql", "precise", ACCOUNT_COLUMNS)
    return settings


def test_records_quarantined_by_a_wrong_rule_are_replayed_once_the_rule_is_fixed(tmp_path: Path) -> None:
    from lake.replay import replay

    settings = quarantined_by_a_wrong_rule(tmp_path)
    assert counts(settings, ACCOUNTS) == (0, 10)
    assert ledger_totals(settings, ACCOUNTS) == (10, 0, 10)
    contract = load_contracts(settings.contracts_dir)[ACCOUNTS]
    report = replay(settings, contract, reason_like="%balance%")
    assert (report.selected, report.replayed, report.still_quarantined) == (8, 7, 1)
    assert counts(settings, ACCOUNTS) == (7, 3)  # records in = bronze + quarantine, still
    assert ledger_totals(settings, ACCOUNTS) == (10, 7, 3)
    reasons = pl.read_delta(bronze.quarantine_uri(settings)).sort("source_file", "line")["reason"].to_list()
    assert reasons == [
        "field opened_at is not an ISO timestamp with a zone: 'soon'",
        "invalid JSON",
        "invalid UTF-8",
    ]
    silver, _ = ingest(settings, ACCOUNTS)
    assert silver["balance"].to_list() == [Decimal(10 * i) for i in range(1, 8)]
    # replaying again finds nothing to move and changes nothing
    before = lake_tables(settings)
    again = replay(settings, contract)
    assert (again.selected, again.replayed, again.still_quarantined) == (2, 0, 2)
    after = lake_tables(settings)
    assert before.keys() == after.keys()
    for name, frame in before.items():
        assert name == "bronze/_ingestion_ledger" or frame.equals(after[name]), name
    assert ledger_totals(settings, ACCOUNTS) == (10, 7, 3)


def run_replay(settings: Settings, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAKE_ROOT": settings.lake_root, "DATA_CONTRACTS_DIR": str(settings.contracts_dir)}
    if crash_at:
        env["LAKE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "lake.replay", "--feed", ACCOUNTS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["replay:after_plan", "replay:after_bronze", "replay:after_quarantine"])
def test_a_killed_replay_repaired_by_a_rerun_equals_an_uninterrupted_one(
    tmp_path: Path, crash_at: str
) -> None:
    clean = quarantined_by_a_wrong_rule(tmp_path / "clean")
    done = run_replay(clean)
    assert done.returncode == 0, done.stderr
    assert ACCOUNTS in done.stdout and "7 replayed" in done.stdout
    crashed = quarantined_by_a_wrong_rule(tmp_path / "crashed")
    killed = run_replay(crashed, crash_at)
    assert killed.returncode == -9, killed.stderr
    rerun = run_replay(crashed)
    assert rerun.returncode == 0, rerun.stderr
    assert counts(crashed, ACCOUNTS) == counts(clean, ACCOUNTS) == (7, 3)
    assert ledger_totals(crashed, ACCOUNTS) == ledger_totals(clean, ACCOUNTS) == (10, 7, 3)
    volatile = ("_ingested_at", "quarantined_at", "recorded_at", "_ingest_date")
    expected, actual = lake_tables(clean, volatile), lake_tables(crashed, volatile)
    ledger = "bronze/_ingestion_ledger"
    assert expected.keys() == actual.keys()
    for name in expected:
        if name != ledger:
            assert expected[name].equals(actual[name]), name
