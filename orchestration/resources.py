"""Resources shared by the assets: the lake's settings and MLflow's. Each field left unset takes its value
from the environment (``lake.settings.get_settings``, ``ml.settings.get_ml_settings``); a field set in the
Definitions or in a run's config (``resources: {lake: {config: {warehouse_path: ...}}}``) overrides it for
that run."""

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import dagster as dg

from lake.settings import Settings, get_settings
from ml.settings import MlSettings, get_ml_settings

WAREHOUSE_POOL = "warehouse"
"""Concurrency pool of every step that writes the DuckDB warehouse file: one writer at a time, across runs."""


def _overridden(defaults: Any, resource: dg.ConfigurableResource) -> Any:
    """``defaults`` (a settings dataclass) with the resource's fields that are set; paths as ``Path``."""
    types = {f.name: f.type for f in fields(defaults)}
    changes = {}
    for name, value in resource.model_dump().items():
        if value is None:
            continue
        changes[name] = Path(value).expanduser().resolve() if "Path" in str(types[name]) else value
    return replace(defaults, **changes) if changes else defaults


class LakeResource(dg.ConfigurableResource):
    """Where the lake and the warehouse are and how the assets size their work
    (``lake.settings.Settings``)."""

    lake_root: str | None = None
    """``LAKE_ROOT``: a folder, or an object-store URI."""
    warehouse_path: str | None = None
    """``WAREHOUSE_PATH``: the DuckDB file dbt builds."""
    snapshot_person_dates_per_dbt_run: int | None = None
    """``SNAPSHOT_PERSON_DATES_PER_DBT_RUN``: persons x dates of one dbt invocation of a snapshot backfill."""
    max_reject_rate: float | None = None
    """``INGEST_MAX_REJECT_RATE``: share of a file's records quarantined before the file is rejected."""
    min_rejected_records: int | None = None
    """``INGEST_MIN_REJECTED_RECORDS``: quarantined records a file needs before it can be rejected."""
    bronze_retention_days: int | None = None
    """``BRONZE_RETENTION_DAYS``: days raw bronze keeps a record, for every feed (the contracts' SLA if
    unset)."""
    duckdb_memory_limit: str | None = None
    """``LAKE_DUCKDB_MEMORY_LIMIT``: of every in-memory DuckDB connection of the lake."""
    warehouse_memory_limit: str | None = None
    """``WAREHOUSE_MEMORY_LIMIT``: of every connection to the warehouse file."""
    duckdb_threads: int | None = None
    """``LAKE_DUCKDB_THREADS``: threads of every DuckDB connection of the lake."""
    batch_bytes: int | None = None
    """``LAKE_BATCH_BYTES``: uncompressed bytes of landed data per bronze batch."""
    apply_step_rows: int | None = None
    """``LAKE_APPLY_STEP_ROWS``: bronze rows the apply to silver merges at a time."""

    def settings(self) -> Settings:
        """The settings the assets of this run read and write with."""
        return _overridden(get_settings(), self)


class MlflowResource(dg.ConfigurableResource):
    """Where models are tracked and registered and how they are gated and watched
    (``ml.settings.MlSettings``)."""

    tracking_uri: str | None = None
    """``MLFLOW_TRACKING_URI``: the tracking and registry store."""
    experiment_name: str | None = None
    """``MLFLOW_EXPERIMENT_NAME``: the MLflow experiment of the training runs."""
    model_name: str | None = None
    """``MLFLOW_MODEL_NAME``: the registered model the decisions use."""
    policy_file: str | None = None
    """``NBA_POLICY_FILE``: the decision policy (eligibility, budgets, holdout, exploration)."""
    promotion_requires_approval: bool | None = None
    """``PROMOTION_REQUIRES_APPROVAL``: a candidate that passes the gate waits for an operator."""
    champion_max_age_days: int | None = None
    """``CHAMPION_MAX_AGE_DAYS``: the retrain sensor asks for training when the champion is older."""
    drift_warn_psi: float | None = None
    """``DRIFT_WARN_PSI``: the drift checks warn from this population stability index."""
    drift_error_psi: float | None = None
    """``DRIFT_ERROR_PSI``: the drift checks fail from this population stability index."""

    def settings(self) -> MlSettings:
        """The ML settings the assets of this run use."""
        return _overridden(get_ml_settings(), self)
