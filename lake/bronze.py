"""Landing to bronze: every landed file taken in exactly once, valid records appended, the rest quarantined.

For each feed (a CDC topic or the clickstream) the pending files are grouped into batches. A batch is planned
in the ledger first; its valid records are then streamed chunk by chunk into the bronze table in one Delta
commit, its rejected records appended to the quarantine table in one commit, and the ledger closed. Both
commits carry the application transaction ``(ingest:<feed>, batch number)``, so a batch resumed after a
crash skips what was already committed and writes what was not: nothing is duplicated, nothing is lost.

Parsing and validation run in DuckDB over Arrow chunks of raw lines (``json_valid``, ``json_transform``
and the SQL that :func:`data_contracts.violation_sql` derives from the feed's contract and, for a change
event, from the schema envelope it carries).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from gzip import BadGzipFile

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from isal import isal_zlib

from data_contracts import Contract, key_violation_sql, violation_sql
from lake import delta
from lake.faults import crash_point
from lake.landing import (
    CHUNK_BYTES,
    CLICKSTREAM_FEED,
    LandedFile,
    landing_filesystem,
    read_line_chunks,
    survey,
)
from lake.ledger import FileCounts, Ledger
from lake.settings import Settings

MAX_FILES_PER_BATCH = 5_000
REASONS_SHOWN = 3

METADATA_FIELDS = [
    ("_source_file", pa.string()),
    ("_line", pa.int64()),
    ("_batch_seq", pa.int64()),
    ("_batch_id", pa.string()),
    ("_ingested_at", pa.timestamp("us", tz="UTC")),
    ("_ingest_date", pa.date32()),
]
CDC_SCHEMA = pa.schema(
    [
        ("raw", pa.string()),
        ("op", pa.string()),
        ("is_tombstone", pa.bool_()),
        ("before", pa.string()),
        ("after", pa.string()),
        ("source", pa.string()),
        ("transaction", pa.string()),
        ("value_schema", pa.string()),
        ("ts_ms", pa.int64()),
        ("source_ts_ms", pa.int64()),
        ("source_lsn", pa.int64()),
        ("source_binlog_file", pa.string()),
        ("source_binlog_pos", pa.int64()),
        ("source_binlog_row", pa.int64()),
        ("source_snapshot", pa.string()),
        ("source_tx_id", pa.int64()),
        ("_kafka_partition", pa.int64()),
        ("_kafka_offset", pa.int64()),
        *METADATA_FIELDS,
    ]
)
CLICKSTREAM_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("type", pa.string()),
        ("event", pa.string()),
        ("anonymous_id", pa.string()),
        ("user_id", pa.string()),
        ("received_at", pa.string()),
        ("source", pa.string()),
        ("raw", pa.string()),
        *METADATA_FIELDS,
    ]
)
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
"""Columns of a bronze table with file statistics: ingestion metadata only, never the raw record or its fields."""
QUARANTINE_STATS_COLUMNS = ("feed_id", "batch_seq", "line", "quarantined_at")

# Lines that cannot be parsed at all; the main query only sees JSON objects (and, for CDC, tombstones).
PARSE_ERRORS_SQL = """
    select row_id, file_idx, line_no, line,
        case when trim(line) = '' then 'empty line'
             when trim(line) = 'null' and $tombstones then null
             when not json_valid(line) then 'invalid JSON'
             when json_type(line) <> 'OBJECT' then 'not a JSON object' end as reason
    from chunk
"""

CDC_SQL = """
with classified as ({parse_errors}),
ok as (select row_id, file_idx, line_no, line from classified where reason is null and trim(line) <> 'null'),
envelope as (
    select row_id, file_idx, line_no, line, json_transform(line, '{{"schema": "JSON", "payload": "JSON"}}') as e from ok
),
unwrapped as (
    select row_id, file_idx, line_no, line,
        case when e.schema is not null and e.payload is not null then e.payload else line end as payload,
        case when e.schema is not null and e.payload is not null then e.schema end as schema
    from envelope
),
fields as (
    select row_id, file_idx, line_no, line, schema,
        json_transform(payload, '{{"op": "VARCHAR", "before": "JSON", "after": "JSON", "source": "JSON",
                                   "transaction": "JSON", "ts_ms": "BIGINT"}}') as p
    from unwrapped
),
positioned as (
    select *, json_transform(p.source, '{{"lsn": "BIGINT", "file": "VARCHAR", "pos": "BIGINT", "row": "BIGINT",
                                          "ts_ms": "BIGINT", "snapshot": "VARCHAR", "txId": "BIGINT"}}') as s
    from fields
)
select row_id, file_idx, line_no, line, false as is_tombstone,
    p.op, p.before::varchar as before, p.after::varchar as after, p.source::varchar as source,
    p.transaction::varchar as transaction,
    list_filter(json_extract(schema, '$.fields[*]'), lambda f: f->>'field' = 'after')[1]::varchar as value_schema,
    p.ts_ms, s.ts_ms as source_ts_ms, s.lsn as source_lsn, s.file as source_binlog_file,
    s.pos as source_binlog_pos, s.row as source_binlog_row, s.snapshot as source_snapshot, s.txId as source_tx_id,
    case when p.op is null then 'missing op'
         when p.op not in ('c', 'u', 'd', 'r', 't') then 'unknown op ' || p.op
         when p.source is null then 'missing source block'
         when {position_missing} then 'missing log position ({position_fields})'
         when p.op in ('c', 'u', 'r') and p.after is null then 'op ' || p.op || ' without after image'
         when p.op = 'd' and p.before is null then 'delete without before image'
    end as reason
