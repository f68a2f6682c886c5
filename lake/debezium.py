"""Decoding of Debezium row images (the ``before`` / ``after`` JSON of a change event) into typed columns.

The semantic type of each field comes from the message's schema envelope when the connector sends one
(``value_schema`` in bronze), and from the feed's contract otherwise (``debeziumType`` and
``decimalHandlingMode``). A field that neither knows (a column added in the source) keeps the type its JSON
values have, so it reaches silver without a migration.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from decimal import Decimal

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from data_contracts import Contract

DATE = "io.debezium.time.Date"
TIMESTAMP = "io.debezium.time.Timestamp"
MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
NANO_TIMESTAMP = "io.debezium.time.NanoTimestamp"
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
JSON = "io.debezium.data.Json"
DECIMAL = "org.apache.kafka.connect.data.Decimal"
EPOCH_UNITS = {TIMESTAMP: "ms", MICRO_TIMESTAMP: "us", NANO_TIMESTAMP: "ns"}
ENVELOPE_TYPES = {
    "int8": pl.Int8,
    "int16": pl.Int16,
    "int32": pl.Int32,
    "int64": pl.Int64,
    "float32": pl.Float32,
    "float64": pl.Float64,
    "boolean": pl.Boolean,
    "string": pl.String,
}


WIRE_DTYPES = {
    "int8": pl.Int64,
    "int16": pl.Int64,
    "int32": pl.Int64,
    "int64": pl.Int64,
    "float32": pl.Float64,
    "float64": pl.Float64,
    "boolean": pl.Boolean,
    "string": pl.String,
    "bytes": pl.String,
}
"""How a Kafka Connect schema type reads from JSON."""


@dataclass(frozen=True)
class FieldSpec:
    """How one field of a row image is encoded on the wire."""

    name: str
    semantic: str | None = None
    """The Debezium / Kafka Connect logical type name, if any."""
    wire: str | None = None
    """The Kafka Connect schema type (``int64``, ``string``, ``bytes``, ...) when an envelope says it."""
    precision: int | None = None
    scale: int | None = None
    precise: bool = False
    """A Decimal sent as base64 two's-complement bytes (``decimal.handling.mode=precise``)."""


def _decimal_shape(contract_type: pa.DataType | None) -> tuple[int | None, int | None]:
    if contract_type is not None and pa.types.is_decimal(contract_type):
        return contract_type.precision, contract_type.scale
    return None, None


def field_specs(contract: Contract, value_schema: str | None) -> dict[str, FieldSpec]:
    """The encoding of every known field: from the schema envelope when there is one, else from the contract."""
    specs = {}
    if value_schema:
        for f in json.loads(value_schema).get("fields", []):
            params = f.get("parameters") or {}
            precision = params.get("connect.decimal.precision")
            scale = params.get("scale")
            specs[f["field"]] = FieldSpec(
                name=f["field"],
                semantic=f.get("name"),
                wire=f.get("type"),
                precision=int(precision) if precision is not None else None,
                scale=int(scale) if scale is not None else None,
                precise=f.get("name") == DECIMAL and f.get("type") == "bytes",
            )
        return specs
    for column in contract.columns:
        precision, scale = _decimal_shape(column.arrow_type)
        specs[column.name] = FieldSpec(
            name=column.name,
            semantic=column.debezium_type,
            precision=precision,
            scale=scale,
            precise=column.debezium_type == DECIMAL and contract.decimal_handling == "precise",
        )
    return specs


def precise_decimals(values: pl.Series, precision: int, scale: int) -> pl.Series:
    """Base64 big-endian two's-complement unscaled integers (Kafka Connect ``Decimal`` bytes) as decimals."""
    raw = [
        None if v is None else int.from_bytes(base64.b64decode(v), "big", signed=True)
        for v in values.to_list()
    ]
    if precision <= 18:
        valid = np.array([v is not None for v in raw], dtype=bool)
        low = np.array([v or 0 for v in raw], dtype=np.int64)
        words = np.stack([low, low >> 63], axis=1)  # little-endian int128: low word, sign-extended high word
        array = pa.Array.from_buffers(
            pa.decimal128(precision, scale),
            len(raw),
            [pa.array(valid).buffers()[1] if not valid.all() else None, pa.py_buffer(words.tobytes())],
            null_count=int((~valid).sum()),
        )
    else:
        array = pa.array(
            [None if v is None else Decimal(v).scaleb(-scale) for v in raw], pa.decimal128(precision, scale)
        )
    return pl.Series(values.name, array)


