"""The Dagster entry point (``dagster dev`` through ``workspace.yaml``): every asset, check, job, schedule
and sensor of the project, built from the data contracts in ``DATA_CONTRACTS_DIR``."""

import dagster as dg

from data_contracts import scan_contracts
from lake.settings import disable_telemetry, get_settings
from orchestration.dbt_assets import dbt_daily_snapshots, dbt_models
from orchestration.dbt_project import DBT_EXECUTABLE, LocalDbtCliResource, dbt_project
from orchestration.erasure import erasure_job
from orchestration.identity_checks import identity_quality_check
from orchestration.lake_assets import invalid_contract_specs, lake_definitions
from orchestration.ml_assets import (
    MlflowResource,
    decisions_after,
    decisions_job,
    model_registry,
    nba_decisions,
    policy_evaluation,
    retrain_when_drifted_or_stale,
    training_job,
    uplift_candidate,
    weekly_training_schedule,
)
from orchestration.operations import (
    ingest_job,
    landing_sensor,
    maintenance_job,
    nightly_maintenance,
    refresh_schedules,
)
from orchestration.resources import LakeResource
from orchestration.simulation import simulated_company_asset, simulated_feeds

disable_telemetry()

scanned = scan_contracts(get_settings().contracts_dir)  # an invalid contract leaves out its feed only
contracts = scanned.contracts
lake_assets, lake_checks = lake_definitions(contracts, produced=simulated_feeds())
maintenance = maintenance_job(contracts)

refresh, after_snapshots, nightly_refresh = refresh_schedules(contracts, dbt_models, dbt_daily_snapshots)

defs = dg.Definitions(
    assets=[
        simulated_company_asset(contracts),
        *lake_assets,
        dbt_models,
        dbt_daily_snapshots,
        uplift_candidate,
        model_registry,
        nba_decisions,
        policy_evaluation,
        *invalid_contract_specs(scanned.problems),
    ],
    asset_checks=[*lake_checks, identity_quality_check],
    jobs=[ingest_job, maintenance, erasure_job, training_job, decisions_job],
    schedules=[nightly_maintenance(maintenance), *refresh, weekly_training_schedule],
    sensors=[
        landing_sensor(contracts),
        *after_snapshots,
        decisions_after(nightly_refresh),
        retrain_when_drifted_or_stale,
    ],
    resources={
        "lake": LakeResource(),
        "mlflow": MlflowResource(),
        "dbt": LocalDbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    },
    executor=dg.in_process_executor,
)
