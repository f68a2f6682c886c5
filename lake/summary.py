"""``python -m lake.summary``: what the lake root holds, zone by zone, in a few lines (a local folder or a
lake on object storage alike)."""

from __future__ import annotations

import sys
from collections import defaultdict

import pyarrow.fs as pafs

from lake import delta
from lake.object_store import filesystem
from lake.settings import get_settings, without_password

TABLE_ZONES = ("bronze", "silver", "gold", "quarantine")


def landing_summary(
    landing: str, storage_options: dict[str, str] | None = None
) -> list[tuple[str, int, int]]:
    """(feed, files, bytes) for every CDC topic and clickstream source under ``landing``."""
    fs, base = filesystem(landing, storage_options)
    feeds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for kind in ("cdc", "clickstream"):
        selector = pafs.FileSelector(f"{base}/{kind}", recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                feed = f"{kind}/{info.path[len(base) + len(kind) + 2 :].split('/', 1)[0]}"
                feeds[feed][0] += 1
                feeds[feed][1] += info.size
    return [(feed, files, size) for feed, (files, size) in sorted(feeds.items())]


def delta_tables(root: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """The paths (relative to ``root``) of every Delta table in the bronze, silver, gold and quarantine zones
    under the lake root ``root``, sorted."""
    fs, base = filesystem(root, storage_options)
    tables = []
    for zone in TABLE_ZONES:
        selector = pafs.FileSelector(f"{base}/{zone}", recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.Directory and info.base_name == "_delta_log":
                tables.append(info.path[len(base) + 1 : -len("/_delta_log")])
    return sorted(tables)


def table_summary(root: str, storage_options: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """(table path, rows) for every Delta table of :func:`delta_tables`."""
    return [
        (table, delta.row_count(f"{root.rstrip('/')}/{table}", storage_options))
        for table in delta_tables(root, storage_options)
    ]


def main() -> int:
    """Print the lake root, the landing zone per feed, the Delta tables, the warehouse and the MLflow
    store."""
    settings = get_settings()
    options = settings.storage_options
    print(f"lake root: {settings.lake_root}")
    rows = landing_summary(settings.landing, options)
    if not rows:
        print("  landing: empty (run `make demo` or `python -m simulator generate --out <landing>`)")
    for feed, files, size in rows:
        print(f"  landing/{feed:<34} {files:>6,} files {size / 1e6:>9.1f} MB")
    for table, count in table_summary(settings.lake_root, options):
        print(f"  {table:<42} {count:>10,} rows")
    print(f"warehouse: {settings.warehouse_path}")
    print(f"mlflow:    {without_password(settings.mlflow_tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
