"""The lake side of activation: per sync, the state last synced to its destination, the diff in flight, the
run log and the per-record failures, as Delta tables under ``<lake root>/activation/``.

This zone is restricted and of its own, not gold: it mirrors what each destination holds (operational state,
not an analytic product), it is written only by the sync, and erasure must reach it like every other table. It
holds ids and decision fields only, never personal data.

- ``activation/state/<sync>``: one row per key as last applied at the destination. Every commit carries the
  Delta application transaction ``(activation:<sync>, diff id)``, so the table says which diff it reflects.
- ``activation/pending/<sync>``: the diff being sent (written before sending), from which the state is
  completed when the destination committed a diff that the lake did not record (a run killed in between).
- ``activation/sync_runs``: one row per run; ``activation/sync_failures``: one row per record a
  destination refused.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from deltalake import DeltaTable, write_deltalake

from lake import delta
from lake.settings import Settings

OP = "_op"
"""The column of a diff that says what happens to the row: ``added``, ``changed`` or ``removed``."""
DIFF_ID = "_diff_id"
"""The column carrying the diff id in pending diffs and state rows."""

RUN_SCHEMA = {
    "run_id": pl.String,
    "sync": pl.String,
    "destination": pl.String,
    "diff_id": pl.Int64,
    "status": pl.String,
    "dry_run": pl.Boolean,
    "source_rows": pl.Int64,
    "not_actions": pl.Int64,
    "skipped_by_consent": pl.Int64,
    "added": pl.Int64,
    "changed": pl.Int64,
    "removed": pl.Int64,
    "cleared_by_consent": pl.Int64,
    "sent": pl.Int64,
    "failed": pl.Int64,
    "retried": pl.Int64,
    "refused_by_contract": pl.Int64,
    "planned_s": pl.Float64,
    "error": pl.String,
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "duration_s": pl.Float64,
}
"""The columns of ``activation/sync_runs``. Status: ``succeeded``, ``partial`` (some records failed),
``failed``, ``reconciled`` (a diff a killed run had applied, recorded by the next run) or ``dry_run``.
``refused_by_contract``: rows the outbound contract kept from being sent (counted in ``failed`` too);
``planned_s``: for an HTTP destination, the least time the diff takes under its quota, known before
sending."""

FAILURE_SCHEMA = {
    "run_id": pl.String,
    "sync": pl.String,
    "diff_id": pl.Int64,
    "key": pl.String,
    "op": pl.String,
    "reason": pl.String,
    "failed_at": pl.Datetime("us", "UTC"),
}
"""The columns of ``activation/sync_failures``: the record's key, what was attempted and the destination's
reason."""


def app_id(sync: str) -> str:
    """The Delta application id of a sync's state commits."""
    return f"activation:{sync}"


def uri(settings: Settings, *parts: str) -> str:
    """A table of the activation zone."""
    return delta.table_uri(settings, "activation", *parts)


def state_version(settings: Settings, sync: str) -> int:
    """The id of the last diff the lake recorded as applied for ``sync`` (0: none)."""
    return delta.applied_version(uri(settings, "state", sync), app_id(sync), settings.storage_options)


