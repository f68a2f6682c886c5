"""Clickstream, bronze to silver: one typed row per Segment message, deduplicated, with corrected event time.

- Deduplicated by ``messageId`` across files and runs. Of several deliveries of one message the silver row is
  the first received (then the first by file and line), whatever order the files were ingested in.
- Event time corrected for client clock skew as Segment does: an explicit ``timestamp`` is kept, otherwise
  ``receivedAt - (sentAt - originalTimestamp)``.
- Typed columns for the Segment fields, the context and the e-commerce properties the models use; the raw
  ``properties`` and ``traits`` objects are kept as JSON text.
- Placeholder ids (``"null"``, ``"undefined"``, blank, ...: :mod:`data_contracts.segment`) become null: they
  are no identifier and link nothing.
- No raw personal data: the contract's PII paths (the IP in ``context``; e-mail, phone, names, user name,
  birthday and address among the reserved traits, camelCase or snake_case, in ``traits`` and
  ``context.traits``) become tokens, a network prefix or a year (:mod:`lake.privacy`), one column per trait
  whatever its case form, or nothing (address); they are removed from the traits JSON kept, which stays null
  when a message has none.
- Partitioned by event date. Each run reads only the bronze batches it has not applied yet, in steps of at
  most ``Settings.apply_step_rows`` bronze rows (a batch is split into several steps when larger), and commits
  the last step of a batch with the application transaction ``(clickstream-silver, batch)``. A step is safe to
  apply again (a message already in silver is kept unless the step brings an earlier delivery), so a run
  interrupted inside a batch applies that batch again from its start.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import date

import duckdb
import polars as pl

from data_contracts import Contract
from data_contracts.segment import SEGMENT_NAMES, id_sql
from data_contracts.sql import sql_literal
from lake import delta
from lake.feeds.base import pending_steps
from lake.ordering import lexicographic_less
from lake.privacy import protect
from lake.settings import Settings
from lake.suppression import screen

APP_ID = "clickstream-silver"
DEDUP_KEY = ["message_id"]
RANK = ["received_at", "_source_file", "_line"]
STATS_COLUMNS = ["message_id", "event_date", "event_at", "received_at", "_source_file", "_line"]
"""Columns with file statistics: identifiers, tokens, network prefixes and JSON get none."""
BRONZE_COLUMNS = ["message_id", "source", "raw", "_source_file", "_line", "_batch_seq"]

SEGMENT_FIELDS = """{"type": "VARCHAR", "event": "VARCHAR", "name": "VARCHAR", "anonymousId": "VARCHAR",
    "userId": "VARCHAR", "previousId": "VARCHAR", "groupId": "VARCHAR", "properties": "JSON", "traits": "JSON",
    "context": "JSON", "originalTimestamp": "VARCHAR", "timestamp": "VARCHAR", "sentAt": "VARCHAR",
    "receivedAt": "VARCHAR", "channel": "VARCHAR", "version": "BIGINT"}"""  # noqa: E501 (a SQL literal)
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
    select *, json_transform(m.context, '{CONTEXT_FIELDS}') as c,
        json_transform(m.properties, '{PROPERTY_FIELDS}') as p,
        try_cast(m.originalTimestamp as timestamptz) as original_timestamp,
        try_cast(m.timestamp as timestamptz) as explicit_timestamp,
        try_cast(m.sentAt as timestamptz) as sent_at,
        try_cast(m.receivedAt as timestamptz) as received_at
    from messages
)
select
    message_id, m.type as type, m.event as event, m.name as name,
    {{anonymous_id}} as anonymous_id, {{user_id}} as user_id, {{previous_id}} as previous_id,
    m.groupId as group_id,
    source, m.channel as channel, m.version as spec_version,
    coalesce(
        explicit_timestamp, received_at - (sent_at - original_timestamp), original_timestamp, received_at
    ) as event_at,
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
    suppressed: int = 0
    """Messages of erased persons (suppression list) dropped."""
    applied_batch: int = 0
    seconds: float = 0.0


def bronze_uri(settings: Settings) -> str:
    """The bronze clickstream table: ``bronze/clickstream/events``."""
    return delta.table_uri(settings, "bronze", "clickstream", "events")


def silver_uri(settings: Settings) -> str:
    """The silver clickstream table: ``silver/clickstream/events``."""
    return delta.table_uri(settings, "silver", "clickstream", "events")


def silver_field(column: str, path: str) -> str:
    """The silver name of a personal value at JSON ``path`` of an object column, in snake_case whatever the
    case form of the path: ``traits`` + ``$.firstName`` and ``$.first_name`` both give
    ``traits_first_name``."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", path.removeprefix("$.").replace(".", "_")).lower()
    return f"{column}_{snake}"


