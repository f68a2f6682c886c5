"""Append-only event feeds: JSON objects, one per line, that only ever add rows (such as page views).

A contract with ``feed: events`` lands its files under ``<feed id>/`` (``events/`` here: the feed id of a
contract without a topic is its kind). Bronze keeps the raw line; a line that is no JSON object or breaks the
contract is quarantined. Silver is one table, ``silver/<sourceSystem>/<schema name>``, holding each event
once: rows are deduplicated on the contract's primary key (the first delivery by bronze batch, file and line
wins, later ones are dropped), typed as the contract says and with personal data protected. The event time is
the column the contract's ``freshness`` SLA names as its ``element``; the report gives its watermark (the
latest event time in silver) and how many events arrived behind the previous one (late events, kept). Each
step of bronze batches is appended in one commit with the application transaction ``(events-apply:<feed>,
batch)``, so a re-run skips what was applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl
import pyarrow as pa

from data_contracts import violation_sql
from lake import delta
from lake.feeds.base import METADATA_FIELDS, Feed, SilverTable, parse_errors_sql, pending_steps
from lake.privacy import protect
from lake.settings import Settings
from lake.suppression import screen

EVENTS_SQL = """
with classified as ({parse_errors})
select row_id, file_idx, line_no, line, {violation} as reason from classified where reason is null
union all
select row_id, file_idx, line_no, line, reason from classified where reason is not null
"""
DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "object": "JSON",
    "array": "JSON",
}
"""The DuckDB type a contract column's logical type is read as from the raw JSON (JSON kept as text)."""
ARRIVAL = ["_batch_seq", "_source_file", "_line"]
"""The order of arrival: of several deliveries of one event, silver keeps the first."""


@dataclass
class EventsReport:
    """What one apply run of an append-only event feed did."""

    feed_id: str
    bronze_rows: int = 0
    inserted: int = 0
    duplicates: int = 0
    """Deliveries dropped: later copies of an event met in this run or already in silver."""
    late: int = 0
    """Events inserted with an event time before the watermark silver had when their step began."""
    suppressed: int = 0
    """Events of erased persons (suppression list) dropped."""
    event_watermark: datetime | None = None
    """The latest event time in silver after the run."""
    applied_batch: int = 0
    seconds: float = 0.0


