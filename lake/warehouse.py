"""The silver Delta tables as views in the DuckDB warehouse, for dbt and anyone with a DuckDB client.

DuckDB cannot read Delta here (no ``delta`` extension), and a Delta folder must never be read as a parquet
glob (removed files would come back). Each view reads exactly the live parquet files of the table's current
version (``DeltaTable.file_uris()``) with DuckDB's own parquet reader: no copy, all cores, and the view is
persistent in the warehouse file, so ``dbt build`` and other processes can use it. A view is refreshed after
every change of its table (ingestion, maintenance); its partition columns come back from the hive-style paths.

DuckDB cannot read object storage here either (its ``httpfs`` extension is downloaded at run time, and the
build on the package index is for DuckDB 1.5, which refuses to load into 2.0). With the lake on object
storage, the live files are read through pyarrow's S3 filesystem into a mirror beside the warehouse file
(``lake_mirror/``, the lake's own relative paths), each file once: Delta data files never change, so a refresh
copies only the files written since the last one and deletes the mirrored files no version still lists. The
views read the mirror as they read a local lake.
"""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable

from data_contracts import Contract
from data_contracts.sql import sql_literal
from lake import delta
from lake.feeds import Feed, SilverTable, feed_of
from lake.object_store import filesystem
from lake.settings import Settings

SCHEMA = "silver"
MIRROR = "lake_mirror"
"""The folder beside the warehouse file that mirrors the live files of a lake on object storage."""
MIRROR_THREADS = 8
"""Files copied into the mirror at once (the copies wait on the network, not on the cores)."""


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
    return delta_view_sql(name, table.uri, dt, settings)


def delta_view_sql(name: str, uri: str, dt: DeltaTable, settings: Settings) -> str:
    """The ``create or replace view`` statement of the view ``name`` over the current version ``dt`` of the
    Delta table at ``uri``: its live parquet files (a typed view with no rows when it has none)."""
    files = typical_first(readable_files(uri, dt, settings))
    lazy = pl.scan_delta(uri, storage_options=settings.storage_options or None)
    if files:
        partitioned = bool(dt.metadata().partition_columns)
        source = (
            f"read_parquet([{', '.join(sql_literal(f) for f in files)}], hive_partitioning = "
            f"{str(partitioned).lower()})"
        )
        columns = ", ".join(f'"{c}"' for c in lazy.collect_schema())
        return f"create or replace view {name} as select {columns} from {source}"
    return _empty_view(name, lazy.head(0).collect().to_arrow(), settings)


def typical_first(files: list[str]) -> list[str]:
    """The local parquet ``files`` with first the one whose size is nearest their mean size. DuckDB estimates
    the rows of a list of parquet files as the first one's rows times their number, and builds a join's hash
    table on the side it estimates smaller: at 1,000,000 persons the clickstream's 199 files, a small one
    first, were estimated at 116,216 rows instead of 18.9 million, and the events' hash table ran out of
    memory."""
    if len(files) < 2:
        return files
    sizes = {}
    for path in files:
        try:
            sizes[path] = os.path.getsize(path)
        except OSError:  # not a local path: keep the order
            return files
    mean = sum(sizes.values()) / len(files)
    first = min(files, key=lambda path: abs(sizes[path] - mean))
    return [first, *(path for path in files if path != first)]


def mirror_dir(settings: Settings) -> Path:
    """The mirror of a lake on object storage: ``lake_mirror/`` beside the warehouse file."""
    return settings.warehouse_path.parent / MIRROR


def readable_files(uri: str, table: DeltaTable, settings: Settings) -> list[str]:
    """The live files of the table at ``uri`` as DuckDB can read them: their paths for a local lake; for a
    lake on object storage their copies in the mirror, after copying the missing ones and deleting the
    table's mirrored files that are no longer live."""
    live = table.file_uris()
    if settings.is_local:
        return live
    root = settings.lake_root.rstrip("/") + "/"
    mirror = mirror_dir(settings)
    local = {f: mirror / f.removeprefix(root) for f in live}
    missing = [(f, path) for f, path in local.items() if not path.exists()]
    if missing:
        fs, _ = filesystem(root, settings.storage_options)
        with concurrent.futures.ThreadPoolExecutor(MIRROR_THREADS) as pool:
            list(pool.map(lambda pair: _copy(fs, pair[0].split("://", 1)[1], pair[1]), missing))
    folder = mirror / uri.removeprefix(root)
    kept = set(local.values())
    for path in folder.rglob("*.parquet") if folder.is_dir() else []:
        if path not in kept:
            path.unlink()
    return [str(path) for path in local.values()]


def _copy(fs: pafs.FileSystem, source: str, target: Path) -> None:
    """Copy one object to ``target`` through a temporary name, so a killed copy never looks complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.copying")
    with fs.open_input_stream(source, compression=None) as stream, temporary.open("wb") as out:
        while block := stream.read(8 << 20):
            out.write(block)
    temporary.replace(target)


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
