"""Erasure (the right to be forgotten): a person's records removed from every zone of the lake and the
warehouse.

``python -m lake.erasure --contact-id 42`` (or ``--customer-id``, ``--app-user-id``, ``--email``;
``make erase``; the Dagster job ``erase_persons``). A request:

1. **Resolves** the person through the identity graph (``gold/identity_person_map``): every identifier of
   the person's component (contacts, customers, app users, devices, e-mail and phone tokens) and the person
   id. Identifiers the graph's guards cut (a placeholder e-mail over its fan-out limit, a device shared by
   several persons) are nobody's: they are not erased, nor are the records that only they name (another
   person's messages from a shared device, another contact with the placeholder e-mail); the person's own
   records that hold them are (their contact row, the messages they sent signed in or with their e-mail).
   A request by such a shared identifier is refused: it does not name one person.
2. **Suppresses** them (:mod:`lake.suppression`): keyed hashes, so that a later snapshot or re-ingestion does
   not bring the person back (every apply to silver screens its rows with the list).
3. **Sweeps** every zone with the request's hashes. First the person's recommendations are cleared at every
   sync destination (the CRM's table, the outbox) and from the activation zone (:mod:`activation.erasure`).
   Then landing files are rewritten without the person's lines (the ledger records the rewrite, see
   :mod:`lake.ledger`), bronze raw records and quarantine rows are deleted, silver current and history rows
   deleted, every gold table and every warehouse table cleaned. A
   raw line is the person's when a field of it (``contact_id``, ``customer_id``, ``anonymousId``, ``userId``,
   ``previousId``, an e-mail or phone) hashes into the request; a typed row when one of its identifier
   columns does (:func:`lake.suppression.identifier_columns`). Records that must be kept
   (:data:`lake.suppression.KEPT_FOR_ACCOUNTING`: orders) are de-identified instead: the person's id becomes
   a keyed negative marker, in the raw line as in silver.
4. **Purges** what a deletion leaves behind: every Delta table of the lake is vacuumed with no retention
   (files of old versions deleted) and its log expired up to a fresh checkpoint (old commits held file
   statistics); the DuckDB warehouse is copied into a new file that replaces it (a deleted row can survive in
   freed blocks), and the silver views are published again.
5. **Audits**: ``privacy/erasure_audit`` gets one row per request and table (request id, time, table,
   action, rows), without personal data.

Running a request again is safe: it sweeps with the hashes recorded for its request id, so it also removes
what arrived since (a new snapshot's lines in landing and bronze). Ingestion must not run at the same time
(a batch left open by a crash is refused: finish the ingestion first), nor a sync.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import write_deltalake
from isal import igzip

from activation import erasure as activation_erasure
from data_contracts import Contract, load_contracts
from lake import bronze, delta, suppression
from lake.feeds import feed_of, pending_steps
from lake.gold import gold_uri
from lake.landing import LandedFile, landing_filesystem, read_line_chunks
from lake.ledger import FileCounts, Ledger
from lake.privacy import normalise_email, normalise_phone, token
from lake.settings import Settings, disable_telemetry, get_settings
from lake.warehouse import publish_silver

REQUEST_KINDS = {
    "crm_contact_id": "crm_contact_id",
    "shop_customer_id": "shop_customer_id",
    "app_user_id": "app_user_id",
    "email": "email_token",
}
"""What a request may name, and the identifier type of the identity graph it becomes."""
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ZONES = ("landing", "bronze", "quarantine", "silver", "gold", "privacy", "activation")
"""The zones of the lake whose files an erasure cleans (the simulator's truth is not one of them)."""
RAW_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    (r'"contact_id"\s*:\s*"?(-?\d+)', ("crm_contact_id",)),
    (r'"customer_id"\s*:\s*"?(-?\d+)', ("shop_customer_id",)),
    (r'"anonymousId"\s*:\s*"([^"]+)"', ("anonymous_id",)),
    (r'"userId"\s*:\s*"([^"]+)"', ("app_user_id",)),
    (r'"previousId"\s*:\s*"([^"]+)"', ("anonymous_id", "app_user_id")),
    (r'"(?i:e_?mail)"\s*:\s*"([^"]+)"', ("email",)),
    (r'"(?i:phone)"\s*:\s*"([^"]+)"', ("phone",)),
]
"""Fields of a raw line (JSON text, or what is left of it in quarantine) that identify a person."""
KEPT_FIELDS = {"crm_contact_id": "contact_id", "shop_customer_id": "customer_id"}
"""In a record kept for accounting, the id fields replaced by their erased marker."""
RETENTION_PROPERTIES = {
    "delta.logRetentionDuration": "interval 30 days",
    "delta.deletedFileRetentionDuration": "interval 1 weeks",
}
"""Set to zero while a table is purged, then restored (to the table's own value, or these defaults)."""
AUDIT_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("request_kind", pa.string()),
        ("erased_at", pa.timestamp("us", tz="UTC")),
        ("table", pa.string()),
        ("action", pa.string()),
        ("rows", pa.int64()),
    ]
)


