"""How each field of a Debezium row image is encoded on the wire: the one rule that record validation (DuckDB
SQL over the raw JSON, :mod:`data_contracts.validation`) and decoding (``lake.debezium``) both follow.

A change event that carries its Kafka Connect schema (``schemas.enable=true``) says how each field is encoded:
its schema type (``int16``, ``string``, ``bytes``, ...) and name (``org.apache.kafka.connect.data.Decimal``
with its ``scale``, ``io.debezium.time.MicroTimestamp``, ...) decide, whatever the contract's
``decimalHandlingMode`` and ``debeziumType`` say. Without a schema, the contract decides. Where what arrives
differs from the contract's logical type, the value is converted when the connector's data type mappings
document the conversion (:func:`_conversion`), and the record is refused with a reason otherwise.

The encodings (``FieldEncoding.decoding``):

- ``text``: a JSON string kept as it is; ``json``: a string holding JSON text (``io.debezium.data.Json``);
  ``json_value``: a JSON object or array (a struct, a map or an array in the schema), kept as JSON text;
- ``integer``, ``float``, ``boolean``: the JSON scalar itself;
- ``int_boolean``: a MySQL ``TINYINT(1)`` (``int16``) 0 or 1 for a boolean column;
- ``decimal_bytes`` / ``decimal_text`` / ``decimal_double``: a decimal in ``decimal.handling.mode`` precise
  (base64 two's-complement unscaled bytes and a ``scale``), string, or double; ``decimal_variable``: a
  PostgreSQL ``NUMERIC`` without scale in precise mode (``io.debezium.data.VariableScaleDecimal``, a struct of
  ``scale`` and ``value`` bytes);
- ``epoch_days`` (``Date``), ``epoch_ms`` (``Timestamp``), ``epoch_us`` (``MicroTimestamp``), ``epoch_ns``
  (``NanoTimestamp``), ``zoned`` (``ZonedTimestamp``, ISO-8601 text); ``iso_date`` / ``iso_timestamp``:
  ISO-8601 text of a contract date or timestamp that names no Debezium type.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pyarrow as pa

from data_contracts import connect_types as ct
from data_contracts.model import Column, Contract

SEMANTIC_DECODINGS = {
    ct.DECIMAL: "decimal_bytes",
    ct.VARIABLE_SCALE_DECIMAL: "decimal_variable",
    ct.DATE: "epoch_days",
    ct.CONNECT_DATE: "epoch_days",
    ct.TIMESTAMP: "epoch_ms",
    ct.CONNECT_TIMESTAMP: "epoch_ms",
    ct.MICRO_TIMESTAMP: "epoch_us",
    ct.NANO_TIMESTAMP: "epoch_ns",
    ct.ZONED_TIMESTAMP: "zoned",
    ct.JSON: "json",
}
"""The Debezium and Kafka Connect semantic types (schema names) that change how a value reads."""
PLAIN_SEMANTICS = (ct.YEAR, ct.ENUM, ct.ENUM_SET, ct.UUID, ct.XML)
"""Semantic types whose value is simply their literal (a year number, an enum label, a UUID text, ...)."""
INTEGERS = ("BIGINT", "UBIGINT")
JSON_TYPES = {
    "text": ("VARCHAR",),
    "json": ("VARCHAR",),
    "integer": INTEGERS,
    "float": ("DOUBLE", *INTEGERS),
    "boolean": ("BOOLEAN",),
    "int_boolean": INTEGERS,
    "decimal_bytes": ("VARCHAR",),
    "decimal_text": ("VARCHAR",),
    "decimal_double": ("DOUBLE", *INTEGERS),
    "decimal_variable": ("OBJECT",),
    "epoch_days": INTEGERS,
    "epoch_ms": INTEGERS,
    "epoch_us": INTEGERS,
    "epoch_ns": INTEGERS,
    "zoned": ("VARCHAR",),
    "iso_date": ("VARCHAR",),
    "iso_timestamp": ("VARCHAR",),
}
"""DuckDB ``json_type`` names of a non-null value, per encoding (``json_value`` depends on the value's
kind)."""
DECIMAL_MODE_DECODINGS = {"precise": "decimal_bytes", "string": "decimal_text", "double": "decimal_double"}
TINYINT_1 = re.compile(r"^\s*tinyint\s*\(\s*1\s*\)", re.IGNORECASE)


@dataclass(frozen=True)
class FieldEncoding:
    """How one field of a row image arrives, and what reads it."""

    name: str
    decoding: str
    json_types: tuple[str, ...]
    """DuckDB ``json_type`` names accepted for a non-null value."""
    wire: str | None = None
    """The Kafka Connect schema type, when an envelope says it."""
    semantic: str | None = None
    """The schema name (envelope) or ``debeziumType`` (contract), if any."""
    wire_precision: int | None = None
    wire_scale: int | None = None
    """Precision and scale of a Decimal on the wire (``decimal_bytes`` reads its unscaled bytes with this
    scale)."""
    fit: tuple[int, int] | None = None
    """(precision, scale) of the contract's decimal column: values must fit it."""
    problem: str | None = None
    """Why what arrives cannot become the contract's type: a record with a value here is refused with it."""


