"""The sync engine and its command line: ``python -m activation.sync [--sync NAME] [--dry-run]``.

One run of a sync reads its gold source, keeps the decisions that are actions for a CRM contact whose channel
consent is still granted (the latest consent in silver CRM), computes the diff against the state last synced
to the destination (added, changed: any mapped field differs, removed), sends only that diff, and records the
new state, the run and the refused records in the lake (``activation/``). Before that it reconciles the lake
with the destination's checkpoint, so a run killed at any point and run again applies every record exactly
once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from activation import state
from activation.config import SyncConfig, SyncConfigError, load_syncs
from activation.contract import load_outbound, violations
from activation.destinations import Destination, FilesDestination, PostgresDestination
from activation.hubspot import DEFAULT_BASE_URL, HubSpotDestination, HubSpotError, is_transient
from lake import delta, object_store
from lake.faults import crash_point
from lake.settings import Settings, disable_telemetry, get_settings

NO_ACTION = "no_action"
SAMPLE_SIZE = 5
"""Keys shown per kind of change by a dry run (ids only)."""


log = logging.getLogger("activation")


class SyncError(RuntimeError):
    """A sync cannot run (its source is invalid, or the lake and the destination cannot be reconciled)."""


class SyncSkipped(SyncConfigError):
    """A sync to an optional destination (HubSpot) whose credentials are not in the environment: not run,
    not a failure (the message says which variable to set). A :class:`SyncConfigError`, like a PostgreSQL
    destination's missing URL, so that callers that check credentials first treat both alike."""


def retryable(error: BaseException) -> bool:
    """Whether running the whole sync again later may succeed where this run failed: not for a sync that
    cannot run (:class:`SyncConfigError`, :class:`SyncError`) nor for HubSpot refusing the request itself (a
    wrong token, a missing scope, the daily limit); yes for anything else (an unreachable destination)."""
    if isinstance(error, SyncConfigError | SyncError):
        return False
    if isinstance(error, HubSpotError):
        return is_transient(error)
    return True


def outbox_dir(settings: Settings) -> Path:
    """The outbox folder of file destinations: ``ACTIVATION_OUTBOX_DIR``, else ``outbox/`` beside the lake
    (:meth:`Settings.beside_lake`: ``var/outbox`` by default; the outbox's checkpoint belongs to that lake's
    sync state)."""
    if os.environ.get("ACTIVATION_OUTBOX_DIR"):
        return Path(os.environ["ACTIVATION_OUTBOX_DIR"])
    return settings.beside_lake("outbox")


def _scan_source(config: SyncConfig, settings: Settings) -> pl.LazyFrame:
    lazy = delta.scan(delta.table_uri(settings, "gold", config.source.table), settings.storage_options)
    if lazy is None:
        raise SyncError(f"gold {config.source.table} does not exist yet (score first: make score)")
    return lazy


def _contact_channel(contact: str, channels: pl.Enum) -> pl.Expr:
    """One Int64 per (contact, channel): a join on it is several times faster than on the pair of columns."""
    code = pl.col("channel").cast(channels).to_physical().cast(pl.Int64)
    return (pl.col(contact).cast(pl.Int64) * 1024 + code).alias("_contact_channel")


def granted_consents(settings: Settings, channels: pl.Enum) -> pl.LazyFrame:
    """``_contact_channel`` of every (contact, channel) whose latest consent (by ``updated_at``) in silver CRM
    is granted; ``channels`` lists every channel name (at most 1024)."""
    lazy = delta.scan(delta.table_uri(settings, "silver", "crm", "consents"), settings.storage_options)
    if lazy is None:
        return pl.LazyFrame(schema={"_contact_channel": pl.Int64})
    return (
        lazy.select(_contact_channel("contact_id", channels), "status", "updated_at")
        .group_by("_contact_channel")
        .agg(pl.col("status").sort_by("updated_at", nulls_last=True).last())
        .filter(pl.col("status") == "granted")
        .select("_contact_channel")
    )