class ErasureRefused(ValueError):
    """A request that cannot be carried out as asked (unknown kind, shared identifier, ingestion open)."""


@dataclass(frozen=True)
class ErasureRequest:
    """One person to forget, named by one identifier."""

    kind: str
    """``crm_contact_id``, ``shop_customer_id``, ``app_user_id`` or ``email``."""
    value: str
    request_id: str = ""
    """A reference without personal data (a ticket number); by default derived from a keyed hash."""

    def identifier(self, secret: str) -> tuple[str, str]:
        """The identity graph's identifier of the request: ``(type, value)``; an e-mail becomes its token."""
        if self.kind not in REQUEST_KINDS:
            raise ErasureRefused(f"unknown request kind {self.kind!r}; one of {sorted(REQUEST_KINDS)}")
        value = str(self.value).strip()
        if self.kind == "email":
            value = token(normalise_email(pl.Series([value])), secret)[0]
        if not value:
            raise ErasureRefused(f"a {self.kind} request needs a value")
        return REQUEST_KINDS[self.kind], value

    def reference(self, secret: str) -> str:
        """The request id, checked (letters, digits, ``_.:-``, no personal data), or derived from the
        request."""
        if self.request_id:
            if not REQUEST_ID.match(self.request_id):
                raise ErasureRefused("a request id has 1-64 letters, digits or _.:- (no personal data)")
            return self.request_id
        identifier_type, value = self.identifier(secret)
        return "erasure-" + suppression.identifier_hash(identifier_type, value, secret)[:16]


@dataclass(frozen=True)
class TableErasure:
    """What an erasure did to one table (or landing feed): ``deleted``, ``deidentified`` or ``rewritten``."""

    table: str
    action: str
    rows: int


@dataclass
class ErasureReport:
    """What one request did."""

    request_id: str
    identifiers: int
    tables: list[TableErasure] = field(default_factory=list)

    def rows(self, action: str) -> int:
        """Rows (or lines) the request removed or de-identified, over every table."""
        return sum(t.rows for t in self.tables if t.action == action)


def audit_uri(settings: Settings) -> str:
    """The erasure audit: ``privacy/erasure_audit``."""
    return delta.table_uri(settings, "privacy", "erasure_audit")


# ---------------------------------------------------------------------------------------------- resolving


def _guarded(settings: Settings) -> set[tuple[str, str]]:
    """Identifiers the identity graph's guards cut (shared by several persons), from the warehouse."""
    if not settings.warehouse_path.exists():
        return set()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        found = con.sql(
            "select 1 from duckdb_tables() where table_name = 'int_identity__guarded_out'"
        ).fetchall()
        if not found:
            return set()
        rows = con.sql("select identifier_type, identifier from int_identity__guarded_out").fetchall()
    return {(t, v) for t, v in rows}


