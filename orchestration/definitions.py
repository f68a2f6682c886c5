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
from orchestration.jobs import ingest_job, maintenance_job, run_jobs
from orchestration.lake_assets import invalid_contract_specs, lake_definitions
from orchestration.ml_assets import model_registry, nba_decisions, policy_evaluation, uplift_candidate
from orchestration.outcome_assets import decision_attribution, lift_guardrail
from orchestration.resources import LakeResource, MlflowResource
from orchestration.run_failures import record_run_failures
from orchestration.schedules import nightly_maintenance, run_schedules
from orchestration.sensors import after_nightly_snapshots, landing_sensor
from orchestration.simulation import simulated_company_asset, simulated_feeds

disable_telemetry()

scanned = scan_contracts(get_settings().contracts_dir)  # an invalid contract leaves out its feed only
contracts = scanned.contracts
lake_assets, lake_checks = lake_definitions(contracts, produced=simulated_feeds())
maintenance = maintenance_job(contracts)
runs = run_jobs(dbt_models, dbt_daily_snapshots)

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
    jobs=[ingest_job, maintenance, erasure_job],
    schedules=[nightly_maintenance(maintenance), *run_schedules(contracts, runs, daily_snapshots)],
    sensors=[landing_sensor(contracts), after_nightly_snapshots(runs), record_run_failures],
    resources={
        "lake": LakeResource(),
        "mlflow": MlflowResource(),
        "crm": CrmResource(),
        "dbt": LocalDbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE),
    },
    executor=dg.in_process_executor,
)
