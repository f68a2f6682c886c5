"""How a backfill of the daily feature snapshots is cut into dbt invocations: windows sized by persons x
dates."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from orchestration.dbt_translation import dates_per_dbt_run, snapshot_windows
from orchestration.snapshot_dates import warehouse_persons


def test_a_window_holds_at_most_the_person_dates_of_one_run():
    assert dates_per_dbt_run(persons=14_000, person_dates_per_run=5_000_000) == 357
    assert dates_per_dbt_run(persons=1_400_000, person_dates_per_run=5_000_000) == 3
    assert dates_per_dbt_run(persons=1_000_000, person_dates_per_run=5_000_000) == 5


def test_a_window_holds_one_date_at_least():
    assert dates_per_dbt_run(persons=6_000_000, person_dates_per_run=5_000_000) == 1
    assert dates_per_dbt_run(persons=3, person_dates_per_run=1) == 1


def test_no_persons_yet_puts_the_whole_budget_in_one_window():
    assert dates_per_dbt_run(persons=0, person_dates_per_run=40) == 40


def test_a_budget_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        dates_per_dbt_run(persons=10, person_dates_per_run=0)


def test_the_demo_month_goes_to_dbt_in_one_window_and_a_large_company_in_several():
    start, end = date(2026, 9, 2), date(2026, 10, 1)  # 29 snapshot dates
    demo = snapshot_windows(start, end, dates_per_dbt_run(14_000, 5_000_000))
    assert demo == [(start, end)]
    large = snapshot_windows(start, end, dates_per_dbt_run(1_400_000, 5_000_000))
    assert len(large) == 10
    assert large[0] == (date(2026, 9, 2), date(2026, 9, 5))
    assert large[-1] == (date(2026, 9, 29), end)


def test_persons_are_counted_in_the_warehouse_identity_map(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.sql("create table int_marts__data_window (first_snapshot_date date)")
    assert warehouse_persons(warehouse) == 0  # not built yet
    with duckdb.connect(str(warehouse)) as con:
        con.sql("create table identity_person_map (identifier varchar, person_id varchar)")
        con.sql("insert into identity_person_map values ('a', 'p1'), ('b', 'p1'), ('c', 'p2'), ('d', 'p3')")
    assert warehouse_persons(warehouse) == 3
