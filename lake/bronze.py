"""Landing to bronze: every landed file taken in exactly once, valid records appended, the rest quarantined.

For each feed (a CDC topic or the clickstream) the pending files are grouped into batches. A batch is planned
in the ledger first; its valid records are then streamed chunk by chunk into the bronze table in one Delta
commit, its rejected records appended to the quarantine table in one commit, and the ledger closed. Both
commits carry the application transaction ``(ingest:<feed>, batch number)``, so a batch resumed after a
crash skips what was already committed and writes what was not: nothing is duplicated, nothing is lost.

Parsing and validation run in DuckDB over Arrow chunks of raw lines, with the query and bronze columns of the
feed's kind (:mod:`lake.feeds`: ``json_valid``, ``json_transform`` and the SQL that
:func:`data_contracts.violation_sql` derives from the feed's contract and, for a change event, from the schema
envelope it carries).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from gzip import BadGzipFile
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from isal import isal_zlib

from data_contracts import Contract
from lake import delta
from lake.faults import crash_point
from lake.feeds import feed_of
from lake.landing import CHUNK_BYTES, LandedFile, arrival_order, landing_filesystem, read_line_chunks
from lake.ledger import FileCounts, Ledger
from lake.settings import Settings

T = TypeVar("T")

MAX_FILES_PER_BATCH = 5_000
REASONS_SHOWN = 3

QUARANTINE_SCHEMA = pa.schema(
    [
        ("feed_id", pa.string()),
        ("source_file", pa.string()),
        ("line", pa.int64()),
        ("raw", pa.string()),
        ("reason", pa.string()),
        ("batch_seq", pa.int64()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)

BRONZE_STATS_COLUMNS = (
    "_batch_seq",
    "_ingest_date",
    "_ingested_at",
    "_line",
    "_kafka_partition",
    "_kafka_offset",
)
"""Columns of a bronze table with file statistics: ingestion metadata only, never the raw record or its
fields."""
QUARANTINE_STATS_COLUMNS = ("feed_id", "batch_seq", "line", "quarantined_at")


@dataclass(frozen=True)
class FileRejection:
    """A file whose share of quarantined records passed the threshold."""

    relpath: str
    records: int
    quarantined: int
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.relpath}: {self.quarantined:,} of {self.records:,} records quarantined "
            f"({self.quarantined / max(self.records, 1):.0%}); first reasons: {'; '.join(self.reasons)}"
        )


@dataclass
class IngestReport:
    """What one ingestion run of one feed did."""

    feed_id: str
    batches: int = 0
    files: int = 0
    records: int = 0
    bronze_rows: int = 0
    quarantined: int = 0
    rejections: list[FileRejection] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    """Files already taken in that are now of another size or time: not taken in again (landing files are
    immutable; a rewritten file needs a new name), but reported."""
    unrecognised_files: list[str] = field(default_factory=list)
    """Files in the feed's folder whose names ingestion does not understand (not JSON lines): not taken in,
    but reported."""
    seconds: float = 0.0

    @property
    def quarantine_rate(self) -> float:
        """Share of this run's records that went to quarantine."""
        return self.quarantined / self.records if self.records else 0.0


def bronze_uri(settings: Settings, contract: Contract) -> str:
    """Where a feed's bronze table lives (``bronze/cdc/<topic>``, ``bronze/clickstream/events``, ...: its
    feed's :meth:`~lake.feeds.Feed.bronze_uri`)."""
    return feed_of(contract).bronze_uri(settings)


def quarantine_uri(settings: Settings) -> str:
    """The quarantine table of every feed (partitioned by ``feed_id``)."""
    return delta.table_uri(settings, "quarantine", "records")


def ledger_uri(settings: Settings) -> str:
    """The ingestion ledger table."""
    return delta.table_uri(settings, "bronze", "_ingestion_ledger")


