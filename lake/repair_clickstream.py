"""``python -m lake.repair_clickstream``: bring a silver clickstream table written by an earlier clean-up up
to today's, and erase its history, so that no file under silver holds what the earlier clean-up let through.

Earlier clean-ups kept the camelCase reserved traits (``firstName``, ``lastName``, ``username``, ``address``,
...) in clear in the traits JSON, kept placeholder ids (``"null"``, ``"undefined"``, ...) as identifiers, and
wrote an object of nulls as the traits of a message that had none. Silver outlives bronze's retention, so it
is repaired from itself, one event date at a time (memory is bounded by a day's rows): the ids and the traits
JSON are cleaned as :mod:`lake.clickstream` cleans new messages, the personal values found in the traits
become the same tokens or year (a token already in silver is kept), and each date's rows replace the old ones
in one commit (a date already clean is left as it is). Then every older version is vacuumed (retention 0) and
the log before the repair is expired, so that no data file, log entry, statistic or checkpoint under silver
still holds a clear value; the table's application watermark is kept, so ingestion goes on where it was. The
warehouse's silver views are refreshed; rebuild the dbt models afterwards (``dbt build``) so that the identity
graph forgets the placeholder ids.

A one-off maintenance step: run it while nothing else writes to the lake. Safe to re-run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import duckdb
import polars as pl
from deltalake import write_deltalake

from data_contracts import Contract, load_contracts
from data_contracts.segment import id_sql
from lake import clickstream, delta
from lake.feeds import feed_of
from lake.feeds.clickstream import ClickstreamFeed
from lake.privacy import protect, protected_name
from lake.settings import Settings, disable_telemetry, get_settings
from lake.warehouse import publish_silver

IDS = ("anonymous_id", "user_id", "previous_id")
OLD = "__old_"


@dataclass
class RepairReport:
    """What one repair did (counts only: no values)."""

    dates: int = 0
    dates_rewritten: int = 0
    rows: int = 0
    ids_cleared: int = 0
    """Placeholder ids turned into nulls."""
    traits_cleaned: int = 0
    """Rows whose traits JSON changed (personal values removed, an object of nulls made null)."""
    files_vacuumed: int = 0


def silver_schema(contract: Contract, secret: str) -> pl.Schema:
    """The columns and types of the silver rows today's clean-up writes."""
    bronze = pl.DataFrame(
        schema={
            "message_id": pl.String,
            "source": pl.String,
            "raw": pl.String,
            "_source_file": pl.String,
            "_line": pl.Int64,
        }
    )
    return clickstream.typed_events(bronze, contract, secret).schema


def repaired_rows(rows: pl.DataFrame, contract: Contract, secret: str, schema: pl.Schema) -> pl.DataFrame:
    """Silver rows cleaned as today's clean-up cleans new messages (columns of ``schema`` first; a column it
    cannot compute, such as a context.traits token the earlier silver never kept, is null)."""
    pii_columns, kinds = clickstream.pii_sql(contract, {"traits": "traits::json"})
    keys = sorted({p.removeprefix("$.").split(".")[0] for p in contract.pii_paths.get("traits", {})})
    # an object whose members are all personal keys set to null was written for a message without traits
    nulls_only = (
        "coalesce(json_type(traits::json) = 'OBJECT' AND "
        f"list_bool_and(list_transform(json_keys(traits::json), lambda k: list_contains({keys}, k) AND "
        "json_type(traits::json, '$.\"' || k || '\"') = 'NULL')), false)"
    )
    traits = f"CASE WHEN {nulls_only} THEN NULL ELSE {clickstream.traits_sql(contract, 'traits::json')} END"
    cleaned = ", ".join([*(f"{id_sql(c)} AS {c}" for c in IDS if c in rows.columns), f"{traits} AS traits"])
    earlier = {
        out: OLD + out
        for column, kind in kinds.items()
        if (out := protected_name(column, kind)) in rows.columns
    }
    with duckdb.connect() as con:
        con.register("silver", rows.rename(earlier).to_arrow())
        sql = f"select {pii_columns} * replace ({cleaned}) from silver"
        fixed = pl.from_arrow(con.sql(sql).to_arrow_table())
    fixed = protect(fixed, kinds, secret)
    fixed = fixed.with_columns(pl.coalesce(out, old).alias(out) for out, old in earlier.items()).drop(
        earlier.values()
    )
    missing = [pl.lit(None, dtype).alias(c) for c, dtype in schema.items() if c not in fixed.columns]
    fixed = fixed.with_columns(missing)
    return fixed.select(*schema.names(), *[c for c in fixed.columns if c not in schema]).with_columns(
        pl.col(c).cast(schema[c]) for c in schema.names()
    )


def expire_history(uri: str, settings: Settings) -> int:
    """Delete every file that no longer belongs to the current version and every log entry before it
    (retention 0); the table's log retention setting is restored afterwards. The data files vacuumed."""
    table = delta.open_table(uri, settings.storage_options)
    key = "delta.logRetentionDuration"
    kept = table.metadata().configuration.get(key) or "interval 30 days"  # Delta's default
    table.alter.set_table_properties({key: "interval 0 seconds"})
    table.create_checkpoint()
    vacuumed = table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
    table.cleanup_metadata()
    table.alter.set_table_properties({key: kept})
    return len(vacuumed)


def repair(settings: Settings, contract: Contract) -> RepairReport:
    """Repair the silver clickstream table in place, date by date, then erase its history."""
    report = RepairReport()
    uri = clickstream.silver_uri(settings)
    lazy = delta.scan(uri, settings.storage_options)
    if lazy is None:
        return report
    schema = silver_schema(contract, settings.pii_secret)
    dates = lazy.select(pl.col("event_date").unique().sort()).collect()["event_date"].to_list()
    for day in dates:
        rows = lazy.filter(pl.col("event_date") == day).collect()
        fixed = repaired_rows(rows, contract, settings.pii_secret, schema)
        report.dates += 1
        report.rows += rows.height
        if set(fixed.columns) == set(rows.columns) and fixed.select(rows.columns).equals(rows):
            continue  # already clean (a re-run): nothing to rewrite
        report.dates_rewritten += 1
        before, after = rows.sort("message_id"), fixed.sort("message_id")
        report.ids_cleared += sum(
            int((before[c].is_not_null() & after[c].is_null()).sum()) for c in IDS if c in before.columns
        )
        report.traits_cleaned += int((~before["traits"].eq_missing(after["traits"])).sum())
        write_deltalake(
            uri,
            fixed.to_arrow(),
            mode="overwrite",
            predicate=f"event_date = '{day.isoformat()}'",
            partition_by=["event_date"],
            schema_mode="merge",
            storage_options=settings.storage_options or None,
        )
    report.files_vacuumed = expire_history(uri, settings)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: repair the silver clickstream, refresh the warehouse views, print counts."""
    parser = argparse.ArgumentParser(
        prog="python -m lake.repair_clickstream", description=__doc__.splitlines()[0]
    )
    parser.parse_args(argv)
    disable_telemetry()
    settings = get_settings()
    contracts = load_contracts(settings.contracts_dir)
    contract = next(c for c in contracts.values() if isinstance(feed_of(c), ClickstreamFeed))
    report = repair(settings, contract)
    publish_silver(settings, contracts)
    print(
        f"silver clickstream repaired: {report.rows:,} rows of {report.dates:,} event dates read, "
        f"{report.dates_rewritten:,} dates rewritten, "
        f"{report.ids_cleared:,} placeholder ids cleared, {report.traits_cleaned:,} traits cleaned, "
        f"{report.files_vacuumed:,} old files vacuumed and the log before the repair expired"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
