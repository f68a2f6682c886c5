"""Change data capture feeds: Debezium change events of one source table, applied as its current state and
its history (:mod:`lake.cdc`).

Bronze keeps each event's envelope fields (operation, row images, source block, log position) beside the raw
line; an event is quarantined when its envelope is incomplete or its row image breaks the contract, read with
the encodings of the schema envelope it carries (one rule with decoding, see
:func:`data_contracts.wire.field_encodings`).
"""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from data_contracts import Contract, key_violation_sql, violation_sql
from lake import cdc
from lake.feeds.base import METADATA_FIELDS, Feed, SilverTable, parse_errors_sql
from lake.landing import LandedFile
from lake.settings import Settings

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

CDC_SQL = """
with classified as ({parse_errors}),
ok as (select row_id, file_idx, line_no, line from classified where is_object),
envelope as (
    select row_id, file_idx, line_no, line,
        json_transform(line, '{{"schema": "JSON", "payload": "JSON"}}') as e
    from ok
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
    select *, json_transform(p.source, '{{"lsn": "BIGINT", "file": "VARCHAR", "pos": "BIGINT",
                                          "row": "BIGINT", "ts_ms": "BIGINT", "snapshot": "VARCHAR",
                                          "txId": "BIGINT"}}') as s
    from fields
)
select row_id, file_idx, line_no, line, false as is_tombstone,
    p.op, p.before::varchar as before, p.after::varchar as after, p.source::varchar as source,
    p.transaction::varchar as transaction,
    list_filter(json_extract(schema, '$.fields[*]'), lambda f: f->>'field' = 'after')[1]::varchar
        as value_schema,
    p.ts_ms, s.ts_ms as source_ts_ms, s.lsn as source_lsn, s.file as source_binlog_file,
    s.pos as source_binlog_pos, s.row as source_binlog_row, s.snapshot as source_snapshot,
    s.txId as source_tx_id,
    case when p.op is null then 'missing op'
         when p.op not in ('c', 'u', 'd', 'r', 't') then 'unknown op ' || p.op
         when p.source is null then 'missing source block'
         when {position_missing} then 'missing log position ({position_fields})'
         when p.op in ('c', 'u', 'r') and p.after is null then 'op ' || p.op || ' without after image'
         when p.op = 'd' and p.before is null then 'delete without before image'
    end as reason
from positioned
union all
select row_id, file_idx, line_no, line, true,
    null, null, null, null, null, null, null, null, null, null, null, null, null, null, null
from classified where reason is null and not is_object
union all
select row_id, file_idx, line_no, line, false,
    null, null, null, null, null, null, null, null, null, null, null, null, null, null, reason
from classified where reason is not null
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
IMAGE_CHECK = """select row_id,
        case when op = 'd' then {key_violation} else {after_violation} end as image_reason
    from keyed where schema_idx = {index}"""

POSITION_CHECKS = {
    "postgresql": ("s.lsn is null", "source.lsn"),
    "mysql": ("s.file is null or s.pos is null", "source.file, source.pos"),
    None: ("s.lsn is null and (s.file is null or s.pos is null)", "source.lsn or source.file and pos"),
}

CDC_COLUMNS = {
    "_op": "Debezium operation of the change that made this version: c (insert), u (update), "
    "r (snapshot read) or d (delete).",
    "_log_file": "Position of the change in the source's log: the MySQL binlog file (empty for PostgreSQL).",
    "_log_pos": "Position of the change in the source's log: the PostgreSQL LSN or the MySQL binlog "
    "position.",
    "_log_row": "Position of the change in the source's log: the row within a MySQL binlog event (0 for "
    "PostgreSQL).",
}
CURRENT_COLUMNS = {
    "_changed_at": "When the source committed the change that made this version (UTC).",
}
HISTORY_COLUMNS = {
    "_valid_from": "Start of the version's validity (inclusive, UTC).",
    "_valid_to": "End of the version's validity (exclusive, UTC); null for the latest version.",
}


def check_images(con: duckdb.DuckDBPyConnection, contract: Contract, parsed: pa.Table) -> pa.Table:
    """``parsed`` (the result of :data:`CDC_SQL`) with the reason of every change event whose row image breaks
    the contract: the ``after`` image of creates, updates and reads, the key of a delete's ``before``, each
    read with the encodings its own schema envelope gives (one rule with decoding, see
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


class CdcFeed(Feed):
    """Debezium change events of one source table (one Kafka topic): current state and history in silver."""

    kind = "cdc"
    bronze_schema = CDC_SCHEMA

    @property
    def landing_folder(self) -> str:
        """``cdc/<topic>``, as the Kafka Connect and Debezium Server sinks write it."""
        return f"cdc/{self.feed_id}"

    @property
    def silver(self) -> tuple[SilverTable, ...]:
        """The current state (one row per live key) and the history (every version, with its interval)."""
        c = self.contract
        key = tuple(c.primary_key)
        return (
            SilverTable(
                c.source_system,
                c.name,
                key,
                f"Current state of `{c.feed_id}`: the latest change per key by log position, deletes "
                "applied, personal data tokenised.",
            ),
            SilverTable(
                c.source_system,
                f"{c.name}_history",
                (*key, *cdc.POSITION),
                f"Every version of every row of `{c.feed_id}` with its validity interval "
                "[_valid_from, _valid_to): the table's state as of any past time.",
                history=True,
            ),
        )

    def bronze_uri(self, settings: Settings) -> str:
        """``bronze/cdc/<topic>``."""
        return cdc.bronze_uri(settings, self.contract)

    def parse_sql(self) -> str:
        """The envelope's fields, and why an envelope is incomplete (per the connector's log position)."""
        position_missing, position_fields = POSITION_CHECKS.get(
            self.contract.connector, POSITION_CHECKS[None]
        )
        return CDC_SQL.format(
            parse_errors=parse_errors_sql(tombstones=True),
            position_missing=position_missing,
            position_fields=position_fields,
        )

    def check_parsed(self, con: duckdb.DuckDBPyConnection, parsed: pa.Table) -> pa.Table:
        """The row images checked against the contract (:func:`check_images`)."""
        return check_images(con, self.contract, parsed)

    def bronze_columns(self, files: list[LandedFile], rows: pa.Table) -> dict[str, pa.Array]:
        """The Kafka partition and offset of each record, from its file's name and its line."""
        partitions = pa.array([f.kafka_partition for f in files], pa.int64())
        starts = pa.array([f.kafka_start_offset for f in files], pa.int64())
        return {
            "_kafka_partition": pc.take(partitions, rows["file_idx"]),
            "_kafka_offset": pc.add(pc.subtract(rows["line_no"], 1), pc.take(starts, rows["file_idx"])),
        }

    def apply(self, settings: Settings) -> cdc.ApplyReport:
        """The CDC apply (:func:`lake.cdc.apply`)."""
        return cdc.apply(settings, self.contract)

    def watermark(self, settings: Settings) -> int:
        """The last bronze batch both silver tables have applied."""
        return cdc.watermark(settings, self.contract)

    def summary(self, report: cdc.ApplyReport) -> str:
        """Changes, upserts and deletes."""
        return (
            f"{report.changes:,} changes, {report.current_upserts:,} upserts, "
            f"{report.current_deletes:,} deletes"
        )

    def apply_metadata(self, report: cdc.ApplyReport) -> list[dict[str, int]]:
        """Changes applied to the current state; rows merged into the history."""
        return [
            {
                "changes_applied": report.changes,
                "replayed_changes_dropped": report.replayed,
                "upserts": report.current_upserts,
                "deletes": report.current_deletes,
                "truncates": report.truncates,
                "last_bronze_batch": report.applied_batch,
            },
            {"rows_merged": report.history_rows_merged},
        ]

    def empty_silver(self, table: SilverTable, settings: Settings) -> pl.DataFrame:
        """A source table can stay empty for a long time (the CRM's recommendations before the first sync):
        its views exist from the start, typed, so that ``dbt build`` and its source tests run."""
        return cdc.empty_silver(self.contract, settings.pii_secret, table.history)

    def source_doc(self, table: SilverTable, subject: str) -> tuple[str, str, dict[str, str]]:
        """Current state or history, with the change and interval columns."""
        if table.history:
            return (
                f"Every version of {subject}, with its validity interval (feed `{self.feed_id}`).",
                "_valid_from",
                {**CDC_COLUMNS, **HISTORY_COLUMNS},
            )
        return (
            f"Current state of {subject}; deletes applied, personal data tokenised (feed `{self.feed_id}`).",
            "_changed_at",
            {**CDC_COLUMNS, **CURRENT_COLUMNS},
        )