def field_encodings(contract: Contract, value_schema: str | None) -> dict[str, FieldEncoding]:
    """The encoding of every field of ``contract``'s row images, and of every field the envelope
    ``value_schema`` (the Kafka Connect schema of the ``after`` struct) describes and the contract does not:
    from the envelope when there is one, else from the contract."""
    fields = {f["field"]: f for f in json.loads(value_schema).get("fields", [])} if value_schema else {}
    encodings = {
        c.name: _from_envelope(contract, c, fields[c.name])
        if c.name in fields
        else _from_contract(contract, c)
        for c in contract.columns
    }
    for name, spec in fields.items():
        encodings.setdefault(name, _from_envelope(contract, None, spec))
    return encodings


def _decimal_shape(column: Column) -> tuple[int, int] | None:
    if pa.types.is_decimal(column.arrow_type):
        return column.arrow_type.precision, column.arrow_type.scale
    return None


def _from_contract(contract: Contract, column: Column) -> FieldEncoding:
    """No envelope: the contract's Debezium type, decimal mode and logical type say how the field arrives."""
    fit, semantic, logical = _decimal_shape(column), column.debezium_type, column.logical_type
    if logical in ("object", "array") and semantic is None:
        return FieldEncoding(column.name, "json_value", column.wire_json_types)
    if logical == "boolean" and TINYINT_1.match(column.physical_type or ""):
        # a TINYINT(1): 0/1 from snapshots, true/false once the table's DDL or a converter says BOOLEAN
        return FieldEncoding(column.name, "int_boolean", ("BOOLEAN", *INTEGERS))
    if semantic == ct.DECIMAL:
        decoding = DECIMAL_MODE_DECODINGS[contract.decimal_handling or "precise"]
    elif semantic is not None:
        decoding = SEMANTIC_DECODINGS[semantic]
    elif logical == "number":
        decoding = "decimal_double" if fit else "float"
    else:
        decoding = {"string": "text", "date": "iso_date", "timestamp": "iso_timestamp"}.get(logical, logical)
    scale = fit[1] if fit and decoding == "decimal_bytes" else None
    return FieldEncoding(
        column.name, decoding, JSON_TYPES[decoding], semantic=semantic, wire_scale=scale, fit=fit
    )


def _arrives_as(spec: dict) -> str:
    """What the envelope says a field is (kind), from its schema type and name."""
    wire, semantic = spec.get("type"), spec.get("name")
    if semantic in SEMANTIC_DECODINGS:
        return SEMANTIC_DECODINGS[semantic]
    if semantic and semantic not in PLAIN_SEMANTICS:
        return "other"  # a time of day, a duration, bits, a geometry...: nothing a contract type converts
    literal = _literal(wire)
    return "other" if literal == "json_value" or (literal == "text" and wire != ct.STRING) else literal