def _channels(settings: Settings, source: pl.LazyFrame) -> pl.Enum:
    """Every channel name of the source and of silver CRM consents, as an enumeration."""
    names = [source.select(pl.col("channel").unique())]
    consents = delta.scan(delta.table_uri(settings, "silver", "crm", "consents"), settings.storage_options)
    if consents is not None:
        names.append(consents.select(pl.col("channel").unique()))
    found = pl.concat(names).unique().drop_nulls().collect()["channel"].sort().to_list()
    if len(found) > 1024:
        raise SyncError(f"{len(found)} channel names: at most 1024 are supported")
    return pl.Enum(found)


def read_source(config: SyncConfig, settings: Settings) -> tuple[pl.DataFrame, pl.Series, dict[str, int]]:
    """The rows to hold at the destination (destination columns), the keys held back by consent, and counts.

    Holdout and ``no_action`` decisions and rows without a key are not actions and are never sent; an action
    whose channel consent is not granted now (latest consent in silver CRM, matched by the key as contact id)
    is held back."""
    key = config.source.key
    lazy = _scan_source(config, settings)
    names = lazy.collect_schema().names()
    missing = [src for src in config.fields.values() if src not in names]
    if missing:
        raise SyncError(
            f"{config.path}: fields: gold {config.source.table} has no column {', '.join(missing)}"
        )
    wanted = list(
        dict.fromkeys(
            [*config.fields.values(), *(c for c in ("is_holdout", "action", "channel") if c in names)]
        )
    )
    actionable = pl.col(key).is_not_null()
    if "is_holdout" in names:
        actionable &= ~pl.col("is_holdout").fill_null(False)
    if "action" in names:
        actionable &= pl.col("action") != NO_ACTION
    rows = lazy.select(wanted).filter(actionable)
    if "channel" in names:
        channels = _channels(settings, lazy)
        granted = granted_consents(settings, channels).with_columns(pl.lit(True).alias("_granted"))
        rows = rows.with_columns(_contact_channel(key, channels)).join(
            granted, on="_contact_channel", how="left"
        )
    else:
        rows = rows.with_columns(pl.lit(True).alias("_granted"))
    rows = rows.collect()
    blocked = rows.filter(pl.col("_granted").is_null())
    actions = rows.filter(pl.col("_granted").is_not_null())
    duplicated = actions.filter(pl.col(key).is_duplicated())
    if duplicated.height:
        sample = duplicated[key].unique().sort().head(SAMPLE_SIZE).to_list()
        raise SyncError(f"gold {config.source.table}: {duplicated.height} rows share a {key} (e.g. {sample})")
    desired = actions.select([pl.col(src).alias(dest) for dest, src in config.fields.items()])
    source_rows = lazy.select(pl.len()).collect().item()
    counts = {
        "source_rows": source_rows,
        "not_actions": source_rows - rows.height,
        "skipped_by_consent": blocked.height,
    }
    return desired, blocked[key].alias(config.key_column), counts


def compute_diff(
    desired: pl.DataFrame,
    synced: pl.DataFrame,
    key: str,
    *,
    removed: str = "clear",
    blocked: pl.Series | None = None,
) -> pl.DataFrame:
    """The rows to send: ``desired`` rows whose key is new (``added``) or whose mapped fields differ from the
    ``synced`` state (``changed``), and synced rows gone from ``desired`` (``removed``: all of them when
    ``removed`` is ``clear``, else only those held back by consent, ``blocked``). Column ``_op`` says
    which."""
    fields = [c for c in desired.columns if c != key]
    synced = synced.select(desired.columns).cast(desired.schema)
    added = desired.join(synced, on=key, how="anti")
    both = desired.join(synced, on=key, how="inner", suffix="__synced")
    differs = (
        pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}__synced")) for c in fields])
        if fields
        else pl.lit(False)
    )
    changed = both.filter(differs).select(desired.columns)
    gone = synced.join(desired, on=key, how="anti")
    if removed == "keep":
        gone = gone.filter(pl.col(key).is_in(blocked.implode() if blocked is not None else []))
    return pl.concat(
        [
            added.with_columns(pl.lit("added").alias(state.OP)),
            changed.with_columns(pl.lit("changed").alias(state.OP)),
            gone.with_columns(pl.lit("removed").alias(state.OP)),
        ]
    ).sort(state.OP, key)


