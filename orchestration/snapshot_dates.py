"""``python -m orchestration.snapshot_dates``: the daily snapshot partitions the warehouse's data supports, as the
``FIRST...LAST`` range that ``dg launch --partition-range`` takes (``make demo`` backfills it); and how a
backfill's window is cut into the windows of its dbt invocations, sized by persons x dates."""

import json
import sys
from datetime import date, timedelta
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


def dates_per_dbt_run(persons: int, person_dates_per_run: int) -> int:
    """How many snapshot dates one dbt invocation builds so that it holds at most ``person_dates_per_run``
    persons x dates, and at least one date."""
    if person_dates_per_run < 1:
        raise ValueError(f"person-dates per dbt run must be at least 1, not {person_dates_per_run}")
    return max(1, person_dates_per_run // max(persons, 1))


def snapshot_windows(start: date, end: date, dates_per_window: int) -> list[tuple[date, date]]:
    """The half-open window ``[start, end)`` of snapshot dates cut into consecutive windows of at most
    ``dates_per_window`` dates."""
    if dates_per_window < 1:
        raise ValueError(f"dates per window must be at least 1, not {dates_per_window}")
    step = timedelta(days=dates_per_window)
    windows = []
    day = start
    while day < end:
        windows.append((day, min(day + step, end)))
        day += step
    return windows


def snapshot_window_vars(start: date, end: date) -> str:
    """The dbt ``--vars`` that make the daily snapshot model replace the rows of the dates in ``[start, end)``."""
    return json.dumps({"snapshot_from": start.isoformat(), "snapshot_until": end.isoformat()})


if __name__ == "__main__":
    first, last = supported_snapshot_dates()
    sys.stdout.write(f"{first}...{last}\n")