def resolve(settings: Settings, request: ErasureRequest) -> list[tuple[str, str]]:
    """Every identifier of the person the request names, and their person ids (type ``person_id``)."""
    identifier = request.identifier(settings.pii_secret)
    if identifier in _guarded(settings):
        raise ErasureRefused(
            f"request {request.reference(settings.pii_secret)}: its {request.kind} is shared by several "
            "persons (cut by the identity graph's guards); ask by the person's own contact, customer or app "
            "user id"
        )
    identifiers = [identifier]
    people = delta.scan(gold_uri(settings, "identity_person_map"), settings.storage_options)
    if people is not None:
        persons = people.filter(
            (pl.col("identifier_type") == identifier[0]) & (pl.col("identifier") == identifier[1])
        ).select("person_id")
        rows = people.join(persons, on="person_id", how="semi").select(
            "identifier_type", "identifier", "person_id"
        )
        for identifier_type, value, person_id in rows.collect().iter_rows():
            identifiers += [(identifier_type, value), (suppression.PERSON_ID, person_id)]
    return list(dict.fromkeys(identifiers))


# ---------------------------------------------------------------------------------------------- raw lines


def _raw_hits(lines: pl.Series, wanted: pl.Series, secret: str) -> pl.DataFrame:
    """For each raw line: ``hit`` (a field of it is a wanted identifier) and ``ids`` (the wanted id fields it
    holds, as ``type=value``, for de-identification)."""
    rows = pl.DataFrame({"line": lines.cast(pl.String)}).with_row_index("row")
    found = []
    for pattern, types in RAW_FIELDS:
        values = (
            rows.select("row", pl.col("line").str.extract_all(pattern).alias("match"))
            .explode("match")
            .drop_nulls("match")
            .with_columns(pl.col("match").str.extract(pattern, 1).alias("value"))
            .drop_nulls("value")
        )
        if not values.height:
            continue
        for kind in types:
            value = values["value"]
            identifier_type = kind
            if kind == "email":
                value, identifier_type = token(normalise_email(value), secret), "email_token"
            elif kind == "phone":
                value, identifier_type = token(normalise_phone(value), secret), "phone_token"
            digests = suppression.hashes(identifier_type, value, secret)
            found.append(
                values.select(
                    "row",
                    digests.is_in(wanted.implode()).fill_null(False).alias("hit"),
                    pl.lit(identifier_type).alias("type"),
                    pl.col("value"),
                )
            )
    hits = pl.concat(found).filter("hit") if found else pl.DataFrame(schema={"row": pl.UInt32})
    ids = (
        hits.filter(pl.col("type").is_in(list(KEPT_FIELDS)))
        .group_by("row")
        .agg((pl.col("type") + "=" + pl.col("value")).unique().alias("ids"))
        if hits.height
        else pl.DataFrame(schema={"row": pl.UInt32, "ids": pl.List(pl.String)})
    )
    return (
        rows.select("row")
        .with_columns(pl.col("row").is_in(hits["row"].implode()).alias("hit"))
        .join(ids, on="row", how="left", maintain_order="left")
        .drop("row")
    )


def _deidentified_line(line: str | None, ids: list[str] | None, secret: str) -> str | None:
    """A kept raw line (or JSON image) with each wanted id field's value replaced by its erased marker."""
    if line is None or not ids:
        return line
    for pair in ids:
        identifier_type, value = pair.split("=", 1)
        marker = suppression.erased_marker(identifier_type, value, secret)
        pattern = rf'("{KEPT_FIELDS[identifier_type]}"\s*:\s*"?){re.escape(value)}(?!\d)'
        line = re.sub(pattern, lambda m, marker=marker: m.group(1) + str(marker), line)
    return line


# ---------------------------------------------------------------------------------------------- landing