def personal_fields(contract: Contract) -> dict[str, tuple[str, str, list[str]]]:
    """The contract's personal values inside object columns, by silver name: (object column, kind, its JSON
    paths in the contract's order). The case forms of one trait share a name and must share a kind."""
    fields: dict[str, tuple[str, str, list[str]]] = {}
    for column, paths in contract.pii_paths.items():
        for path, kind in paths.items():
            name = silver_field(column, path)
            _, known, listed = fields.setdefault(name, (column, kind, []))
            if known != kind:
                raise ValueError(f"{contract.path}: {column} paths of {name} are {known} and {kind}")
            listed.append(path)
    return fields


def pii_sql(contract: Contract, objects: dict[str, str]) -> tuple[str, dict[str, str]]:
    """SQL select items that extract the personal values of the object columns in ``objects`` (column -> SQL
    of its JSON), one temporary column per silver name (the first of its case forms present), and the kind of
    each. Each object is parsed once for all its paths. Addresses are not extracted: nothing of them is
    kept."""
    fields = {name: field for name, field in personal_fields(contract).items() if field[1] != "address"}
    items = []
    for column, expression in objects.items():
        paths = [path for of, _, listed in fields.values() if of == column for path in listed]
        if not paths:
            continue
        members = ", ".join(
            f"'{name}': coalesce({', '.join(f'__v[{paths.index(p) + 1}]' for p in listed)})"
            for name, (of, _, listed) in fields.items()
            if of == column
        )
        extracted = f"json_extract_string({expression}, [{', '.join(sql_literal(p) for p in paths)}])"
        items.append(f"unnest(list_transform([{extracted}], lambda __v: {{{members}}})[1]),")
    kinds = {name: kind for name, (of, kind, _) in fields.items() if of in objects}
    return "\n    ".join(items), kinds


def traits_sql(contract: Contract, traits: str) -> str:
    """SQL of the traits JSON text kept in silver, from the SQL of the message's traits JSON: null when the
    message has none, else the object without its personal values (a JSON merge patch with nulls removes
    them)."""
    patch: dict = {}
    for path in contract.pii_paths.get("traits", {}):
        *parents, leaf = path.removeprefix("$.").split(".")
        node = patch
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None
    kept = f"json_merge_patch({traits}, '{json.dumps(patch)}')" if patch else traits
    return f"CASE WHEN json_type({traits}) = 'OBJECT' THEN {kept}::varchar END"


def typed_events(
    bronze: pl.DataFrame, contract: Contract, secret: str, duckdb_config: dict[str, str] | None = None
) -> pl.DataFrame:
    """Bronze clickstream rows as typed, protected silver rows (not yet deduplicated); DuckDB parses them with
    ``duckdb_config`` (``Settings.duckdb_config()``: memory limit, threads, spill folder)."""
    pii_columns, kinds = pii_sql(contract, {"traits": "m.traits", "context": "m.context"})
    sql = TYPED_SQL.replace("{traits_kept}", traits_sql(contract, "m.traits")).replace(
        "{pii_columns}", pii_columns
    )
    for field in ("anonymous_id", "user_id", "previous_id"):
        sql = sql.replace(f"{{{field}}}", id_sql(f"m.{SEGMENT_NAMES[field]}"))
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
    """The first delivery of each message of ``events`` (by :data:`RANK`), and how many later ones were
    dropped; only the messages delivered more than once are sorted."""
    repeated = events.select(pl.struct(DEDUP_KEY).is_duplicated()).to_series()
    if not repeated.any():
        return events, 0
    ranked = events.filter(repeated).sort([*DEDUP_KEY, *RANK], nulls_last=True)
    first = pl.concat([events.filter(~repeated), ranked.unique(DEDUP_KEY, keep="first", maintain_order=True)])
    return first, events.height - first.height


