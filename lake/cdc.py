"""CDC apply, bronze to silver: the current state of every source table, and the history of every row.

The log position orders everything: PostgreSQL ``lsn``; MySQL binlog file, position and row (columns
``_log_file``, ``_log_pos``, ``_log_row``). For each key the change with the highest position wins, whatever
order the files arrived in; replayed events (same key, same position) count once; a delete removes the row
and a later create brings it back; a truncate ends every version written before it; tombstones are skipped.

Each run reads only the bronze batches it has not applied yet, decodes them (:mod:`lake.debezium`),
tokenises personal data (:mod:`lake.privacy`), and then, for the keys those batches touch only:

- ``silver/<system>/<table>_history``: every version with its validity interval ``[_valid_from, _valid_to)``
  (a delete is a version with ``_op = 'd'``; a truncate is one row with ``_op = 't'`` and a null key),
  recomputed for the touched keys and merged where it changed;
- ``silver/<system>/<table>``: the latest live version per key, merged where its position changed.

The two merges run side by side. Each records the last applied bronze batch as a Delta application transaction
in the same commit, so a run interrupted with only one of them done finishes the other one next time.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from data_contracts import Contract
from lake import delta
from lake.debezium import decode_images
from lake.faults import crash_point
from lake.feeds.base import pending_steps
from lake.ordering import lexicographic_less
from lake.privacy import protect
from lake.settings import Settings
from lake.suppression import KEPT_FOR_ACCOUNTING, screen

POSITION = ["_log_file", "_log_pos", "_log_row"]
CHANGE_COLUMNS = ["_op", *POSITION, "_changed_at"]
INTERVAL = ["_valid_from", "_valid_to"]
STATS_COLUMNS = ["_op", *POSITION, "_changed_at", *INTERVAL]
"""Columns with file statistics besides the key: the tokenised personal columns get none."""
FROM_HISTORY = "_from_history"
"""Marks a version read back from the history table with its key, position and interval only."""
BRONZE_COLUMNS = [
    "op",
    "is_tombstone",
    "before",
    "after",
    "value_schema",
    "ts_ms",
    "source_ts_ms",
    "source_lsn",
    "source_binlog_file",
    "source_binlog_pos",
    "source_binlog_row",
    "_batch_seq",
]


@dataclass
class ApplyReport:
    """What one CDC apply run did for one table."""

    feed_id: str
    bronze_rows: int = 0
    changes: int = 0
    replayed: int = 0
    truncates: int = 0
    history_rows_merged: int = 0
    current_upserts: int = 0
    current_deletes: int = 0
    suppressed: int = 0
    """Changes of erased persons (suppression list) dropped, or de-identified in a table kept for
    accounting."""
    applied_batch: int = 0
    seconds: float = 0.0


def bronze_uri(settings: Settings, contract: Contract) -> str:
    """The bronze table of a CDC feed: ``bronze/cdc/<topic>``."""
    return delta.table_uri(settings, "bronze", "cdc", contract.feed_id)


def silver_uris(settings: Settings, contract: Contract) -> tuple[str, str]:
    """(current, history) table URIs of a CDC feed: ``silver/<system>/<table>`` and ``..._history``."""
    current = delta.table_uri(settings, "silver", contract.source_system, contract.name)
    return current, current + "_history"


def _app_id(contract: Contract) -> str:
    return f"cdc-apply:{contract.feed_id}"


def decode_changes(
    bronze: pl.DataFrame, contract: Contract, secret: str, duckdb_config: dict[str, str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Typed, tokenised change rows (key, columns, ``_op``, position, ``_changed_at``), the truncate markers
    (position and time), and how many replayed duplicates were dropped; DuckDB decodes the row images with
    ``duckdb_config``."""
    events = bronze.filter(~pl.col("is_tombstone")).with_columns(
        pl.col("op").alias("_op"),
        pl.coalesce("source_binlog_file", pl.lit("")).alias("_log_file"),
        pl.coalesce("source_lsn", "source_binlog_pos").alias("_log_pos"),
        pl.coalesce("source_binlog_row", pl.lit(0)).cast(pl.Int64).alias("_log_row"),
        pl.from_epoch(pl.coalesce("source_ts_ms", "ts_ms"), "ms")
        .dt.replace_time_zone("UTC")
        .dt.cast_time_unit("us")
        .alias("_changed_at"),
        pl.when(pl.col("op") == "d").then("before").otherwise("after").alias("_image"),
    )
    truncates = (
        events.filter(pl.col("_op") == "t").select(*POSITION, "_changed_at").unique(POSITION).sort(POSITION)
    )
    rows = events.filter(pl.col("_op") != "t").with_row_index("_order")
    parts = []
    for (value_schema,), group in rows.partition_by("value_schema", as_dict=True, include_key=False).items():
        decoded = decode_images(group["_image"], contract, value_schema, duckdb_config)
        parts.append(pl.concat([group.select("_order", *CHANGE_COLUMNS), decoded], how="horizontal"))
    if not parts:
        return pl.DataFrame(), truncates, 0
    changes = pl.concat(parts, how="diagonal_relaxed").sort("_order").drop("_order")
    changes = _protected(changes, contract, secret)
    unique = changes.unique([*contract.primary_key, *POSITION], keep="first", maintain_order=True)
    data = [c for c in unique.columns if c not in CHANGE_COLUMNS]
    return unique.select(*data, *CHANGE_COLUMNS), truncates, changes.height - unique.height


