"""Gold: the warehouse marts that Python reads (training, scoring, notebooks), published as Delta tables.

dbt-duckdb cannot write Delta, so after a dbt build each mart marked ``meta: {gold: true}`` is read from the
warehouse as Arrow and written over ``gold/<model>`` in one Delta commit (the previous versions stay readable
until vacuum). Naive timestamps are published as UTC, so no reader needs the ``timestampNtz`` feature.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import write_deltalake

from lake import delta
from lake.object_store import filesystem
from lake.settings import Settings


def gold_uri(settings: Settings, model: str) -> str:
    """Where a published mart lives: ``gold/<model>``."""
    return delta.table_uri(settings, "gold", model)


def gold_uris(settings: Settings) -> list[str]:
    """Every Delta table under ``gold/`` (each folder holding a ``_delta_log``), sorted."""
    zone = settings.zone("gold")
    fs, base = filesystem(zone, settings.storage_options)
    folders = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return sorted(
        f"{zone}/{folder.base_name}"
        for folder in folders
        if folder.type == pafs.FileType.Directory
        and fs.get_file_info(f"{folder.path}/_delta_log").type == pafs.FileType.Directory
    )


def _utc(table: pa.Table) -> pa.Table:
    """The table with naive timestamp columns marked as UTC."""
    fields = [
        pa.field(f.name, pa.timestamp(f.type.unit, tz="UTC"), f.nullable)
        if pa.types.is_timestamp(f.type) and f.type.tz is None
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def publish_gold(settings: Settings, models: list[str]) -> dict[str, int]:
    """Overwrite ``gold/<model>`` with the warehouse table of every model; rows published per model."""
    published = {}
    with duckdb.connect(
        str(settings.warehouse_path), read_only=True, config=settings.duckdb_config(warehouse=True)
    ) as con:
        con.execute("set TimeZone = 'UTC'")
        for model in models:
            table = _utc(con.sql(f'select * from "{model}"').to_arrow_table())
            write_deltalake(
                gold_uri(settings, model),
                table,
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=settings.storage_options or None,
            )
            published[model] = table.num_rows
    return published
