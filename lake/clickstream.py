"""Clickstream, bronze to silver: one typed row per Segment message, deduplicated, with corrected event time.

- Deduplicated by ``messageId`` across files and runs. Of several deliveries of one message the silver row is
  the first received (then the first by file and line), whatever order the files were ingested in.
- Event time corrected for client clock skew as Segment does: an explicit ``timestamp`` is kept, otherwise
  ``receivedAt - (sentAt - originalTimestamp)``.
- Typed columns for the Segment fields, the context and the e-commerce properties the models use; the raw
  ``properties`` and ``traits`` objects are kept as JSON text.
- No raw personal data: the contract's PII paths (the IP in ``context``, e-mail, phone and names in
  ``traits``) become tokens or a network prefix (:mod:`lake.privacy`), and are removed from the JSON kept.
- Partitioned by event date. Each run reads only the bronze batches it has not applied yet, in steps of at most
  ``Settings.apply_step_rows`` bronze rows (a batch is split into several steps when larger), and commits the
  last step of a batch with the application transaction ``(clickstream-silver, batch)``. A step is safe to apply
  again (a message already in silver is kept unless the step brings an earlier delivery), so a run interrupted
  inside a batch applies that batch again from its start.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import duckdb
import polars as pl

from data_contracts import Contract
from lake import delta
from lake.bronze import bronze_uri, pending_steps
from lake.ordering import lexicographic_less
from lake.privacy import protect
from lake.settings import Settings

APP_ID = "clickstream-silver"
DEDUP_KEY = ["message_id"]
RANK = ["received_at", "_source_file", "_line"]
BRONZE_COLUMNS = ["message_id", "source", "raw", "_source_file", "_line", "_batch_seq"]

SEGMENT_FIELDS = """{"type": "VARCHAR", "event": "VARCHAR", "name": "VARCHAR", "anonymousId": "VARCHAR",
    "userId": "VARCHAR", "previousId": "VARCHAR", "groupId": "VARCHAR", "properties": "JSON", "traits": "JSON",
    "context": "JSON", "originalTimestamp": "VARCHAR", "timestamp": "VARCHAR", "sentAt": "VARCHAR",
    "receivedAt": "VARCHAR", "channel": "VARCHAR", "version": "BIGINT"}"""
CONTEXT_FIELDS = """{"ip": "VARCHAR", "userAgent": "VARCHAR", "locale": "VARCHAR",
    "library": {"name": "VARCHAR", "version": "VARCHAR"},
    "page": {"path": "VARCHAR", "url": "VARCHAR", "referrer": "VARCHAR"},
    "device": {"type": "VARCHAR", "model": "VARCHAR", "manufacturer": "VARCHAR"},
    "os": {"name": "VARCHAR", "version": "VARCHAR"}, "app": {"version": "VARCHAR"},
    "campaign": {"source": "VARCHAR", "medium": "VARCHAR", "name": "VARCHAR"}}"""
PROPERTY_FIELDS = """{"path": "VARCHAR", "url": "VARCHAR", "referrer": "VARCHAR", "product_id": "VARCHAR",
    "category": "VARCHAR", "price": "DOUBLE", "quantity": "BIGINT", "order_id": "VARCHAR", "total": "DOUBLE",
    "value": "DOUBLE", "currency": "VARCHAR", "campaign_id": "VARCHAR", "email_id": "VARCHAR"}"""

TYPED_SQL = f"""
with messages as (
    select message_id, source, _source_file, _line, json_transform(raw, '{SEGMENT_FIELDS}') as m
    from bronze
),
typed as (
    select *, json_transform(m.context, '{CONTEXT_FIELDS}') as c, json_transform(m.properties, '{PROPERTY_FIELDS}') as p,
        try_cast(m.originalTimestamp as timestamptz) as original_timestamp,
        try_cast(m.timestamp as timestamptz) as explicit_timestamp,
        try_cast(m.sentAt as timestamptz) as sent_at,
        try_cast(m.receivedAt as timestamptz) as received_at
    from messages
)
select
    message_id, m.type as type, m.event as event, m.name as name,
    m.anonymousId as anonymous_id, m.userId as user_id, m.previousId as previous_id, m.groupId as group_id,
    source, m.channel as channel, m.version as spec_version,
    coalesce(explicit_timestamp, received_at - (sent_at - original_timestamp), original_timestamp, received_at)
        as event_at,
    original_timestamp, explicit_timestamp as "timestamp", sent_at, received_at,
    epoch(received_at - sent_at) as clock_skew_seconds,
    coalesce(c.page.path, p.path) as page_path, coalesce(c.page.url, p.url) as page_url,
    coalesce(c.page.referrer, p.referrer) as referrer,
    c.userAgent as user_agent, c.locale as locale, c.library.name as library_name,
    c.library.version as library_version, c.device.type as device_type, c.device.model as device_model,
    c.device.manufacturer as device_manufacturer, c.os.name as os_name, c.os.version as os_version,
    c.app.version as app_version, c.campaign.source as campaign_source, c.campaign.medium as campaign_medium,
    c.campaign.name as campaign_name,
    p.product_id, p.category, p.price, p.quantity, p.order_id, coalesce(p.total, p.value) as order_value,
    p.currency, p.campaign_id, p.email_id,
    m.properties::varchar as properties, {{traits_kept}} as traits, {{pii_columns}}
    _source_file, _line