class BatchParser:
    """Streams the valid records of a batch's files as bronze record batches, keeping the rejected ones.

    Lines of consecutive small files share one chunk (and one DuckDB query) of about ``chunk_bytes``; a large
    file is split into several chunks, so memory stays bounded whatever the file sizes."""

    def __init__(
        self, settings: Settings, contract: Contract, seq: int, files: list[LandedFile], chunk_bytes: int
    ):
        self.settings = settings
        self.contract = contract
        self.seq = seq
        self.files = files
        self.chunk_bytes = chunk_bytes
        self.feed = feed_of(contract)
        self.schema = self.feed.bronze_schema
        self.sql = self.feed.parse_sql()
        self.ingested_at = datetime.now(UTC)
        self.quarantine: list[pa.Table] = []
        self.records = [0] * len(files)
        self.quarantined = [0] * len(files)
        self.reasons: list[list[str]] = [[] for _ in files]
        self.unreadable = [False] * len(files)
        self._paths = pa.array([f.relpath for f in files], pa.string())

    @property
    def counts(self) -> list[tuple[LandedFile, FileCounts]]:
        """What each file of the batch turned into."""
        return [
            (f, FileCounts(r, r - q, q))
            for f, r, q in zip(self.files, self.records, self.quarantined, strict=True)
        ]

    @property
    def rejections(self) -> list[FileRejection]:
        """The files whose share of quarantined records passed the threshold."""
        return [
            FileRejection(f.relpath, r, q, tuple(reasons[:REASONS_SHOWN]))
            for f, r, q, reasons, unreadable in zip(
                self.files, self.records, self.quarantined, self.reasons, self.unreadable, strict=True
            )
            if r
            and (
                unreadable
                or (q >= self.settings.min_rejected_records and q / r > self.settings.max_reject_rate)
            )
        ]

    def _file_chunks(self) -> Iterator[tuple[int, int, pa.Array | None, Exception | None]]:
        """``(file index, first line, lines, None)`` for every chunk of every file in turn, and ``(file index,
        line, None, error)`` where a file cannot be read past ``line``."""
        for index, file in enumerate(self.files):
            next_line = 1
            try:
                for first_line, lines in read_line_chunks(self.settings.landing, file, self.chunk_bytes):
                    yield index, first_line, lines, None
                    next_line = first_line + len(lines)
            except (EOFError, BadGzipFile, isal_zlib.error) as error:  # truncated or corrupt (not I/O)
                yield index, next_line, None, error

    def _chunks(self) -> Iterator[pa.Table]:
        pending: list[pa.Table] = []
        size = 0
        # the files are read (decompressed, split into lines) one chunk ahead, while this chunk is parsed
        for index, first_line, lines, error in read_ahead(self._file_chunks()):
            if error is not None:
                self._unreadable(index, first_line, error)
                continue
            pending.append(
                pa.table(
                    {
                        "file_idx": pa.repeat(pa.scalar(index, pa.int32()), len(lines)),
                        "line_no": pa.array(range(first_line, first_line + len(lines)), pa.int64()),
                        "line": lines,
                    }
                )
            )
            size += lines.nbytes
            if size >= self.chunk_bytes:
                yield pa.concat_tables(pending)
                pending, size = [], 0
        if pending:
            yield pa.concat_tables(pending)

    def _unreadable(self, index: int, line: int, error: Exception) -> None:
        """Quarantine the rest of a file that cannot be read past ``line`` (one record, with the error); the
        file is then rejected whatever its other counts."""
        reason = f"file unreadable from line {line}: {type(error).__name__}: {error}"
        row = pa.table({"file_idx": [index], "line_no": [line], "line": [""], "reason": [reason]})
        self.quarantine.append(self._quarantine_rows(row))
        self.records[index] += 1
        self.quarantined[index] += 1
        self.reasons[index].append(reason)
        self.unreadable[index] = True

    def batches(self, chunks: Iterable[pa.Table] | None = None) -> Iterator[pa.RecordBatch]:
        """Bronze record batches of every file in turn; quarantine rows and counts are kept on the side. The
        lines come from the files, or from ``chunks`` when given (tables ``(file_idx, line_no, line)``, the
        index into the batch's files)."""
        with duckdb.connect(config=self.settings.duckdb_config()) as con:
            for chunk in self._chunks() if chunks is None else chunks:
                parsed = self._parse(con, chunk)
                rejected = pc.is_valid(parsed["reason"])
                bad = parsed.filter(rejected)
                good = parsed.filter(pc.invert(rejected))
                for index, count in zip(*_counts(parsed["file_idx"]), strict=True):
                    self.records[index] += count
                for index, count in zip(*_counts(bad["file_idx"]), strict=True):
                    self.quarantined[index] += count
                if bad.num_rows:
                    self.quarantine.append(self._quarantine_rows(bad))
                    for index, reason in zip(
                        bad["file_idx"].to_pylist(), bad["reason"].to_pylist(), strict=True
                    ):
                        if len(self.reasons[index]) < REASONS_SHOWN and reason not in self.reasons[index]:
                            self.reasons[index].append(reason)
                if good.num_rows:
                    yield from self._bronze_rows(good).to_batches()

    def _parse(self, con: duckdb.DuckDBPyConnection, chunk: pa.Table) -> pa.Table:
        lines = chunk["line"].combine_chunks()
        invalid_utf8: list[int] = []
        try:
            text = lines.cast(pa.large_string())
        except pa.ArrowInvalid:  # rare: decode line by line, and quarantine the lines that are not UTF-8
            decoded = []
            for row, raw in enumerate(lines.to_pylist()):
                try:
                    decoded.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    decoded.append(raw.decode("utf-8", "backslashreplace"))
                    invalid_utf8.append(row)
            text = pa.array(decoded, pa.large_string())
        rows = pa.array(range(chunk.num_rows), pa.int64())
        con.register(
            "chunk",
            pa.table(
                {"row_id": rows, "file_idx": chunk["file_idx"], "line_no": chunk["line_no"], "line": text}
            ),
        )
        try:
            parsed = con.sql(self.sql).to_arrow_table().sort_by("row_id")
        finally:
            con.unregister("chunk")
        parsed = self.feed.check_parsed(con, parsed)
        if invalid_utf8:
            mask = pc.is_in(parsed["row_id"], pa.array(invalid_utf8, pa.int64()))
            reason = pc.if_else(mask, pa.scalar("invalid UTF-8"), parsed["reason"])
            parsed = parsed.set_column(parsed.schema.get_field_index("reason"), "reason", reason)
        return parsed

    def _metadata(self, rows: pa.Table) -> dict[str, pa.Array]:
        n = rows.num_rows
        file_idx = rows["file_idx"]
        columns = {
            "_source_file": pc.take(self._paths, file_idx),
            "_line": rows["line_no"],
            "_batch_seq": pa.repeat(self.seq, n),
            "_batch_id": pa.repeat(f"{self.contract.feed_id}:{self.seq:06d}", n),
            "_ingested_at": pa.repeat(pa.scalar(self.ingested_at, pa.timestamp("us", tz="UTC")), n),
            "_ingest_date": pa.repeat(pa.scalar(self.ingested_at.date(), pa.date32()), n),
        }
        columns["raw"] = rows[
            "line"
        ]  # the line as it arrived; the parsed columns beside it are for convenience
        columns.update(self.feed.bronze_columns(self.files, rows))
        return columns

    def _bronze_rows(self, good: pa.Table) -> pa.Table:
        columns = self._metadata(good)
        return pa.table(
            [columns[f.name] if f.name in columns else good[f.name] for f in self.schema], schema=self.schema
        )

    def _quarantine_rows(self, bad: pa.Table) -> pa.Table:
        n = bad.num_rows
        return pa.table(
            [
                pa.repeat(self.contract.feed_id, n),
                pc.take(self._paths, bad["file_idx"]),
                bad["line_no"],
                bad["line"].cast(pa.string()),
                bad["reason"].cast(pa.string()),
                pa.repeat(self.seq, n),
                pa.repeat(pa.scalar(self.ingested_at, pa.timestamp("us", tz="UTC")), n),
            ],
            schema=QUARANTINE_SCHEMA,
        )