def _convert(values: pl.Series, spec: FieldSpec, target: pl.DataType | None) -> pl.Series:
    """One decoded field: semantic conversion first, then the contract's type when it names one."""
    if spec.semantic == DATE:
        values = values.cast(pl.Int32).cast(pl.Date)
    elif spec.semantic in EPOCH_UNITS:
        values = pl.select(pl.from_epoch(values.cast(pl.Int64), EPOCH_UNITS[spec.semantic])).to_series()
        values = values.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    elif spec.semantic == ZONED_TIMESTAMP:
        values = values.cast(pl.String).str.to_datetime(time_unit="us", time_zone="UTC")
    elif spec.semantic == DECIMAL and spec.precise and spec.precision is not None:
        values = precise_decimals(values.cast(pl.String), spec.precision, spec.scale or 0)
    elif spec.semantic == DECIMAL and spec.precision is not None:
        values = values.cast(pl.String).cast(pl.Decimal(spec.precision, spec.scale or 0))
    elif spec.wire in ENVELOPE_TYPES and target is None:
        values = values.cast(ENVELOPE_TYPES[spec.wire])
    if target is not None and values.dtype != target:
        values = values.cast(target)
    return values


DUCKDB_TYPES = {pl.Int64: "BIGINT", pl.Float64: "DOUBLE", pl.Boolean: "BOOLEAN", pl.String: "VARCHAR"}
"""How each wire type is read from JSON by DuckDB (``VARCHAR`` also gives objects and arrays as JSON text)."""


def _json_dtype(wire_json_types: tuple[str, ...]) -> pl.DataType | None:
    """The polars type that reads every value a contract column accepts on the wire (None: objects, arrays)."""
    if {"OBJECT", "ARRAY"} & set(wire_json_types):
        return None
    if "DOUBLE" in wire_json_types:
        return pl.Float64
    if {"BIGINT", "UBIGINT"} & set(wire_json_types):
        return pl.Int64
    return pl.Boolean if wire_json_types == ("BOOLEAN",) else pl.String


def wire_layout(
    con: duckdb.DuckDBPyConnection, contract: Contract, value_schema: str | None
) -> dict[str, pl.DataType | None]:
    """How each field of the row images (the ``images`` relation of ``con``) reads from JSON: a polars type for
    the scalars the envelope or the contract describes; None for objects, arrays and fields neither knows (read
    as their JSON text, so a column new in the source keeps one type, text, until its contract gives it one)."""
    if value_schema:
        return {
            f["field"]: WIRE_DTYPES.get(f.get("type")) for f in json.loads(value_schema).get("fields", [])
        }
    keys = [
        k for (k,) in con.sql("select distinct unnest(json_keys(image)) from images order by 1").fetchall()
    ]
    layout: dict[str, pl.DataType | None] = {c.name: _json_dtype(c.wire_json_types) for c in contract.columns}
    return layout | {k: None for k in keys if k not in layout}


def _read_images(
    images: pl.Series, contract: Contract, value_schema: str | None, duckdb_config: dict[str, str] | None
) -> pl.DataFrame:
    """Every field of the row images as a column of its wire type (JSON text for objects, arrays and unknown
    fields), in one multi-threaded DuckDB pass (a connection with ``duckdb_config``)."""
    with duckdb.connect(config=duckdb_config or {}) as con:
        con.register("images", pl.DataFrame({"image": images}).to_arrow())
        layout = wire_layout(con, contract, value_schema)
        if not layout:
            return pl.DataFrame(height=images.len())
        structure = json.dumps({name: DUCKDB_TYPES.get(dtype, "VARCHAR") for name, dtype in layout.items()})
        read = con.sql(
            f"select unnest(from_json(image, '{structure.replace(chr(39), chr(39) * 2)}')) from images"
        )
        return pl.from_arrow(read.to_arrow_table())


def decode_images(
    images: pl.Series,
    contract: Contract,
    value_schema: str | None,
    duckdb_config: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Row images (JSON text, one per row; null stays an all-null row) as typed columns: every contract
    column, in contract order, then any field the stream carries that the contract does not know. DuckDB reads
    them with ``duckdb_config`` (``Settings.duckdb_config()``: memory limit, threads, spill folder)."""
    targets = {c.name: pl.from_arrow(pa.array([], c.arrow_type)).dtype for c in contract.columns}
    specs = field_specs(contract, value_schema)
    struct = _read_images(images, contract, value_schema, duckdb_config) if images.len() else pl.DataFrame()
    columns = []
    for name, target in targets.items():
        values = (
            struct[name] if name in struct.columns else pl.Series(name, [None] * images.len(), dtype=target)
        )
        columns.append(_convert(values, specs.get(name, FieldSpec(name)), target).alias(name))
    for name in struct.columns:
        if name not in targets:
            columns.append(_convert(struct[name], specs.get(name, FieldSpec(name)), None).alias(name))
    return pl.DataFrame(columns, height=images.len())