class EventsFeed(Feed):
    """An append-only event table: one silver row per primary key, appended in order of arrival."""

    kind = "events"
    bronze_schema = pa.schema([("raw", pa.string()), *METADATA_FIELDS])

    @property
    def event_time(self) -> str:
        """The event-time column: the ``element`` (``<table>.<column>``) of the ``freshness`` SLA."""
        element = (self.contract.sla.get("freshness") or {}).get("element")
        if not element:
            raise ValueError(f"{self.contract.path.name}: no freshness SLA element names the event time")
        return str(element).rsplit(".", 1)[-1]

    @property
    def app_id(self) -> str:
        """The application id of the silver appends."""
        return f"events-apply:{self.feed_id}"

    @property
    def silver(self) -> tuple[SilverTable, ...]:
        """The events, once each."""
        c = self.contract
        return (
            SilverTable(
                c.source_system,
                c.name,
                tuple(c.primary_key),
                f"Events of `{c.feed_id}`, one row per {', '.join(c.primary_key)} (its first delivery), "
                "typed, personal data protected.",
            ),
        )

    def parse_sql(self) -> str:
        """Valid JSON objects that satisfy the contract; the reason of the others."""
        return EVENTS_SQL.format(
            parse_errors=parse_errors_sql(tombstones=False), violation=violation_sql(self.contract, "line")
        )

    def typed(self, bronze: pl.DataFrame, settings: Settings) -> pl.DataFrame:
        """Bronze rows (``raw``, :data:`ARRIVAL`) as the contract's typed columns, personal data protected."""
        fields = ", ".join(
            f"try_cast(json_extract_string(raw, '$.\"{c.name}\"') as {DUCKDB_TYPES[c.logical_type]}) "
            f'as "{c.name}"'
            for c in self.contract.columns
        )
        with duckdb.connect(config=settings.duckdb_config()) as con:
            con.execute("SET TimeZone = 'UTC'")
            con.register("bronze", bronze.to_arrow())
            typed = pl.from_arrow(
                con.sql(f"select {fields}, {', '.join(ARRIVAL)} from bronze").to_arrow_table()
            )
        stamps = [c.name for c in self.contract.columns if c.logical_type == "timestamp"]
        typed = typed.with_columns(pl.col(stamps).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        return protect(typed, {c.name: c.pii for c in self.contract.pii_columns}, settings.pii_secret)

    def _append_step(self, settings: Settings, bronze: pl.DataFrame, upto: int, report: EventsReport) -> None:
        """Append the first delivery of every event of ``bronze`` that silver does not hold yet."""
        uri, options = self.silver[0].uri(settings), settings.storage_options
        key = list(self.contract.primary_key)
        events, suppressed = screen(self.typed(bronze, settings), settings, kept=False)
        first = events.sort([*key, *ARRIVAL]).unique(key, keep="first", maintain_order=True)
        existing = delta.scan(uri, options)
        watermark = None
        if existing is not None:
            known = existing.select(key).filter(pl.col(key[0]).is_in(first[key[0]].implode())).collect()
            first = first.join(known, on=key, how="anti")
            watermark = existing.select(pl.col(self.event_time).max()).collect().item()
        first = first.sort(ARRIVAL)
        report.bronze_rows += bronze.height
        report.suppressed += suppressed
        report.duplicates += events.height - first.height
        report.inserted += first.height
        if watermark is not None:
            report.late += first.filter(pl.col(self.event_time) < watermark).height
        delta.append(
            uri,
            first.drop("_batch_seq").to_arrow(),
            storage_options=options,
            app_id=self.app_id,
            version=upto,
        )
        report.applied_batch = upto

    def apply(self, settings: Settings) -> EventsReport:
        """Append every bronze batch not applied yet to silver, in steps of at most
        ``settings.apply_step_rows`` bronze rows (whole batches). Safe to re-run."""
        started = time.perf_counter()
        report = EventsReport(self.feed_id)
        bronze = delta.scan(self.bronze_uri(settings), settings.storage_options)
        if bronze is not None:
            for low, upto in pending_steps(bronze, self.watermark(settings), settings.apply_step_rows):
                rows = bronze.filter((pl.col("_batch_seq") > low) & (pl.col("_batch_seq") <= upto))
                self._append_step(settings, rows.select("raw", *ARRIVAL).collect(), upto, report)
        silver = delta.scan(self.silver[0].uri(settings), settings.storage_options)
        if silver is not None:
            report.event_watermark = silver.select(pl.col(self.event_time).max()).collect().item()
        report.seconds = time.perf_counter() - started
        return report

    def watermark(self, settings: Settings) -> int:
        """The last bronze batch appended to silver."""
        return delta.applied_version(self.silver[0].uri(settings), self.app_id, settings.storage_options)

    def summary(self, report: EventsReport) -> str:
        """Events inserted, duplicates dropped and late events."""
        return f"{report.inserted:,} events, {report.duplicates:,} duplicates dropped, {report.late:,} late"

    def apply_metadata(self, report: EventsReport) -> list[dict[str, int | str]]:
        """Events inserted, duplicates dropped, late events and the event-time watermark."""
        return [
            {
                "events_inserted": report.inserted,
                "duplicates_dropped": report.duplicates,
                "late_events": report.late,
                "event_watermark": str(report.event_watermark),
                "last_bronze_batch": report.applied_batch,
            }
        ]

    def source_doc(self, table: SilverTable, subject: str) -> tuple[str, str, dict[str, str]]:
        """The events, loaded at their event time, with where each came from."""
        return (
            f"{subject}: one row per {', '.join(table.key)}, personal data protected "
            f"(feed `{self.feed_id}`).",
            self.event_time,
            {
                "_source_file": "The landing file the event was first delivered in.",
                "_line": "Its line in that file.",
            },
        )
