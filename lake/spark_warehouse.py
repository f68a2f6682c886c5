"""The silver Delta tables in the catalog of a Spark Connect session, for dbt's Spark target: what
:mod:`lake.warehouse` does for the DuckDB warehouse.

Every silver table is registered as an external Delta table ``silver.<system>__<table>`` (the names of the
dbt sources) at its location in the lake; a table not written yet gets a typed view with no rows, when its
feed gives one, as in DuckDB. On Sail the catalog lives in the server's memory, per Spark Connect session:
:mod:`lake.spark_server` gives every client the same session (``SPARK_REMOTE`` carries its ``session_id``),
so the tables registered here are those dbt sees, until the server stops. A new server starts with an empty
catalog: :func:`register_models` registers again the tables dbt wrote before (so that an incremental model
adds to its table instead of replacing it, and the identity graph finds its previous person map), and
:func:`views_to_restore` names the views to run again.

The other way round, :func:`mirror_models` makes the models the Spark target wrote (Delta tables under
``SPARK_WAREHOUSE_DIR``) views of the warehouse file, so that everything downstream of dbt reads them there as
it reads a DuckDB build.

``python -m lake.spark_warehouse [--manifest PATH]`` registers them in the session of ``SPARK_REMOTE`` for the
lake of the settings (``LAKE_ROOT``, ``DATA_CONTRACTS_DIR``), and the models' tables of the Spark target's
manifest (default ``dbt_project/target/spark/manifest.json``, when it exists).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from data_contracts import Contract, load_contracts
from data_contracts.sql import sql_literal
from lake import delta
from lake.settings import REPO_ROOT, Settings, get_settings
from lake.warehouse import SCHEMA, delta_view_sql, silver_tables

MODELS_SCHEMA = "main"
"""The schema of the dbt models, in the Spark catalog and in the warehouse file."""
SPARK_MANIFEST = REPO_ROOT / "dbt_project" / "target" / "spark" / "manifest.json"
"""Where ``make dbt-spark`` and the code location on the Spark target find the Spark target's manifest."""


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


TABLE_MATERIALIZATIONS = ("table", "incremental", "seed")
"""What the Spark target writes as a Delta table under ``settings.spark_models``."""


def _models(manifest: dict) -> dict[str, tuple[str, str, list[str]]]:
    """Per model or seed of a dbt manifest (unique id): its name, materialization (``seed`` for a seed) and
    the nodes it reads."""
    return {
        uid: (
            node["name"],
            "seed" if node["resource_type"] == "seed" else node["config"]["materialized"],
            node.get("depends_on", {}).get("nodes", []),  # a seed reads nothing
        )
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] in ("model", "seed")
    }


def known_relations(session) -> set[str]:
    """The tables and views of the models' schema in the catalog of the Spark ``session``."""
    session.sql(f"create schema if not exists {MODELS_SCHEMA}")
    return {row.tableName for row in session.sql(f"show tables in {MODELS_SCHEMA}").collect()}


def register_models(settings: Settings, session, manifest: dict) -> list[str]:
    """Register in the catalog of the Spark ``session`` each table of the dbt ``manifest`` (models and
    seeds) that the Spark target wrote before (a Delta table at ``settings.spark_models/<name>``) and the
    catalog does not know: what a new server's empty catalog lost. Without it, dbt would take an incremental
    model for a new one and replace its rows by those of the run, and the identity graph would start without
    its previous person map. Each is declared with the columns of its Delta schema (types and nullability,
    which Sail checks against the table's): dbt reads a table's columns from the catalog (an incremental model
    compares them with its query's), and Sail lists none for a table registered by its location alone. The
    names registered."""
    # a declared timestamp is of the session's time zone: UTC, the Spark target's (profiles.yml) and Delta's
    session.conf.set("spark.sql.session.timeZone", "UTC")
    known = known_relations(session)
    registered = []
    for name, materialized, _ in _models(manifest).values():
        uri = settings.spark_model(name)
        if materialized not in TABLE_MATERIALIZATIONS or name in known:
            continue
        dt = delta.open_table(uri, settings.storage_options)
        if dt is None:
            continue
        schema = pa.schema(dt.schema().to_arrow())
        columns = ", ".join(
            f"`{field.name}` {spark_type(field.type)}{'' if field.nullable else ' not null'}"
            for field in schema
        )
        location = sql_literal(uri)
        session.sql(
            f"create table if not exists {MODELS_SCHEMA}.{name} ({columns}) using delta location {location}"
        )
        registered.append(name)
    return sorted(registered)


