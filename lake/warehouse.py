"""The silver Delta tables as views in the DuckDB warehouse, for dbt and anyone with a DuckDB client.

DuckDB cannot read Delta here (no ``delta`` extension), and a Delta folder must never be read as a parquet
glob (removed files would come back). Each view reads exactly the live parquet files of the table's current
version (``DeltaTable.file_uris()``) with DuckDB's own parquet reader: no copy, all cores, and the view is
persistent in the warehouse file, so ``dbt build`` and other processes can use it. A view is refreshed after
every change of its table (ingestion, maintenance); its partition columns come back from the hive-style paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl
import pyarrow as pa

from data_contracts import Contract
from data_contracts.sql import sql_literal
from lake import delta
from lake.feeds import Feed, SilverTable, feed_of
from lake.settings import Settings

SCHEMA = "silver"


@dataclass(frozen=True)
class SilverView:
    """A silver Delta table and the name of its warehouse view (``silver.<system>__<table>``), with the feed
    and table it belongs to."""

    uri: str
    view: str
    feed: Feed
    table: SilverTable


def silver_tables(settings: Settings, contracts: dict[str, Contract]) -> list[SilverView]:
    """Every silver table of the contracted feeds, with its view name."""
    return [
        SilverView(table.uri(settings), table.view, feed, table)
        for feed in (feed_of(contract) for contract in contracts.values())
        for table in feed.silver
    ]


def view_sql(table: SilverView, settings: Settings) -> str | None:
    """The ``create or replace view`` statement of one table's current version; before the table exists, a
    typed view with no rows when its feed gives one (None: no view yet)."""
    name = f'{SCHEMA}."{table.view}"'
    dt = delta.open_table(table.uri, settings.storage_options)
    if dt is None:
        empty = table.feed.empty_silver(table.table, settings)
        return None if empty is None else _empty_view(name, empty.to_arrow(), settings)
    files = dt.file_uris()
    if files:
        partitioned = bool(dt.metadata().partition_columns)
        source = (
            f"read_parquet([{', '.join(sql_literal(f) for f in files)}], hive_partitioning = "
            f"{str(partitioned).lower()})"
        )
        columns = ", ".join(
            f'"{c}"'
            for c in pl.scan_delta(
                table.uri, storage_options=settings.storage_options or None
            ).collect_schema()
        )
        return f"create or replace view {name} as select {columns} from {source}"
    empty = pl.scan_delta(table.uri, storage_options=settings.storage_options or None).head(0).collect()
    return _empty_view(name, empty.to_arrow(), settings)


def _empty_view(name: str, empty: pa.Table, settings: Settings) -> str:
    """A typed view with no rows, of the columns and types of ``empty``."""
    with duckdb.connect(config=settings.duckdb_config()) as con:
        con.register("empty", empty)
        types = con.sql("select * from empty").types
    columns = ", ".join(f'cast(null as {t}) as "{c}"' for c, t in zip(empty.column_names, types, strict=True))
    return f"create or replace view {name} as select {columns} where false"


def publish_silver(settings: Settings, contracts: dict[str, Contract]) -> list[str]:
    """Create or refresh the warehouse view of every silver table; the names of the views written."""
    statements = [(t.view, view_sql(t, settings)) for t in silver_tables(settings, contracts)]
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path), config=settings.duckdb_config(warehouse=True)) as con:
        con.execute(f"create schema if not exists {SCHEMA}")
        for _, sql in statements:
            if sql is not None:
                con.execute(sql)
    return [view for view, sql in statements if sql is not None]