def progress_dir(settings: Settings) -> str:
    """Where HTTP destinations keep their per-batch progress (a folder or an object-store URI):
    ``ACTIVATION_PROGRESS_DIR``, else the lake's ``activation/_progress`` (on object storage too, so that
    every machine that syncs finds it)."""
    if os.environ.get("ACTIVATION_PROGRESS_DIR"):
        return os.environ["ACTIVATION_PROGRESS_DIR"]
    return object_store.join(settings.lake_root, "activation", "_progress")


def destination_for(
    config: SyncConfig, columns: dict[str, pl.DataType], settings: Settings | None = None
) -> Destination:
    """The destination object of a sync."""
    target = config.destination
    if target.kind == "hubspot":
        token = config.hubspot_token()
        if token is None:
            raise SyncSkipped(
                f"{config.name}: skipped: {target.token_env} is not set (the HubSpot private app's access "
                "token); set it to run this sync"
            )
        return HubSpotDestination(
            target.name,
            config.name,
            base_url=os.environ.get(target.base_url_env) or DEFAULT_BASE_URL,
            token=token,
            columns=columns,
            key=config.key_column,
            group=target.group,
            progress_path=object_store.join(progress_dir(settings or get_settings()), f"{config.name}.json"),
            per_window=target.quota.requests,
            window_s=target.quota.per_seconds,
            daily=target.quota.daily,
            batch_size=target.batch_size,
        )
    if target.kind == "postgres":
        return PostgresDestination(
            config.database_url(),
            target.name,
            config.name,
            target.schema_,
            target.table,
            columns,
            config.key_column,
        )
    return FilesDestination(
        outbox_dir(settings or get_settings()) / target.name / config.name,
        target.name,
        target.formats,
        config.key_column,
    )


def reconcile(
    config: SyncConfig, settings: Settings, destination: Destination, run_id: str
) -> tuple[int, int]:
    """Bring the lake's state in line with the destination's checkpoint; (lake's diff id, destination's)."""
    lake_version = state.state_version(settings, config.name)
    checkpoint = destination.checkpoint()
    applied = checkpoint.diff_id if checkpoint else 0
    if applied > lake_version:
        pending = state.read_pending(settings, config.name)
        if pending is None or pending.is_empty() or pending[state.DIFF_ID][0] != applied:
            raise SyncError(
                f"{config.name}: {destination.name} applied diff {applied} but the lake keeps no record of "
                f"it (state at {lake_version}): the lake's activation/ zone was changed outside the sync"
            )
        key = config.key_column
        refused = pl.Series(list(checkpoint.failures), dtype=pl.String)
        done = pending.filter(~pl.col(key).cast(pl.String).is_in(refused.implode())).drop(state.DIFF_ID)
        started = datetime.now(UTC)
        state.write_state(settings, config.name, done, key, applied)
        state.log_failures(settings, run_id, config.name, applied, checkpoint.failures)
        ops = done[state.OP].value_counts()
        count = dict(zip(ops[state.OP].to_list(), ops["count"].to_list(), strict=True))
        state.log_run(
            settings,
            _run_row(
                run_id,
                config,
                applied,
                "reconciled",
                started,
                {
                    "added": count.get("added", 0),
                    "changed": count.get("changed", 0),
                    "removed": count.get("removed", 0),
                    "sent": done.height,
                    "failed": len(checkpoint.failures),
                },
            ),
        )
        lake_version = applied
    return lake_version, applied


def _run_row(
    run_id: str, config: SyncConfig, diff_id: int, status: str, started: datetime, counts: dict, **extra
) -> dict:
    finished = datetime.now(UTC)
    row = {name: 0 for name, dtype in state.RUN_SCHEMA.items() if dtype == pl.Int64}
    row.update(counts)
    row.update(
        run_id=run_id,
        sync=config.name,
        destination=f"{config.destination.kind}:{config.destination.name}",
        diff_id=diff_id,
        status=status,
        dry_run=status == "dry_run",
        error=None,
        started_at=started,
        finished_at=finished,
        duration_s=(finished - started).total_seconds(),
    )
    row.update(extra)
    return row