def _write_landing(settings: Settings, file: LandedFile, lines: list[bytes]) -> LandedFile:
    """Replace a landing file by ``lines`` (gzipped again when it was), through a temporary name; the file as
    it is now (size, time)."""
    fs, base = landing_filesystem(settings.landing)
    path = f"{base.rstrip('/')}/{file.relpath}"
    data = b"".join(line + b"\n" for line in lines)
    if file.compressed:
        data = igzip.compress(data)
    temporary = path + ".erasing"
    with fs.open_output_stream(temporary, compression=None) as out:
        out.write(data)
    fs.move(temporary, path)
    info = fs.get_file_info(path)
    return LandedFile(
        file.feed_id,
        file.relpath,
        info.size,
        info.mtime_ns or 0,
        file.kafka_partition,
        file.kafka_start_offset,
    )


def _sweep_landing(
    settings: Settings, contract: Contract, wanted: pl.Series
) -> tuple[dict[str, tuple[LandedFile, int]], int]:
    """Rewrite the feed's landing files without the wanted lines (kept feeds: with those lines de-identified);
    the rewritten files with the lines removed from each, and the lines de-identified."""
    kept = contract.feed_id in suppression.KEPT_FOR_ACCOUNTING
    rewritten, deidentified = {}, 0
    for file in feed_of(contract).discover(settings.landing):
        lines = [line for _, chunk in read_line_chunks(settings.landing, file) for line in chunk.to_pylist()]
        text = pl.Series([line.decode("utf-8", "replace") for line in lines], dtype=pl.String)
        hits = _raw_hits(text, wanted, settings.pii_secret)
        if not hits["hit"].any():
            continue
        if kept:
            out = [
                _deidentified_line(t, ids, settings.pii_secret).encode() if hit and ids else line
                for line, t, hit, ids in zip(
                    lines, text.to_list(), hits["hit"].to_list(), hits["ids"].to_list(), strict=True
                )
            ]
            deidentified += int(hits["hit"].sum())
            removed = 0
        else:
            out = [line for line, hit in zip(lines, hits["hit"].to_list(), strict=True) if not hit]
            removed = len(lines) - len(out)
        rewritten[file.relpath] = (_write_landing(settings, file, out), removed)
    return rewritten, deidentified


# ---------------------------------------------------------------------------------------------- Delta tables


def _merge(
    uri: str, settings: Settings, source: pl.DataFrame, on: list[str], update: list[str] | None
) -> None:
    """Delete the rows of the table matching ``source`` on ``on`` (or set their ``update`` columns from it). A
    merge, not a delete with a predicate: the commit's log entry names the key columns, not their values."""
    table = delta.open_table(uri, settings.storage_options)
    merger = table.merge(
        source.to_arrow(),
        predicate=" AND ".join(f"t.{c} = s.{c}" for c in on),
        source_alias="s",
        target_alias="t",
    )
    if update is None:
        merger.when_matched_delete().execute()
    else:
        merger.when_matched_update({c: f"s.{c}" for c in update}).execute()


def _sweep_bronze(settings: Settings, contract: Contract, wanted: pl.Series) -> tuple[dict[str, int], int]:
    """Delete the wanted raw records of the feed's bronze table (kept feeds: de-identify them); rows removed
    per source file, and rows de-identified."""
    uri = bronze.bronze_uri(settings, contract)
    lazy = delta.scan(uri, settings.storage_options)
    if lazy is None:
        return {}, 0
    kept = contract.feed_id in suppression.KEPT_FOR_ACCOUNTING
    images = [c for c in ("before", "after") if c in lazy.collect_schema()]
    key = ["_ingest_date", "_source_file", "_line"]
    found = []
    for low, upto in pending_steps(lazy, 0, settings.apply_step_rows):
        rows = lazy.filter((pl.col("_batch_seq") > low) & (pl.col("_batch_seq") <= upto))
        rows = rows.select(*key, "raw", *images).collect()
        hits = _raw_hits(rows["raw"], wanted, settings.pii_secret)
        found.append(pl.concat([rows, hits], how="horizontal").filter("hit"))
    hit = pl.concat(found) if found else pl.DataFrame()
    if not hit.height:
        return {}, 0
    if kept:
        secret = settings.pii_secret
        fixed = hit.select(
            *key,
            *[
                pl.struct(c, "ids")
                .map_elements(
                    lambda r, c=c: _deidentified_line(r[c], r["ids"], secret), return_dtype=pl.String
                )
                .alias(c)
                for c in ("raw", *images)
            ],
        )
        _merge(uri, settings, fixed, key, ["raw", *images])
        return {}, hit.height
    _merge(uri, settings, hit.select(key), key, None)
    return dict(hit.group_by("_source_file").len().iter_rows()), 0


