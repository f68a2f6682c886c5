"""SQL text shared by the contracts' validation and the lake: a value quoted as a SQL literal."""

from __future__ import annotations


def sql_literal(value: object) -> str:
    """``value`` as a SQL literal for DuckDB and Delta predicates: a string quoted (quotes doubled), else its
    text."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)