def run_sync(config: SyncConfig, settings: Settings | None = None, *, dry_run: bool = False) -> dict:
    """Run one sync (or preview it with ``dry_run``: nothing is written anywhere); its run-log row, with the
    sample keys of a dry run under ``sample`` and the seconds spent per phase under ``phases``."""
    settings = settings or get_settings()
    run_id = uuid.uuid4().hex
    started = datetime.now(UTC)
    phases: dict[str, float] = {}
    mark = [time.perf_counter()]

    def lap(phase: str) -> None:
        now = time.perf_counter()
        phases[phase] = now - mark[0]
        mark[0] = now

    counts: dict[str, int] = {}
    diff_id = 0
    if config.destination.kind == "hubspot" and config.hubspot_token() is None:
        destination_for(config, {}, settings)  # raises SyncSkipped naming the variable
    try:
        contract = load_outbound(config)
        desired, blocked, counts = read_source(config, settings)
        destination = destination_for(config, dict(desired.schema), settings)
        key = config.key_column
        lap("read_and_consent")
        if dry_run:
            lake_version = state.state_version(settings, config.name)
            checkpoint = destination.checkpoint()
            applied = checkpoint.diff_id if checkpoint else 0
        else:
            lake_version, applied = reconcile(config, settings, destination, run_id)
        lap("reconcile")
        full = applied < lake_version
        synced = desired.head(0) if full else state.read_state(settings, config.name, dict(desired.schema))
        diff = compute_diff(desired, synced, key, removed=config.removed, blocked=blocked)
        diff_id = lake_version + 1
        ops = {op: diff.filter(pl.col(state.OP) == op) for op in ("added", "changed", "removed")}
        counts.update({op: frame.height for op, frame in ops.items()})
        counts["cleared_by_consent"] = ops["removed"].filter(pl.col(key).is_in(blocked.implode())).height
        retry_keys = state.last_failed_keys(settings, config.name)
        counts["retried"] = (
            diff.filter(pl.col(key).cast(pl.String).is_in(list(retry_keys))).height if retry_keys else 0
        )
        lap("diff")
        refused_by_contract = {}
        if contract is not None:
            sent = diff.filter(pl.col(state.OP) != "removed").drop(state.OP)
            refused_by_contract = {
                k: ("upsert", f"outbound contract {config.contract}: {reason}")
                for k, reason in violations(contract, sent, key).items()
            }
            if refused_by_contract:
                diff = diff.filter(~pl.col(key).cast(pl.String).is_in(list(refused_by_contract)))
        counts["refused_by_contract"] = len(refused_by_contract)
        if hasattr(destination, "plan"):
            removals = diff.filter(pl.col(state.OP) == "removed").height
            requests, counts["planned_s"] = destination.plan(diff.height - removals, removals)
            quota = config.destination.quota
            log.info(
                "%s: %d records to send in %d requests: at least %.0f s under the quota of %d requests per "
                "%g s and %d a day",
                config.name,
                diff.height,
                requests,
                counts["planned_s"],
                quota.requests,
                quota.per_seconds,
                quota.daily,
            )
        lap("contract")
        if dry_run:
            row = _run_row(run_id, config, diff_id, "dry_run", started, counts)
            row["sample"] = {op: frame[key].head(SAMPLE_SIZE).to_list() for op, frame in ops.items()}
            return row
        if diff.is_empty():
            state.log_failures(settings, run_id, config.name, lake_version, refused_by_contract)
            counts.update(failed=len(refused_by_contract))
            status = "partial" if refused_by_contract else "succeeded"
            row = _run_row(run_id, config, lake_version, status, started, counts)
            state.log_run(settings, row)
            lap("run_log")
            return row | {"phases": phases}
        state.write_pending(settings, config.name, diff, diff_id)
        crash_point("activation.after_pending")
        lap("pending")
        upserts = diff.filter(pl.col(state.OP) != "removed").drop(state.OP)
        failures = destination.apply(diff_id, upserts, ops["removed"][key])
        crash_point("activation.after_destination_commit")
        lap("destination")
        refused = pl.Series(list(failures), dtype=pl.String)
        done = diff.filter(~pl.col(key).cast(pl.String).is_in(refused.implode()))
        state.write_state(settings, config.name, done, key, diff_id, replace=full)
        crash_point("activation.after_state")
        lap("state")
        failures = refused_by_contract | failures
        state.log_failures(settings, run_id, config.name, diff_id, failures)
        counts.update(sent=done.height, failed=len(failures))
        row = _run_row(run_id, config, diff_id, "partial" if failures else "succeeded", started, counts)
        state.log_run(settings, row)
        lap("run_log")
        return row | {"phases": phases}
    except Exception as error:
        if not dry_run:
            error_text = f"{type(error).__name__}: {error}"[:1000]
            state.log_run(
                settings, _run_row(run_id, config, diff_id, "failed", started, counts, error=error_text)
            )
        raise


