"""The Dagster entry point (``dagster dev`` through ``workspace.yaml``): every asset, check, job, schedule
and sensor of the project, built from the data contracts in ``DATA_CONTRACTS_DIR``."""

import dagster as dg

from data_contracts import scan_contracts
from lake.settings import disable_telemetry, get_settings
from orchestration.activation_assets import CrmResource, sync_assets
from orchestration.dbt_assets import daily_snapshots, dbt_daily_snapshots, dbt_models
from orchestration.dbt_project import DBT_EXECUTABLE, LocalDbtCliResource, dbt_project
from orchestration.erasure import erasure_job
from orchestration.evaluation import identity_quality_check
from orchestration.jobs import decisions_job, ingest_job, maintenance_job, refresh_jobs, training_job
from orchestration.lake_assets import invalid_contract_specs, lake_definitions
from orchestration.ml_assets import model_registry, nba_decisions, policy_evaluation, uplift_candidate
from orchestration.outcome_assets import decision_attribution, lift_guardrail
from orchestration.resources import LakeResource, MlflowResource
from orchestration.schedules import nightly_maintenance, refresh_schedules, weekly_training_schedule
from orchestration.sensors import (
    after_nightly_snapshots,
    decisions_after,
    landing_sensor,
    retrain_when_drifted_or_stale,
)
from orchestration.simulation import simulated_company_asset, simulated_feeds

disable_telemetry()

scanned = scan_contracts(get_settings().contracts_dir)  # an invalid contract leaves out its feed only
contracts = scanned.contracts
lake_assets, lake_checks = lake_definitions(contracts, produced=simulated_feeds())
maintenance = maintenance_job(contracts)
refresh = refresh_jobs(dbt_models, dbt_daily_snapshots)

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
        decision_attribution,
        lift_guardrail,
        *sync_assets(),
        *invalid_contract_specs(scanned.problems),
    ],
    asset_checks=[*lake_checks, identity_quality_check],
    jobs=[ingest_job, maintenance, erasure_job, training_job, decisions_job],
    schedules=[
        nightly_maintenance(maintenance),
        *refresh_schedules(contracts, refresh, daily_snapshots),
        weekly_training_schedule,
    ],
    sensors=[
        landing_sensor(contracts),
        after_nightly_snapshots(refresh),
        decisions_after(refresh.nightly),
        retrain_when_drifted_or_stale,
    ],
    resources={
        "lake": LakeResource(),
        "mlflow": MlflowResource(),
        "crm": CrmResource(),
        "dbt": LocalDbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    },
    executor=dg.in_process_executor,
)
