"""Record validation in DuckDB SQL: an expression that explains why a raw JSON record breaks its contract.

Built for millions of rows: a lambda binds the record expression so it is evaluated once; ``json_valid``
guards the parsers (which raise on malformed text); ``json_type`` with the list of every contract path gives
the JSON type of each field in one parse, ``json_extract_string`` with the paths of the accepted-values
rules their values in a second; a second lambda binds both so the checks read them without parsing again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from data_contracts.model import Column, Contract
from data_contracts.segment import is_placeholder_sql
from data_contracts.sql import sql_literal
from data_contracts.wire import FieldEncoding, field_encodings

SEGMENT_IDENTITIES = ("anonymousId", "userId")
SEGMENT_IDS = (*SEGMENT_IDENTITIES, "previousId")
"""The id fields, where a placeholder such as ``"null"`` counts as absent (:mod:`data_contracts.segment`)."""
SEGMENT_NEEDS = (("track", "event"), ("alias", "previousId"), ("alias", "userId"), ("group", "groupId"))
"""Fields the Segment spec requires for some message types: (type, field)."""


BASE64 = "[A-Za-z0-9+/]+={0,2}"
DECIMAL_TEXT = "-?[0-9]+([.][0-9]+)?"


def _magnitude(base64: str) -> str:
    """SQL: the absolute value of the base64 big-endian two's-complement integer ``base64`` (a Kafka Connect
    Decimal's unscaled bytes), as UHUGEINT; NULL beyond 16 bytes or when it is not base64."""
    blob = f"from_base64({base64})"
    hexed = f"hex({blob})"
    negative = f"left({hexed}, 1) IN ('8', '9', 'A', 'B', 'C', 'D', 'E', 'F')"
    return (
        f"try(CASE WHEN octet_length({blob}) > 16 THEN NULL WHEN {negative} "
        f"THEN ('0x' || repeat('F', length({hexed})))::UHUGEINT - ('0x' || {hexed})::UHUGEINT + 1 "
        f"ELSE ('0x' || {hexed})::UHUGEINT END)"
    )


def _syntax(encoding: FieldEncoding) -> list[tuple[Callable[[str], str], str]]:
    """The value syntax that decoding relies on, for a field's wire encoding: (condition over the value's JSON
    text that flags a bad value, what the value must be) for each rule, checked in order."""
    decoding, fit = encoding.decoding, encoding.fit
    if decoding == "decimal_bytes":
        rules = [(lambda v: f"NOT regexp_full_match({v}, '{BASE64}')", "base64 decimal bytes")]
        if fit and encoding.wire_precision is None:  # no precision on the wire says the values fit
            bound = 10 ** (fit[0] - fit[1] + (encoding.wire_scale or 0))
            rules.append(
                (lambda v: f"coalesce({_magnitude(v)} >= {bound}, true)", f"a decimal({fit[0]},{fit[1]})")
            )
        return rules
    if decoding == "decimal_variable" and fit:
        precision, scale = fit

        def check(v: str) -> str:
            value = f"json_extract_string({v}, '$.value')"
            shift = f"TRY_CAST(json_extract_string({v}, '$.scale') AS INTEGER)"
            size, digits = _magnitude(value), f"({precision - scale} + {shift})"
            return (
                f"(NOT regexp_full_match(coalesce({value}, ''), '{BASE64}') OR {shift} IS NULL OR {shift} < 0"
                f" OR {shift} > {scale} + 38 OR {size} IS NULL"
                f" OR ({digits} <= 38 AND {size} >= TRY_CAST('1' || repeat('0', {digits}) AS UHUGEINT))"
                f" OR ({shift} > {scale} AND {size} % TRY_CAST('1' || repeat('0', {shift} - {scale}) AS "
                "UHUGEINT) <> 0))"
            )

        return [(check, f"a VariableScaleDecimal that fits decimal({precision},{scale})")]
    if decoding == "decimal_text" and fit:
        digits, scale = fit[0] - fit[1], fit[1]

        def fits(v: str) -> str:
            return (
                f"(NOT regexp_full_match({v}, '{DECIMAL_TEXT}')"
                f" OR length(ltrim(split_part(ltrim({v}, '-'), '.', 1), '0')) > {digits}"
                f" OR length(rtrim(split_part({v}, '.', 2), '0')) > {scale})"
            )

        return [(fits, f"a decimal({fit[0]},{scale})")]
    if decoding == "decimal_text":
        return [(lambda v: f"NOT regexp_full_match({v}, '{DECIMAL_TEXT}')", "a decimal number")]
    if decoding == "decimal_double" and fit:
        digits, scale = fit[0] - fit[1], fit[1]
        return [
            (
                lambda v: f"round(abs(TRY_CAST({v} AS DOUBLE)), {scale}) >= 1e{digits}",
                f"a decimal({fit[0]},{scale})",
            )
        ]
    simple = {
        "zoned": ("TRY_CAST({} AS TIMESTAMPTZ) IS NULL", "an ISO timestamp with a zone"),
        "iso_timestamp": ("TRY_CAST({} AS TIMESTAMPTZ) IS NULL", "an ISO timestamp with a zone"),
        "iso_date": ("TRY_CAST({} AS DATE) IS NULL", "an ISO date"),
        "json": ("NOT json_valid({})", "JSON text"),
        "int_boolean": ("{} NOT IN ('0', '1', 'true', 'false')", "0 or 1"),
    }
    if decoding in simple:
        condition, what = simple[decoding]
        return [(condition.format, what)]
    return []


