"""Envelope encoding: Debezium change events (``before``/``after``/``source``/``op``) as JSON lines, with the
Kafka Connect schema when the connector sends one, per the connector's data type mapping."""

from __future__ import annotations

import json

import polars as pl

from data_contracts import connect_types as ct
from simulator.encoding import decimal_base64, decimal_strings, iso_utc
from simulator.tables import Column, Server, Table

DEBEZIUM_VERSION = "2.7.3.Final"
TOMBSTONE = "null"
"""A tombstone (a Kafka record with a null value) as the sink writes it: the JSON literal ``null``."""
_CONNECT_TYPES = {
    "int32": (ct.INT32, None),
    "int64": (ct.INT64, None),
    "float64": (ct.FLOAT64, None),
    "bool": (ct.BOOLEAN, None),
    "string": (ct.STRING, None),
    "json": (ct.STRING, ct.JSON),
    "decimal": (ct.BYTES, ct.DECIMAL),
    "date": (ct.INT32, ct.DATE),
    "timestamp_ms": (ct.INT64, ct.TIMESTAMP),
    "timestamp_us": (ct.INT64, ct.MICRO_TIMESTAMP),
    "timestamptz": (ct.STRING, ct.ZONED_TIMESTAMP),
}
"""The Kafka Connect schema type and semantic name of each column kind of :mod:`simulator.tables`."""
_MYSQL_BINLOG_BYTES = 256 * 1024 * 1024


