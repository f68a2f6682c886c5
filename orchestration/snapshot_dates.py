"""``python -m orchestration.snapshot_dates``: the daily snapshot partitions the warehouse's data supports, as the
``FIRST...LAST`` range that ``dagster asset materialize --partition-range`` takes (``make demo`` backfills it)."""

import sys

import duckdb

from lake.settings import get_settings


def supported_snapshot_dates() -> tuple[str, str]:
    """The first and last snapshot dates of the loaded data (the ``int_marts__data_window`` model), no earlier
    than the first partition."""
    settings = get_settings()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        first, last = con.sql(
            "select first_snapshot_date, last_snapshot_date from int_marts__data_window"
        ).fetchall()[0]
    if first is None or last is None or last < settings.first_snapshot_date:
        raise SystemExit(
            "the warehouse holds no data for any snapshot date: ingest and build the models first"
        )
    return max(first, settings.first_snapshot_date).isoformat(), last.isoformat()


if __name__ == "__main__":
    first, last = supported_snapshot_dates()
    sys.stdout.write(f"{first}...{last}\n")