from typed
"""


@dataclass
class ClickstreamReport:
    """What one clickstream silver run did."""

    bronze_rows: int = 0
    inserted: int = 0
    replaced: int = 0
    """Messages met again with an earlier delivery, which replaced the silver row."""
    duplicates: int = 0
    """Deliveries dropped: later copies of a message met in this run or already in silver."""
    applied_batch: int = 0
    seconds: float = 0.0


def silver_uri(settings: Settings) -> str:
    """The silver clickstream table: ``silver/clickstream/events``."""
    return delta.table_uri(settings, "silver", "clickstream", "events")


def _pii_sql(contract: Contract) -> tuple[str, str, dict[str, str]]:
    """SQL for the personal values to protect (as temporary columns), the traits JSON without them, and the
    kind of each temporary column."""
    extracted, kinds, removed = [], {}, {}
    for column, paths in contract.pii_paths.items():
        for path, kind in paths.items():
            name = f"{column}_{path.removeprefix('$.').replace('.', '_')}"
            extracted.append(f"json_extract_string(m.{column}, '{path}') as {name},")
            kinds[name] = kind
            removed.setdefault(column, []).append(path.removeprefix("$."))
    traits = "m.traits::varchar"
    if removed.get("traits"):  # a JSON merge patch with nulls removes the paths, nested ones included
        patch: dict = {}
        for path in removed["traits"]:
            *parents, leaf = path.split(".")
            node = patch
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = None
        traits = f"json_merge_patch(m.traits, '{json.dumps(patch)}')::varchar"
    return "\n    ".join(extracted), traits, kinds


def typed_events(
    bronze: pl.DataFrame, contract: Contract, secret: str, duckdb_config: dict[str, str] | None = None
) -> pl.DataFrame:
    """Bronze clickstream rows as typed, protected silver rows (not yet deduplicated); DuckDB parses them with
    ``duckdb_config`` (``Settings.duckdb_config()``: memory limit, threads, spill folder)."""
    pii_columns, traits, kinds = _pii_sql(contract)
    sql = TYPED_SQL.replace("{traits_kept}", traits).replace("{pii_columns}", pii_columns)
    with duckdb.connect(config=duckdb_config or {}) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("bronze", bronze.to_arrow())
        typed = pl.from_arrow(con.sql(sql).to_arrow_table())
    typed = typed.with_columns(
        pl.col("event_at").dt.date().alias("event_date"),
        *[
            pl.col(c).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
            for c in ("event_at", "original_timestamp", "timestamp", "sent_at", "received_at")
        ],
    )
    return protect(typed, kinds, secret)


def _first_deliveries(events: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    ranked = events.sort([*DEDUP_KEY, *RANK], nulls_last=True)
    first = ranked.unique(DEDUP_KEY, keep="first", maintain_order=True)
    return first, events.height - first.height


def _apply_step(
    settings: Settings, contract: Contract, bronze: pl.DataFrame, upto: int | None, report: ClickstreamReport
) -> None:
    """Write the first delivery of each message of ``bronze`` that silver does not hold yet (or holds from a later
    delivery), recording ``(clickstream-silver, upto)`` in the commit when ``upto`` is given."""
    options = settings.storage_options
    uri = silver_uri(settings)
    typed = typed_events(bronze, contract, settings.pii_secret, settings.duckdb_config())
    events, duplicates = _first_deliveries(typed)
    report.bronze_rows += bronze.height
    report.duplicates += duplicates
    existing = delta.scan(uri, options)
    replacements, replaced_dates = events.clear(), []
    if existing is not None:
        old = [*RANK, "event_date"]
        known = (
            existing.select(*DEDUP_KEY, *[pl.col(c).alias(f"_old{c}") for c in old])
            .filter(pl.col("message_id").is_in(events["message_id"].implode()))
            .collect()
        )
        events = events.join(known, on=DEDUP_KEY, how="left")
        is_new = pl.col("_oldreceived_at").is_null() & pl.col("_old_source_file").is_null()
        earlier = lexicographic_less(RANK, [f"_old{c}" for c in RANK])
        replacements = events.filter(~is_new & earlier)
        replaced_dates = replacements["_oldevent_date"].unique().to_list()
        replacements = replacements.drop([f"_old{c}" for c in old])
        report.duplicates += events.filter(~is_new & ~earlier).height
        events = events.filter(is_new).drop([f"_old{c}" for c in old])
    report.inserted += events.height
    report.replaced += replacements.height
    done = {"app_id": APP_ID, "version": upto} if upto else {}
    if events.height or not replacements.height:  # the new messages (or only the watermark)
        delta.append(
            uri,
            events.to_arrow(),
            storage_options=options,
            partition_by=["event_date"],
            **({} if replacements.height else done),
        )
    if replacements.height:  # messages met again with an earlier delivery: rewrite only their old partitions
        predicate = "t.message_id = s.message_id"
        if None not in replaced_dates:
            dates = ", ".join(f"DATE '{d.isoformat()}'" for d in sorted(replaced_dates))
            predicate = f"t.event_date IN ({dates}) AND {predicate}"
        (
            delta.open_table(uri, options)
            .merge(
                replacements.to_arrow(),
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=delta.commit_properties(done.get("app_id"), done.get("version")),
            )
            .when_matched_update_all()
            .execute()
        )
    if upto:
        report.applied_batch = upto


def watermark(settings: Settings) -> int:
    """The last bronze batch the silver events table has applied."""
    return delta.applied_version(silver_uri(settings), APP_ID, settings.storage_options)


def apply(
    settings: Settings, contract: Contract, *, max_rows_per_step: int | None = None
) -> ClickstreamReport:
    """Apply every bronze clickstream batch not applied yet to the silver events table, reading at most
    ``max_rows_per_step`` (default ``settings.apply_step_rows``) bronze rows at a time. Safe to re-run."""
    started = time.perf_counter()
    report = ClickstreamReport()
    step_rows = max_rows_per_step or settings.apply_step_rows
    bronze = delta.scan(bronze_uri(settings, contract), settings.storage_options)
    if bronze is not None:
        for low, upto in pending_steps(bronze, watermark(settings), step_rows):
            rows = bronze.filter((pl.col("_batch_seq") > low) & (pl.col("_batch_seq") <= upto))
            chunks = rows.select(BRONZE_COLUMNS).collect_batches(chunk_size=step_rows)  # streamed
            chunk = next(chunks)
            for following in chunks:  # every chunk but the last: no watermark yet
                _apply_step(settings, contract, chunk, None, report)
                chunk = following
            _apply_step(settings, contract, chunk, upto, report)
    report.seconds = time.perf_counter() - started
    return report