def _sweep_quarantine(settings: Settings, wanted: pl.Series) -> tuple[dict[tuple[str, str], int], int]:
    """Delete the wanted quarantined records (kept feeds: de-identify them); rows removed per (feed, file),
    and rows de-identified."""
    uri = bronze.quarantine_uri(settings)
    lazy = delta.scan(uri, settings.storage_options)
    if lazy is None:
        return {}, 0
    key = ["feed_id", "source_file", "line"]
    rows = lazy.select(*key, "raw").collect()
    hit = pl.concat([rows, _raw_hits(rows["raw"], wanted, settings.pii_secret)], how="horizontal").filter(
        "hit"
    )
    if not hit.height:
        return {}, 0
    kept = pl.col("feed_id").is_in(list(suppression.KEPT_FOR_ACCOUNTING))
    secret = settings.pii_secret
    fixed = hit.filter(kept & pl.col("ids").is_not_null()).select(
        *key,
        pl.struct("raw", "ids")
        .map_elements(lambda r: _deidentified_line(r["raw"], r["ids"], secret), return_dtype=pl.String)
        .alias("raw"),
    )
    removed = hit.filter(~(kept & pl.col("ids").is_not_null()))
    if fixed.height:
        _merge(uri, settings, fixed, key, ["raw"])
    if removed.height:
        _merge(uri, settings, removed.select(key), key, None)
    counts = {(f, s): n for f, s, n in removed.group_by("feed_id", "source_file").len().iter_rows()}
    return counts, fixed.height


def _sweep_typed(uri: str, settings: Settings, key: list[str], kept: bool, wanted: set[str]) -> int:
    """Delete the rows of a silver table that carry a wanted identifier (kept tables: de-identify them); the
    rows changed."""
    lazy = delta.scan(uri, settings.storage_options)
    if lazy is None:
        return 0
    columns = list(lazy.collect_schema())
    identifying = sorted(
        {
            c
            for column, type_column, _ in suppression.identifier_columns(columns)
            for c in (column, type_column)
            if c
        }
    )
    if not identifying or any(k not in columns for k in key):
        return 0
    rows = lazy.select(*dict.fromkeys([*key, *identifying])).collect()
    flags = suppression.matches(rows, wanted, settings.pii_secret)
    hit = flags.select(pl.any_horizontal(pl.all())).to_series()
    if not hit.any():
        return 0
    if kept:
        fixed = suppression.deidentify(rows, flags, settings.pii_secret).filter(hit)
        _merge(uri, settings, fixed.select(*key, *flags.columns), key, list(flags.columns))
    else:
        _merge(uri, settings, rows.filter(hit).select(key), key, None)
    return int(hit.sum())


def _sweep_gold(settings: Settings, wanted: set[str]) -> list[TableErasure]:
    """Every gold table without the rows that carry a wanted identifier (each rewritten whole, as publishing
    does)."""
    done = []
    for uri in _delta_tables(settings, "gold"):
        frame = delta.read(uri, settings.storage_options)
        flags = suppression.matches(frame, wanted, settings.pii_secret)
        if not flags.width:
            continue
        hit = flags.select(pl.any_horizontal(pl.all())).to_series()
        if hit.any():
            write_deltalake(
                uri,
                frame.filter(~hit).to_arrow(),
                mode="overwrite",
                storage_options=settings.storage_options or None,
            )
            done.append(TableErasure(_relative(settings, uri), "deleted", int(hit.sum())))
    return done


