"""Record validation in DuckDB SQL: an expression that explains why a raw JSON record breaks its contract.

Built for millions of rows: a lambda binds the record expression so it is evaluated once; ``json_valid``
guards the parsers (which raise on malformed text); ``json_type`` with the list of every contract path gives
the JSON type of each field in one parse, ``json_extract_string`` with the paths of the accepted-values
rules their values in a second; a second lambda binds both so the checks read them without parsing again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from data_contracts.model import Column, Contract
from data_contracts.wire import FieldEncoding, field_encodings

SEGMENT_IDENTITIES = ("anonymousId", "userId")
SEGMENT_NEEDS = (("track", "event"), ("alias", "previousId"), ("alias", "userId"), ("group", "groupId"))
"""Fields the Segment spec requires for some message types: (type, field)."""


def _syntax(encoding: FieldEncoding) -> tuple[Callable[[str], str], str] | None:
    """The value syntax that decoding relies on, for a field's wire encoding: (the condition over the value's
    JSON text that flags a bad value, what the value must be), or None when its JSON type says enough."""
    decoding, fit = encoding.decoding, encoding.fit
    if decoding == "decimal_bytes":
        return (lambda v: f"NOT regexp_full_match({v}, '[A-Za-z0-9+/]+={{0,2}}')"), "base64 decimal bytes"
    if decoding == "decimal_text" and fit:
        digits, scale = fit[0] - fit[1], fit[1]
        return (
            lambda v: (
                f"(NOT regexp_full_match({v}, '-?[0-9]+([.][0-9]+)?')"
                f" OR length(ltrim(split_part(ltrim({v}, '-'), '.', 1), '0')) > {digits}"
                f" OR length(rtrim(split_part({v}, '.', 2), '0')) > {scale})"
            )
        ), f"a decimal({fit[0]},{scale})"
    if decoding == "decimal_text":
        return (lambda v: f"NOT regexp_full_match({v}, '-?[0-9]+([.][0-9]+)?')"), "a decimal number"
    if decoding == "decimal_double" and fit:
        digits, scale = fit[0] - fit[1], fit[1]
        return (
            lambda v: f"round(abs(TRY_CAST({v} AS DOUBLE)), {scale}) >= 1e{digits}"
        ), f"a decimal({fit[0]},{scale})"
    if decoding in ("zoned", "iso_timestamp"):
        return (lambda v: f"TRY_CAST({v} AS TIMESTAMPTZ) IS NULL"), "an ISO timestamp with a zone"
    if decoding == "iso_date":
        return (lambda v: f"TRY_CAST({v} AS DATE) IS NULL"), "an ISO date"
    if decoding == "json":
        return (lambda v: f"NOT json_valid({v})"), "JSON text"
    if decoding == "int_boolean":
        return (lambda v: f"{v} NOT IN ('0', '1', 'true', 'false')"), "0 or 1"
    return None


def violation_sql(contract: Contract, record: str, value_schema: str | None = None) -> str:
    """A DuckDB expression over the JSON text expression ``record`` that is NULL when the record satisfies the
    contract, else a short reason for its first violation: not valid JSON or not an object, a required field
    missing or null, a field that arrives in a type the contract's type cannot be converted from, a field of a
    JSON type its encoding does not allow, a value outside an accepted-values rule of severity error, a value
    whose text its encoding cannot decode (decimal, timestamp, JSON text, a TINYINT(1) other than 0 or 1), and
    for the clickstream the Segment spec's rules (anonymousId or userId; event for track; previousId and userId
    for alias; groupId for group). Fields the contract does not name are allowed. For a Debezium row image, the
    encodings come from :func:`data_contracts.wire.field_encodings` with the message's ``value_schema``."""
    return _violation_sql(contract, record, contract.columns, True, value_schema)


def key_violation_sql(contract: Contract, record: str, value_schema: str | None = None) -> str:
    """Like :func:`violation_sql`, but checks only the primary-key fields (for Debezium deletes, whose
    ``before`` may hold only the key)."""
    columns = [contract.column(n) for n in contract.primary_key]
    return _violation_sql(contract, record, columns, False, value_schema)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _path(name: str) -> str:
    return "$." + '"' + name.replace('"', '\\"') + '"'


