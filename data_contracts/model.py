"""Contracts as Python objects: an Open Data Contract Standard (ODCS v3) YAML file per source feed, parsed with
the ``open-data-contract-standard`` pydantic models and checked for what this project reads from it.

What ODCS has no field for is in ``customProperties`` with fixed names: at the contract level ``feed``
(``cdc`` | ``clickstream``), ``topic``, ``sourceSystem``, ``connector``, ``decimalHandlingMode`` and ``owner``;
at the property level ``debeziumType`` (the semantic type on the wire) and ``pii`` (the kind of personal
data). Personal data inside an object property is described by nested ``properties`` carrying ``pii``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from open_data_contract_standard.model import DataQuality, OpenDataContractStandard, SchemaProperty
from pydantic import ValidationError

CONTRACTS_DIR = Path(__file__).parent / "contracts"
CONTRACT_SUFFIX = ".odcs.yaml"

FEEDS = ("cdc", "clickstream")
CONNECTORS = ("postgresql", "mysql")
DECIMAL_MODES = ("string", "precise")
PII_KINDS = ("email", "phone", "ip", "name", "birth_date")
SEVERITIES = ("error", "warning")
SLA_UNITS = {
    **dict.fromkeys(("m", "min", "minute", "minutes"), "minutes"),
    **dict.fromkeys(("h", "hr", "hour", "hours"), "hours"),
    **dict.fromkeys(("d", "day", "days"), "days"),
    **dict.fromkeys(("w", "week", "weeks"), "weeks"),
    **dict.fromkeys(("y", "yr", "year", "years"), "years"),
}
"""Duration units of ``slaProperties`` (ODCS: "d, day, days for days; y, yr, years for years"), by timedelta
argument; a year counts 365 days."""
LOGICAL_TYPES = ("string", "integer", "number", "boolean", "date", "timestamp", "object", "array")

DEBEZIUM_DATE = "io.debezium.time.Date"
DEBEZIUM_TIMESTAMP = "io.debezium.time.Timestamp"
DEBEZIUM_MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
DEBEZIUM_ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
DEBEZIUM_JSON = "io.debezium.data.Json"
DEBEZIUM_DECIMAL = "org.apache.kafka.connect.data.Decimal"
DEBEZIUM_LOGICAL_TYPES = {
    DEBEZIUM_DATE: ("date",),
    DEBEZIUM_TIMESTAMP: ("timestamp",),
    DEBEZIUM_MICRO_TIMESTAMP: ("timestamp",),
    DEBEZIUM_ZONED_TIMESTAMP: ("timestamp",),
    DEBEZIUM_JSON: ("object", "array", "string"),
    DEBEZIUM_DECIMAL: ("number",),
}
"""The Debezium semantic types a contract may name, and the logical types they decode to."""

INTEGERS = ("BIGINT", "UBIGINT")
WIRE_JSON_TYPES = {
    "string": ("VARCHAR",),
    "integer": INTEGERS,
    "number": ("DOUBLE", *INTEGERS),
    "boolean": ("BOOLEAN",),
    "date": ("VARCHAR",),
    "timestamp": ("VARCHAR",),
    "object": ("OBJECT",),
    "array": ("ARRAY",),
}
"""DuckDB ``json_type`` names of a non-null value on the wire, by logical type (dates and timestamps as
ISO-8601 text unless a Debezium type says otherwise)."""
DEBEZIUM_WIRE_JSON_TYPES = {
    DEBEZIUM_DATE: INTEGERS,
    DEBEZIUM_TIMESTAMP: INTEGERS,
    DEBEZIUM_MICRO_TIMESTAMP: INTEGERS,
    DEBEZIUM_ZONED_TIMESTAMP: ("VARCHAR",),
    DEBEZIUM_JSON: ("VARCHAR",),
    DEBEZIUM_DECIMAL: ("VARCHAR",),
}
INT32_PHYSICAL_TYPES = ("int", "integer", "int4", "int32", "smallint", "int2", "tinyint", "mediumint")
DECIMAL_PHYSICAL_TYPE = re.compile(
    r"^\s*(?:numeric|decimal)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$", re.IGNORECASE
)
UTC_MICROS = pa.timestamp("us", tz="UTC")


class ContractError(ValueError):
    """A contract file that cannot be read or breaks a rule of this project; the message names the file."""


@dataclass(frozen=True)
class Column:
    """One top-level property of a contract: a field of the source record and its decoded type."""

    name: str
    """Name in the source record (Debezium ``after``/``before``, or the Segment message field)."""
    logical_type: str
    physical_type: str | None
    arrow_type: pa.DataType
    """Type of the decoded value; JSON text and objects are strings."""
    required: bool
    primary_key: bool
    pii: str | None
    debezium_type: str | None
    description: str
    wire_json_types: tuple[str, ...]
    """DuckDB ``json_type`` names accepted on the wire for a non-null value."""
    unique: bool = False
    primary_key_position: int | None = None
    classification: str | None = None
    pii_paths: tuple[tuple[str, str], ...] = ()
    """For objects: ``(JSON path, pii kind)`` of every nested property that holds personal data."""


@dataclass(frozen=True)
class QualityRule:
    """A data-quality rule on the decoded table, as a Great Expectations expectation type and its arguments."""

    name: str
    column: str | None
    severity: str
    """``error`` (the table is wrong) or ``warning`` (worth a look)."""
    description: str
    expectation: str
    """Great Expectations expectation type, such as ``expect_column_values_to_be_in_set``."""
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Arguments of the expectation, including ``column`` / ``column_list`` where it has one."""
    columns: tuple[str, ...] = ()
    """Every column the rule reads (none for table-level rules)."""

    @property
    def accepted_values(self) -> tuple[Any, ...] | None:
        """The accepted values of an accepted-values rule, else None."""
        if self.expectation != "expect_column_values_to_be_in_set":
            return None
        return tuple(self.kwargs["value_set"])


