"""The lake on object storage: a real S3 server (SeaweedFS, started by the ``s3_server`` fixture), concurrent
Delta writers on it, and the ingestion, its exactly-once repair, the warehouse and maintenance with
``LAKE_ROOT=s3://...``."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from conftest import S3_PII_SECRET, read_warehouse
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from data_contracts import scan_contracts
from lake import delta, object_store
from lake.maintenance import maintain
from lake.settings import REPO_ROOT
from lake.summary import delta_tables
from lake.warehouse import mirror_dir, publish_silver, silver_tables
from simulator import SimulationConfig, generate

WRITERS = 4
COMMITS_PER_WRITER = 6


def _write_until_committed(uri: str, options: dict[str, str], writer: int, start_at: float) -> list[int]:
    """One writer process: append (even writers) or merge (odd writers) its rows one commit at a time, each
    commit allowed no retry inside delta-rs, so a commit that loses the race for its version fails and is
    tried again here; the failed attempts per commit."""
    while time.time() < start_at:  # every writer starts at the same instant
        time.sleep(0.001)
    failures = []
    for commit in range(COMMITS_PER_WRITER):
        rows = pa.table({"writer": [writer], "commit": [commit], "value": [writer * 100 + commit]})
        properties = CommitProperties(
            max_commit_retries=0, custom_metadata={"writer": str(writer), "commit": str(commit)}
        )
        failed = 0
        while True:
            try:
                if writer % 2 == 0:
                    write_deltalake(
                        uri, rows, mode="append", storage_options=options, commit_properties=properties
                    )
                else:
                    DeltaTable(uri, storage_options=options).merge(
                        rows,
                        "t.writer = s.writer and t.commit = s.commit",
                        source_alias="s",
                        target_alias="t",
                        commit_properties=properties,
                    ).when_matched_update_all().when_not_matched_insert_all().execute()
                break
            except CommitFailedError:
                failed += 1
        failures.append(failed)
    return failures


def test_concurrent_writers_on_the_s3_server_lose_no_commit(s3_lake) -> None:
    uri = object_store.join(s3_lake.lake_root, "concurrency")
    options = s3_lake.storage_options
    empty = pa.table(
        {"writer": pa.array([], pa.int64()), "commit": pa.array([], pa.int64()), "value": []},
        schema=pa.schema([("writer", pa.int64()), ("commit", pa.int64()), ("value", pa.int64())]),
    )
    write_deltalake(uri, empty, storage_options=options)
    start_at = time.time() + 4  # after every spawned process has imported deltalake
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        failures = pool.starmap(
            _write_until_committed, [(uri, options, writer, start_at) for writer in range(WRITERS)]
        )
    commits = WRITERS * COMMITS_PER_WRITER
    # the race was real: some commits found their version taken by another writer (a create refused by the
    # server's conditional put) and had to be tried again
    assert sum(map(sum, failures)) > 0, failures
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == commits  # version 0 created the table; one version per commit, none twice
    written = [c for c in table.history() if "writer" in c]
    assert len(written) == commits
    assert {(c["writer"], c["commit"]) for c in written} == {
        (str(w), str(c)) for w in range(WRITERS) for c in range(COMMITS_PER_WRITER)
    }
    assert sorted(c["version"] for c in written) == list(range(1, commits + 1))
    rows = pl.read_delta(uri, storage_options=options).sort("writer", "commit")
    expected = pl.DataFrame(
        [(w, c, w * 100 + c) for w in range(WRITERS) for c in range(COMMITS_PER_WRITER)],
        schema=["writer", "commit", "value"],
        orient="row",
    )
    assert rows.equals(expected)


# ------------------------------------------------------------------------------------- the lake on S3

COMPANY = SimulationConfig(persons=400, days=4, seed=5, start=date(2026, 9, 1), history_days=7)
CRASH_FEEDS = ["crm.public.contacts", "shop.shop.orders", "clickstream"]
VOLATILE = ("_ingested_at", "quarantined_at", "recorded_at")
LEDGER = "bronze/_ingestion_ledger"
LEDGER_COLUMNS = [
    "feed_id",
    "batch_seq",
    "relpath",
    "size",
    "status",
    "records",
    "bronze_rows",
    "quarantined",
]


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The landing zone of a small simulated company (local files)."""
    root = tmp_path_factory.mktemp("s3-company")
    generate(COMPANY, root / "landing", root / "truth", progress=False)
    return root / "landing"