def append_batch(
    settings: Settings, parser: BatchParser, app_id: str, chunks: Iterable[pa.Table] | None = None
) -> None:
    """Append the valid records of ``parser``'s batch (read from its files, or from ``chunks``) to the feed's
    bronze table in one commit that records ``(app_id, batch number)``; when that commit exists already, only
    read them, for the quarantine rows and counts."""
    target, options = bronze_uri(settings, parser.contract), settings.storage_options
    if delta.applied_version(target, app_id, options) >= parser.seq:
        for _ in parser.batches(chunks):
            pass
        return
    delta.append(
        target,
        pa.RecordBatchReader.from_batches(parser.schema, parser.batches(chunks)),
        storage_options=options,
        partition_by=["_ingest_date"],
        app_id=app_id,
        version=parser.seq,
        configuration=delta.stats_only(BRONZE_STATS_COLUMNS),
        writer_properties=delta.RAW_RECORDS,
    )


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of ``items``, each next one produced in a background thread while the caller works on the
    current one (decompression and Arrow release the GIL); an error of ``items`` is raised to the caller."""
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        following = pool.submit(next, items, done)
        while (item := following.result()) is not done:
            following = pool.submit(next, items, done)
            yield item


def _counts(file_idx: pa.ChunkedArray) -> tuple[list[int], list[int]]:
    """(file index, rows) pairs of a column of file indexes."""
    counted = pc.value_counts(file_idx)
    return counted.field("values").to_pylist(), counted.field("counts").to_pylist()


def _run_batch(
    settings: Settings,
    contract: Contract,
    ledger: Ledger,
    seq: int,
    files: list[LandedFile],
    report: IngestReport,
    chunk_bytes: int,
) -> None:
    options = settings.storage_options
    app_id = f"ingest:{contract.feed_id}"
    quarantine = quarantine_uri(settings)
    parser = BatchParser(settings, contract, seq, files, chunk_bytes)
    append_batch(settings, parser, app_id)
    crash_point("ingest:after_bronze")
    if parser.quarantine and delta.applied_version(quarantine, app_id, options) < seq:
        delta.append(
            quarantine,
            pa.concat_tables(parser.quarantine),
            storage_options=options,
            partition_by=["feed_id"],
            app_id=app_id,
            version=seq,
            configuration=delta.stats_only(QUARANTINE_STATS_COLUMNS),
            writer_properties=delta.RAW_RECORDS,
        )
    crash_point("ingest:after_quarantine")
    ledger.commit(contract.feed_id, seq, parser.counts)
    report.batches += 1
    report.files += len(files)
    for _, counts in parser.counts:
        report.records += counts.records
        report.bronze_rows += counts.bronze_rows
        report.quarantined += counts.quarantined
    report.rejections.extend(parser.rejections)


def landed_bytes(landing: str, file: LandedFile) -> int:
    """A landed file's size once decompressed: for a gzipped file the size its gzip trailer records (ISIZE, of
    its last member, modulo 4 GiB), and never less than its stored size."""
    if not file.compressed or file.size < 4:
        return file.size
    fs, base = landing_filesystem(landing)
    with fs.open_input_file(f"{base.rstrip('/')}/{file.relpath}") as stream:
        trailer = stream.read_at(4, file.size - 4)
    return max(file.size, int.from_bytes(trailer, "little"))


def _plan_batches(
    landing: str, files: list[LandedFile], max_files: int, max_bytes: int
) -> list[list[LandedFile]]:
    """Consecutive files grouped into batches of at most ``max_files`` files and ``max_bytes`` uncompressed
    bytes (a larger file is a batch of its own)."""
    batches: list[list[LandedFile]] = []
    size = 0
    for file in files:
        file_bytes = landed_bytes(landing, file)
        if not batches or len(batches[-1]) >= max_files or size + file_bytes > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(file)
        size += file_bytes
    return batches


def ingest(
    settings: Settings,
    contract: Contract,
    *,
    max_files_per_batch: int = MAX_FILES_PER_BATCH,
    max_batch_bytes: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> IngestReport:
    """Take every landed file of ``contract``'s feed that is not in the ledger yet into bronze (and
    quarantine), in batches of at most ``max_batch_bytes`` uncompressed bytes (default
    ``settings.batch_bytes``), first finishing a batch that an earlier run left open. Safe to run again at any
    time."""
    started = time.perf_counter()
    report = IngestReport(contract.feed_id)
    ledger = Ledger(ledger_uri(settings), settings.storage_options)
    state = ledger.state(contract.feed_id)
    seq = state.next_seq
    if state.open_batch is not None:
        open_seq, open_files = state.open_batch
        _run_batch(settings, contract, ledger, open_seq, open_files, report, chunk_bytes)
        state = ledger.state(contract.feed_id)
        seq = state.next_seq
    landed, report.unrecognised_files = feed_of(contract).survey(settings.landing)
    pending = [f for f in landed if f.relpath not in state.done]
    report.changed_files = [
        f.relpath for f in landed if state.done.get(f.relpath, (f.size, f.mtime_ns)) != (f.size, f.mtime_ns)
    ]
    pending.sort(key=arrival_order)
    batch_bytes = max_batch_bytes or settings.batch_bytes
    for files in _plan_batches(settings.landing, pending, max_files_per_batch, batch_bytes):
        ledger.plan(contract.feed_id, seq, files)
        crash_point("ingest:after_plan")
        _run_batch(settings, contract, ledger, seq, files, report, chunk_bytes)
        seq += 1
    report.seconds = time.perf_counter() - started
    return report
