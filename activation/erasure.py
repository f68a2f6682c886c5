"""Erasure in activation: a person's recommendations cleared at every sync's destination, and the person's
rows removed from the activation zone of the lake (each sync's state and pending diff, the refused records,
the keys a failed run's error quotes).

Called by the lake's erasure (:func:`lake.erasure.erase`) with the hashes of the request's identifiers, before
it sweeps the other zones; it then purges every Delta table's history, this zone's included. Per sync, the
keys of the erased persons are found by hashing the sync's keys as identifiers of the type its source key is
named after (``crm_contact_id``). A key the state holds is cleared at the destination at once, by a diff of
removals applied as every diff is (PostgreSQL: the rows deleted in the transaction of the checkpoint, then the
table vacuumed; an outbox: a removals file, which tells the importing tool to forget the contact), and the
state records that diff; the run log gets a row of status ``erased`` (counts only). The outbox's earlier diff
files are rewritten without the erased keys. An unreachable destination fails the erasure before the lake
changes, so it can be run again.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import polars as pl
import psycopg
from deltalake import DeltaTable, write_deltalake
from psycopg import sql

from activation import state
from activation.config import SyncConfig, SyncConfigError, load_syncs
from activation.crm_server import URL_ENV, crm_database_url, crm_environment
from activation.destinations import PostgresDestination
from activation.sync import _run_row, destination_for, outbox_dir, reconcile
from lake import delta
from lake.settings import Settings
from lake.suppression import hashes

ERASED = "erased"
"""The run-log status of the diff an erasure applies."""


class ErasureBlocked(RuntimeError):
    """A destination holds an erased person's recommendation and cannot be reached (its credentials are not
    set): the erasure stops before the lake changes; run it again once they are."""


class Cleared(NamedTuple):
    """What an erasure did to one table of the activation zone or one destination."""

    table: str
    action: str
    rows: int


def erased_keys(keys: pl.Series, identifier_type: str, wanted: set[str], secret: str) -> pl.Series:
    """The keys (as text) whose suppression hash as ``identifier_type`` is one of ``wanted``."""
    text = keys.cast(pl.String).drop_nulls().unique()
    if text.is_empty() or not wanted:
        return text.head(0)
    return text.filter(hashes(identifier_type, text, secret).is_in(pl.Series(sorted(wanted)).implode()))


def _state_keys(settings: Settings, config: SyncConfig) -> pl.Series:
    lazy = delta.scan(state.uri(settings, "state", config.name), settings.storage_options)
    if lazy is None:
        return pl.Series(config.key_column, [], dtype=pl.String)
    return lazy.select(config.key_column).collect().to_series()


def _holds_erased(settings: Settings, config: SyncConfig, wanted: set[str]) -> bool:
    """Whether the sync's state holds a key of an erased person."""
    keys = erased_keys(_state_keys(settings, config), config.source.key, wanted, settings.pii_secret)
    return not keys.is_empty()


def _clear_at_destination(settings: Settings, config: SyncConfig, wanted: set[str]) -> list[Cleared]:
    """Apply a diff removing the erased keys the state holds; what was done."""
    key = config.key_column
    uri = state.uri(settings, "state", config.name)
    if not _holds_erased(settings, config, wanted):
        return []
    columns = delta.scan(uri, settings.storage_options).collect_schema()
    schema = {name: dtype for name, dtype in columns.items() if name != state.DIFF_ID}
    try:
        destination = destination_for(config, schema, settings)
    except SyncConfigError as error:
        raise ErasureBlocked(
            f"{config.name}: the erased persons' recommendations at {config.destination.name} cannot be "
            f"cleared: {error}"
        ) from error
    run_id = uuid.uuid4().hex
    started = datetime.now(UTC)
    lake_version, _ = reconcile(config, settings, destination, run_id)
    keys = erased_keys(_state_keys(settings, config), config.source.key, wanted, settings.pii_secret)
    current = state.read_state(settings, config.name, schema)
    removals = current.filter(pl.col(key).cast(pl.String).is_in(keys.implode()))
    if removals.is_empty():
        return []
    diff_id = lake_version + 1
    diff = removals.select(key).with_columns(pl.lit("removed").alias(state.OP))
    state.write_pending(settings, config.name, diff, diff_id)
    failures = destination.apply(diff_id, removals.head(0), removals[key])
    if failures:
        raise RuntimeError(f"{config.name}: {destination.name} refused to clear {len(failures)} records")
    state.write_state(settings, config.name, diff, key, diff_id)
    counts = {"removed": removals.height, "sent": removals.height}
    state.log_run(settings, _run_row(run_id, config, diff_id, ERASED, started, counts))
    done = [
        Cleared(f"{config.destination.kind}:{destination.name}/{config.name}", "cleared", removals.height)
    ]
    if isinstance(destination, PostgresDestination):
        with psycopg.connect(destination.url, autocommit=True) as conn:  # no dead row keeps the values
            conn.execute(sql.SQL("vacuum {}").format(destination.table))
    done.append(Cleared(_relative(settings, uri), "deleted", removals.height))
    return done