def _protected(rows: pl.DataFrame, contract: Contract, secret: str) -> pl.DataFrame:
    """``rows`` with the contract's personal columns in their protected form (``country`` coarsens places)."""
    pii = {c.name: c.pii for c in contract.pii_columns}
    region = "country" if any(c.name == "country" for c in contract.columns) else None
    return protect(rows, pii, secret, region)


def empty_silver(contract: Contract, secret: str, history: bool) -> pl.DataFrame:
    """The current-state (or history) table of ``contract`` with no rows: its columns and types as silver
    keeps them, before the source's first change arrives."""
    data = _protected(pl.from_arrow(contract.arrow_schema().empty_table()), contract, secret)
    added = {"_op": pl.String, "_log_file": pl.String, "_log_pos": pl.Int64, "_log_row": pl.Int64}
    added |= dict.fromkeys(INTERVAL if history else ["_changed_at"], pl.Datetime("us", "UTC"))
    return pl.concat([data, pl.DataFrame(schema=added)], how="horizontal")


def history_versions(versions: pl.DataFrame, truncates: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Every version of the given keys (unique by key and position) with its validity interval: from its
    change time (never before the previous version's) to the next version's, or to the first truncate between
    them; open (null) for the latest."""
    ordered = versions.sort([*key, *POSITION])
    same_key = pl.all_horizontal(pl.col(k).shift(-1).eq_missing(pl.col(k)) for k in key)  # sorted: no window
    same_previous_key = pl.all_horizontal(pl.col(k).shift(1).eq_missing(pl.col(k)) for k in key)
    goes_back = ordered.select(
        (same_previous_key & (pl.col("_changed_at") < pl.col("_changed_at").shift(1))).any()
    ).item()
    valid_from = (
        pl.col("_changed_at").cum_max().over(key) if goes_back else pl.col("_changed_at")
    )  # window if needed
    ordered = ordered.with_columns(valid_from.alias("_valid_from"))
    ordered = ordered.with_columns(pl.when(same_key).then(pl.col("_valid_from").shift(-1)).alias("_valid_to"))
    if truncates.height:
        ordered = _ended_by_truncates(ordered, truncates, key, same_key)
    return ordered.drop("_changed_at")


def _ended_by_truncates(
    ordered: pl.DataFrame, truncates: pl.DataFrame, key: list[str], same_key: pl.Expr
) -> pl.DataFrame:
    """Versions (sorted by key and position) whose interval a truncate ends: the first truncate after a
    version and before the key's next version closes it at the truncate's time."""
    order = (
        pl.concat([ordered.select(POSITION), truncates.select(POSITION)])
        .unique()
        .sort(POSITION)
        .with_row_index("_order")
    )
    marks = truncates.join(order, on=POSITION).select(
        pl.col("_order").alias("_truncate_order"), pl.col("_changed_at").alias("_truncated_at")
    )
    ranked = ordered.join(order, on=POSITION, how="left", maintain_order="left")
    ranked = ranked.with_columns(pl.when(same_key).then(pl.col("_order").shift(-1)).alias("_next_order"))
    ranked = ranked.sort("_order").join_asof(
        marks.sort("_truncate_order"),
        left_on="_order",
        right_on="_truncate_order",
        strategy="forward",
        allow_exact_matches=False,
    )
    ended = pl.col("_truncate_order").is_not_null() & (
        pl.col("_next_order").is_null() | (pl.col("_truncate_order") < pl.col("_next_order"))
    )
    ranked = ranked.with_columns(
        pl.when(ended)
        .then(pl.max_horizontal("_truncated_at", "_valid_from"))
        .otherwise(pl.col("_valid_to"))
        .alias("_valid_to")
    )
    return ranked.sort([*key, *POSITION]).drop("_order", "_next_order", "_truncate_order", "_truncated_at")


def _existing(
    uri: str,
    options: dict[str, str],
    key: list[str],
    keys: pl.DataFrame | None,
    columns: list[str] | None = None,
) -> pl.DataFrame | None:
    """The rows of the table at ``uri`` whose key is in ``keys`` (every keyed row when None; only ``columns``
    when given)."""
    lazy = delta.scan(uri, options)
    schema = lazy.collect_schema() if lazy is not None else {}
    if any(k not in schema for k in key):  # no table yet, or only truncate markers so far
        return None
    if columns is not None:
        lazy = lazy.select(c for c in columns if c in schema)
    if keys is None:
        lazy = lazy.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in key))
    elif len(key) == 1:
        lazy = lazy.filter(pl.col(key[0]).is_in(keys[key[0]].implode()))
    else:
        lazy = lazy.join(keys.lazy(), on=key, how="semi")
    return lazy.collect()


def _key_predicate(key: list[str]) -> str:
    return " AND ".join(f"t.{k} = s.{k}" for k in key)


def _merge(
    uri: str,
    source: pl.DataFrame,
    on: list[str],
    options: dict[str, str],
    *,
    app_id: str | None = None,
    version: int | None = None,
    delete_flag: str | None = None,
    update_only: list[str] | None = None,
) -> None:
    """Upsert ``source`` into the table on ``on`` (rows whose ``delete_flag`` is true are deleted instead;
    matched rows get only the ``update_only`` columns when given), recording ``(app_id, version)`` in the same
    commit when given; the first write (or the first with keys) appends."""
    table = delta.open_table(uri, options)
    if table is None or not set(on) <= {f.name for f in table.schema().fields}:  # nothing there can match
        rows = source if delete_flag is None else source.filter(~pl.col(delete_flag)).drop(delete_flag)
        delta.append(
            uri,
            rows.to_arrow(),
            storage_options=options,
            app_id=app_id,
            version=version,
            configuration=delta.stats_only([*on, *STATS_COLUMNS]),
        )
        return
    merger = table.merge(
        source.to_arrow(),
        predicate=_key_predicate(on),
        source_alias="s",
        target_alias="t",
        merge_schema=True,
        commit_properties=delta.commit_properties(app_id, version),
    )
    if delete_flag is not None:
        merger = (
            merger.when_matched_delete(predicate=f"s.{delete_flag}")
            .when_matched_update_all(predicate=f"NOT s.{delete_flag}", except_cols=[delete_flag])
            .when_not_matched_insert_all(predicate=f"NOT s.{delete_flag}", except_cols=[delete_flag])
        )
    elif update_only is not None:
        merger = merger.when_matched_update({c: f"s.{c}" for c in update_only}).when_not_matched_insert_all()
    else:
        merger = merger.when_matched_update_all().when_not_matched_insert_all()
    merger.execute()


def _known_truncates(history_uri: str, options: dict[str, str]) -> pl.DataFrame:
    """The truncate markers already in the history table (position and time)."""
    history = delta.scan(history_uri, options)
    if history is None:
        return pl.DataFrame()
    marks = history.filter(pl.col("_op") == "t")
    return marks.select(*POSITION, pl.col("_valid_from").alias("_changed_at")).collect()


def _all_truncates(known: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    if not known.height:
        return new
    return pl.concat([known, new], how="diagonal_relaxed").unique(POSITION).sort(POSITION)


def _touched_versions(
    changes: pl.DataFrame, existing: pl.DataFrame | None, truncates: pl.DataFrame, key: list[str]
) -> pl.DataFrame:
    """All versions of the keys the changes touch, with intervals: the new ones (full rows) and those already
    in history (key, position, ``_op`` and interval only; ``_from_history`` marks them)."""
    combined = changes.with_columns(pl.lit(False).alias(FROM_HISTORY))
    if existing is not None and existing.height:
        fresh = existing.join(changes, on=[*key, *POSITION], how="anti") if changes.height else existing
        old_versions = fresh.with_columns(
            pl.col("_valid_from").alias("_changed_at"), pl.lit(True).alias(FROM_HISTORY)
        ).drop(INTERVAL)
        combined = (
            pl.concat([combined, old_versions], how="diagonal_relaxed") if changes.height else old_versions
        )
    return history_versions(combined, truncates, key) if combined.height else combined


def _merge_history(
    history_uri: str,
    options: dict[str, str],
    key: list[str],
    versions: pl.DataFrame,
    existing: pl.DataFrame | None,
    fresh_truncates: pl.DataFrame,
    app_id: str,
    upto: int,
) -> int:
    """Merge the versions that are new or whose interval changed (matched rows get their new ``_valid_to``),
    then append the new truncate markers in the commit that records ``(app_id, upto)``. Returns the rows
    written."""
    changed = versions
    if existing is not None and existing.height and versions.height:
        before = existing.select(
            *key, *POSITION, pl.col("_valid_to").alias("_old_valid_to"), pl.lit(True).alias("_known")
        )
        changed = (
            versions.join(before, on=[*key, *POSITION], how="left")
            .filter(pl.col("_known").is_null() | pl.col("_valid_to").ne_missing(pl.col("_old_valid_to")))
            .drop("_old_valid_to", "_known")
        )
    marks = fresh_truncates.select(
        *POSITION, pl.col("_changed_at").alias("_valid_from"), pl.lit("t").alias("_op")
    )
    done = {"app_id": app_id, "version": upto}
    if changed.height:
        rows, on = changed.drop(FROM_HISTORY), [*key, *POSITION]
        _merge(history_uri, rows, on, options, update_only=["_valid_to"], **({} if marks.height else done))
    if marks.height or (not changed.height and delta.open_table(history_uri, options) is not None):
        delta.append(
            history_uri,
            marks.to_arrow(),
            storage_options=options,
            configuration=delta.stats_only([*key, *STATS_COLUMNS]),
            **done,
        )  # markers and the watermark
    crash_point("cdc:after_history")
    return changed.height + marks.height


def _current_changes(
    versions: pl.DataFrame, truncates: pl.DataFrame, in_current: pl.DataFrame | None, key: list[str]
) -> pl.DataFrame:
    """The latest version of every touched key, flagged ``_deleted`` when it is a delete or a truncate came
    after it, keeping only what differs from the current table: new or moved positions, and deletes of present
    keys."""
    latest = versions.filter(pl.col("_op") != "t").group_by(key, maintain_order=True).last()
    gone = pl.col("_op") == "d"
    if truncates.height:
        last = truncates.row(-1, named=True)
        marks = ["_truncate_file", "_truncate_pos", "_truncate_row"]
        latest = latest.with_columns(pl.lit(last[c]).alias(m) for c, m in zip(POSITION, marks, strict=True))
        gone = gone | lexicographic_less(POSITION, marks)
    latest = latest.with_columns(gone.alias("_deleted")).drop(
        "_valid_to", "_truncate_file", "_truncate_pos", "_truncate_row", strict=False
    )
    latest = latest.rename({"_valid_from": "_changed_at"})
    if in_current is None or not in_current.height:
        return latest.filter(~pl.col("_deleted"))
    seen = in_current.select(
        *key, *[pl.col(c).alias(f"_cur{c}") for c in POSITION], pl.lit(True).alias("_present")
    )
    latest = latest.join(seen, on=key, how="left")
    moved = pl.col("_present").is_null() | pl.any_horizontal(
        pl.col(c).ne_missing(pl.col(f"_cur{c}")) for c in POSITION
    )
    keep = (pl.col("_deleted") & pl.col("_present").is_not_null()) | (~pl.col("_deleted") & moved)
    return latest.filter(keep).drop("_present", *[f"_cur{c}" for c in POSITION])


def _open_versions(history: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """The key and position of the live versions among keyed history rows (as ``_existing`` reads them): open,
    and not deletes (truncated versions are closed), which is what the current table holds for those keys."""
    is_open = pl.col("_valid_to").is_null() & (pl.col("_op") != "d")
    return history.filter(is_open).select(*key, *POSITION)


def _live_rows(latest: pl.DataFrame) -> pl.DataFrame:
    """The latest versions to write to the current table, without the history marker. A live version read back
    from history cannot need writing: it came from a batch the current table had already applied."""
    if latest.filter(pl.col(FROM_HISTORY) & ~pl.col("_deleted")).height:
        raise RuntimeError(
            "the current table misses a version its history holds; delete the current table and apply again "
            "to rebuild it from bronze"
        )
    return latest.drop(FROM_HISTORY)


def _merge_current(
    current_uri: str,
    options: dict[str, str],
    key: list[str],
    versions: pl.DataFrame,
    truncates: pl.DataFrame,
    scope: pl.DataFrame | None,
    open_in_history: pl.DataFrame | None,
    app_id: str,
    upto: int,
    report: ApplyReport,
) -> None:
    """Merge the latest version of every touched key into the current table (deleting keys whose latest
    version is gone) in the commit that records ``(app_id, upto)``. ``open_in_history`` (the open live
    versions of the touched keys, when the history has applied exactly what the current table has) saves
    reading it."""
    latest = pl.DataFrame()
    if versions.height:
        in_current = (
            open_in_history
            if open_in_history is not None
            else _existing(current_uri, options, key, scope, [*key, *POSITION])
        )
        latest = _live_rows(_current_changes(versions, truncates, in_current, key))
        deletes = int(latest["_deleted"].sum())
        report.current_deletes += deletes
        report.current_upserts += latest.height - deletes
    if latest.height:
        _merge(current_uri, latest, key, options, app_id=app_id, version=upto, delete_flag="_deleted")
    elif delta.open_table(current_uri, options) is not None:  # nothing to change: record the watermark
        delta.record_version(current_uri, app_id, upto, options)


def _apply_step(
    settings: Settings,
    contract: Contract,
    bronze: pl.DataFrame,
    upto: int,
    applied_history: int,
    applied_current: int,
    report: ApplyReport,
) -> None:
    """Apply one range of bronze batches to the history and the current table, side by side (each skipped if
    done)."""
    options = settings.storage_options
    current_uri, history_uri = silver_uris(settings, contract)
    key = list(contract.primary_key)
    app_id = _app_id(contract)
    changes, new_truncates, replayed = decode_changes(
        bronze, contract, settings.pii_secret, settings.duckdb_config()
    )
    changes, suppressed = screen(changes, settings, kept=contract.feed_id in KEPT_FOR_ACCOUNTING)
    report.suppressed += suppressed
    report.bronze_rows += bronze.height
    report.changes += changes.height
    report.replayed += replayed
    report.truncates += new_truncates.height
    known_truncates = _known_truncates(history_uri, options)
    truncates = _all_truncates(known_truncates, new_truncates)
    # the keys this step may change: those its changes touch, or every key when it holds a truncate
    scope = (
        None if new_truncates.height else changes.select(key).unique() if changes.height else pl.DataFrame()
    )
    slim = [*key, *POSITION, "_op", *INTERVAL]
    existing = _existing(history_uri, options, key, scope, slim) if scope is None or scope.height else None
    versions = _touched_versions(changes, existing, truncates, key)

    with ThreadPoolExecutor(max_workers=1) as pool:  # the two merges rewrite different tables: overlap them
        history_merged = None
        if applied_history < upto:
            fresh = (
                new_truncates.join(known_truncates, on=POSITION, how="anti")
                if known_truncates.height
                else new_truncates
            )
            history_merged = pool.submit(
                _merge_history, history_uri, options, key, versions, existing, fresh, app_id, upto
            )
        if applied_current < upto:
            synced = existing is not None and applied_history == applied_current
            open_in_history = _open_versions(existing, key) if synced else None
            _merge_current(
                current_uri, options, key, versions, truncates, scope, open_in_history, app_id, upto, report
            )
        if history_merged is not None:
            report.history_rows_merged += history_merged.result()
    report.applied_batch = upto


def watermark(settings: Settings, contract: Contract) -> int:
    """The last bronze batch both silver tables of the feed have applied."""
    current_uri, history_uri = silver_uris(settings, contract)
    options, app_id = settings.storage_options, _app_id(contract)
    return min(
        delta.applied_version(history_uri, app_id, options),
        delta.applied_version(current_uri, app_id, options),
    )


def apply(settings: Settings, contract: Contract, *, max_rows_per_step: int | None = None) -> ApplyReport:
    """Apply every bronze batch of ``contract``'s topic not applied yet to its silver current and history
    tables, in steps of whole batches of at most ``max_rows_per_step`` (default ``settings.apply_step_rows``)
    bronze rows (a larger batch is a step of its own). Safe to run again at any time."""
    started = time.perf_counter()
    report = ApplyReport(contract.feed_id)
    options = settings.storage_options
    current_uri, history_uri = silver_uris(settings, contract)
    bronze = delta.scan(bronze_uri(settings, contract), options)
    if bronze is None:
        report.seconds = time.perf_counter() - started
        return report
    app_id = _app_id(contract)
    applied_history = delta.applied_version(history_uri, app_id, options)
    applied_current = delta.applied_version(current_uri, app_id, options)
    step_rows = max_rows_per_step or settings.apply_step_rows
    for low, upto in pending_steps(bronze, watermark(settings, contract), step_rows):
        rows = (
            bronze.filter((pl.col("_batch_seq") > low) & (pl.col("_batch_seq") <= upto))
            .select(BRONZE_COLUMNS)
            .collect()
        )
        _apply_step(
            settings, contract, rows, upto, max(applied_history, low), max(applied_current, low), report
        )
    report.seconds = time.perf_counter() - started
    return report
