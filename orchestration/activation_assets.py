"""The reverse-ETL syncs as Dagster assets: one per sync file (``activation/syncs/<name>.yaml``, or the folder
``ACTIVATION_SYNCS_DIR``), key ``activation/<name>``, downstream of the decisions (``ml/nba_decisions``) and
of the consents they check again (``silver/crm/consents``). Each materialization is one run of the sync engine
(:func:`activation.sync.run_sync`): the diff of gold ``nba_current`` against the state last synced, with
consent checked again at send time, so a run whose decisions did not change still clears at the destination
the persons who revoked their consent since. A sync whose destination's credentials are not set is skipped
(no materialization), with the reason in the log."""

import contextlib
from pathlib import Path

import dagster as dg

from activation import state
from activation.config import SyncConfig, SyncConfigError, scan_syncs
from activation.crm_server import URL_ENV, crm_database_url, crm_environment
from activation.sync import SyncSkipped, describe, destination_for, retryable, run_sync
from lake import delta
from lake.gold import gold_uri
from lake.settings import Settings
from orchestration.invalid_files import invalid_file_spec
from orchestration.resources import LakeResource

ACTIVATION_GROUP = "activation"
DECISIONS = dg.AssetKey(["ml", "nba_decisions"])
CONSENTS = dg.AssetKey(["silver", "crm", "consents"])
"""The consents every sync checks again at send time: upstream too, so that a run which ingests them (the
hourly run) syncs after the ingestion."""
SYNC_RETRY = dg.RetryPolicy(
    max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""A sync whose destination stays unreachable through the engine's own retries is tried again as a whole
(15 s, 30 s, 60 s, each +/- up to 15 s): the next run reconciles with the destination's checkpoint, so a retry
applies nothing twice. A sync that cannot run, or that the destination refuses outright (a wrong token, the
daily limit), fails at once (:func:`activation.sync.retryable`)."""
COUNTS = (
    "added",
    "changed",
    "removed",
    "cleared_by_consent",
    "sent",
    "failed",
    "refused_by_contract",
    "retried",
    "skipped_by_consent",
    "not_actions",
    "source_rows",
)
"""The run's counts published as materialization metadata (counts only: no key, no personal data)."""


class CrmResource(dg.ConfigurableResource):
    """The CRM's PostgreSQL database for the syncs whose destination reads ``CRM_DATABASE_URL``: the URL set
    here, else ``CRM_DATABASE_URL``, else the embedded server beside the lake (``activation.crm_server``,
    started when not running)."""

    database_url: str | None = None

    def url(self, settings: Settings) -> str:
        """The URL the syncs of this run write to."""
        return self.database_url or crm_database_url(settings)


def sync_key(name: str) -> dg.AssetKey:
    """The asset key of a sync: ``activation/<name>``."""
    return dg.AssetKey([ACTIVATION_GROUP, name])


def destination_pool(config: SyncConfig) -> str:
    """The concurrency pool of a destination: two runs never sync to one destination at once."""
    return f"activation_{config.destination.kind}_{config.destination.name}"


def missing_credentials(config: SyncConfig) -> str | None:
    """Why the sync's destination cannot be reached with the environment as it is (a credential not set), or
    None."""
    try:
        destination_for(config, {})
    except SyncSkipped as error:  # its message names the sync and says it is skipped
        return str(error)
    except SyncConfigError as error:
        return f"{config.name}: skipped: {error}"
    return None


def run_metadata(row: dict, settings: Settings) -> dict:
    """The materialization metadata of a sync run: its counts, status, duration (and, for an HTTP destination,
    the least time its quota allowed), the diff the destination holds now and the state table's Delta version
    (ids and counts only)."""
    table = delta.open_table(state.uri(settings, "state", row["sync"]), settings.storage_options)
    planned = {"planned_s": float(row["planned_s"])} if row.get("planned_s") is not None else {}
    return {
        **planned,
        **{name: int(row.get(name) or 0) for name in COUNTS},
        "status": row["status"],
        "destination": row["destination"],
        "sync_run_id": row["run_id"],
        "state_diff_id": int(row["diff_id"]),
        "state_table_version": table.version() if table is not None else -1,
        "duration_s": float(row["duration_s"]),
    }


def sync_asset(config: SyncConfig) -> dg.AssetsDefinition:
    """The asset of one sync file."""
    target = config.destination
    where = {
        "postgres": f"{target.schema_}.{target.table} of the PostgreSQL server in {target.url_env}",
        "files": f"the outbox folder {target.name}/{config.name} ({', '.join(target.formats)})",
    }.get(target.kind, f"the {target.kind} destination {target.name} (credentials from the environment)")

    @dg.asset(
        key=sync_key(config.name),
        deps=[DECISIONS, CONSENTS],
        group_name=ACTIVATION_GROUP,
        kinds={target.kind},
        pool=destination_pool(config),
        retry_policy=SYNC_RETRY,
        output_required=False,
        description=f"Reverse-ETL sync {config.name}: the changed next-best actions of gold "
        f"{config.source.table} to {where} (removed rows: {config.removed}); consent checked again at send "
        "time. Skipped when the destination's credentials are not set.",
    )
    def _sync(context: dg.AssetExecutionContext, lake: LakeResource, crm: CrmResource):
        settings = lake.settings()
        url = crm.url(settings) if target.kind == "postgres" and target.url_env == URL_ENV else None
        with crm_environment(url) if url else contextlib.nullcontext():
            missing = missing_credentials(config)
            if missing is not None:
                context.log.warning(missing)
                return
            if delta.open_table(gold_uri(settings, config.source.table), settings.storage_options) is None:
                context.log.warning(
                    f"sync {config.name} skipped: no gold {config.source.table} yet (no decisions)"
                )
                return
            try:
                row = run_sync(config, settings)
            except Exception as error:
                if retryable(error):
                    raise
                raise dg.Failure(f"sync {config.name}: {error}", allow_retries=False) from error
        context.log.info(describe(row))
        if row["failed"]:
            context.log.warning(
                f"sync {config.name}: {row['failed']} records refused by {row['destination']}; the next run "
                f"sends them again (python -m activation.sync --log 5 --sync {config.name} shows the reasons)"
            )
        yield dg.MaterializeResult(metadata=run_metadata(row, settings))

    return _sync


INVALID_SYNCS_GROUP = "invalid_syncs"


def sync_assets(syncs: dict[str, SyncConfig] | None = None) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """One asset per sync file (those of ``ACTIVATION_SYNCS_DIR`` by default); a file of that folder that does
    not load is left out and stands as an asset of the group ``invalid_syncs`` that says why."""
    problems: dict[Path, str] = {}
    if syncs is None:
        syncs, problems = scan_syncs()
    return [sync_asset(config) for config in syncs.values()] + [
        invalid_file_spec(INVALID_SYNCS_GROUP, path, path.stem, "its sync is not loaded", [message])
        for path, message in problems.items()
    ]