def _sweep_pending(settings: Settings, config: SyncConfig, wanted: set[str]) -> list[Cleared]:
    """The pending diff without the erased keys (it is consulted only while a diff is in flight)."""
    pending = state.read_pending(settings, config.name)
    if pending is None or config.key_column not in pending.columns:
        return []
    keys = erased_keys(pending[config.key_column], config.source.key, wanted, settings.pii_secret)
    if keys.is_empty():
        return []
    kept = pending.filter(~pl.col(config.key_column).cast(pl.String).is_in(keys.implode()))
    state.write_pending(settings, config.name, kept.drop(state.DIFF_ID), int(pending[state.DIFF_ID][0]))
    return [Cleared(_relative(settings, state.uri(settings, "pending", config.name)), "deleted", keys.len())]


def _sweep_failures(settings: Settings, config: SyncConfig, wanted: set[str]) -> list[Cleared]:
    """The sync's refused records of the erased keys deleted from ``activation/sync_failures``."""
    refused = state.failures(settings, config.name)
    keys = erased_keys(refused["key"], config.source.key, wanted, settings.pii_secret)
    if keys.is_empty():
        return []
    rows = refused.filter(pl.col("key").is_in(keys.implode())).height
    listed = ", ".join("'" + k.replace("'", "''") + "'" for k in keys.to_list())
    uri = state.uri(settings, "sync_failures")
    DeltaTable(uri, storage_options=settings.storage_options or None).delete(
        f"sync = '{config.name}' and key in ({listed})"
    )
    return [Cleared(_relative(settings, uri), "deleted", rows)]


def _sweep_outbox(
    settings: Settings, config: SyncConfig, wanted: set[str], keep: int | None
) -> list[Cleared]:
    """An outbox's diff files rewritten without the erased keys, but the removals file of diff ``keep`` (the
    erasure's own, which tells the importing tool to forget them)."""
    folder = outbox_dir(settings) / config.destination.name / config.name
    key = config.key_column
    files = rows = 0
    for path in sorted(folder.glob("diff-*.*")):
        if path.suffix not in (".parquet", ".csv"):
            continue
        if keep is not None and path.name.startswith(f"diff-{keep:08d}.removals."):
            continue
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
        keys = erased_keys(frame[key], config.source.key, wanted, settings.pii_secret)
        if keys.is_empty():
            continue
        hit = pl.col(key).cast(pl.String).is_in(keys.implode())
        files += 1
        if path.suffix == f".{config.destination.formats[0]}":  # each format holds the same rows
            rows += frame.filter(hit).height
        _replace(path, frame.filter(~hit))
    where = f"outbox/{config.destination.name}/{config.name}"
    return [Cleared(where, "rewritten", files), Cleared(where, "deleted", rows)] if files else []


def _sweep_run_log(settings: Settings, syncs: dict[str, SyncConfig], wanted: set[str]) -> list[Cleared]:
    """The run log's error texts with the erased keys they quote (a failed run names a few keys, e.g. of
    duplicated rows) replaced by ``<erased>``; the log is rewritten whole (it is small)."""
    runs = state.runs(settings)
    errors = runs["error"].drop_nulls()
    if errors.is_empty():
        return []
    numbers = errors.str.extract_all(r"\d+").explode().drop_nulls().unique()
    keys = set()
    for identifier_type in {config.source.key for config in syncs.values()}:
        keys |= set(erased_keys(numbers, identifier_type, wanted, settings.pii_secret).to_list())
    if not keys:
        return []
    pattern = r"\b(" + "|".join(sorted(keys)) + r")\b"
    quoted = int(runs["error"].str.contains(pattern).fill_null(False).sum())
    redacted = runs.with_columns(pl.col("error").str.replace_all(pattern, "<erased>"))
    uri = state.uri(settings, "sync_runs")
    write_deltalake(
        uri, redacted.to_arrow(), mode="overwrite", storage_options=settings.storage_options or None
    )
    return [Cleared(_relative(settings, uri), "deidentified", quoted)]


def _replace(path: Path, frame: pl.DataFrame) -> None:
    temporary = path.with_name(path.name + ".erasing")
    frame.write_parquet(temporary) if path.suffix == ".parquet" else frame.write_csv(temporary)
    os.replace(temporary, path)


def _relative(settings: Settings, uri: str) -> str:
    return uri.removeprefix(settings.lake_root.rstrip("/") + "/")


def erase(settings: Settings, wanted: set[str], syncs: dict[str, SyncConfig] | None = None) -> list[Cleared]:
    """Clear the persons whose identifiers hash into ``wanted`` at every sync's destination and from the
    activation zone (see the module's description); what was done per table and destination. The CRM
    database is ``CRM_DATABASE_URL``, else the embedded server (:mod:`activation.crm_server`)."""
    syncs = load_syncs() if syncs is None else syncs
    done: list[Cleared] = []
    for config in syncs.values():
        uses_crm = config.destination.kind == "postgres" and config.destination.url_env == URL_ENV
        needs_url = uses_crm and not os.environ.get(URL_ENV) and _holds_erased(settings, config, wanted)
        with crm_environment(crm_database_url(settings)) if needs_url else contextlib.nullcontext():
            cleared = _clear_at_destination(settings, config, wanted)
        done += cleared
        done += _sweep_pending(settings, config, wanted)
        done += _sweep_failures(settings, config, wanted)
        if config.destination.kind == "files":
            erasure_diff = state.state_version(settings, config.name) if cleared else None
            done += _sweep_outbox(settings, config, wanted, erasure_diff)
    return done + _sweep_run_log(settings, syncs, wanted)