class EnvelopeEncoder:
    """Encodes a server's change events (rows with ``_ts``, ``_op``, log positions, ``b_<column>`` before
    images) as the JSON lines its connector sends."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def _source(self, table: Table) -> pl.Expr:
        s = self.server
        ts_ms = pl.col("_ts") // 1000
        common = [
            pl.lit(DEBEZIUM_VERSION).alias("version"),
            pl.lit(s.connector).alias("connector"),
            pl.lit(s.name).alias("name"),
            ts_ms.alias("ts_ms"),
            pl.col("_snapshot").alias("snapshot"),
            pl.lit(s.database).alias("db"),
        ]
        if s.connector == "postgresql":
            fields = [
                *common,
                pl.concat_str(
                    [
                        pl.lit('["'),
                        pl.col("_prev_pos").cast(pl.String),
                        pl.lit('","'),
                        pl.col("_pos").cast(pl.String),
                        pl.lit('"]'),
                    ]
                ).alias("sequence"),
                pl.col("_ts").alias("ts_us"),
                (pl.col("_ts") * 1000).alias("ts_ns"),
                pl.lit(s.schema).alias("schema"),
                pl.lit(table.name).alias("table"),
                pl.col("_tx").alias("txId"),
                pl.col("_pos").alias("lsn"),
                pl.lit(None).alias("xmin"),
            ]
        else:
            binlog_no = 1 + pl.col("_pos") // _MYSQL_BINLOG_BYTES
            fields = [
                *common,
                pl.lit(None).alias("sequence"),
                pl.col("_ts").alias("ts_us"),
                (pl.col("_ts") * 1000).alias("ts_ns"),
                pl.lit(table.name).alias("table"),
                pl.lit(s.options["server_id"]).alias("server_id"),
                pl.lit(None).alias("gtid"),
                pl.format("mysql-bin.{}", binlog_no.cast(pl.String).str.zfill(6)).alias("file"),
                (154 + pl.col("_pos") % _MYSQL_BINLOG_BYTES).alias("pos"),
                pl.col("_row").alias("row"),
                pl.when(pl.col("_op") == "r").then(None).otherwise(pl.lit(7)).alias("thread"),
                pl.lit(None).alias("query"),
            ]
        return pl.struct(fields).alias("source")

    def _value(self, column: Column, prefix: str) -> pl.Expr:
        c = pl.col(prefix + column.name)
        kind = column.kind
        if kind == "timestamp_ms":
            c = c // 1000
        return c.alias(column.name)

    def encode(self, day: int, table: Table, events: pl.DataFrame) -> pl.Series:
        """The change events as JSON with the columns that exist on ``day``, each ending with its newline
        (and a delete with its tombstone line)."""
        columns = table.columns_on(day)
        # decimals and zoned timestamps are encoded as strings first
        encoder = decimal_base64 if self.server.decimal_mode == "precise" else None
        digits = 6 if self.server.connector == "postgresql" else 0
        strings = []
        for c in columns:
            for name in (c.name, f"b_{c.name}"):
                if c.kind == "decimal":
                    strings.append(
                        encoder(events[name]) if encoder else decimal_strings(events[name], c.scale)
                    )
                elif c.kind == "timestamptz":
                    strings.append(iso_utc(events[name], digits))
        if strings:
            events = events.with_columns(strings)
        op = pl.col("_op")
        has_before = pl.col(f"b_{table.primary_key}").is_not_null()
        lag_ms = (pl.col("_ts") // 1000) + 150 + (pl.col("_pos") % 1700)
        payload = pl.struct(
            pl.when(has_before)
            .then(pl.struct([self._value(c, "b_") for c in columns]))
            .otherwise(None)
            .alias("before"),
            pl.when(op != "d")
            .then(pl.struct([self._value(c, "") for c in columns]))
            .otherwise(None)
            .alias("after"),
            self._source(table),
            pl.lit(None).alias("transaction"),
            op.alias("op"),
            lag_ms.alias("ts_ms"),
            (lag_ms * 1000).alias("ts_us"),
            (lag_ms * 1_000_000).alias("ts_ns"),
        ).struct.json_encode()
        # a tombstone follows each delete in the same partition: the two lines travel together
        end = pl.when(op == "d").then(pl.lit("\n" + TOMBSTONE + "\n")).otherwise(pl.lit("\n"))
        if self.server.schemas_enabled:
            schema = json.dumps(connect_schema(self.server, table, columns), separators=(",", ":"))
            line = pl.concat_str([pl.lit('{"schema":' + schema + ',"payload":'), payload, pl.lit("}"), end])
        else:
            line = pl.concat_str([payload, end])
        return events.select(line).to_series()


def connect_schema(server: Server, table: Table, columns: tuple[Column, ...]) -> dict:
    """The Kafka Connect JSON schema of a Debezium envelope for ``table`` with ``columns``."""

    def field(c: Column) -> dict:
        ctype, name = _CONNECT_TYPES[c.kind]
        f: dict = {"type": ctype, "optional": c.nullable}
        if name:
            f["name"] = name
            f["version"] = 1
        if c.kind == "decimal":
            f["parameters"] = {"scale": str(c.scale), "connect.decimal.precision": str(c.precision)}
        f["field"] = c.name
        return f

    topic = server.topic(table)
    row = {
        "type": ct.STRUCT,
        "fields": [field(c) for c in columns],
        "optional": True,
        "name": f"{topic}.Value",
    }
    if server.connector == "postgresql":
        source_fields = [
            ("schema", ct.STRING, False),
            ("table", ct.STRING, False),
            ("txId", ct.INT64, True),
            ("lsn", ct.INT64, True),
            ("xmin", ct.INT64, True),
        ]
        source_name = "io.debezium.connector.postgresql.Source"
    else:
        source_fields = [
            ("table", ct.STRING, True),
            ("server_id", ct.INT64, False),
            ("gtid", ct.STRING, True),
            ("file", ct.STRING, False),
            ("pos", ct.INT64, False),
            ("row", ct.INT32, False),
            ("thread", ct.INT64, True),
            ("query", ct.STRING, True),
        ]
        source_name = "io.debezium.connector.mysql.Source"
    source = {
        "type": ct.STRUCT,
        "fields": [
            {"type": ct.STRING, "optional": False, "field": "version"},
            {"type": ct.STRING, "optional": False, "field": "connector"},
            {"type": ct.STRING, "optional": False, "field": "name"},
            {"type": ct.INT64, "optional": False, "field": "ts_ms"},
            {
                "type": ct.STRING,
                "optional": True,
                "name": ct.ENUM,
                "version": 1,
                "parameters": {
                    "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,"
                    "incremental"
                },
                "default": "false",
                "field": "snapshot",
            },
            {"type": ct.STRING, "optional": False, "field": "db"},
            {"type": ct.STRING, "optional": True, "field": "sequence"},
            {"type": ct.INT64, "optional": True, "field": "ts_us"},
            {"type": ct.INT64, "optional": True, "field": "ts_ns"},
            *({"type": t, "optional": o, "field": n} for n, t, o in source_fields),
        ],
        "optional": False,
        "name": source_name,
        "field": "source",
    }
    transaction = {
        "type": ct.STRUCT,
        "fields": [
            {"type": ct.STRING, "optional": False, "field": "id"},
            {"type": ct.INT64, "optional": False, "field": "total_order"},
            {"type": ct.INT64, "optional": False, "field": "data_collection_order"},
        ],
        "optional": True,
        "name": "event.block",
        "version": 1,
        "field": "transaction",
    }
    return {
        "type": ct.STRUCT,
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            source,
            transaction,
            {"type": ct.STRING, "optional": False, "field": "op"},
            {"type": ct.INT64, "optional": True, "field": "ts_ms"},
            {"type": ct.INT64, "optional": True, "field": "ts_us"},
            {"type": ct.INT64, "optional": True, "field": "ts_ns"},
        ],
        "optional": False,
        "name": f"{topic}.Envelope",
        "version": 2,
    }
