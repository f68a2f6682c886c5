"""The jobs: ingest the landing files, refresh the dbt models every hour and every night, care for the lake's
tables, train a candidate model, decide and evaluate the next-best actions of a date."""

from typing import TYPE_CHECKING, NamedTuple

import dagster as dg
from dagster_dbt import build_dbt_asset_selection

from data_contracts import Contract
from lake import maintenance
from lake.warehouse import publish_silver
from orchestration.lake_assets import BRONZE_GROUP, SILVER_GROUP
from orchestration.ml_assets import CANDIDATE, DECISIONS, EVALUATION, REGISTRY
from orchestration.resources import WAREHOUSE_POOL, LakeResource

if TYPE_CHECKING:  # what define_asset_job returns (not exported by dagster's top-level API)
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

ingest_job = dg.define_asset_job(
    "ingest_lake",
    selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP),
    description="Landing files into bronze and silver, for every feed, with the contracts' checks.",
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


class RefreshJobs(NamedTuple):
    """The jobs that refresh the dbt models: hourly, the daily snapshots, and nightly after the snapshots."""

    hourly: "UnresolvedAssetJobDefinition"
    snapshots: "UnresolvedAssetJobDefinition"
    nightly: "UnresolvedAssetJobDefinition"


def refresh_jobs(dbt_models: dg.AssetsDefinition, dbt_daily_snapshots: dg.AssetsDefinition) -> RefreshJobs:
    """Hourly: the lake and the dbt models tagged ``hourly`` (staging, identity). The daily feature snapshots
    of a date or range of dates. Nightly: the other models tagged ``nightly`` (profile, training sets,
    outcomes)."""
    return RefreshJobs(
        hourly=dg.define_asset_job(
            "hourly_refresh",
            selection=dg.AssetSelection.groups(BRONZE_GROUP, SILVER_GROUP)
            | build_dbt_asset_selection([dbt_models], dbt_select="tag:hourly"),
            description="Landing into bronze and silver, then the hourly dbt models.",
        ),
        snapshots=dg.define_asset_job(
            "nightly_snapshots",
            selection=dg.AssetSelection.assets(dbt_daily_snapshots),
            description="The daily feature snapshots of one date (a partition) or a range of dates (a "
            "backfill).",
        ),
        nightly=dg.define_asset_job(
            "nightly_refresh",
            selection=build_dbt_asset_selection([dbt_models], dbt_select="tag:nightly"),
            description="The nightly dbt models rebuilt whole: profile, training sets, outcomes.",
        ),
    )


training_job = dg.define_asset_job(
    "weekly_training",
    selection=dg.AssetSelection.assets(CANDIDATE, REGISTRY),
    description="Train an uplift candidate on the current training set, register it, apply the promotion "
    "gate and show the registry's state.",
)
decisions_job = dg.define_asset_job(
    "daily_decisions",
    selection=dg.AssetSelection.assets(REGISTRY, DECISIONS, EVALUATION),
    description="The registry's state, the next-best actions of one snapshot date with their drift checks, "
    "and their evaluation against the simulator's truth.",
)
