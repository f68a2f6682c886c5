"""The silver Delta tables in the catalog of a Spark Connect session, for dbt's Spark target: what
:mod:`lake.warehouse` does for the DuckDB warehouse.

Every silver table is registered as an external Delta table ``silver.<system>__<table>`` (the names of the
dbt sources) at its location in the lake; a table not written yet gets a typed view with no rows, when its
feed gives one, as in DuckDB. On Sail the catalog lives in the server's memory, per Spark Connect session:
:mod:`lake.spark_server` gives every client the same session (``SPARK_REMOTE`` carries its ``session_id``),
so the tables registered here are those dbt sees, until the server stops.

The other way round, :func:`mirror_models` makes the models the Spark target wrote (Delta tables under
``SPARK_WAREHOUSE_DIR``) views of the warehouse file, so that everything downstream of dbt reads them there as
it reads a DuckDB build.

``python -m lake.spark_warehouse`` registers them in the session of ``SPARK_REMOTE`` for the lake of the
settings (``LAKE_ROOT``, ``DATA_CONTRACTS_DIR``).
"""

from __future__ import annotations

import sys

import duckdb
import pyarrow as pa

from data_contracts import Contract, load_contracts
from data_contracts.sql import sql_literal
from lake import delta
from lake.settings import Settings, get_settings
from lake.warehouse import SCHEMA, delta_view_sql, silver_tables

MODELS_SCHEMA = "main"
"""The schema of the dbt models, in the Spark catalog and in the warehouse file."""


def spark_type(arrow: pa.DataType) -> str:
    """The Spark SQL type of an Arrow type of a silver column."""
    if pa.types.is_timestamp(arrow):
        return "timestamp" if arrow.tz else "timestamp_ntz"
    if pa.types.is_decimal(arrow):
        return f"decimal({arrow.precision},{arrow.scale})"
    for check, name in (
        (pa.types.is_string, "string"),
        (pa.types.is_large_string, "string"),
        (pa.types.is_string_view, "string"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_int8, "tinyint"),
        (pa.types.is_int16, "smallint"),
        (pa.types.is_int32, "int"),
        (pa.types.is_int64, "bigint"),
        (pa.types.is_float32, "float"),
        (pa.types.is_float64, "double"),
        (pa.types.is_date32, "date"),
        (pa.types.is_binary, "binary"),
        (pa.types.is_large_binary, "binary"),
    ):
        if check(arrow):
            return name
    raise ValueError(f"no Spark type for the Arrow type {arrow}")


def silver_statements(settings: Settings, contracts: dict[str, Contract]) -> list[tuple[str, str]]:
    """Per silver table, its name in the catalog and the statement that registers it: an external Delta table
    at its location, or a typed view with no rows before the table exists (none when its feed gives no
    schema then)."""
    statements = []
    for table in silver_tables(settings, contracts):
        name = f"{SCHEMA}.{table.view}"
        if delta.open_table(table.uri, settings.storage_options) is not None:
            statements.append((name, f"create table {name} using delta location {sql_literal(table.uri)}"))
            continue
        empty = table.feed.empty_silver(table.table, settings)
        if empty is not None:
            fields = empty.to_arrow().schema
            columns = ", ".join(f"cast(null as {spark_type(f.type)}) as `{f.name}`" for f in fields)
            statements.append((name, f"create view {name} as select {columns} where false"))
    return statements


def publish_silver(settings: Settings, contracts: dict[str, Contract], session) -> list[str]:
    """Register every silver table in the catalog of the Spark ``session``: a table registered before stays
    (its location does not change), an empty view is replaced; the names registered."""
    session.sql(f"create schema if not exists {SCHEMA}")
    names = []
    for name, statement in silver_statements(settings, contracts):
        # a view (an empty one, before the table existed) has no data: drop it; never drop a table, whose
        # files Spark might delete
        session.sql(f"drop view if exists {name}")
        session.sql(statement.replace("create table", "create table if not exists", 1))
        names.append(name)
    return names


def spark_session(remote: str | None):
    """The Spark Connect session of ``remote`` (``SPARK_REMOTE``: ``sc://host:port``; with Sail, the shared
    session in it); ValueError when it is unset."""
    from pyspark.sql import SparkSession  # the Spark client loads only where Spark is used

    if not remote:
        raise ValueError("SPARK_REMOTE is not set: the Spark Connect URL of the Spark server")
    return SparkSession.builder.remote(remote).getOrCreate()


def mirror_models(settings: Settings, models: list[str]) -> list[str]:
    """Make each model the Spark target wrote (a Delta table under ``settings.spark_models``) a view
    ``main.<model>`` of the warehouse file over its current version, so that the warehouse's readers (the gold
    publication, the snapshot dates, the evaluation, anyone with a DuckDB client) read what Spark built; a
    table or view of the same name there (a DuckDB build's) is replaced. The models mirrored (those with a
    Delta table: Spark's views have none)."""
    statements = []
    for model in models:
        uri = f"{settings.spark_models}/{model}"
        dt = delta.open_table(uri, settings.storage_options)
        if dt is not None:
            statements.append((model, delta_view_sql(f'{MODELS_SCHEMA}."{model}"', uri, dt, settings)))
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path), config=settings.duckdb_config(warehouse=True)) as con:
        kinds = dict(
            con.execute(
                "select table_name, table_type from information_schema.tables where table_schema = ?",
                [MODELS_SCHEMA],
            ).fetchall()
        )
        for model, statement in statements:
            if kinds.get(model) == "BASE TABLE":
                con.execute(f'drop table {MODELS_SCHEMA}."{model}"')
            con.execute(statement)
    return [model for model, _ in statements]


def main() -> int:
    """Register the settings' silver tables in the Spark Connect session of ``SPARK_REMOTE``."""
    settings = get_settings()
    if not settings.spark_remote:
        print("SPARK_REMOTE is not set: run this under python -m lake.spark_server run", file=sys.stderr)
        return 2
    names = publish_silver(
        settings, load_contracts(settings.contracts_dir), spark_session(settings.spark_remote)
    )
    print(f"{len(names)} silver tables registered in the Spark catalog")
    return 0


if __name__ == "__main__":
    sys.exit(main())
