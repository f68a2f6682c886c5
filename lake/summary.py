"""``python -m lake.summary``: what the lake root holds, zone by zone, in a few lines."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from lake import delta
from lake.settings import get_settings, without_password

TABLE_ZONES = ("bronze", "silver", "gold", "quarantine")


def landing_summary(landing: Path) -> list[tuple[str, int, int]]:
    """(feed, files, bytes) for every CDC topic and clickstream source under ``landing``."""
    feeds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for kind in ("cdc", "clickstream"):
        root = landing / kind
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.is_file():
                feed = f"{kind}/{path.relative_to(root).parts[0]}"
                feeds[feed][0] += 1
                feeds[feed][1] += path.stat().st_size
    return [(feed, files, size) for feed, (files, size) in sorted(feeds.items())]


def table_summary(root: Path) -> list[tuple[str, int]]:
    """(table path, rows) for every Delta table in the bronze, silver, gold and quarantine zones under
    ``root``."""
    rows = []
    for zone in TABLE_ZONES:
        for log in sorted((root / zone).rglob("_delta_log")) if (root / zone).is_dir() else []:
            rows.append((str(log.parent.relative_to(root)), delta.row_count(str(log.parent))))
    return rows


def main() -> int:
    """Print the lake root, the landing zone per feed, the Delta tables, the warehouse and the MLflow
    store."""
    settings = get_settings()
    if not settings.is_local:
        print(f"lake root {settings.lake_root} (object storage: no local summary)")
        return 0
    root = Path(settings.lake_root)
    print(f"lake root: {root}")
    rows = landing_summary(Path(settings.landing))
    if not rows:
        print("  landing: empty (run `make demo` or `python -m simulator generate --out <landing>`)")
    for feed, files, size in rows:
        print(f"  landing/{feed:<34} {files:>6,} files {size / 1e6:>9.1f} MB")
    for table, count in table_summary(root):
        print(f"  {table:<42} {count:>10,} rows")
    print(f"warehouse: {settings.warehouse_path}")
    print(f"mlflow:    {without_password(settings.mlflow_tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
