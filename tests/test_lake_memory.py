"""Memory bounded by settings: the DuckDB limit reaches every connection, and bounded batches and apply steps
change no table."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import DBT_PROJECT, Simulated, lake_settings, lake_tables

from data_contracts import load_contracts
from lake import bronze
from lake.gold import publish_gold
from lake.ingest import ingest_all
from lake.landing import discover
from lake.settings import get_settings
from lake.warehouse import publish_silver

BATCH_COLUMNS = ("_batch_seq", "_batch_id", "batch_seq")


def reported_limit(limit: str) -> str:
    """How DuckDB reports a memory limit it was given (``300MB`` -> ``286.1 MiB``)."""
    with duckdb.connect(config={"memory_limit": limit}) as con:
        return con.sql("select current_setting('memory_limit')").fetchall()[0][0]


def test_the_memory_limit_setting_reaches_every_duckdb_connection_of_the_lake(
    simulated: Simulated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKE_DUCKDB_MEMORY_LIMIT", "300MB")
    monkeypatch.setenv("WAREHOUSE_MEMORY_LIMIT", "500MB")
    monkeypatch.setenv("LAKE_DUCKDB_THREADS", "1")
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "warehouse" / "engagement.duckdb"))
    settings = lake_settings(tmp_path / "lake", simulated.landing)
    seen: list[tuple[str, int, str]] = []
    connect = duckdb.connect

    def recording_connect(*args, **kwargs) -> duckdb.DuckDBPyConnection:
        con = connect(*args, **kwargs)
        seen.append(
            con.sql(
                "select current_setting('memory_limit'), current_setting('threads'), "
                "current_setting('temp_directory')"
            ).fetchall()[0]
        )
        return con

    monkeypatch.setattr(duckdb, "connect", recording_connect)
    ingest_all(settings)  # bronze parsing, Debezium decoding, clickstream typing
    publish_silver(settings, load_contracts(settings.contracts_dir))  # the warehouse views
    with connect(str(settings.warehouse_path)) as con:
        con.execute("create table person_map as select 1 as person_id")
    publish_gold(settings, ["person_map"])
    monkeypatch.undo()  # the environment as it was: the defaults differ from the limits set above

    feeds = len(load_contracts(settings.contracts_dir))
    assert len(seen) > 2 * feeds  # a connection per bronze batch and per apply step at least
    spill = str(tmp_path / "warehouse" / "duckdb_tmp")
    lake, warehouse = (reported_limit("300MB"), 1, spill), (reported_limit("500MB"), 1, spill)
    assert set(seen) == {lake, warehouse}
    assert seen.count(warehouse) == 2  # the views, the gold tables
    assert reported_limit("300MB") != reported_limit(get_settings().duckdb_memory_limit)


def dbt_setting(name: str, env: dict[str, str], scratch: Path) -> str:
    """The value of a DuckDB setting in a dbt session of the project's profile."""
    command = ["dbt", "show", "--inline", f"select current_setting('{name}') as value", "--output", "json"]
    command += ["--quiet", "--profiles-dir", str(DBT_PROJECT)]
    command += ["--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs")]
    done = subprocess.run(command, cwd=DBT_PROJECT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(done.stdout)["show"][0]["value"]


@pytest.mark.slow  # runs dbt (about 30 s)
def test_the_dbt_profile_takes_its_memory_limit_and_spill_folder_from_the_settings(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse" / "engagement.duckdb"
    warehouse.parent.mkdir()
    env = {**os.environ, "WAREHOUSE_PATH": str(warehouse), "WAREHOUSE_MEMORY_LIMIT": "700MB"}
    assert dbt_setting("memory_limit", env, tmp_path) == reported_limit("700MB")
    assert dbt_setting("temp_directory", env, tmp_path) == str(warehouse.parent / "duckdb_tmp")
    env.pop("WAREHOUSE_MEMORY_LIMIT")
    assert dbt_setting("memory_limit", env, tmp_path) == reported_limit("8GB")  # the default


# one dbt process, two queries: the first spills to the profile's temp_directory (4,000,000 groups in 30 MB),
# the second is a new cursor, on which dbt-duckdb sets the profile's settings again
SPILL_THEN_QUERY = """
import json, sys
from dbt.cli.main import dbtRunner
project, scratch = sys.argv[1:]
common = ["--quiet", "--profiles-dir", project, "--project-dir", project, "--output", "json",
          "--target-path", scratch + "/target", "--log-path", scratch + "/logs"]
spill = "select count(*) from (select i % 4000000 as k, count(*) from range(8000000) t(i) group by k)"
first = dbtRunner().invoke(["show", "--inline", spill, *common])
second = dbtRunner().invoke(["show", "--inline", "select 1 as one", *common])
print(json.dumps({"first": first.success, "second": second.success, "error": str(second.exception)}))
"""


@pytest.mark.slow  # runs dbt (about 20 s)
def test_a_dbt_process_goes_on_after_a_query_spilled_to_disk(tmp_path: Path) -> None:
    """DuckDB refuses to set ``temp_directory`` again once it has spilled there, and dbt-duckdb sets the
    profile's settings on every new cursor: the spill folder is given when the database opens instead, so the
    nodes after one that spilled still run (at 1,000,000 persons every node after the first spill failed)."""
    warehouse = tmp_path / "warehouse" / "engagement.duckdb"
    warehouse.parent.mkdir()
    env = {**os.environ, "WAREHOUSE_PATH": str(warehouse), "WAREHOUSE_MEMORY_LIMIT": "30MB"}
    command = [sys.executable, "-c", SPILL_THEN_QUERY, str(DBT_PROJECT), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"first": True, "second": True, "error": "None"}


def test_gzipped_files_count_for_their_uncompressed_size_in_a_batch(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "clickstream" / "web" / "2026-09-01" / "10"
    folder.mkdir(parents=True)
    text = b'{"messageId": "m"}\n' * 50_000
    (folder / "part-0.jsonl.gz").write_bytes(gzip.compress(text))
    (folder / "part-1.jsonl").write_bytes(text)
    files = discover(str(tmp_path / "landing"), "clickstream", "clickstream")
    assert [bronze.landed_bytes(str(tmp_path / "landing"), f) for f in files] == [len(text), len(text)]
    assert files[0].size < len(text) / 50  # stored much smaller than it reads


def without_batches(tables: dict[str, pl.DataFrame], feeds: list[str]) -> dict[str, pl.DataFrame]:
    """The bronze, silver and quarantine rows of ``feeds`` without the columns that number batches (they
    differ with the batch size)."""
    names = {"clickstream/events" if f == "clickstream" else f for f in feeds}
    names |= {f"{system}/{table}" for system, _, table in (f.split(".") for f in feeds if "." in f)}
    kept = {}
    for name, frame in tables.items():
        if name != "quarantine/records" and not any(n in name for n in names):
            continue
        if "feed_id" in frame.columns:  # quarantine: only the rows of these feeds
            frame = frame.filter(pl.col("feed_id").is_in(feeds))
        frame = frame.drop([c for c in BATCH_COLUMNS if c in frame.columns])
        kept[name] = frame.sort(frame.columns)
    return kept


@pytest.mark.slow  # ingests the test company twice (about 30 s)
def test_tiny_batches_and_apply_steps_give_the_same_tables(
    simulated: Simulated, ingested, tmp_path: Path
) -> None:
    settings, _ = ingested
    feeds = ["clickstream", "crm.public.contacts", "shop.shop.orders"]  # replays, deletes, schema envelopes
    tiny = replace(
        lake_settings(tmp_path / "lake", simulated.landing), batch_bytes=1 << 20, apply_step_rows=400
    )
    ingest_all(tiny, feeds)
    clicks = pl.read_delta(f"{tiny.lake_root}/bronze/clickstream/events")
    per_batch = clicks.group_by("_batch_seq").len()["len"]
    default_batches = pl.read_delta(f"{settings.lake_root}/bronze/clickstream/events")[
        "_batch_seq"
    ].n_unique()
    assert per_batch.len() > 5 * default_batches  # many more batches than with the defaults ...
    assert per_batch.max() > tiny.apply_step_rows  # ... each applied in several steps
    ours, default = without_batches(lake_tables(tiny), feeds), without_batches(lake_tables(settings), feeds)
    assert ours.keys() == default.keys() and len(ours) == 9  # bronze, silver (and history), quarantine
    for name, frame in default.items():
        assert frame.equals(ours[name]), name
