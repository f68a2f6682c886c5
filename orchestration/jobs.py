"""The jobs: the hourly run (ingest, the hourly dbt models, the consent re-sync), the nightly chain (the
daily feature snapshots, then the nightly models, training when due, the promotion gate, the decisions, the
syncs, their evaluation, the attributed outcomes and the guardrail), the ingestion alone, the care of the
lake's tables."""

from typing import TYPE_CHECKING, NamedTuple

import dagster as dg
from dagster_dbt import build_dbt_asset_selection

from data_contracts import Contract
from lake import maintenance
from lake.warehouse import publish_silver
from orchestration.activation_assets import ACTIVATION_GROUP
from orchestration.lake_assets import BRONZE_GROUP, SILVER_GROUP
from orchestration.ml_assets import CANDIDATE, DECISIONS, EVALUATION, REGISTRY
from orchestration.outcome_assets import OUTCOMES_GROUP
from orchestration.resources import WAREHOUSE_POOL, LakeResource

if TYPE_CHECKING:  # what define_asset_job returns (not exported by dagster's top-level API)
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

ACTIVATION = dg.AssetSelection.groups(ACTIVATION_GROUP)
"""The syncs (one asset per sync file, downstream of the decisions and the consents)."""
OUTCOMES = dg.AssetSelection.groups(OUTCOMES_GROUP)
"""The decisions' attributed outcomes, the policy's lift and the guardrail that may roll the champion back."""

ingest_job = dg.define_asset_job(
    "ingest_lake",
    selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP),
    description="Landing files into bronze and silver, for every feed, with the contracts' checks (started "
    "by new_landing_files as files land).",
)


def maintenance_job(contracts: dict[str, Contract]) -> dg.JobDefinition:
    """Compaction, checkpoint and vacuum of every lake table, and expiry of old raw bronze records."""

    @dg.op(description=maintenance.__doc__, pool=WAREHOUSE_POOL)
    def care_for_lake_tables(context: dg.OpExecutionContext, lake: LakeResource) -> None:
        settings = lake.settings()
        for care in maintenance.maintain(settings, contracts):
            context.log.info(
                f"{care.uri}: {care.files_before} -> {care.files_after} files, {care.files_vacuumed} "
                f"vacuumed, {care.rows_expired} expired rows"
            )
        publish_silver(settings, contracts)  # vacuum removed files the old views listed

    @dg.job(
        name="lake_maintenance",
        description="Expire raw bronze records past their contract's retention, then compact, checkpoint and "
        "vacuum every Delta table of the lake (bronze, silver, gold, ledger, quarantine).",
    )
    def lake_maintenance():
        care_for_lake_tables()

    return lake_maintenance


class RunJobs(NamedTuple):
    """The jobs of the hourly and nightly runs: ``hourly``, then the nightly chain ``snapshots`` ->
    ``nightly``."""

    hourly: "UnresolvedAssetJobDefinition"
    snapshots: "UnresolvedAssetJobDefinition"
    nightly: "UnresolvedAssetJobDefinition"


MODELS = dg.AssetSelection.assets(CANDIDATE, REGISTRY, DECISIONS, EVALUATION)
"""Training, the registry's state, the decisions and their evaluation: the nightly's part after dbt."""


def run_jobs(dbt_models: dg.AssetsDefinition, dbt_daily_snapshots: dg.AssetsDefinition) -> RunJobs:
    """Hourly: the lake, the dbt models tagged ``hourly`` (staging, identity), the syncs (group
    ``activation``: the consent re-sync). Nightly, in two jobs (the snapshots are partitioned by day, the
    dbt models are not, and one dbt op cannot run both before and after them in one run): the daily feature
    snapshots of a date, then the models tagged ``nightly`` (profile, training sets, outcomes), the training
    (when due), the promotion gate, the decisions of the date, the syncs, the evaluation, the attributed
    outcomes and the lift guardrail."""
    return RunJobs(
        hourly=dg.define_asset_job(
            "hourly_refresh",
            selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP)
            | build_dbt_asset_selection([dbt_models], dbt_select="tag:hourly")
            | ACTIVATION,
            description="Landing into bronze and silver, the hourly dbt models, then the syncs of the "
            "current decisions against the consents just ingested (a revoked channel is cleared at the "
            "destination).",
        ),
        snapshots=dg.define_asset_job(
            "nightly_snapshots",
            selection=dg.AssetSelection.assets(dbt_daily_snapshots),
            description="The daily feature snapshots of one date (a partition) or a range of dates (a "
            "backfill); when it succeeds, after_nightly_snapshots starts nightly_refresh for the same date.",
        ),
        nightly=dg.define_asset_job(
            "nightly_refresh",
            selection=build_dbt_asset_selection([dbt_models], dbt_select="tag:nightly")
            | MODELS
            | ACTIVATION
            | OUTCOMES,
            description="The nightly dbt models rebuilt whole (profile, training sets, outcomes), training "
            "of a candidate when due (weekly, or when the champion drifted or aged) with its promotion gate, "
            "the registry's state, the next-best actions of the date (a partition), the syncs to the CRM "
            "destinations, the evaluation against the simulator's truth, the outcomes attributed to every "
            "decision, the policy's lift against the holdout and the guardrail (a rollback serves from the "
            "next night's decisions).",
        ),
    )
