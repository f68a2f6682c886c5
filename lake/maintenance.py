"""Nightly care of the lake's Delta tables: small files compacted, old files vacuumed, raw data expired.

Hourly appends and merges leave many small files and, after rewrites, files that no version still needs.
Compaction (``OPTIMIZE``) rewrites them into large ones in a commit that changes no row; vacuum then deletes
the files that versions older than the retention no longer reference. The restricted bronze zone keeps raw
records for the ``retention`` SLA of their feed's contract after their ingestion (``BRONZE_RETENTION_DAYS``
overrides it for every feed; the ledger and quarantine keep their trace).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from deltalake import WriterProperties

from data_contracts import Contract, ContractError
from lake import bronze, delta
from lake.feeds import feed_of
from lake.gold import gold_uris
from lake.settings import Settings

VACUUM_RETENTION_HOURS = 168
"""Versions younger than this stay readable (time travel, readers still scanning an older version)."""


@dataclass(frozen=True)
class TableCare:
    """What maintenance did to one table."""

    uri: str
    files_before: int
    files_after: int
    files_vacuumed: int
    rows_expired: int = 0


def table_uris(settings: Settings, contracts: dict[str, Contract]) -> list[str]:
    """Every Delta table the lake writes for these feeds, the ledger, the quarantine and every gold table."""
    uris = [bronze.ledger_uri(settings), bronze.quarantine_uri(settings)]
    for contract in contracts.values():
        feed = feed_of(contract)
        uris += [feed.bronze_uri(settings), *feed.silver_uris(settings)]
    return uris + gold_uris(settings)


def bronze_retention(settings: Settings, contract: Contract) -> timedelta:
    """How long the feed's raw bronze records are kept: ``BRONZE_RETENTION_DAYS`` when set, else the
    contract's ``retention`` SLA; ContractError when neither says."""
    if settings.bronze_retention_days is not None:
        return timedelta(days=settings.bronze_retention_days)
    retention = contract.sla_duration("retention")
    if retention is None:
        raise ContractError(
            f"{contract.path.name}: no retention in slaProperties, so nothing says how long raw records are "
            "kept (add one, or set BRONZE_RETENTION_DAYS for every feed)"
        )
    return retention


def expire_bronze(settings: Settings, contract: Contract, now: datetime | None = None) -> int:
    """Delete the feed's bronze records ingested more than :func:`bronze_retention` ago and already applied
    to silver (a batch silver has not applied stays, however old); the rows deleted."""
    table = delta.open_table(bronze.bronze_uri(settings, contract), settings.storage_options)
    if table is None:
        return 0
    cutoff = ((now or datetime.now(UTC)) - bronze_retention(settings, contract)).date()
    applied = feed_of(contract).watermark(settings)
    expired = f"_ingest_date < '{cutoff.isoformat()}' AND _batch_seq <= {applied}"
    result = table.delete(expired, writer_properties=delta.RAW_RECORDS)
    return int(result.get("num_deleted_rows") or 0)


def care_for(
    uri: str,
    settings: Settings,
    retention_hours: int = VACUUM_RETENTION_HOURS,
    writer_properties: WriterProperties | None = None,
) -> TableCare | None:
    """Compact the table's small files (written with ``writer_properties``), checkpoint its log and vacuum
    unreferenced files."""
    table = delta.open_table(uri, settings.storage_options)
    if table is None:
        return None
    before = len(table.file_uris())
    table.optimize.compact(writer_properties=writer_properties)
    table.create_checkpoint()
    vacuumed = table.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
    table.cleanup_metadata()
    return TableCare(uri, before, len(table.file_uris()), len(vacuumed))


def maintain(
    settings: Settings, contracts: dict[str, Contract], retention_hours: int = VACUUM_RETENTION_HOURS
) -> list[TableCare]:
    """Expire old bronze records, then compact and vacuum every table of the lake. A feed whose retention is
    unknown keeps its records, and the ContractError naming it is raised once every table was cared for."""
    expired, unknown = {}, []
    for contract in contracts.values():
        try:
            expired[bronze.bronze_uri(settings, contract)] = expire_bronze(settings, contract)
        except ContractError as error:
            unknown.append(str(error))
    raw = {bronze.quarantine_uri(settings), *(bronze.bronze_uri(settings, c) for c in contracts.values())}
    done = []
    for uri in table_uris(settings, contracts):
        care = care_for(uri, settings, retention_hours, delta.RAW_RECORDS if uri in raw else None)
        if care is not None:
            done.append(
                TableCare(
                    care.uri, care.files_before, care.files_after, care.files_vacuumed, expired.get(uri, 0)
                )
            )
    if unknown:
        raise ContractError("; ".join(unknown))
    return done