@pytest.fixture(scope="module")
def local_lake(company: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The company ingested (every feed) into a lake in a local folder with the key of the lakes on S3: the
    reference they are compared with."""
    root = tmp_path_factory.mktemp("s3-reference") / "lake"
    shutil.copytree(company, root / "landing")
    environment = {"LAKE_ROOT": str(root), "WAREHOUSE_PATH": str(root.parent / "warehouse.duckdb")}
    done = run_ingest({**environment, "PII_SECRET": S3_PII_SECRET})  # the tokens of the lake on S3
    assert done.returncode == 0, done.stderr[-3000:]
    return str(root)


def run_ingest(
    environment: dict[str, str] | None = None, crash_at: str | None = None, feeds: list[str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m lake.ingest`` in a child process, with ``environment`` added to this one's."""
    env = {**os.environ, **(environment or {})}
    if crash_at:
        env["LAKE_CRASH_AT"] = crash_at
    arguments = [a for feed in feeds or [] for a in ("--feed", feed)]
    return subprocess.run(
        [sys.executable, "-m", "lake.ingest", *arguments],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tables_of(root: str, options: dict[str, str] | None = None, feeds: list[str] | None = None) -> dict:
    """Every Delta table of the lake at ``root`` (by relative path), sorted, without the columns that hold
    times of the run; the ledger's rows of its committed files only, and of ``feeds`` when given."""
    tables = {}
    for table in delta_tables(root, options):
        frame = pl.read_delta(object_store.join(root, table), storage_options=options or None)
        frame = frame.drop([c for c in VOLATILE if c in frame.columns])
        if table == LEDGER:
            frame = frame.filter(pl.col("status") == "committed").select(LEDGER_COLUMNS)
        if feeds and "feed_id" in frame.columns:
            frame = frame.filter(pl.col("feed_id").is_in(feeds))
        tables[table] = frame.select(sorted(frame.columns)).sort(sorted(frame.columns))
    return tables


def assert_same_tables(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, frame in expected.items():
        assert frame.equals(actual[name]), name


def test_the_lake_on_s3_holds_what_the_local_lake_holds(company: Path, local_lake: str, s3_lake) -> None:
    uploaded = object_store.upload_folder(company, s3_lake.landing)
    done = run_ingest()
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tables(tables_of(local_lake), tables_of(s3_lake.lake_root, s3_lake.storage_options))
    # arrival time on object storage: the objects' LastModified, whole seconds, recorded by the ledger
    ledger = pl.read_delta(
        object_store.join(s3_lake.lake_root, LEDGER), storage_options=s3_lake.storage_options
    )
    committed = ledger.filter(pl.col("status") == "committed")
    assert committed.height == uploaded
    assert committed.filter(pl.col("mtime_ns") % 1_000_000_000 != 0).is_empty()
    # the ledger's (size, LastModified) identity holds: a second run finds nothing new and nothing changed
    again = run_ingest()
    assert again.returncode == 0 and "CHANGED" not in again.stderr, again.stderr[-3000:]
    assert tables_of(s3_lake.lake_root, s3_lake.storage_options)[LEDGER].height == committed.height
    # the warehouse's silver views read the mirror of the live files: as many rows as each silver table
    contracts = scan_contracts(s3_lake.contracts_dir).contracts
    views = silver_tables(s3_lake, contracts)

    def view_rows() -> dict[str, int]:
        return {
            v.view: read_warehouse(s3_lake, f'select count(*) as n from silver."{v.view}"')["n"][0]
            for v in views
            if delta.open_table(v.uri, s3_lake.storage_options) is not None
        }

    counts = view_rows()
    assert counts == {
        v.view: delta.row_count(v.uri, s3_lake.storage_options)
        for v in views
        if delta.open_table(v.uri, s3_lake.storage_options) is not None
    }
    assert sum(counts.values()) > 0
    # maintenance on S3: compaction and vacuum change no row; the views, refreshed, drop the vacuumed files
    before = tables_of(s3_lake.lake_root, s3_lake.storage_options)
    cared = maintain(s3_lake, contracts, retention_hours=0)
    assert any(c.files_vacuumed for c in cared)
    publish_silver(s3_lake, contracts)
    assert_same_tables(before, tables_of(s3_lake.lake_root, s3_lake.storage_options))
    assert view_rows() == counts
    live = {
        str(mirror_dir(s3_lake) / f.removeprefix(s3_lake.lake_root + "/"))
        for v in views
        if (table := delta.open_table(v.uri, s3_lake.storage_options)) is not None
        for f in table.file_uris()
    }
    assert {str(p) for p in mirror_dir(s3_lake).rglob("*.parquet")} == live


@pytest.mark.parametrize("crash_at", ["ingest:after_bronze", "cdc:after_history"])
def test_a_run_killed_on_s3_is_repaired_by_a_rerun(
    company: Path, local_lake: str, s3_lake, crash_at: str
) -> None:
    object_store.upload_folder(company, s3_lake.landing)
    killed = run_ingest(crash_at=crash_at, feeds=CRASH_FEEDS)
    assert killed.returncode == -9, killed.stderr[-3000:]
    rerun = run_ingest(feeds=CRASH_FEEDS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    expected = tables_of(local_lake, feeds=CRASH_FEEDS)
    actual = tables_of(s3_lake.lake_root, s3_lake.storage_options, feeds=CRASH_FEEDS)
    assert {LEDGER, "silver/crm/contacts", "silver/shop/orders", "silver/clickstream/events"} <= actual.keys()
    assert_same_tables({name: expected[name] for name in actual}, actual)