def describe(row: dict) -> str:
    """One line about a run (counts and ids only)."""
    text = (
        f"{row['sync']} -> {row['destination']}  diff {row['diff_id']}: added {row['added']}, changed "
        f"{row['changed']}, removed {row['removed']} (cleared by consent {row['cleared_by_consent']}), sent "
        f"{row['sent']}, failed {row['failed']}, retried {row['retried']}; skipped by consent "
        f"{row['skipped_by_consent']}, not actions {row['not_actions']} of {row['source_rows']} source rows; "
        f"{row['duration_s']:.2f} s [{row['status']}]"
    )
    if row.get("refused_by_contract"):
        text += f"; refused by the outbound contract {row['refused_by_contract']}"
    if row.get("planned_s") is not None:
        text += f"; at least {row['planned_s']:.0f} s under the destination's quota"
    if "sample" in row:
        text += "\n  sample " + "; ".join(f"{op}: {keys}" for op, keys in row["sample"].items())
    return text


def print_log(settings: Settings, syncs: list[str] | None, last: int) -> None:
    """Print the last ``last`` runs (of ``syncs``, or all) and, per sync, the records refused in its last diff
    that had refusals, with the destination's reason: the next run sends them again."""
    log = state.runs(settings)
    refused = state.failures(settings)
    if syncs:
        log = log.filter(pl.col("sync").is_in(syncs))
        refused = refused.filter(pl.col("sync").is_in(syncs))
    columns = [
        "started_at",
        "sync",
        "diff_id",
        "status",
        "added",
        "changed",
        "removed",
        "sent",
        "failed",
        "skipped_by_consent",
        "duration_s",
    ]
    with pl.Config(tbl_rows=last, tbl_cols=len(columns), tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(log.tail(last).select(columns))
        if refused.height:
            latest = refused.filter(pl.col("diff_id") == pl.col("diff_id").max().over("sync"))
            print("refused in the last diff with refusals (sent again by the next run):")
            print(latest.select("sync", "diff_id", "key", "op", "reason"))


def main(argv: list[str] | None = None) -> int:
    """Run every sync (or those named by ``--sync``); print one line per run; exit 1 when one failed."""
    parser = argparse.ArgumentParser(prog="python -m activation.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--sync", action="append", help="a sync's name (repeatable; default: every sync)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be sent, change nothing")
    parser.add_argument(
        "--log",
        type=int,
        metavar="N",
        help="print the last N runs and the records refused in each sync's last diff",
    )
    args = parser.parse_args(argv)
    disable_telemetry()
    if args.log is not None:
        print_log(get_settings(), args.sync, args.log)
        return 0
    try:
        syncs = load_syncs()
    except SyncConfigError as error:
        print(f"invalid sync: {error}", file=sys.stderr)
        return 1
    unknown = sorted(set(args.sync or []) - set(syncs))
    if unknown:
        print(f"unknown sync {', '.join(unknown)} (known: {', '.join(syncs)})", file=sys.stderr)
        return 1
    status = 0
    handler = logging.StreamHandler(sys.stderr)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    for name in args.sync or list(syncs):
        try:
            print(describe(run_sync(syncs[name], dry_run=args.dry_run)))
        except SyncSkipped as skipped:
            print(skipped)
        except Exception as error:  # every sync runs; each failure is reported and logged
            print(f"{name}: failed: {type(error).__name__}: {error}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