@dataclass(frozen=True)
class Contract:
    """The contract of one source feed: its columns, quality rules and service levels."""

    id: str
    version: str
    status: str
    name: str
    """Table name: ``contacts``, ``orders``, ..., ``clickstream`` for Segment."""
    feed: str
    feed_id: str
    """The topic for CDC (``crm.public.contacts``), ``clickstream`` for Segment."""
    topic: str | None
    source_system: str
    connector: str | None
    decimal_handling: str | None
    description: str
    owner: str
    columns: tuple[Column, ...]
    quality: tuple[QualityRule, ...]
    """The contract's own quality entries (see :attr:`rules` for every rule to check)."""
    sla: Mapping[str, Mapping[str, Any]] = field(hash=False)
    """``slaProperties`` by property name: ``{"retention": {"value": 90, "unit": "d", ...}}``."""
    path: Path

    @property
    def primary_key(self) -> tuple[str, ...]:
        """The primary-key columns in ``primaryKeyPosition`` order."""
        keys = [c for c in self.columns if c.primary_key]
        return tuple(c.name for c in sorted(keys, key=lambda c: c.primary_key_position or 0))

    def column(self, name: str) -> Column:
        """The column called ``name``; KeyError naming the contract and its columns otherwise."""
        for c in self.columns:
            if c.name == name:
                return c
        names = ", ".join(c.name for c in self.columns)
        raise KeyError(f"contract {self.id} has no column {name!r} (columns: {names})")

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the decoded columns; a column is nullable unless it is required."""
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=not c.required) for c in self.columns])

    def sla_duration(self, name: str) -> timedelta | None:
        """The duration of the ``slaProperties`` entry ``name`` (``freshness``, ``retention``, ``latency``,
        ``frequency``), None when the contract has none; ContractError for a value or unit that is no duration."""
        entry = self.sla.get(name)
        if entry is None:
            return None
        value, unit = entry.get("value"), str(entry.get("unit") or "").strip().lower()
        if (
            unit not in SLA_UNITS
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
        ):
            raise ContractError(
                f"{self.path.name}: slaProperties {name}: {value!r} {entry.get('unit')!r} is no duration "
                f"(a number and one of the units {', '.join(SLA_UNITS)})"
            )
        return (
            timedelta(**{SLA_UNITS[unit]: value})
            if SLA_UNITS[unit] != "years"
            else timedelta(days=365 * value)
        )

    @property
    def pii_columns(self) -> tuple[Column, ...]:
        """Columns that are personal data themselves (``pii`` set)."""
        return tuple(c for c in self.columns if c.pii)

    @property
    def pii_paths(self) -> dict[str, dict[str, str]]:
        """For object columns holding personal data: column -> {JSON path inside it: pii kind}, such as
        ``{"context": {"$.ip": "ip", ...}, "traits": {"$.email": "email", ...}}``."""
        return {c.name: dict(c.pii_paths) for c in self.columns if c.pii_paths}

    @property
    def rules(self) -> tuple[QualityRule, ...]:
        """Every rule the decoded table must satisfy: not null for each required column and unique for the
        primary key and each other unique column (all of severity error), then the contract's quality entries."""
        derived = [
            QualityRule(
                name=f"{c.name}_required",
                column=c.name,
                severity="error",
                description=f"{c.name} is required: never null.",
                expectation="expect_column_values_to_not_be_null",
                kwargs={"column": c.name},
                columns=(c.name,),
            )
            for c in self.columns
            if c.required
        ]
        key = self.primary_key
        if len(key) == 1:
            derived.append(_unique_rule(f"{self.name}_primary_key_unique", key[0], "The primary key"))
        elif key:
            derived.append(
                QualityRule(
                    name=f"{self.name}_primary_key_unique",
                    column=None,
                    severity="error",
                    description=f"The primary key ({', '.join(key)}) is unique.",
                    expectation="expect_compound_columns_to_be_unique",
                    kwargs={"column_list": list(key)},
                    columns=key,
                )
            )
        derived += [
            _unique_rule(f"{c.name}_unique", c.name, c.name)
            for c in self.columns
            if c.unique and (c.name,) != key
        ]
        return (*derived, *self.quality)