def read_state(settings: Settings, sync: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The rows last synced by ``sync`` (its destination columns), empty with ``schema`` when none."""
    lazy = delta.scan(uri(settings, "state", sync), settings.storage_options)
    if lazy is None:
        return pl.DataFrame(schema=schema)
    return lazy.select(list(schema)).collect().cast(schema)


def write_state(
    settings: Settings, sync: str, diff: pl.DataFrame, key: str, diff_id: int, *, replace: bool = False
) -> None:
    """Apply ``diff`` (with its ``_op``) to the state of ``sync`` in one commit recording ``diff_id``;
    ``replace``: the state becomes the diff's added rows (a full re-sync)."""
    target = uri(settings, "state", sync)
    properties = delta.commit_properties(app_id(sync), diff_id)
    rows = (
        diff.filter(pl.col(OP) != "removed").drop(OP).with_columns(pl.lit(diff_id, pl.Int64).alias(DIFF_ID))
    )
    options = settings.storage_options or None
    if replace or delta.open_table(target, settings.storage_options) is None:
        write_deltalake(
            target,
            rows.to_arrow(),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=options,
            commit_properties=properties,
        )
        return
    columns = rows.columns
    source = diff.with_columns(pl.lit(diff_id, pl.Int64).alias(DIFF_ID))
    (
        DeltaTable(target, storage_options=options)
        .merge(
            source.to_arrow(),
            predicate=f"t.{key} = s.{key}",
            source_alias="s",
            target_alias="t",
            commit_properties=properties,
        )
        .when_matched_delete(predicate=f"s.{OP} = 'removed'")
        .when_matched_update(updates={c: f"s.{c}" for c in columns}, predicate=f"s.{OP} <> 'removed'")
        .when_not_matched_insert(updates={c: f"s.{c}" for c in columns}, predicate=f"s.{OP} <> 'removed'")
        .execute()
    )


def write_pending(settings: Settings, sync: str, diff: pl.DataFrame, diff_id: int) -> None:
    """Keep the diff about to be sent, so that a run killed after the destination committed it can be
    completed."""
    write_deltalake(
        uri(settings, "pending", sync),
        diff.with_columns(pl.lit(diff_id, pl.Int64).alias(DIFF_ID)).to_arrow(),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=settings.storage_options or None,
    )


def read_pending(settings: Settings, sync: str) -> pl.DataFrame | None:
    """The last diff a run of ``sync`` was about to send (with ``_diff_id``), or None."""
    lazy = delta.scan(uri(settings, "pending", sync), settings.storage_options)
    return None if lazy is None else lazy.collect()


def log_run(settings: Settings, run: dict) -> None:
    """Append one row to ``activation/sync_runs``."""
    frame = pl.DataFrame([{name: run.get(name) for name in RUN_SCHEMA}], schema=RUN_SCHEMA)
    delta.append(uri(settings, "sync_runs"), frame.to_arrow(), storage_options=settings.storage_options)


def log_failures(
    settings: Settings, run_id: str, sync: str, diff_id: int, failures: dict[str, tuple[str, str]]
) -> None:
    """Append the records a destination refused (key: (op, reason)) to ``activation/sync_failures``."""
    if not failures:
        return
    now = datetime.now(UTC)
    frame = pl.DataFrame(
        [
            {
                "run_id": run_id,
                "sync": sync,
                "diff_id": diff_id,
                "key": k,
                "op": op,
                "reason": reason,
                "failed_at": now,
            }
            for k, (op, reason) in sorted(failures.items())
        ],
        schema=FAILURE_SCHEMA,
    )
    delta.append(uri(settings, "sync_failures"), frame.to_arrow(), storage_options=settings.storage_options)


def last_failed_keys(settings: Settings, sync: str) -> set[str]:
    """The keys refused in the last diff of ``sync`` that had failures (those the next run retries)."""
    lazy = delta.scan(uri(settings, "sync_failures"), settings.storage_options)
    if lazy is None:
        return set()
    failures = lazy.filter(pl.col("sync") == sync).select("diff_id", "key").collect()
    if failures.is_empty():
        return set()
    last = failures["diff_id"].max()
    return set(failures.filter(pl.col("diff_id") == last)["key"].to_list())


def runs(settings: Settings, sync: str | None = None) -> pl.DataFrame:
    """The run log, oldest first (of one sync when given)."""
    return _log(settings, "sync_runs", RUN_SCHEMA, "started_at", sync)


def failures(settings: Settings, sync: str | None = None) -> pl.DataFrame:
    """The refused records, oldest first (of one sync when given)."""
    return _log(settings, "sync_failures", FAILURE_SCHEMA, "failed_at", sync)


def _log(settings: Settings, table: str, schema: dict, order: str, sync: str | None) -> pl.DataFrame:
    lazy = delta.scan(uri(settings, table), settings.storage_options)
    if lazy is None:
        return pl.DataFrame(schema=schema)
    if sync is not None:
        lazy = lazy.filter(pl.col("sync") == sync)
    return lazy.sort(order).collect()
