"""dbt's ``target`` as SQL linting sees it: the default target, DuckDB."""

type = "duckdb"