def violation_sql(contract: Contract, record: str, value_schema: str | None = None) -> str:
    """A DuckDB expression over the JSON text expression ``record`` that is NULL when the record satisfies the
    contract, else a short reason for its first violation: not valid JSON or not an object, a required field
    missing or null, a field that arrives in a type the contract's type cannot be converted from, a field of a
    JSON type its encoding does not allow, a value outside an accepted-values rule of severity error, a value
    whose text its encoding cannot decode (decimal, timestamp, JSON text, a TINYINT(1) other than 0 or 1), and
    for the clickstream the Segment spec's rules (anonymousId or userId; event for track; previousId and
    userId for alias; groupId for group), where a placeholder id such as "null" counts as absent
    (:mod:`data_contracts.segment`). Fields the contract does not name are allowed. For a Debezium row image,
    the encodings come from :func:`data_contracts.wire.field_encodings` with the message's
    ``value_schema``."""
    return _violation_sql(contract, record, contract.columns, True, value_schema)


def key_violation_sql(contract: Contract, record: str, value_schema: str | None = None) -> str:
    """Like :func:`violation_sql`, but checks only the primary-key fields (for Debezium deletes, whose
    ``before`` may hold only the key)."""
    columns = [contract.column(n) for n in contract.primary_key]
    return _violation_sql(contract, record, columns, False, value_schema)


def _path(name: str) -> str:
    return "$." + '"' + name.replace('"', '\\"') + '"'


def _segment_rules(missing: Callable[[str], str], value: Callable[[str], str]) -> list[tuple[str, str]]:
    """The Segment spec's rules as (condition, reason) pairs, given the SQL of a field's absence and of its
    text. A placeholder id counts as absent, and the reason quotes it."""

    def absent(name: str) -> str:
        return f"({missing(name)} OR {is_placeholder_sql(value(name))})"

    def reason(text: str, *names: str) -> str:
        quoted = [
            f"CASE WHEN {is_placeholder_sql(value(n))} THEN {sql_literal(n + ' ')} || to_json({value(n)}) END"
            for n in names
        ]
        listed = f"nullif(concat_ws(', ', {', '.join(quoted)}), '')"
        return f"{sql_literal(text)} || coalesce(' (placeholders are absent ids: ' || {listed} || ')', '')"

    rules = [
        (
            f"{value('type')} <> 'alias' AND " + " AND ".join(absent(n) for n in SEGMENT_IDENTITIES),
            reason(f"message has neither {' nor '.join(SEGMENT_IDENTITIES)}", *SEGMENT_IDENTITIES),
        )
    ]
    for kind, name in SEGMENT_NEEDS:
        is_id = name in SEGMENT_IDS
        rules.append(
            (
                f"{value('type')} = {sql_literal(kind)} AND {absent(name) if is_id else missing(name)}",
                reason(f"{kind} message without {name}", name)
                if is_id
                else sql_literal(f"{kind} message without {name}"),
            )
        )
    return rules


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
        if accepted_values and encodings
        for rule in _syntax(encodings[c.name])
    ]
    if segment:  # the ids, to tell placeholders ("null", "undefined", blank, ...) from real ones
        value_fields += [n for n in SEGMENT_IDS if n not in value_fields]
    value_fields += [name for name in dict.fromkeys(n for n, _ in syntax_rules) if name not in value_fields]
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
            whens.append((f"{json_type(c.name)} IS NULL", sql_literal(f"missing required field {c.name}")))
            whens.append((f"{json_type(c.name)} = 'NULL'", sql_literal(f"required field {c.name} is null")))
    for c in columns:
        if encodings and encodings[c.name].problem:
            whens.append((f"{json_type(c.name)} <> 'NULL'", sql_literal(encodings[c.name].problem)))
    for c in columns:
        json_types = encodings[c.name].json_types if encodings else c.wire_json_types
        accepted = ", ".join(sql_literal(t) for t in (*json_types, "NULL"))
        whens.append(
            (
                f"{json_type(c.name)} NOT IN ({accepted})",
                f"{sql_literal(f'field {c.name} has JSON type ')} || {json_type(c.name)} || "
                f"{sql_literal(', expected ' + '|'.join(json_types))}",
            )
        )
    for name, values in value_rules:
        prefix, suffix = sql_literal(f"field {name} has value '"), sql_literal("' not in accepted values")
        whens.append(
            (
                f"{value(name)} NOT IN ({', '.join(sql_literal(str(v)) for v in values)})",
                f"{prefix} || left({value(name)}, 40) || {suffix}",
            )
        )
    for name, (condition, what) in syntax_rules:
        prefix, suffix = sql_literal(f"field {name} is not {what}: '"), sql_literal("'")
        whens.append((condition(value(name)), f"{prefix} || left({value(name)}, 40) || {suffix}"))
    if segment:
        whens += _segment_rules(missing, value)
    paths = ", ".join(sql_literal(p) for p in ["$", *(_path(c.name) for c in columns)])
    bound = f"'t': json_type(__record, [{paths}])"
    if value_fields:
        values = ", ".join(sql_literal(_path(n)) for n in value_fields)
        bound += f", 'v': json_extract_string(__record, [{values}])"
    cases = "\n    ".join(f"WHEN {condition} THEN {reason}" for condition, reason in whens)
    return (
        f"list_transform([{record}], lambda __record: list_transform(\n"
        f"  [CASE WHEN json_valid(__record) THEN {{{bound}}} END], lambda __r: CASE\n"
        f"    {cases}\n  END)[1])[1]"
    )
