"""One settings object for the whole project, read from environment variables with local defaults.

Every command and every asset calls :func:`get_settings` instead of reading the environment itself, so that
production swaps URIs, not code. The defaults run everything embedded on one machine, under ``var/`` in the
repository (git-ignored).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = REPO_ROOT / "var"

# Environment variables that switch off the usage telemetry of the tools this project runs.
TELEMETRY_OFF = {
    "DAGSTER_DISABLE_TELEMETRY": "true",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@dataclass(frozen=True)
class Settings:
    """Where everything lives and the few secrets and choices that differ between environments."""

    lake_root: str
    warehouse_path: Path
    mlflow_tracking_uri: str
    pii_secret: str
    schedule_timezone: str
    max_reject_rate: float = 0.2
    """Share of a landing file's records that may go to quarantine before the ingestion fails on that file."""
    min_rejected_records: int = 10
    """A file is rejected only when at least this many of its records were quarantined (and the share passed)."""
    bronze_retention_days: int = 90
    """Days the raw (restricted) bronze zone keeps a record after its ingestion."""
    first_snapshot_date: date = date(2026, 9, 1)
    """The first day of the daily feature snapshots (the first Dagster partition of the partitioned models)."""
    snapshot_dates_per_dbt_run: int = 5
    """A backfill of the daily snapshots builds this many dates per dbt invocation: memory grows with persons x
    dates (at 1,000,000 persons, 5 dates fit in 24 GB, 30 do not)."""
    contracts_dir: Path = REPO_ROOT / "data_contracts" / "contracts"
    """The data contracts of the feeds: one per feed; a new contract (and its landing folder) adds a feed."""
    duckdb_memory_limit: str = "2GB"
    """Memory limit of every in-memory DuckDB connection the lake opens (parsing and decoding; beyond it DuckDB
    spills to disk, under ``duckdb_temp_directory``). DuckDB's own default is 80% of the machine's memory."""
    warehouse_memory_limit: str = "8GB"
    """Memory limit of every connection to the warehouse file: dbt's (the profile reads the same variable), the
    silver views', the gold publication's."""
    duckdb_threads: int | None = None
    """Threads of every DuckDB connection the lake opens (None: DuckDB's default, one per core)."""
    batch_bytes: int = 256 << 20
    """Bytes of landed data per bronze batch, uncompressed (a gzipped file counts for its uncompressed size): the
    bound on what ingestion and the apply to silver hold of one batch (a single larger file stays whole)."""
    apply_step_rows: int = 250_000
    """Bronze rows the apply to silver reads, decodes and merges at a time, the bound on its memory (clickstream
    batches are split into steps of this size; a CDC batch larger than this is applied whole)."""

    @property
    def duckdb_temp_directory(self) -> Path:
        """Where DuckDB spills what passes its memory limit: ``duckdb_tmp/`` beside the warehouse file."""
        return self.warehouse_path.parent / "duckdb_tmp"

    def duckdb_config(self, warehouse: bool = False) -> dict[str, str]:
        """The configuration of a DuckDB connection (``duckdb.connect(config=...)``): the memory limit (of the
        warehouse file's connections when ``warehouse``), the threads, and the spill folder (DuckDB names its
        spill files after the process and instance that own them, so connections can share it)."""
        self.duckdb_temp_directory.mkdir(parents=True, exist_ok=True)
        limit = self.warehouse_memory_limit if warehouse else self.duckdb_memory_limit
        config = {"memory_limit": limit, "temp_directory": str(self.duckdb_temp_directory)}
        if self.duckdb_threads is not None:
            config["threads"] = str(self.duckdb_threads)
        return config

    @property
    def is_local(self) -> bool:
        """True when the lake root is a folder on this machine rather than an object-store URI."""
        return "://" not in self.lake_root or self.lake_root.startswith("file://")

    def zone(self, name: str) -> str:
        """The URI or path of one zone of the lake (``landing``, ``bronze``, ``silver``, ``gold``, ...)."""
        return f"{self.lake_root.rstrip('/')}/{name}"

    @property
    def storage_options(self) -> dict[str, str]:
        """Object-store options for deltalake and polars, from the standard ``AWS_*`` variables (empty when local)."""
        if self.is_local:
            return {}
        names = (
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ALLOW_HTTP",
        )
        return {name: os.environ[name] for name in names if os.environ.get(name)}

    @property
    def landing(self) -> str:
        """Where raw files arrive: ``cdc/<topic>/`` and ``clickstream/<source>/``."""
        return self.zone("landing")

    @property
    def simulator_truth(self) -> str:
        """Where the simulated company keeps its ground truth: inside the lake root, outside the landing zone."""
        return self.zone("simulator_truth")


