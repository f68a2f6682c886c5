"""The lake on object storage: a real S3 server (SeaweedFS, started by the ``s3_server`` fixture), concurrent
Delta writers on it, and the ingestion, its exactly-once repair, the warehouse and maintenance with
``LAKE_ROOT=s3://...``."""

from __future__ import annotations

import multiprocessing
import time

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from lake import object_store

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