from positioned
union all
select row_id, file_idx, line_no, line, true, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null
from classified where reason is null and trim(line) = 'null'
union all
select row_id, file_idx, line_no, line, false, null, null, null, null, null, null, null, null, null, null, null, null, null, null, reason
from classified where reason is not null
"""

CLICKSTREAM_SQL = """
with classified as ({parse_errors}),
ok as (
    select row_id, file_idx, line_no, line,
        json_transform(line, '{{"messageId": "VARCHAR", "type": "VARCHAR", "event": "VARCHAR",
                                "anonymousId": "VARCHAR", "userId": "VARCHAR", "receivedAt": "VARCHAR"}}') as m
    from classified where reason is null
)
select row_id, file_idx, line_no, line, m.messageId as message_id, m.type, m.event, m.anonymousId as anonymous_id,
    m.userId as user_id, m.receivedAt as received_at, {violation} as reason
from ok
union all
select row_id, file_idx, line_no, line, null, null, null, null, null, null, reason from classified where reason is not null
"""

IMAGE_SQL = """
with keyed as (
    select p.row_id, p.op, p.before, p.after, s.schema_idx
    from parsed p join schemas s on coalesce(p.value_schema, '') = s.value_schema
    where p.reason is null and p.op in ('c', 'u', 'r', 'd')
),
checked as ({checks})
select p.* replace (coalesce(p.reason, c.image_reason) as reason)
from parsed p left join checked c using (row_id)
order by row_id
"""
"""The row images of the change events that passed :data:`CDC_SQL`, checked against the contract with the
encodings of their own schema envelope (``schemas`` lists the chunk's distinct ones)."""
IMAGE_CHECK = """select row_id, case when op = 'd' then {key_violation} else {after_violation} end as image_reason
    from keyed where schema_idx = {index}"""

POSITION_CHECKS = {
    "postgresql": ("s.lsn is null", "source.lsn"),
    "mysql": ("s.file is null or s.pos is null", "source.file, source.pos"),
    None: ("s.lsn is null and (s.file is null or s.pos is null)", "source.lsn or source.file and pos"),
}


def parse_sql(contract: Contract) -> str:
    """The DuckDB query that splits a chunk of raw lines (table ``chunk(row_id, file_idx, line_no, line)``) of this feed into
    bronze columns and a ``reason`` that is NULL for valid records."""
    if contract.feed == CLICKSTREAM_FEED:
        return CLICKSTREAM_SQL.format(
            parse_errors=PARSE_ERRORS_SQL.replace("$tombstones", "false"),
            violation=violation_sql(contract, "line"),
        )
    position_missing, position_fields = POSITION_CHECKS.get(contract.connector, POSITION_CHECKS[None])
    return CDC_SQL.format(
        parse_errors=PARSE_ERRORS_SQL.replace("$tombstones", "true"),
        position_missing=position_missing,
        position_fields=position_fields,
    )


def check_images(con: duckdb.DuckDBPyConnection, contract: Contract, parsed: pa.Table) -> pa.Table:
    """``parsed`` (the result of the CDC :func:`parse_sql`) with the reason of every change event whose row
    image breaks the contract: the ``after`` image of creates, updates and reads, the key of a delete's
    ``before``, each read with the encodings its own schema envelope gives (one rule with decoding, see
    :func:`data_contracts.wire.field_encodings`)."""
    pending = pc.and_(pc.is_null(parsed["reason"]), pc.is_in(parsed["op"], pa.array(["c", "u", "r", "d"])))
    schemas = pc.unique(pc.fill_null(parsed.filter(pending)["value_schema"], "")).to_pylist()
    if not schemas:
        return parsed
    checks = [
        IMAGE_CHECK.format(
            index=index,
            key_violation=key_violation_sql(contract, "before", schema or None),
            after_violation=violation_sql(contract, "after", schema or None),
        )
        for index, schema in enumerate(schemas)
    ]
    con.register("parsed", parsed)
    con.register("schemas", pa.table({"schema_idx": range(len(schemas)), "value_schema": schemas}))
    try:
        return con.sql(IMAGE_SQL.format(checks="\nunion all\n".join(checks))).to_arrow_table()
    finally:
        con.unregister("parsed")
        con.unregister("schemas")


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
    """Where a feed's bronze table lives: ``bronze/cdc/<topic>`` or ``bronze/clickstream/events``."""
    if contract.feed == CLICKSTREAM_FEED:
        return delta.table_uri(settings, "bronze", "clickstream", "events")
    return delta.table_uri(settings, "bronze", "cdc", contract.feed_id)


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
        self.schema = CLICKSTREAM_SCHEMA if contract.feed == CLICKSTREAM_FEED else CDC_SCHEMA
        self.sql = parse_sql(contract)
        self.ingested_at = datetime.now(UTC)
        self.quarantine: list[pa.Table] = []
        self.records = [0] * len(files)
        self.quarantined = [0] * len(files)
        self.reasons: list[list[str]] = [[] for _ in files]
        self.unreadable = [False] * len(files)
        self._paths = pa.array([f.relpath for f in files], pa.string())
        self._sources = pa.array([f.clickstream_source for f in files], pa.string())
        self._partitions = pa.array([f.kafka_partition for f in files], pa.int64())
        self._start_offsets = pa.array([f.kafka_start_offset for f in files], pa.int64())

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

    def _chunks(self) -> Iterator[pa.Table]:
        pending: list[pa.Table] = []
        size = 0
        for index, file in enumerate(self.files):
            next_line = 1
            try:
                for first_line, lines in read_line_chunks(self.settings.landing, file, self.chunk_bytes):
                    pending.append(
                        pa.table(
                            {
                                "file_idx": pa.repeat(pa.scalar(index, pa.int32()), len(lines)),
                                "line_no": pa.array(range(first_line, first_line + len(lines)), pa.int64()),
                                "line": lines,
                            }
                        )
                    )
                    next_line = first_line + len(lines)
                    size += lines.nbytes
                    if size >= self.chunk_bytes:
                        yield pa.concat_tables(pending)
                        pending, size = [], 0
            except (
                EOFError,
                BadGzipFile,
                isal_zlib.error,
            ) as error:  # a truncated or corrupt file (not an I/O error)
                self._unreadable(index, next_line, error)
        if pending:
            yield pa.concat_tables(pending)

    def _unreadable(self, index: int, line: int, error: Exception) -> None:
        """Quarantine the rest of a file that cannot be read past ``line`` (one record, with the error); the file
        is then rejected whatever its other counts."""
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
        if self.contract.feed != CLICKSTREAM_FEED:
            parsed = check_images(con, self.contract, parsed)
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
        if self.contract.feed == CLICKSTREAM_FEED:
            columns["source"] = pc.take(self._sources, file_idx)
        else:
            columns["_kafka_partition"] = pc.take(self._partitions, file_idx)
            columns["_kafka_offset"] = pc.add(
                pc.subtract(rows["line_no"], 1), pc.take(self._start_offsets, file_idx)
            )
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
    target, quarantine = bronze_uri(settings, contract), quarantine_uri(settings)
    parser = BatchParser(settings, contract, seq, files, chunk_bytes)
    if delta.applied_version(target, app_id, options) >= seq:
        for _ in parser.batches():  # already committed: only the quarantine rows and counts are needed
            pass
    else:
        reader = pa.RecordBatchReader.from_batches(parser.schema, parser.batches())
        delta.append(
            target,
            reader,
            storage_options=options,
            partition_by=["_ingest_date"],
            app_id=app_id,
            version=seq,
            configuration=delta.stats_only(BRONZE_STATS_COLUMNS),
        )
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


def pending_steps(bronze: pl.LazyFrame, applied: int, max_rows: int) -> list[tuple[int, int]]:
    """The bronze batches after ``applied`` as ranges ``(after, up to and including)`` of at most ``max_rows``
    rows each (a single larger batch is a range of its own), for consumers that apply bronze incrementally."""
    sizes = (
        bronze.filter(pl.col("_batch_seq") > applied)
        .group_by("_batch_seq")
        .len()
        .sort("_batch_seq")
        .collect()
    )
    steps, low, upto, rows = [], applied, applied, 0
    for seq, count in sizes.iter_rows():
        if rows and rows + count > max_rows:
            steps.append((low, upto))
            low, rows = upto, 0
        upto, rows = seq, rows + count
    if rows:
        steps.append((low, upto))
    return steps


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
    """Consecutive files grouped into batches of at most ``max_files`` files and ``max_bytes`` uncompressed bytes
    (a larger file is a batch of its own)."""
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
    """Take every landed file of ``contract``'s feed that is not in the ledger yet into bronze (and quarantine),
    in batches of at most ``max_batch_bytes`` uncompressed bytes (default ``settings.batch_bytes``), first
    finishing a batch that an earlier run left open. Safe to run again at any time."""
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
    landed, report.unrecognised_files = survey(settings.landing, contract.feed_id)
    pending = [f for f in landed if f.relpath not in state.done]
    report.changed_files = [
        f.relpath for f in landed if state.done.get(f.relpath, (f.size, f.mtime_ns)) != (f.size, f.mtime_ns)
    ]
    pending.sort(key=lambda f: (f.mtime_ns, f.relpath))
    batch_bytes = max_batch_bytes or settings.batch_bytes
    for files in _plan_batches(settings.landing, pending, max_files_per_batch, batch_bytes):
        ledger.plan(contract.feed_id, seq, files)
        crash_point("ingest:after_plan")
        _run_batch(settings, contract, ledger, seq, files, report, chunk_bytes)
        seq += 1
    report.seconds = time.perf_counter() - started
    return report
