"""The ingestion ledger: which landing files each feed has taken in, batch by batch.

A batch is planned before anything is written (its files recorded with status ``planned``) and closed after
its bronze and quarantine commits (status ``committed``, with counts). A run that finds a planned batch not
yet committed resumes it with exactly the same files, so a crash at any point is repaired by running again.
The ledger is an append-only Delta table (``bronze/_ingestion_ledger``).

An erasure (:mod:`lake.erasure`) that rewrites a landing file already taken in, or removes records that came
from it, appends a row with status ``erased`` for it, in the file's batch: the file's new size and time (so it
is not reported as changed, nor taken in again), and what the erasure removed: ``bronze_rows`` from bronze,
``quarantined`` from quarantine and ``records`` their sum. Per feed, the records of committed rows equal
bronze + quarantine + the records of erased rows (:meth:`Ledger.erased_counts`).

A replay from quarantine (:mod:`lake.replay`) is a batch too: planned with status ``replay`` (so ingestion
neither resumes it nor takes its number), then committed with, for each file, no new records and the records
it moved from quarantine to bronze (``bronze_rows`` +n, ``quarantined`` -n): summed per file, the counts keep
"records = bronze rows + quarantined".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from deltalake.exceptions import CommitFailedError

from lake import delta
from lake.landing import LandedFile

PLANNED = "planned"
REPLAY = "replay"
COMMITTED = "committed"
ERASED = "erased"
SCHEMA = pa.schema(
    [
        ("feed_id", pa.string()),
        ("batch_seq", pa.int64()),
        ("status", pa.string()),
        ("relpath", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("kafka_partition", pa.int64()),
        ("kafka_start_offset", pa.int64()),
        ("records", pa.int64()),
        ("bronze_rows", pa.int64()),
        ("quarantined", pa.int64()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class FileCounts:
    """What one file of a batch turned into."""

    records: int
    bronze_rows: int
    quarantined: int


@dataclass(frozen=True)
class LedgerState:
    """One feed's position in the ledger."""

    done: dict[str, tuple[int, int]]
    """Every committed file: relpath -> (size, mtime_ns) when it was taken in."""
    open_batch: tuple[int, list[LandedFile]] | None
    """A planned batch whose commit is missing: (sequence number, its files)."""
    next_seq: int


class ConcurrentIngestion(RuntimeError):
    """Another run is ingesting the same feed: this one stops before writing anything."""