def _literal(wire: str | None) -> str:
    """The encoding of a Kafka Connect schema type read for its literal value alone."""
    if wire in ct.INTEGER_TYPES:
        return "integer"
    if wire in ct.FLOAT_TYPES:
        return "float"
    if wire in ct.CONTAINER_TYPES:
        return "json_value"
    return "boolean" if wire == ct.BOOLEAN else "text"


def _conversion(contract: Contract, column: Column, kind: str, wire: str) -> str | None:
    """The encoding that turns what arrives (``kind``) into the column's logical type, when the connector's
    data type mappings document it; None otherwise."""
    logical = column.logical_type
    if logical == "string":
        return "text" if kind in ("text", "json", "zoned") else None
    if logical == "integer":
        return "integer" if kind == "integer" else None
    if logical == "number":
        decimal = {"decimal_bytes": "decimal_bytes", "decimal_variable": "decimal_variable"}
        if _decimal_shape(column):  # the three decimal.handling.mode encodings of DECIMAL, NUMERIC and MONEY
            return (decimal | {"text": "decimal_text", "float": "decimal_double"}).get(kind)
        return (decimal | {"text": "decimal_text", "float": "float"}).get(kind)
    if logical == "boolean":
        if kind == "boolean":
            return "boolean"
        # MySQL: TINYINT is INT16, and BOOLEAN is TINYINT(1) ("Boolean values"); PostgreSQL has no such
        # mapping
        tinyint = kind == "integer" and wire in (ct.INT8, ct.INT16) and contract.connector == "mysql"
        return "int_boolean" if tinyint else None
    if logical == "date":
        return "epoch_days" if kind == "epoch_days" else None
    if logical == "timestamp":
        return kind if kind in ("epoch_ms", "epoch_us", "epoch_ns", "zoned") else None
    if logical in ("object", "array"):
        if kind == "json":
            return "json"
        return "json_value" if wire in ct.CONTAINER_TYPES else None
    return None


def _from_envelope(contract: Contract, column: Column | None, spec: dict) -> FieldEncoding:
    """The envelope says how the field arrives; the contract column (if any) says what it must become."""
    name, wire, semantic = spec["field"], spec.get("type"), spec.get("name")
    params = spec.get("parameters") or {}
    precision, scale = params.get("connect.decimal.precision"), params.get("scale")
    shape = {
        "wire": wire,
        "semantic": semantic,
        "wire_precision": int(precision) if precision is not None else None,
        "wire_scale": int(scale) if scale is not None else None,
    }
    kind = _arrives_as(spec)
    json_types = {ct.STRUCT: ("OBJECT",), ct.MAP: ("OBJECT",), ct.ARRAY: ("ARRAY",)}.get(
        wire
    ) or JSON_TYPES.get(kind, ("VARCHAR",))
    if column is None:  # a field the contract does not know: read as what it is, or as its literal
        decoding = kind if kind != "other" else _literal(wire)
        return FieldEncoding(name, decoding, json_types, **shape)
    described = " ".join(filter(None, (wire, semantic)))
    decoding = _conversion(contract, column, kind, wire)
    if decoding is None:
        problem = (
            f"field {name} arrives as {described}, which the {contract.connector} connector does not map to "
            f"{column.logical_type}"
        )
        return FieldEncoding(name, "text", json_types, problem=problem, **shape)
    fit = _decimal_shape(column)
    if decoding == "decimal_bytes" and fit and not _fits(shape["wire_precision"], shape["wire_scale"], *fit):
        arrives = f"{described}({shape['wire_precision']},{shape['wire_scale']})"
        problem = f"field {name} arrives as {arrives}, which does not fit decimal({fit[0]},{fit[1]})"
        return FieldEncoding(name, decoding, json_types, problem=problem, **shape)
    return FieldEncoding(name, decoding, json_types, fit=fit, **shape)


def _fits(precision: int | None, scale: int | None, target_precision: int, target_scale: int) -> bool:
    """Every Decimal(precision, scale) value is exactly a decimal(target_precision, target_scale)."""
    if scale is None or scale > target_scale:
        return False
    return precision is None or precision - scale <= target_precision - target_scale
