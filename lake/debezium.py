"""Decoding of Debezium row images (the ``before`` / ``after`` JSON of a change event) into typed columns.

How each field is encoded comes from :func:`data_contracts.wire.field_encodings`: from the message's schema
envelope when the connector sends one (``value_schema`` in bronze), and from the feed's contract otherwise
(``debeziumType``, ``decimalHandlingMode``, logical and physical type). Validation at ingestion follows the
same rule, so a record that reached bronze decodes. A field that neither knows (a column added in the source)
keeps the type its JSON values have, so it reaches silver without a migration.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal, localcontext

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from data_contracts import Contract
from data_contracts import connect_types as ct
from data_contracts.wire import FieldEncoding, field_encodings

EPOCH_UNITS = {"epoch_ms": "ms", "epoch_us": "us", "epoch_ns": "ns"}
ENVELOPE_TYPES = {
    ct.INT8: pl.Int8,
    ct.INT16: pl.Int16,
    ct.INT32: pl.Int32,
    ct.INT64: pl.Int64,
    ct.FLOAT32: pl.Float32,
    ct.FLOAT64: pl.Float64,
    ct.BOOLEAN: pl.Boolean,
    ct.STRING: pl.String,
}
"""The polars type of a Kafka Connect schema type (the JSON converter's names), for fields no contract
types."""
READ_TYPES = {
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "decimal_double": "DOUBLE",
    "epoch_days": "BIGINT",
    "epoch_ms": "BIGINT",
    "epoch_us": "BIGINT",
    "epoch_ns": "BIGINT",
}
"""How DuckDB reads each encoding from JSON; every other one as ``VARCHAR`` (objects and arrays as JSON
text)."""


def precise_decimals(values: pl.Series, precision: int, scale: int) -> pl.Series:
    """Base64 big-endian two's-complement unscaled integers (Kafka Connect ``Decimal`` bytes) as decimals."""
    raw = [
        None if v is None else int.from_bytes(base64.b64decode(v), "big", signed=True)
        for v in values.to_list()
    ]
    if precision <= 18:
        valid = np.array([v is not None for v in raw], dtype=bool)
        low = np.array([v or 0 for v in raw], dtype=np.int64)
        if np.any(np.abs(low) >= 10**precision):  # pyarrow would not notice from raw buffers
            raise ValueError(f"{values.name}: Decimal bytes with more than {precision} digits")
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


def variable_scale_decimals(values: pl.Series, target: pl.DataType | None) -> pl.Series:
    """``io.debezium.data.VariableScaleDecimal`` structs (JSON text of
    ``{"scale": s, "value": <base64 unscaled bytes>}``) as decimals of the target's precision and scale
    (validation refused any that does not fit it), as doubles, or as decimal text for a column no contract
    types."""
    parsed = values.str.json_decode(pl.Struct({"scale": pl.Int64, "value": pl.String})).to_list()
    with localcontext() as context:
        context.prec = 80
        exact = [
            None
            if r is None or r["value"] is None or r["scale"] is None
            else Decimal(int.from_bytes(base64.b64decode(r["value"]), "big", signed=True)).scaleb(-r["scale"])
            for r in parsed
        ]
        if isinstance(target, pl.Decimal):
            quantum = Decimal(1).scaleb(-target.scale)
            exact = [None if d is None else d.quantize(quantum) for d in exact]
            return pl.Series(values.name, pa.array(exact, pa.decimal128(target.precision, target.scale)))
    if target == pl.Float64:
        return pl.Series(values.name, [None if d is None else float(d) for d in exact], pl.Float64)
    return pl.Series(values.name, [None if d is None else str(d) for d in exact], pl.String)


def _convert(values: pl.Series, encoding: FieldEncoding, target: pl.DataType | None) -> pl.Series:
    """One decoded field: its wire encoding read first, then cast to the contract's type when it names one."""
    decoding = encoding.decoding
    if encoding.problem is not None:  # validation let only nulls through
        return pl.Series(values.name, [None] * values.len(), dtype=target or pl.String)
    if decoding == "decimal_bytes":
        precision = encoding.wire_precision or (target.precision if isinstance(target, pl.Decimal) else 38)
        values = precise_decimals(values.cast(pl.String), precision, encoding.wire_scale or 0)
    elif decoding == "decimal_variable":
        values = variable_scale_decimals(values.cast(pl.String), target)
    elif decoding in ("decimal_text", "decimal_double") and isinstance(target, pl.Decimal):
        values = values.round(target.scale) if decoding == "decimal_double" else values
    elif decoding == "epoch_days":
        values = values.cast(pl.Int32).cast(pl.Date)
    elif decoding in EPOCH_UNITS:
        values = pl.select(pl.from_epoch(values.cast(pl.Int64), EPOCH_UNITS[decoding])).to_series()
        values = values.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    elif decoding in ("zoned", "iso_timestamp"):
        values = values.cast(pl.String).str.to_datetime(time_unit="us", time_zone="UTC")
    elif decoding == "iso_date":
        values = values.cast(pl.String).str.to_date()
    elif decoding == "int_boolean":
        values = values.cast(pl.String).replace_strict(
            {"1": True, "true": True, "0": False, "false": False}, return_dtype=pl.Boolean
        )
    elif target is None and encoding.wire in ENVELOPE_TYPES:
        values = values.cast(ENVELOPE_TYPES[encoding.wire])
    if target is not None and values.dtype != target:
        values = values.cast(target)
    return values


def _read_images(
    images: pl.Series,
    encodings: dict[str, FieldEncoding],
    envelope: bool,
    duckdb_config: dict[str, str] | None,
) -> pl.DataFrame:
    """Every field of the row images as a column of its wire type (JSON text for objects, arrays and fields no
    envelope or contract describes, so a column new in the source keeps one type, text, until its contract
    gives it one), in one multi-threaded DuckDB pass (a connection with ``duckdb_config``)."""
    with duckdb.connect(config=duckdb_config or {}) as con:
        con.register("images", pl.DataFrame({"image": images}).to_arrow())
        layout = {name: READ_TYPES.get(e.decoding, "VARCHAR") for name, e in encodings.items()}
        if not envelope:
            keys = con.sql("select distinct unnest(json_keys(image)) from images order by 1").fetchall()
            layout |= {k: "VARCHAR" for (k,) in keys if k not in layout}
        if not layout:
            return pl.DataFrame(height=images.len())
        structure = json.dumps(layout)
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
    encodings = field_encodings(contract, value_schema)
    struct = (
        _read_images(images, encodings, bool(value_schema), duckdb_config) if images.len() else pl.DataFrame()
    )
    columns = []
    for name, target in targets.items():
        values = (
            struct[name] if name in struct.columns else pl.Series(name, [None] * images.len(), dtype=target)
        )
        columns.append(_convert(values, encodings[name], target).alias(name))
    for name in struct.columns:
        if name not in targets:
            encoding = encodings.get(name, FieldEncoding(name, "text", ("VARCHAR",)))
            columns.append(_convert(struct[name], encoding, None).alias(name))
    return pl.DataFrame(columns, height=images.len())
