"""``python -m orchestration.snapshot_dates``: the daily snapshot partitions the warehouse's data supports, as
the ``FIRST...LAST`` range that ``dg launch --partition-range`` takes (``make demo`` backfills it); and the
persons of one snapshot date, by which a backfill's dbt invocations are sized
(``orchestration.dbt_translation``)."""

import sys
from pathlib import Path

import duckdb

from lake.settings import get_settings


def supported_snapshot_dates() -> tuple[str, str]:
    """The first and last snapshot dates of the loaded data (the ``int_marts__data_window`` model), no earlier
    than the first partition."""
    settings = get_settings()
    with duckdb.connect(
        str(settings.warehouse_path), read_only=True, config=settings.duckdb_config(warehouse=True)
    ) as con:
        first, last = con.sql(
            "select first_snapshot_date, last_snapshot_date from int_marts__data_window"
        ).fetchall()[0]
    if first is None or last is None or last < settings.first_snapshot_date:
        raise SystemExit(
            "the warehouse holds no data for any snapshot date: ingest and build the models first"
        )
    return max(first, settings.first_snapshot_date).isoformat(), last.isoformat()


def warehouse_persons(warehouse_path: Path) -> int:
    """The number of persons of the warehouse's identity map (0 before it is built): the rows of one snapshot
    date."""
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        found = con.sql(
            "select count(*) from information_schema.tables where table_name = 'identity_person_map'"
        ).fetchall()[0][0]
        if not found:
            return 0
        return con.sql("select count(distinct person_id) from identity_person_map").fetchall()[0][0]


if __name__ == "__main__":
    first, last = supported_snapshot_dates()
    sys.stdout.write(f"{first}...{last}\n")