def get_settings() -> Settings:
    """Read the settings from the environment (``LAKE_ROOT``, ``WAREHOUSE_PATH``, ``MLFLOW_TRACKING_URI``,
    ``PII_SECRET``, ``SCHEDULE_TIMEZONE``, ``INGEST_MAX_REJECT_RATE``, ``INGEST_MIN_REJECTED_RECORDS``,
    ``BRONZE_RETENTION_DAYS``, ``FIRST_SNAPSHOT_DATE``, ``SNAPSHOT_DATES_PER_DBT_RUN``, ``DATA_CONTRACTS_DIR``,
    ``LAKE_DUCKDB_MEMORY_LIMIT``, ``WAREHOUSE_MEMORY_LIMIT``, ``LAKE_DUCKDB_THREADS``, ``LAKE_BATCH_BYTES``,
    ``LAKE_APPLY_STEP_ROWS``),
    falling back to local defaults (the first snapshot date is the simulated company's first day)."""
    lake_root = os.environ.get("LAKE_ROOT") or str(DEFAULT_VAR_DIR / "lake")
    if "://" not in lake_root:
        lake_root = str(Path(lake_root).expanduser().resolve())
    warehouse = os.environ.get("WAREHOUSE_PATH") or str(DEFAULT_VAR_DIR / "warehouse" / "engagement.duckdb")
    mlflow_uri = (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_VAR_DIR / 'mlflow' / 'mlflow.db'}"
    )
    return Settings(
        lake_root=lake_root,
        warehouse_path=Path(warehouse).expanduser().resolve(),
        mlflow_tracking_uri=mlflow_uri,
        pii_secret=os.environ.get("PII_SECRET") or "local-development-secret-change-me",
        schedule_timezone=os.environ.get("SCHEDULE_TIMEZONE") or "UTC",
        max_reject_rate=float(os.environ.get("INGEST_MAX_REJECT_RATE") or 0.2),
        min_rejected_records=int(os.environ.get("INGEST_MIN_REJECTED_RECORDS") or 10),
        bronze_retention_days=int(os.environ.get("BRONZE_RETENTION_DAYS") or 90),
        first_snapshot_date=date.fromisoformat(os.environ.get("FIRST_SNAPSHOT_DATE") or "2026-09-01"),
        snapshot_dates_per_dbt_run=int(os.environ.get("SNAPSHOT_DATES_PER_DBT_RUN") or 5),
        contracts_dir=Path(
            os.environ.get("DATA_CONTRACTS_DIR") or REPO_ROOT / "data_contracts" / "contracts"
        ),
        duckdb_memory_limit=os.environ.get("LAKE_DUCKDB_MEMORY_LIMIT") or "2GB",
        warehouse_memory_limit=os.environ.get("WAREHOUSE_MEMORY_LIMIT") or "8GB",
        duckdb_threads=int(os.environ["LAKE_DUCKDB_THREADS"])
        if os.environ.get("LAKE_DUCKDB_THREADS")
        else None,
        batch_bytes=int(os.environ.get("LAKE_BATCH_BYTES") or 256 << 20),
        apply_step_rows=int(os.environ.get("LAKE_APPLY_STEP_ROWS") or 250_000),
    )


def disable_telemetry() -> None:
    """Switch off the usage telemetry of Dagster, dbt and MLflow for this process and its children."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