def _delta_tables(settings: Settings, zone: str) -> list[str]:
    """The Delta tables under one zone of the lake (a local folder or an object store)."""
    fs, base = landing_filesystem(settings.zone(zone))
    prefix = settings.zone(zone).removesuffix(base) if "://" in settings.zone(zone) else ""
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    logs = [
        i.path
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.Directory and i.base_name == "_delta_log"
    ]
    return sorted(prefix + path.removesuffix("/_delta_log") for path in logs)


def _relative(settings: Settings, uri: str) -> str:
    return uri.removeprefix(settings.lake_root.rstrip("/") + "/")


def purge(uri: str, settings: Settings) -> None:
    """Leave nothing of a table's earlier versions: vacuum every file the current version does not use (no
    retention, untracked files too), checkpoint, and expire every log entry before the checkpoint."""
    table = delta.open_table(uri, settings.storage_options)
    if table is None:
        return
    configuration = table.metadata().configuration
    table.alter.set_table_properties({name: "interval 0 seconds" for name in RETENTION_PROPERTIES})
    table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
    table.create_checkpoint()
    table.cleanup_metadata()
    table.alter.set_table_properties(
        {name: configuration.get(name, default) for name, default in RETENTION_PROPERTIES.items()}
    )


# ---------------------------------------------------------------------------------------------- warehouse


def _sweep_warehouse(settings: Settings, wanted: set[str]) -> list[TableErasure]:
    """Delete the rows of every warehouse table that carry a wanted identifier."""
    if not settings.warehouse_path.exists():
        return []
    done = []
    with duckdb.connect(str(settings.warehouse_path)) as con:
        tables = con.sql(
            "select schema_name, table_name from duckdb_tables() where database_name = current_database()"
        ).fetchall()
        for schema, name in tables:
            qualified = f'"{schema}"."{name}"'
            columns = [c[0] for c in con.sql(f"describe {qualified}").fetchall()]
            identifying = suppression.identifier_columns(columns)
            if not identifying:
                continue
            needed = sorted({c for column, type_column, _ in identifying for c in (column, type_column) if c})
            values = con.sql(f"select distinct {', '.join(map(_quote, needed))} from {qualified}").pl()
            flags = suppression.matches(values, wanted, settings.pii_secret)
            if not flags.select(pl.any_horizontal(pl.all())).to_series().any():
                continue
            deleted = 0
            for column, type_column, _ in identifying:
                chosen = values.filter(flags[column])
                if not chosen.height:
                    continue
                pair = [column] if type_column is None else [type_column, column]
                con.register("erased", chosen.select(pair).unique().to_arrow())
                match = " and ".join(f"{qualified}.{_quote(c)} = erased.{_quote(c)}" for c in pair)
                deleted += con.execute(
                    f"delete from {qualified} where exists (select 1 from erased where {match})"
                ).fetchone()[0]
                con.unregister("erased")
            done.append(TableErasure(f"warehouse/{schema}.{name}", "deleted", deleted))
    return done


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def compact_warehouse(settings: Settings) -> None:
    """Copy the warehouse into a new file that replaces it, so no freed block keeps a deleted row."""
    path = settings.warehouse_path
    if not path.exists():
        return
    fresh = path.with_name(path.stem + ".compacted" + path.suffix)
    fresh.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("checkpoint")
        con.execute(f"attach '{fresh}' as compacted")
        con.execute(
            f"copy from database {_quote(con.sql('select current_database()').fetchall()[0][0])} to compacted"
        )
        con.execute("detach compacted")
    fresh.replace(path)
    Path(str(path) + ".wal").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the erasure


def _open_batches(settings: Settings, contracts: dict[str, Contract]) -> list[str]:
    ledger = Ledger(bronze.ledger_uri(settings), settings.storage_options)
    return [feed for feed in contracts if ledger.state(feed).open_batch is not None]