def views_to_restore(session, manifest: dict) -> list[str]:
    """The views of the dbt ``manifest`` that the catalog of the Spark ``session`` does not know and that can
    be created again now: every model or seed they read, through views and ephemeral models, is a table the
    catalog knows or such a view (sources are the silver tables, always registered)."""
    models, known = _models(manifest), known_relations(session)
    available: dict[str, bool] = {}

    def can_read(uid: str) -> bool:
        if uid not in models:
            return True
        if uid not in available:
            name, materialized, parents = models[uid]
            if materialized in ("view", "ephemeral"):
                available[uid] = name in known or all(can_read(parent) for parent in parents)
            else:
                available[uid] = name in known
        return available[uid]

    return sorted(
        name
        for uid, (name, materialized, _) in models.items()
        if materialized == "view" and name not in known and can_read(uid)
    )


def spark_session(remote: str | None):
    """A new client of the Spark Connect session of ``remote`` (``SPARK_REMOTE``: ``sc://host:port``; with
    Sail, the shared session in it; ``getOrCreate`` would hand back a client of another server when this
    process had one); ValueError when it is unset."""
    from pyspark.sql import SparkSession  # the Spark client loads only where Spark is used

    if not remote:
        raise ValueError("SPARK_REMOTE is not set: the Spark Connect URL of the Spark server")
    return SparkSession.builder.remote(remote).create()


@contextlib.contextmanager
def connected(remote: str | None) -> Iterator:
    """A :func:`spark_session` while the block runs; its connection closed afterwards, the server's session
    (shared, with its catalog) left as it is, which ``stop()`` would release for every client. A client left
    open asks the server to clean up when the process exits, and retries for minutes once the server has
    stopped."""
    session = spark_session(remote)
    try:
        yield session
    finally:
        session.client.close()


def mirror_models(settings: Settings, models: list[str]) -> list[str]:
    """Make each model the Spark target wrote (a Delta table under ``settings.spark_models``) a view
    ``main.<model>`` of the warehouse file over its current version, so that the warehouse's readers (the gold
    publication, the snapshot dates, the evaluation, anyone with a DuckDB client) read what Spark built; a
    table or view of the same name there (a DuckDB build's) is replaced. The models mirrored (those with a
    Delta table: Spark's views have none)."""
    statements = []
    for model in models:
        uri = settings.spark_model(model)
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


def main(argv: list[str] | None = None) -> int:
    """Register the settings' silver tables, and the model tables of the manifest the Spark target wrote
    before, in the Spark Connect session of ``SPARK_REMOTE``."""
    parser = argparse.ArgumentParser(prog="python -m lake.spark_warehouse", description=main.__doc__)
    parser.add_argument("--manifest", type=Path, default=SPARK_MANIFEST, help="the Spark target's manifest")
    args = parser.parse_args(argv)
    settings = get_settings()
    if not settings.spark_remote:
        print("SPARK_REMOTE is not set: run this under python -m lake.spark_server run", file=sys.stderr)
        return 2
    with connected(settings.spark_remote) as session:
        names = publish_silver(settings, load_contracts(settings.contracts_dir), session)
        print(f"{len(names)} silver tables registered in the Spark catalog")
        if args.manifest.exists():
            registered = register_models(settings, session, json.loads(args.manifest.read_text()))
            print(f"{len(registered)} model tables registered again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
