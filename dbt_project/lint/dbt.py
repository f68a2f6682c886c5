"""dbt's cross-database macros as SQL linting sees them (the jinja templater of ``.sqlfluff`` has no dbt):
each returns the DuckDB SQL that dbt-duckdb renders, so that the linted SQL is the SQL the models run."""


def type_string() -> str:
    """``dbt.type_string()``."""
    return "varchar"


def dateadd(datepart: str, interval: object, from_date_or_timestamp: str) -> str:
    """``dbt.dateadd(datepart, interval, from)``."""
    return f"date_add({from_date_or_timestamp}, interval ({interval}) {datepart})"


def datediff(first_date: str, second_date: str, datepart: str) -> str:
    """``dbt.datediff(first, second, datepart)``."""
    return f"date_diff('{datepart}', {first_date}::timestamp, {second_date}::timestamp)"


def hash(field: str) -> str:
    """``dbt.hash(field)``."""
    return f"md5(cast({field} as varchar))"