def _wanted(settings: Settings, request_id: str, identifiers: list[tuple[str, str]]) -> set[str]:
    """The hashes a request sweeps with: those suppressed under its id, and those of its identifiers."""
    found = {suppression.identifier_hash(t, v, settings.pii_secret) for t, v in identifiers}
    lazy = delta.scan(suppression.suppression_uri(settings), settings.storage_options)
    if lazy is not None:
        found |= set(lazy.filter(pl.col("request_id") == request_id).collect()["identifier_hash"].to_list())
    return found


def sweep(settings: Settings, contracts: dict[str, Contract], wanted: set[str]) -> list[TableErasure]:
    """Remove (or, where records are kept, de-identify) every record carrying one of the ``wanted`` hashes
    from landing, bronze, quarantine, silver, gold and the warehouse; the ledger records rewritten landing
    files. First the persons' recommendations are cleared at the sync destinations and from the activation
    zone (:func:`activation.erasure.erase`), so that an unreachable destination stops the request before the
    lake changes."""
    done = [TableErasure(*cleared) for cleared in activation_erasure.erase(settings, wanted)]
    series = pl.Series(sorted(wanted), dtype=pl.String)
    ledger = Ledger(bronze.ledger_uri(settings), settings.storage_options)
    committed = ledger.committed_files()
    quarantined, quarantine_fixed = _sweep_quarantine(settings, series)
    if quarantined or quarantine_fixed:
        table = _relative(settings, bronze.quarantine_uri(settings))
        done.append(TableErasure(table, "deleted", sum(quarantined.values())))
        done.append(TableErasure(table, "deidentified", quarantine_fixed))
    for feed_id, contract in contracts.items():
        rewritten, landing_fixed = _sweep_landing(settings, contract, series)
        removed, bronze_fixed = _sweep_bronze(settings, contract, series)
        if rewritten:
            done.append(TableErasure(f"landing/{feed_id}", "rewritten", len(rewritten)))
            done.append(TableErasure(f"landing/{feed_id}", "deleted", sum(n for _, n in rewritten.values())))
            done.append(TableErasure(f"landing/{feed_id}", "deidentified", landing_fixed))
        table = _relative(settings, bronze.bronze_uri(settings, contract))
        done += [
            TableErasure(table, "deleted", sum(removed.values())),
            TableErasure(table, "deidentified", bronze_fixed),
        ]
        landed = {f.relpath: f for f in feed_of(contract).discover(settings.landing)}
        _record_in_ledger(ledger, committed, landed, feed_id, rewritten, removed, quarantined)
        kept = feed_id in suppression.KEPT_FOR_ACCOUNTING
        silver = [(t.uri(settings), list(t.key)) for t in feed_of(contract).silver]
        for uri, key in silver:
            rows = _sweep_typed(uri, settings, key, kept, wanted)
            done.append(TableErasure(_relative(settings, uri), "deidentified" if kept else "deleted", rows))
    done += _sweep_gold(settings, wanted)
    done += _sweep_warehouse(settings, wanted)
    return [t for t in done if t.rows]


def _record_in_ledger(
    ledger: Ledger,
    committed: pl.DataFrame,
    landed: dict[str, LandedFile],
    feed_id: str,
    rewritten: dict[str, tuple[LandedFile, int]],
    bronze_removed: dict[str, int],
    quarantine_removed: dict[tuple[str, str], int],
) -> None:
    """An ``erased`` ledger row for every file of the feed taken in before whose landing file or records the
    erasure changed: its size and time now, and the bronze and quarantine records removed."""
    taken = committed.filter(pl.col("feed_id") == feed_id).sort("recorded_at")
    known = {r["relpath"]: r for r in taken.iter_rows(named=True)}
    files = set(rewritten) | set(bronze_removed) | {f for feed, f in quarantine_removed if feed == feed_id}
    rows = []
    for relpath in sorted(files & set(known)):
        row = known[relpath]
        now = landed.get(relpath) or LandedFile(  # a landing file deleted since keeps its last size and time
            feed_id, relpath, row["size"], row["mtime_ns"], row["kafka_partition"], row["kafka_start_offset"]
        )
        in_bronze, in_quarantine = (
            bronze_removed.get(relpath, 0),
            quarantine_removed.get((feed_id, relpath), 0),
        )
        rows.append((row["batch_seq"], now, FileCounts(in_bronze + in_quarantine, in_bronze, in_quarantine)))
    if rows:
        ledger.record_erasure(feed_id, rows)


