"""The clickstream feed: Segment messages from the object-store destination, one typed, deduplicated row per
message in silver (:mod:`lake.clickstream`).

Bronze keeps the Segment fields ingestion reads beside the raw line and the source folder (``web``, ``app``,
``server``) each file landed in; a message is quarantined when it breaks the contract or the Segment spec.
"""

from __future__ import annotations

import re

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from data_contracts import violation_sql
from data_contracts.segment import SEGMENT_NAMES
from lake import clickstream
from lake.feeds.base import METADATA_FIELDS, Feed, SilverTable, parse_errors_sql
from lake.landing import LandedFile
from lake.settings import Settings

CLICKSTREAM_FEED = "clickstream"
"""The kind, id and landing folder of the clickstream feed."""

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

CLICKSTREAM_SQL = """
with classified as ({parse_errors}),
ok as (
    select row_id, file_idx, line_no, line,
        json_transform(line, '{{"messageId": "VARCHAR", "type": "VARCHAR", "event": "VARCHAR",
                                "anonymousId": "VARCHAR", "userId": "VARCHAR",
                                "receivedAt": "VARCHAR"}}') as m
    from classified where reason is null
)
select row_id, file_idx, line_no, line, m.messageId as message_id, m.type, m.event,
    m.anonymousId as anonymous_id, m.userId as user_id, m.receivedAt as received_at, {violation} as reason
from ok
union all
select row_id, file_idx, line_no, line, null, null, null, null, null, null, reason
from classified where reason is not null
"""


class ClickstreamFeed(Feed):
    """Segment messages (track, page, screen, identify, alias, group): one silver row per ``messageId``."""

    kind = CLICKSTREAM_FEED
    bronze_schema = CLICKSTREAM_SCHEMA

    @property
    def silver(self) -> tuple[SilverTable, ...]:
        """``silver/clickstream/events``."""
        return (
            SilverTable(
                "clickstream",
                "events",
                tuple(clickstream.DEDUP_KEY),
                "Segment messages, one row per messageId, typed, with event time corrected for client clock "
                "skew and personal data tokenised; partitioned by event date.",
            ),
        )

    def bronze_uri(self, settings: Settings) -> str:
        """``bronze/clickstream/events``."""
        return clickstream.bronze_uri(settings)

    def parse_sql(self) -> str:
        """The Segment fields bronze keeps, and the contract's (and the Segment spec's) violations."""
        return CLICKSTREAM_SQL.format(
            parse_errors=parse_errors_sql(tombstones=False), violation=violation_sql(self.contract, "line")
        )

    def bronze_columns(self, files: list[LandedFile], rows: pa.Table) -> dict[str, pa.Array]:
        """The Segment source folder (``web``, ``app``, ``server``) of each record's file."""
        sources = [parts[1] if len(parts) > 2 else None for parts in (f.relpath.split("/") for f in files)]
        return {"source": pc.take(pa.array(sources, pa.string()), rows["file_idx"])}

    def apply(self, settings: Settings) -> clickstream.ClickstreamReport:
        """The clickstream clean-up (:func:`lake.clickstream.apply`)."""
        return clickstream.apply(settings, self.contract)

    def watermark(self, settings: Settings) -> int:
        """The last bronze batch the silver events table has applied."""
        return clickstream.watermark(settings)

    def summary(self, report: clickstream.ClickstreamReport) -> str:
        """Events inserted and duplicates dropped."""
        return f"{report.inserted:,} events, {report.duplicates:,} duplicates dropped"

    def apply_metadata(self, report: clickstream.ClickstreamReport) -> list[dict[str, int]]:
        """Events inserted, duplicates dropped, earlier deliveries that replaced a row."""
        return [
            {
                "events_inserted": report.inserted,
                "duplicates_dropped": report.duplicates,
                "earlier_deliveries_replaced": report.replaced,
            }
        ]

    @property
    def contract_names(self) -> dict[str, str]:
        """The Segment field names, and the tokenised columns under their source names."""
        return dict(SEGMENT_NAMES) | super().contract_names

    def silver_columns(self) -> dict[str, tuple[str, str]]:
        """The contract's Segment fields that silver keeps, in snake case."""
        empty = pl.DataFrame(schema=dict.fromkeys(("message_id", "source", "_source_file", "raw"), pl.String))
        present = set(
            clickstream.typed_events(empty.with_columns(_line=pl.lit(0)), self.contract, "-").columns
        )
        snake = {c.name: re.sub(r"(?<!^)(?=[A-Z])", "_", c.name).lower() for c in self.contract.columns}
        return {
            c.name: (snake[c.name], c.description) for c in self.contract.columns if snake[c.name] in present
        }

    def source_doc(self, table: SilverTable, subject: str) -> tuple[str, str, dict[str, str]]:
        """The typed messages, loaded at ``received_at``."""
        return (
            f"{subject}: typed, one per messageId, event time corrected for client clock skew, personal data "
            f"tokenised (feed `{self.feed_id}`).",
            "received_at",
            {},
        )