def _unique_rule(name: str, column: str, what: str) -> QualityRule:
    return QualityRule(
        name=name,
        column=column,
        severity="error",
        description=f"{what} is unique.",
        expectation="expect_column_values_to_be_unique",
        kwargs={"column": column},
        columns=(column,),
    )


def load_contract(path: Path | str) -> Contract:
    """Parse and check one contract file; ContractError naming the file when it is invalid."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ContractError("not a YAML mapping")
        odcs = OpenDataContractStandard(**data)
        return _to_contract(odcs, path)
    except ContractError as e:
        raise ContractError(f"{path}: {e}") from None
    except (OSError, yaml.YAMLError, ValidationError) as e:
        raise ContractError(f"{path}: {e}") from e


def load_contracts(directory: Path | str = CONTRACTS_DIR) -> dict[str, Contract]:
    """Every ``*.odcs.yaml`` contract of ``directory``, keyed by feed id and sorted by it."""
    contracts: dict[str, Contract] = {}
    for path in sorted(Path(directory).glob(f"*{CONTRACT_SUFFIX}")):
        contract = load_contract(path)
        if contract.feed_id in contracts:
            raise ContractError(
                f"{path}: feed {contract.feed_id} is already described by {contracts[contract.feed_id].path}"
            )
        contracts[contract.feed_id] = contract
    return dict(sorted(contracts.items()))


def _custom(properties: list | None) -> dict[str, Any]:
    return {p.property: p.value for p in properties or [] if p.property}


def _choice(value: Any, what: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ContractError(f"{what} is {value!r}, expected one of {', '.join(allowed)}")
    return value


def _to_contract(odcs: OpenDataContractStandard, path: Path) -> Contract:
    for name in ("id", "version", "status"):
        if not getattr(odcs, name):
            raise ContractError(f"the contract has no {name}")
    if not re.fullmatch(r"\d+\.\d+\.\d+", odcs.version):
        raise ContractError(f"version {odcs.version!r} is not a semantic version (major.minor.patch)")
    if len(odcs.schema_ or []) != 1:
        raise ContractError("a feed contract has exactly one schema object")
    schema = odcs.schema_[0]
    custom = _custom(odcs.customProperties)
    feed = _choice(custom.get("feed"), "customProperty feed", FEEDS)
    owner = custom.get("owner")
    if not owner:
        raise ContractError("customProperty owner is missing")
    team = odcs.team.name if odcs.team and not isinstance(odcs.team, list) else None
    if owner != f"team:{team}":
        raise ContractError(f"customProperty owner {owner!r} does not match team.name {team!r}")
    source_system = custom.get("sourceSystem")
    if not source_system:
        raise ContractError("customProperty sourceSystem is missing")
    topic = connector = decimal_handling = None
    if feed == "cdc":
        topic = custom.get("topic")
        if not topic or topic.count(".") != 2:
            raise ContractError(f"customProperty topic {topic!r} is not <server>.<schema>.<table>")
        connector = _choice(custom.get("connector"), "customProperty connector", CONNECTORS)
        decimal_handling = _choice(
            custom.get("decimalHandlingMode"), "customProperty decimalHandlingMode", DECIMAL_MODES
        )
    columns = tuple(_column(p) for p in schema.properties or [])
    if not columns:
        raise ContractError("the schema has no properties")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ContractError("property names are not unique")
    positions = sorted(c.primary_key_position or 0 for c in columns if c.primary_key)
    if positions != list(range(1, len(positions) + 1)):
        raise ContractError("primaryKeyPosition of the primary-key properties must be 1, 2, ...")
    quality = [_rule(q, None, schema.name) for q in schema.quality or []]
    for p in schema.properties or []:
        quality += [_rule(q, p.name, schema.name) for q in p.quality or []]
    rule_names = [q.name for q in quality]
    if len(set(rule_names)) != len(rule_names):
        raise ContractError("quality rule names are not unique")
    for rule in quality:
        missing = [c for c in rule.columns if c not in names]
        if missing:
            raise ContractError(f"quality rule {rule.name} reads unknown columns {missing}")
    return Contract(
        id=odcs.id,
        version=odcs.version,
        status=odcs.status,
        name=schema.name,
        feed=feed,
        feed_id=topic or feed,
        topic=topic,
        source_system=source_system,
        connector=connector,
        decimal_handling=decimal_handling,
        description=(odcs.description.purpose if odcs.description else None) or "",
        owner=owner,
        columns=columns,
        quality=tuple(quality),
        sla={
            s.property: s.model_dump(exclude={"property"}, exclude_none=True)
            for s in odcs.slaProperties or []
            if s.property
        },
        path=path,
    )


def _column(p: SchemaProperty) -> Column:
    where = f"property {p.name}"
    if not p.name:
        raise ContractError("a property has no name")
    logical = _choice(p.logicalType, f"logicalType of {where}", LOGICAL_TYPES)
    custom = _custom(p.customProperties)
    debezium = custom.get("debeziumType")
    if debezium is not None:
        _choice(debezium, f"debeziumType of {where}", tuple(DEBEZIUM_LOGICAL_TYPES))
        if logical not in DEBEZIUM_LOGICAL_TYPES[debezium]:
            raise ContractError(f"{where}: debeziumType {debezium} cannot decode to logicalType {logical}")
    pii = custom.get("pii")
    if pii is not None:
        _choice(pii, f"pii of {where}", PII_KINDS)
    pii_paths = tuple(_nested_pii(p.properties or [], "$"))
    if (pii or pii_paths) and p.classification != "restricted":
        raise ContractError(f"{where} holds personal data, so its classification must be restricted")
    if p.primaryKey and not p.required:
        raise ContractError(f"{where} is part of the primary key, so it must be required")
    return Column(
        name=p.name,
        logical_type=logical,
        physical_type=p.physicalType,
        arrow_type=_arrow_type(logical, p.physicalType, debezium, where),
        required=bool(p.required),
        primary_key=bool(p.primaryKey),
        pii=pii,
        debezium_type=debezium,
        description=p.description or "",
        wire_json_types=DEBEZIUM_WIRE_JSON_TYPES[debezium] if debezium else WIRE_JSON_TYPES[logical],
        unique=bool(p.unique),
        primary_key_position=p.primaryKeyPosition if p.primaryKey else None,
        classification=p.classification,
        pii_paths=pii_paths,
    )


def _nested_pii(properties: list[SchemaProperty], prefix: str) -> Iterator[tuple[str, str]]:
    for p in properties:
        path = f"{prefix}.{p.name}"
        kind = _custom(p.customProperties).get("pii")
        if kind is not None:
            _choice(kind, f"pii of nested property {path}", PII_KINDS)
            if p.classification != "restricted":
                raise ContractError(f"nested property {path} holds personal data, so it must be restricted")
            yield path, kind
        yield from _nested_pii(p.properties or [], path)


def _arrow_type(logical: str, physical: str | None, debezium: str | None, where: str) -> pa.DataType:
    if logical == "number":
        match = DECIMAL_PHYSICAL_TYPE.match(physical or "")
        if match:
            return pa.decimal128(int(match[1]), int(match[2]))
        if debezium == DEBEZIUM_DECIMAL:
            raise ContractError(f"{where}: a Decimal needs a physicalType such as numeric(12,2)")
        return pa.float64()
    if logical == "integer":
        return pa.int32() if (physical or "").lower() in INT32_PHYSICAL_TYPES else pa.int64()
    return {
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": UTC_MICROS,
    }.get(logical, pa.string())


_LIBRARY_METRICS = ("nullValues", "duplicateValues", "invalidValues", "rowCount")
_ROW_COUNT_BOUNDS = {
    "mustBe": lambda v: (v, v),
    "mustBeGreaterThan": lambda v: (v + 1, None),
    "mustBeGreaterOrEqualTo": lambda v: (v, None),
    "mustBeLessThan": lambda v: (None, v - 1),
    "mustBeLessOrEqualTo": lambda v: (None, v),
    "mustBeBetween": lambda v: (v[0], v[1]),
}


def _rule(q: DataQuality, column: str | None, table: str) -> QualityRule:
    """A quality entry as an expectation: library metrics ``nullValues``, ``duplicateValues`` and
    ``invalidValues`` (``validValues`` or ``pattern``) with ``mustBe: 0``, ``rowCount`` with a bound, or
    ``type: custom`` with ``engine: great-expectations`` and ``implementation: {type, kwargs}``."""
    name = q.name or f"{column or table}_{q.metric or q.type}"
    where = f"quality rule {name}"
    severity = _choice(q.severity, f"severity of {where}", SEVERITIES)
    kind = q.type or "library"
    args = q.arguments or {}
    if kind == "custom":
        if q.engine != "great-expectations" or not isinstance(q.implementation, dict):
            raise ContractError(f"{where}: custom rules need engine great-expectations and an implementation")
        expectation = q.implementation.get("type")
        if not expectation:
            raise ContractError(f"{where}: the implementation names no expectation type")
        kwargs = dict(q.implementation.get("kwargs") or {})
        if column:
            kwargs["column"] = column
    elif kind == "library":
        metric = _choice(q.metric or q.rule, f"metric of {where}", _LIBRARY_METRICS)
        if metric == "rowCount":
            if column:
                raise ContractError(f"{where}: rowCount is a schema-level metric")
            bounds = [op for op in _ROW_COUNT_BOUNDS if getattr(q, op) is not None]
            if len(bounds) != 1:
                raise ContractError(f"{where}: rowCount needs exactly one mustBe... bound")
            low, high = _ROW_COUNT_BOUNDS[bounds[0]](getattr(q, bounds[0]))
            expectation, kwargs = (
                "expect_table_row_count_to_be_between",
                {"min_value": low, "max_value": high},
            )
        else:
            if q.mustBe != 0:
                raise ContractError(f"{where}: only mustBe: 0 is supported for {metric}")
            expectation, kwargs = _zero_count_expectation(metric, column, args, where)
    else:
        raise ContractError(f"{where}: type {kind!r} is not supported (library or custom)")
    columns = tuple(kwargs.get("column_list") or ([kwargs["column"]] if "column" in kwargs else []))
    return QualityRule(
        name=name,
        column=column,
        severity=severity,
        description=q.description or "",
        expectation=expectation,
        kwargs=kwargs,
        columns=columns,
    )


def _zero_count_expectation(
    metric: str, column: str | None, args: Mapping[str, Any], where: str
) -> tuple[str, dict[str, Any]]:
    if metric == "duplicateValues" and column is None:
        properties = args.get("properties")
        if not properties:
            raise ContractError(f"{where}: a schema-level duplicateValues rule needs arguments.properties")
        return "expect_compound_columns_to_be_unique", {"column_list": list(properties)}
    if column is None:
        raise ContractError(f"{where}: {metric} is a property-level metric")
    if metric == "nullValues":
        return "expect_column_values_to_not_be_null", {"column": column}
    if metric == "duplicateValues":
        return "expect_column_values_to_be_unique", {"column": column}
    if "validValues" in args:
        return "expect_column_values_to_be_in_set", {"column": column, "value_set": list(args["validValues"])}
    if "pattern" in args:
        return "expect_column_values_to_match_regex", {"column": column, "regex": args["pattern"]}
    raise ContractError(f"{where}: invalidValues needs arguments.validValues or arguments.pattern")