class Ledger:
    """Reads and appends the ingestion ledger table at ``uri``."""

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri
        self.storage_options = storage_options

    def state(self, feed_id: str) -> LedgerState:
        """Committed files, the open batch if any, and the next batch number of one feed."""
        lazy = delta.scan(self.uri, self.storage_options)
        rows = (
            pl.DataFrame(schema=pl.Schema(SCHEMA))
            if lazy is None
            else lazy.filter(pl.col("feed_id") == feed_id).collect()
        )
        taken = rows.filter(pl.col("status").is_in([COMMITTED, ERASED])).sort(
            "recorded_at", maintain_order=True
        )
        # the file as last seen: an erasure's rewrite replaces the size and time it was taken in with
        done = {
            relpath: (size, mtime)
            for relpath, size, mtime in taken.select("relpath", "size", "mtime_ns").iter_rows()
        }
        next_seq = (rows["batch_seq"].max() or 0) + 1
        return LedgerState(done=done, open_batch=_open_batch(rows, feed_id, PLANNED), next_seq=next_seq)

    def open_replay(self, feed_id: str) -> tuple[int, list[LandedFile]] | None:
        """A replay batch of the feed planned but not committed: (its number, its files), else None."""
        lazy = delta.scan(self.uri, self.storage_options)
        rows = None if lazy is None else lazy.filter(pl.col("feed_id") == feed_id).collect()
        return None if rows is None else _open_batch(rows, feed_id, REPLAY)

    def plan(self, feed_id: str, seq: int, files: list[LandedFile], status: str = PLANNED) -> None:
        """Record the files of batch ``seq`` (an ingestion, or with status ``replay`` a replay) before any of
        them is written. The commit carries the application transaction ``(plan:<feed>, seq)``: of two runs
        planning the same batch at once, one fails."""
        app_id = f"plan:{feed_id}"
        if delta.applied_version(self.uri, app_id, self.storage_options) >= seq:
            raise ConcurrentIngestion(f"batch {seq} of {feed_id} was planned by another run meanwhile")
        try:
            self._append(feed_id, seq, status, [(f, None) for f in files], app_id=app_id)
        except CommitFailedError as error:
            raise ConcurrentIngestion(f"another run is ingesting {feed_id} (batch {seq}): {error}") from error

    def commit(self, feed_id: str, seq: int, files: list[tuple[LandedFile, FileCounts]]) -> None:
        """Close batch ``seq`` with what each of its files turned into."""
        self._append(feed_id, seq, COMMITTED, files)

    def record_erasure(self, feed_id: str, rewritten: list[tuple[int, LandedFile, FileCounts]]) -> None:
        """Record landing files an erasure rewrote: ``(batch of the file, the file as it is now, what the
        erasure removed)``, one row per file in its batch."""
        for seq in sorted({s for s, _, _ in rewritten}):
            self._append(feed_id, seq, ERASED, [(f, c) for s, f, c in rewritten if s == seq])

    def erased_counts(self) -> pl.DataFrame:
        """Per feed, the records an erasure removed: ``records``, ``bronze_rows``, ``quarantined``."""
        lazy = delta.scan(self.uri, self.storage_options)
        frame = pl.DataFrame(schema=pl.Schema(SCHEMA)) if lazy is None else lazy.collect()
        return (
            frame.filter(pl.col("status") == ERASED)
            .group_by("feed_id")
            .agg(pl.sum("records"), pl.sum("bronze_rows"), pl.sum("quarantined"))
        )

    def committed_files(self) -> pl.DataFrame:
        """Every committed file with its counts (all feeds)."""
        lazy = delta.scan(self.uri, self.storage_options)
        if lazy is None:
            return pl.DataFrame(schema=pl.Schema(SCHEMA))
        return lazy.filter(pl.col("status") == COMMITTED).collect()

    def _append(
        self,
        feed_id: str,
        seq: int,
        status: str,
        files: list[tuple[LandedFile, FileCounts | None]],
        app_id: str | None = None,
    ) -> None:
        now = datetime.now(UTC)
        rows = [
            {
                "feed_id": feed_id,
                "batch_seq": seq,
                "status": status,
                "relpath": f.relpath,
                "size": f.size,
                "mtime_ns": f.mtime_ns,
                "kafka_partition": f.kafka_partition,
                "kafka_start_offset": f.kafka_start_offset,
                "records": counts.records if counts else None,
                "bronze_rows": counts.bronze_rows if counts else None,
                "quarantined": counts.quarantined if counts else None,
                "recorded_at": now,
            }
            for f, counts in files
        ]
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        delta.append(
            self.uri,
            table,
            storage_options=self.storage_options,
            app_id=app_id,
            version=seq if app_id else None,
        )


def _open_batch(rows: pl.DataFrame, feed_id: str, status: str) -> tuple[int, list[LandedFile]] | None:
    """The first batch of ``rows`` (one feed's ledger) planned with ``status`` and not committed: its number
    and files."""
    closed = rows.filter(pl.col("status") == COMMITTED)["batch_seq"].unique().to_list()
    planned = rows.filter((pl.col("status") == status) & ~pl.col("batch_seq").is_in(closed))
    if not planned.height:
        return None
    seq = planned["batch_seq"].min()
    files = [
        LandedFile(
            feed_id=feed_id,
            relpath=r["relpath"],
            size=r["size"],
            mtime_ns=r["mtime_ns"],
            kafka_partition=r["kafka_partition"],
            kafka_start_offset=r["kafka_start_offset"],
        )
        for r in planned.filter(pl.col("batch_seq") == seq).sort("relpath").iter_rows(named=True)
    ]
    return seq, files