def _violation_sql(
    contract: Contract,
    record: str,
    columns: Sequence[Column],
    accepted_values: bool,
    value_schema: str | None,
) -> str:
    encodings = field_encodings(contract, value_schema) if contract.feed == "cdc" else None
    segment = contract.feed == "clickstream" and accepted_values
    if segment:  # the Segment rules read these fields: KeyError naming the contract when one is missing
        for name in ("type", *SEGMENT_IDENTITIES, *(n for _, n in SEGMENT_NEEDS)):
            contract.column(name)
    position = {c.name: i + 2 for i, c in enumerate(columns)}  # 1 is the record itself

    def json_type(name: str) -> str:
        return f"__r.t[{position[name]}]"

    def missing(name: str) -> str:
        return f"coalesce({json_type(name)}, 'NULL') = 'NULL'"

    value_rules = [  # values are compared as JSON text (json_extract_string)
        (rule.column, rule.accepted_values)
        for rule in contract.quality
        if accepted_values and rule.severity == "error" and rule.accepted_values is not None
    ]
    value_fields = [name for name, _ in value_rules]
    if segment and "type" not in value_fields:
        value_fields.append("type")
    syntax_rules = [
        (c.name, rule)
        for c in columns
        if accepted_values and encodings and (rule := _syntax(encodings[c.name]))
    ]
    value_fields += [name for name, _ in syntax_rules if name not in value_fields]
    value_index = {name: i + 1 for i, name in enumerate(value_fields)}

    def value(name: str) -> str:
        return f"__r.v[{value_index[name]}]"

    whens = [
        (
            "__r IS NULL",
            "CASE WHEN __record IS NULL THEN 'record is null' ELSE 'record is not valid JSON' END",
        ),
        ("__r.t[1] <> 'OBJECT'", "'record is JSON ' || __r.t[1] || ', expected OBJECT'"),
    ]
    for c in columns:
        if c.required:
            whens.append((f"{json_type(c.name)} IS NULL", _literal(f"missing required field {c.name}")))
            whens.append((f"{json_type(c.name)} = 'NULL'", _literal(f"required field {c.name} is null")))
    for c in columns:
        if encodings and encodings[c.name].problem:
            whens.append((f"{json_type(c.name)} <> 'NULL'", _literal(encodings[c.name].problem)))
    for c in columns:
        json_types = encodings[c.name].json_types if encodings else c.wire_json_types
        accepted = ", ".join(_literal(t) for t in (*json_types, "NULL"))
        whens.append(
            (
                f"{json_type(c.name)} NOT IN ({accepted})",
                f"{_literal(f'field {c.name} has JSON type ')} || {json_type(c.name)} || "
                f"{_literal(', expected ' + '|'.join(json_types))}",
            )
        )
    for name, values in value_rules:
        prefix, suffix = _literal(f"field {name} has value '"), _literal("' not in accepted values")
        whens.append(
            (
                f"{value(name)} NOT IN ({', '.join(_literal(str(v)) for v in values)})",
                f"{prefix} || left({value(name)}, 40) || {suffix}",
            )
        )
    for name, (condition, what) in syntax_rules:
        prefix, suffix = _literal(f"field {name} is not {what}: '"), _literal("'")
        whens.append((condition(value(name)), f"{prefix} || left({value(name)}, 40) || {suffix}"))
    if segment:
        whens.append(
            (
                f"{value('type')} <> 'alias' AND " + " AND ".join(missing(n) for n in SEGMENT_IDENTITIES),
                _literal(f"message has neither {' nor '.join(SEGMENT_IDENTITIES)}"),
            )
        )
        whens += [
            (
                f"{value('type')} = {_literal(kind)} AND {missing(name)}",
                _literal(f"{kind} message without {name}"),
            )
            for kind, name in SEGMENT_NEEDS
        ]
    paths = ", ".join(_literal(p) for p in ["$", *(_path(c.name) for c in columns)])
    bound = f"'t': json_type(__record, [{paths}])"
    if value_fields:
        values = ", ".join(_literal(_path(n)) for n in value_fields)
        bound += f", 'v': json_extract_string(__record, [{values}])"
    cases = "\n    ".join(f"WHEN {condition} THEN {reason}" for condition, reason in whens)
    return (
        f"list_transform([{record}], lambda __record: list_transform(\n"
        f"  [CASE WHEN json_valid(__record) THEN {{{bound}}} END], lambda __r: CASE\n"
        f"    {cases}\n  END)[1])[1]"
    )