def _audit(settings: Settings, request_id: str, kind: str, tables: list[TableErasure]) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "request_id": request_id,
            "request_kind": kind,
            "erased_at": now,
            "table": t.table,
            "action": t.action,
            "rows": t.rows,
        }
        for t in tables
    ] or [
        {
            "request_id": request_id,
            "request_kind": kind,
            "erased_at": now,
            "table": None,
            "action": "nothing found",
            "rows": 0,
        }
    ]
    delta.append(
        audit_uri(settings),
        pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA),
        storage_options=settings.storage_options,
        configuration=delta.stats_only(["request_id", "erased_at"]),
    )


def erase(settings: Settings, requests: list[ErasureRequest]) -> list[ErasureReport]:
    """Carry out the requests (see the module's description): resolve, suppress, sweep, audit each; then purge
    every Delta table, compact the warehouse and publish the silver views again. Safe to run again."""
    contracts = load_contracts(settings.contracts_dir)
    open_batches = _open_batches(settings, contracts)
    if open_batches:
        raise ErasureRefused(f"ingestion batches are open for {open_batches}: run the ingestion first")
    secret = settings.pii_secret
    plans = [
        (r, r.reference(secret), resolve(settings, r)) for r in requests
    ]  # refuse before changing anything
    reports = []
    for request, request_id, identifiers in plans:
        suppression.add(settings, identifiers, request_id)
        tables = sweep(settings, contracts, _wanted(settings, request_id, identifiers))
        _audit(settings, request_id, request.kind, tables)
        reports.append(ErasureReport(request_id, len(identifiers), tables))
    for zone in ZONES[1:]:
        for uri in _delta_tables(settings, zone):
            purge(uri, settings)
    compact_warehouse(settings)
    if settings.warehouse_path.exists():
        publish_silver(settings, contracts)
    return reports


def _requests(args: argparse.Namespace) -> Iterator[ErasureRequest]:
    for kind in REQUEST_KINDS:
        for value in getattr(args, kind) or []:
            yield ErasureRequest(kind, value, args.request_id or "")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: erase the persons named, print what was done per table (no personal data)."""
    parser = argparse.ArgumentParser(prog="python -m lake.erasure", description=__doc__.splitlines()[0])
    parser.add_argument("--contact-id", dest="crm_contact_id", action="append", help="a CRM contact id")
    parser.add_argument("--customer-id", dest="shop_customer_id", action="append", help="a shop customer id")
    parser.add_argument("--app-user-id", dest="app_user_id", action="append", help="an app user id")
    parser.add_argument("--email", action="append", help="an e-mail address")
    parser.add_argument("--request-id", help="a reference without personal data (one request per run)")
    args = parser.parse_args(argv)
    requests = list(_requests(args))
    if not requests:
        parser.error("name at least one person (--contact-id, --customer-id, --app-user-id or --email)")
    if args.request_id and len(requests) > 1:
        parser.error("--request-id names one request")
    disable_telemetry()
    try:
        reports = erase(get_settings(), requests)
    except ErasureRefused as refused:
        print(f"REFUSED {refused}", file=sys.stderr)
        return 1
    for report in reports:
        print(f"{report.request_id}: {report.identifiers} identifiers suppressed")
        for t in report.tables:
            print(f"  {t.table:<48} {t.action:<13} {t.rows:>8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