class KnownMessages:
    """Which messages silver holds, and the event date (partition) of each: a 64-bit hash of the message id
    and the date, 12 bytes a message (230 MB at 19 million). Looking a step's messages up here first means
    reading from silver only the partitions where some of them may be, not every message id of the table at
    every step. A hash that two ids share only adds a partition to read."""

    def __init__(self, silver: pl.LazyFrame | None):
        self.parts = [] if silver is None else [silver.select(*self._hashed(pl.col("message_id"))).collect()]

    @staticmethod
    def _hashed(message_id: pl.Expr) -> list[pl.Expr]:
        return [message_id.hash(seed=0).alias("id_hash"), pl.col("event_date")]

    def dates_of(self, message_ids: pl.Series) -> list[date | None]:
        """The event dates of silver's partitions that may hold some of ``message_ids``."""
        hashes = message_ids.hash(seed=0).implode()
        found = [part.filter(pl.col("id_hash").is_in(hashes))["event_date"] for part in self.parts]
        return pl.concat(found).unique().to_list() if found else []

    def add(self, events: pl.DataFrame) -> None:
        """Messages written to silver (a message written again with another date keeps both)."""
        if events.height:
            self.parts.append(events.select(*self._hashed(pl.col("message_id"))))


def _apply_step(
    settings: Settings,
    contract: Contract,
    bronze: pl.DataFrame,
    upto: int | None,
    report: ClickstreamReport,
    known: KnownMessages,
) -> None:
    """Write the first delivery of each message of ``bronze`` that silver does not hold yet (or holds from a
    later delivery), recording ``(clickstream-silver, upto)`` in the commit when ``upto`` is given; ``known``
    says which partitions of silver to look the messages up in, and learns what was written."""
    options = settings.storage_options
    uri = silver_uri(settings)
    typed, suppressed = screen(
        typed_events(bronze, contract, settings.pii_secret, settings.duckdb_config()), settings, kept=False
    )
    events, duplicates = _first_deliveries(typed)
    report.suppressed += suppressed
    report.bronze_rows += bronze.height
    report.duplicates += duplicates
    existing = delta.scan(uri, options)
    replacements, replaced_dates = events.clear(), []
    dates = known.dates_of(events["message_id"])
    if existing is not None and dates:
        old = [*RANK, "event_date"]
        found = (
            existing.filter(_partitions(dates))
            .select(*DEDUP_KEY, *[pl.col(c).alias(f"_old{c}") for c in old])
            .filter(pl.col("message_id").is_in(events["message_id"].implode()))
            .collect()
        )
        events = events.join(found, on=DEDUP_KEY, how="left")
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
            configuration=delta.stats_only(STATS_COLUMNS),
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
    known.add(events)
    known.add(replacements)
    if upto:
        report.applied_batch = upto


def _partitions(dates: list[date | None]) -> pl.Expr:
    """The rows of silver in the event-date partitions ``dates`` (None: the rows without an event date)."""
    listed = pl.col("event_date").is_in([d for d in dates if d is not None])
    return listed | pl.col("event_date").is_null() if None in dates else listed


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
    bronze = delta.scan(bronze_uri(settings), settings.storage_options)
    steps = pending_steps(bronze, watermark(settings), step_rows) if bronze is not None else []
    if steps:
        known = KnownMessages(delta.scan(silver_uri(settings), settings.storage_options))
        for low, upto in steps:
            rows = bronze.filter((pl.col("_batch_seq") > low) & (pl.col("_batch_seq") <= upto))
            chunks = rows.select(BRONZE_COLUMNS).collect_batches(chunk_size=step_rows)  # streamed
            chunk = next(chunks)
            for following in chunks:  # every chunk but the last: no watermark yet
                _apply_step(settings, contract, chunk, None, report, known)
                chunk = following
            _apply_step(settings, contract, chunk, upto, report, known)
    report.seconds = time.perf_counter() - started
    return report
