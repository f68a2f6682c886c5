"""Contracts as Python objects: an Open Data Contract Standard (ODCS v3) YAML file per source feed, parsed
with the ``open-data-contract-standard`` pydantic models and checked for what this project reads from it.

What ODCS has no field for is in ``customProperties`` with fixed names: at the contract level ``feed``
(``cdc`` | ``clickstream`` | ``events``: the kind of feed), ``topic``, ``sourceSystem``, ``connector``,
``decimalHandlingMode`` and ``owner``; at the property level ``debeziumType`` (the semantic type on the wire)
and ``pii`` (the kind of personal data). Personal data inside an object property is described by nested
``properties`` carrying ``pii``.
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

from data_contracts import connect_types as ct

CONTRACTS_DIR = Path(__file__).parent / "contracts"
CONTRACT_SUFFIX = ".odcs.yaml"

FEEDS = ("cdc", "clickstream", "events", "outbound")
"""What a contract describes: an inbound feed (change data capture, clickstream, events) or the payload a
sync sends to a destination (``outbound``, kept beside the syncs in ``activation/contracts``)."""
CONNECTORS = ("postgresql", "mysql")
DECIMAL_MODES = ("string", "precise", "double")
PII_KINDS = ("email", "phone", "ip", "name", "birth_date", "address")
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

DEBEZIUM_LOGICAL_TYPES = {
    ct.DATE: ("date",),
    ct.TIMESTAMP: ("timestamp",),
    ct.MICRO_TIMESTAMP: ("timestamp",),
    ct.NANO_TIMESTAMP: ("timestamp",),
    ct.CONNECT_DATE: ("date",),
    ct.CONNECT_TIMESTAMP: ("timestamp",),
    ct.ZONED_TIMESTAMP: ("timestamp",),
    ct.JSON: ("object", "array", "string"),
    ct.DECIMAL: ("number",),
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
    ct.DATE: INTEGERS,
    ct.TIMESTAMP: INTEGERS,
    ct.MICRO_TIMESTAMP: INTEGERS,
    ct.NANO_TIMESTAMP: INTEGERS,
    ct.CONNECT_DATE: INTEGERS,
    ct.CONNECT_TIMESTAMP: INTEGERS,
    ct.ZONED_TIMESTAMP: ("VARCHAR",),
    ct.JSON: ("VARCHAR",),
    ct.DECIMAL: ("VARCHAR",),
}
INT32_PHYSICAL_TYPES = ("int", "integer", "int4", "int32", "smallint", "int2", "tinyint", "mediumint")
DECIMAL_PHYSICAL_TYPE = re.compile(
    r"^\s*(?:numeric|decimal)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$", re.IGNORECASE
)
UTC_MICROS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class ContractProblem:
    """One thing wrong with a contract file: the file, the field (a path such as
    ``schema[contacts].properties[email].classification``; None for the whole file) and what is wrong."""

    path: Path
    field: str | None
    message: str
    other: Path | None = None
    """The other file of a clash between two contracts (the message names it too)."""

    def __str__(self) -> str:
        return f"{self.path}: {self.field + ': ' if self.field else ''}{self.message}"


class ContractError(ValueError):
    """Contract files that cannot be read or break a rule of this project: one line per problem, each naming
    its file and field."""

    def __init__(self, *problems: ContractProblem) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


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
    """A data-quality rule on the decoded table, as a Great Expectations expectation type and its
    arguments."""

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
    table_description: str = ""
    """What one row of the table is (the schema object's description)."""

    @property
    def silver_tables(self) -> tuple[tuple[str, str], ...]:
        """The silver tables the feed writes, as ``(system, table)``: current state and history for CDC, the
        events for the clickstream. Two feeds never share one (one's deletes would remove the other's
        rows)."""
        if self.feed == "clickstream":
            return (("clickstream", "events"),)
        return ((self.source_system, self.name), (self.source_system, f"{self.name}_history"))

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
        ``frequency``), None when the contract has none; ContractError for a value or unit that is no
        duration."""
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
        primary key and each other unique column (all of severity error), then the contract's quality
        entries."""
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
    """Parse and check one contract file; ContractError listing every problem found in it otherwise."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ContractError(ContractProblem(path, None, f"cannot be read: {e.strerror or e}")) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e)
        raise ContractError(ContractProblem(path, None, f"not valid YAML{where}: {what}")) from None
    if not isinstance(data, dict):
        raise ContractError(ContractProblem(path, None, "not a YAML mapping"))
    try:
        odcs = OpenDataContractStandard(**data)
    except ValidationError as e:
        raise ContractError(*_validation_problems(path, data, e)) from None
    problems: list[ContractProblem] = []
    contract = _to_contract(odcs, path, problems)
    if problems or contract is None:
        raise ContractError(*problems)
    return contract


def _validation_problems(path: Path, data: dict, error: ValidationError) -> list[ContractProblem]:
    """One problem per error pydantic found, the field named by its path in the file (list items by name)."""
    problems = []
    for e in error.errors():
        parts, node = [], data
        for step in e["loc"]:
            if isinstance(step, int) and isinstance(node, list) and step < len(node):
                node = node[step]
                label = node.get("name") or node.get("property") if isinstance(node, dict) else None
                parts[-1] += f"[{label or step}]"
            else:
                node = node.get(step) if isinstance(node, dict) else None
                parts.append(str(step))
        problem = ContractProblem(path, ".".join(parts) or None, e["msg"])
        if problem not in problems:
            problems.append(problem)
    return problems


@dataclass(frozen=True)
class LoadedContracts:
    """The contracts of a folder that loaded, and the problems of those that did not."""

    contracts: dict[str, Contract]
    """Valid contracts keyed by feed id, sorted by it."""
    problems: list[ContractProblem]
    """Every problem found, in file order; a file with a problem has no contract above."""

    @property
    def invalid_files(self) -> list[Path]:
        """The contract files that were refused (each named by at least one problem)."""
        files = {p.path for p in self.problems} | {p.other for p in self.problems if p.other}
        return sorted(files)


def _clash(contract: Contract, earlier: Contract) -> tuple[str, str] | None:
    """(field, message) when two contracts describe one feed or write one silver table (names compared
    without case: the warehouse's view names ignore it), else None."""
    if contract.feed_id == earlier.feed_id:
        field = "customProperties.topic" if contract.topic else "customProperties.feed"
        return field, f"describes feed {contract.feed_id}, as {earlier.path} does"
    tables = [{"/".join(t).casefold() for t in c.silver_tables} for c in (contract, earlier)]
    shared = tables[0] & tables[1]
    if not shared:
        return None
    return (
        "customProperties.sourceSystem",
        f"writes silver table {min(shared)}, as {earlier.path} (feed {earlier.feed_id}) does: "
        "two feeds would overwrite and delete each other's rows",
    )


def scan_contracts(directory: Path | str = CONTRACTS_DIR) -> LoadedContracts:
    """Load every ``*.odcs.yaml`` contract of ``directory``, keeping going past invalid ones: a file with a
    problem, and both files of two contracts that claim one feed id or one silver table, are left out and
    reported."""
    loaded: list[Contract] = []
    problems: list[ContractProblem] = []
    for path in sorted(Path(directory).glob(f"*{CONTRACT_SUFFIX}")):
        try:
            loaded.append(load_contract(path))
        except ContractError as e:
            problems.extend(e.problems)
    refused: set[Path] = set()
    for i, contract in enumerate(loaded):
        for earlier in loaded[:i]:
            clash = _clash(contract, earlier)
            if clash:
                problems.append(ContractProblem(contract.path, clash[0], clash[1], earlier.path))
                refused |= {contract.path, earlier.path}
    contracts = {c.feed_id: c for c in loaded if c.path not in refused}
    return LoadedContracts(dict(sorted(contracts.items())), problems)


def load_contracts(directory: Path | str = CONTRACTS_DIR) -> dict[str, Contract]:
    """Every ``*.odcs.yaml`` contract of ``directory``, keyed by feed id and sorted by it; ContractError
    listing every problem of every file when any is invalid (:func:`scan_contracts` skips them instead)."""
    scanned = scan_contracts(directory)
    if scanned.problems:
        raise ContractError(*scanned.problems)
    return scanned.contracts


def _custom(properties: list | None) -> dict[str, Any]:
    return {p.property: p.value for p in properties or [] if p.property}


class _Invalid(Exception):
    """One problem inside a contract: the field it is about (a path in the file) and what is wrong."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value is None:
        raise _Invalid(field, f"missing (one of {', '.join(allowed)})")
    if value not in allowed:
        raise _Invalid(field, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _to_contract(
    odcs: OpenDataContractStandard, path: Path, problems: list[ContractProblem]
) -> Contract | None:
    """The contract of a parsed file, or None with every problem found appended to ``problems``."""
    found: list[_Invalid] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except _Invalid as e:
            found.append(e)
            return None

    def require(ok: bool, field: str | None, message: str) -> None:
        if not ok:
            found.append(_Invalid(field, message))

    for name in ("id", "version", "status"):
        require(bool(getattr(odcs, name)), name, "missing")
    if odcs.version:
        require(
            bool(re.fullmatch(r"\d+\.\d+\.\d+", odcs.version)),
            "version",
            f"{odcs.version!r} is not a semantic version (major.minor.patch)",
        )
    custom = _custom(odcs.customProperties)
    feed = attempt(_choice, custom.get("feed"), "customProperties.feed", FEEDS)
    owner = custom.get("owner")
    team = odcs.team.name if odcs.team and not isinstance(odcs.team, list) else None
    require(bool(owner), "customProperties.owner", "missing")
    require(
        not owner or owner == f"team:{team}",
        "customProperties.owner",
        f"{owner!r} does not match team.name {team!r}",
    )
    source_system = custom.get("sourceSystem")
    require(bool(source_system), "customProperties.sourceSystem", "missing")
    topic = connector = decimal_handling = None
    if feed == "cdc":
        topic = custom.get("topic")
        require(
            bool(topic) and str(topic).count(".") == 2,
            "customProperties.topic",
            f"{topic!r} is not <server>.<schema>.<table>",
        )
        connector = attempt(_choice, custom.get("connector"), "customProperties.connector", CONNECTORS)
        decimal_handling = attempt(
            _choice, custom.get("decimalHandlingMode"), "customProperties.decimalHandlingMode", DECIMAL_MODES
        )
    for sla in odcs.slaProperties or []:
        if sla.property == "freshness":
            require(
                isinstance(sla.value, int)
                and not isinstance(sla.value, bool)
                and sla.value > 0
                and str(sla.unit or "").strip().lower() in SLA_UNITS,
                "slaProperties[freshness]",
                f"needs a positive whole value and a unit of {', '.join(SLA_UNITS)} (has {sla.value!r} "
                f"{sla.unit!r})",
            )
    columns: list[Column] = []
    quality: list[QualityRule] = []
    schema = None
    if len(odcs.schema_ or []) != 1:
        found.append(_Invalid("schema", "a feed contract has exactly one schema object"))
    else:
        schema = odcs.schema_[0]
        where = f"schema[{schema.name}]"
        for prop in schema.properties or []:
            column = attempt(_column, prop, f"{where}.properties[{prop.name}]")
            if column is not None:
                columns.append(column)
        require(bool(schema.properties), f"{where}.properties", "the schema has no properties")
        names = [p.name for p in schema.properties or []]
        require(len(set(names)) == len(names), f"{where}.properties", "property names are not unique")
        positions = sorted(c.primary_key_position or 0 for c in columns if c.primary_key)
        require(
            positions == list(range(1, len(positions) + 1)),
            f"{where}.properties",
            "primaryKeyPosition of the primary-key properties must be 1, 2, ...",
        )
        entries = [(q, None, f"{where}.quality") for q in schema.quality or []]
        for prop in schema.properties or []:
            entries += [
                (q, prop.name, f"{where}.properties[{prop.name}].quality") for q in prop.quality or []
            ]
        for q, column_name, field in entries:
            rule = attempt(_rule, q, column_name, schema.name, field)
            if rule is not None:
                quality.append(rule)
        rule_names = [q.name for q in quality]
        require(
            len(set(rule_names)) == len(rule_names), f"{where}.quality", "quality rule names are not unique"
        )
        for rule in quality:
            missing = [c for c in rule.columns if c not in names]
            require(not missing, f"{where}.quality[{rule.name}]", f"reads unknown columns {missing}")
    problems.extend(ContractProblem(path, e.field, e.message) for e in found)
    if found or schema is None:
        return None
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
        columns=tuple(columns),
        quality=tuple(quality),
        sla={
            s.property: s.model_dump(exclude={"property"}, exclude_none=True)
            for s in odcs.slaProperties or []
            if s.property
        },
        path=path,
        table_description=schema.description or "",
    )


def _column(p: SchemaProperty, where: str) -> Column:
    if not p.name:
        raise _Invalid(where, "a property has no name")
    logical = _choice(p.logicalType, f"{where}.logicalType", LOGICAL_TYPES)
    custom = _custom(p.customProperties)
    debezium = custom.get("debeziumType")
    if debezium is not None:
        _choice(debezium, f"{where}.customProperties.debeziumType", tuple(DEBEZIUM_LOGICAL_TYPES))
        if logical not in DEBEZIUM_LOGICAL_TYPES[debezium]:
            raise _Invalid(
                f"{where}.customProperties.debeziumType", f"{debezium} cannot decode to logicalType {logical}"
            )
    pii = custom.get("pii")
    if pii is not None:
        _choice(pii, f"{where}.customProperties.pii", PII_KINDS)
    pii_paths = tuple(_nested_pii(p.properties or [], "$", where))
    if (pii or pii_paths) and p.classification != "restricted":
        raise _Invalid(
            f"{where}.classification",
            f"{p.name} holds personal data, so its classification must be restricted",
        )
    if p.primaryKey and not p.required:
        raise _Invalid(f"{where}.required", f"{p.name} is part of the primary key, so it must be required")
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


def _nested_pii(properties: list[SchemaProperty], prefix: str, where: str) -> Iterator[tuple[str, str]]:
    for p in properties:
        path = f"{prefix}.{p.name}"
        field = f"{where}.properties[{p.name}]"
        kind = _custom(p.customProperties).get("pii")
        if kind is not None:
            _choice(kind, f"{field}.customProperties.pii", PII_KINDS)
            if p.classification != "restricted":
                raise _Invalid(
                    f"{field}.classification",
                    f"nested property {path} holds personal data, so it must be restricted",
                )
            yield path, kind
        yield from _nested_pii(p.properties or [], path, field)


def _arrow_type(logical: str, physical: str | None, debezium: str | None, where: str) -> pa.DataType:
    if logical == "number":
        match = DECIMAL_PHYSICAL_TYPE.match(physical or "")
        if match:
            return pa.decimal128(int(match[1]), int(match[2]))
        if debezium == ct.DECIMAL:
            raise _Invalid(f"{where}.physicalType", "a Decimal needs a physicalType such as numeric(12,2)")
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


def _rule(q: DataQuality, column: str | None, table: str, field: str) -> QualityRule:
    """A quality entry as an expectation: library metrics ``nullValues``, ``duplicateValues`` and
    ``invalidValues`` (``validValues`` or ``pattern``) with ``mustBe: 0``, ``rowCount`` with a bound, or
    ``type: custom`` with ``engine: great-expectations`` and ``implementation: {type, kwargs}``."""
    name = q.name or f"{column or table}_{q.metric or q.type}"
    where = f"{field}[{name}]"
    severity = _choice(q.severity, f"{where}.severity", SEVERITIES)
    kind = q.type or "library"
    args = q.arguments or {}
    if kind == "custom":
        if q.engine != "great-expectations" or not isinstance(q.implementation, dict):
            raise _Invalid(where, "custom rules need engine great-expectations and an implementation")
        expectation = q.implementation.get("type")
        if not expectation:
            raise _Invalid(where, "the implementation names no expectation type")
        kwargs = dict(q.implementation.get("kwargs") or {})
        if column:
            kwargs["column"] = column
    elif kind == "library":
        metric = _choice(q.metric or q.rule, f"{where}.metric", _LIBRARY_METRICS)
        if metric == "rowCount":
            if column:
                raise _Invalid(where, "rowCount is a schema-level metric")
            bounds = [op for op in _ROW_COUNT_BOUNDS if getattr(q, op) is not None]
            if len(bounds) != 1:
                raise _Invalid(where, "rowCount needs exactly one mustBe... bound")
            low, high = _ROW_COUNT_BOUNDS[bounds[0]](getattr(q, bounds[0]))
            expectation, kwargs = (
                "expect_table_row_count_to_be_between",
                {"min_value": low, "max_value": high},
            )
        else:
            if q.mustBe != 0:
                raise _Invalid(where, f"only mustBe: 0 is supported for {metric}")
            expectation, kwargs = _zero_count_expectation(metric, column, args, where)
    else:
        raise _Invalid(where, f"type {kind!r} is not supported (library or custom)")
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
            raise _Invalid(where, "a schema-level duplicateValues rule needs arguments.properties")
        return "expect_compound_columns_to_be_unique", {"column_list": list(properties)}
    if column is None:
        raise _Invalid(where, f"{metric} is a property-level metric")
    if metric == "nullValues":
        return "expect_column_values_to_not_be_null", {"column": column}
    if metric == "duplicateValues":
        return "expect_column_values_to_be_unique", {"column": column}
    if "validValues" in args:
        return "expect_column_values_to_be_in_set", {"column": column, "value_set": list(args["validValues"])}
    if "pattern" in args:
        return "expect_column_values_to_match_regex", {"column": column, "regex": args["pattern"]}
    raise _Invalid(where, "invalidValues needs arguments.validValues or arguments.pattern")
