"""One settings object for the whole project, read from environment variables with local defaults.

Every command and every asset calls :func:`get_settings` instead of reading the environment itself, so that
production swaps URIs, not code. The defaults run everything embedded on one machine, under ``var/`` in the
repository (git-ignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = REPO_ROOT / "var"
ENVIRONMENTS = ("development", "production")
"""The values of ``LAKEHOUSE_ENV`` (unset means ``development``)."""
DEVELOPMENT_PII_SECRET = "local-development-secret-change-me"
"""The tokenisation key of local development, refused in production and for a lake outside this machine."""
FIRST_SNAPSHOT_DATE = date(2026, 9, 1)
"""The simulated company's first day by default, and so the default first day of the daily feature
snapshots."""


class SettingsError(ValueError):
    """The environment asks for something the project refuses to run with (the message says what to set)."""


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
    schedule_timezone: str = "UTC"
    """The time zone of the schedules' cron expressions."""
    max_reject_rate: float = 0.2
    """Share of a landing file's records that may go to quarantine before the ingestion fails on that file."""
    min_rejected_records: int = 10
    """A file is rejected only when at least this many of its records were quarantined (and the share
    passed)."""
    bronze_retention_days: int | None = None
    """Days the raw (restricted) bronze zone keeps a record after its ingestion, for every feed, overriding
    the ``retention`` SLA of the feeds' contracts (which decides when this is unset)."""
    first_snapshot_date: date = FIRST_SNAPSHOT_DATE
    """The first day of the daily feature snapshots (the first Dagster partition of the partitioned
    models)."""
    snapshot_person_dates_per_dbt_run: int = 5_000_000
    """A backfill of the daily snapshots goes to dbt in windows of at most this many persons x dates (at least
    one date per window): its memory grows with persons x dates (at 1,000,000 simulated persons, about 1.4
    million in the identity map, 5 dates, about 7 million person-dates, fit in 24 GB and 30 do not)."""
    contracts_dir: Path = REPO_ROOT / "data_contracts" / "contracts"
    """The data contracts of the feeds: one per feed; a new contract (and its landing folder) adds a feed."""
    automation: bool = True
    """Whether the schedules and sensors start running in a new Dagster instance (``AUTOMATION=off`` starts
    them stopped); a switch turned in the UI is kept by the instance and wins over this."""
    duckdb_memory_limit: str = "2GB"
    """Memory limit of every in-memory DuckDB connection the lake opens (parsing and decoding; beyond it
    DuckDB spills to disk, under ``duckdb_temp_directory``). DuckDB's own default is 80% of the machine's
    memory."""
    warehouse_memory_limit: str = "8GB"
    """Memory limit of every connection to the warehouse file: dbt's (the profile reads the same variable),
    the silver views', the gold publication's."""
    duckdb_threads: int | None = None
    """Threads of every DuckDB connection the lake opens (None: DuckDB's default, one per core)."""
    batch_bytes: int = 256 << 20
    """Bytes of landed data per bronze batch, uncompressed (a gzipped file counts for its uncompressed size):
    the bound on what ingestion and the apply to silver hold of one batch (a single larger file stays
    whole)."""
    apply_step_rows: int = 250_000
    """Bronze rows the apply to silver reads, decodes and merges at a time, the bound on its memory
    (clickstream batches are split into steps of this size; a CDC batch larger than this is applied whole)."""
    dbt_target: str = "local"
    """The dbt target the dbt assets build on: ``local`` (DuckDB, the warehouse file) or ``spark`` (dbt-spark
    on the Spark Connect server of ``spark_remote``; the profile reads the same variable)."""
    spark_remote: str | None = None
    """The Spark Connect URL of the ``spark`` target (``sc://host:port``)."""
    spark_warehouse_dir: str | None = None
    """Where the ``spark`` target writes its models, one Delta table per model (None: ``spark_warehouse`` in
    the lake root, as the dbt project's default)."""
    spark_memory_limit: int = 8_000_000_000
    """Bytes of the memory pool of the Spark Connect server the project starts (Sail): beyond it sorts and
    aggregations spill to ``spark_temp_directory``, and an operator that cannot spill (a hash join's build
    side) fails with Sail's "Failed to allocate" error. Sail's own default is no limit: at 1,000,000 persons
    the clickstream sessions grew it past the machine's 23 GB until the kernel killed it.
    ``SPARK_MEMORY_LIMIT`` takes ``8GB``, ``512MiB`` or bytes."""

    @property
    def spark_models(self) -> str:
        """The folder (or URI) of the ``spark`` target's models: ``<model>/`` holds each one's Delta table."""
        return (self.spark_warehouse_dir or self.zone("spark_warehouse")).rstrip("/")

    def spark_model(self, name: str) -> str:
        """The Delta table (folder or URI) of the ``spark`` target's model or seed ``name``."""
        return f"{self.spark_models}/{name}"

    @property
    def spark_temp_directory(self) -> Path:
        """Where the Spark Connect server the project starts spills: ``spark_tmp/`` beside the warehouse
        file."""
        return self.warehouse_path.parent / "spark_tmp"

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
        return _is_local(self.lake_root)

    def beside_lake(self, name: str) -> Path:
        """The folder ``name`` beside a local lake's root (``var/<name>`` for the default lake), else in the
        folder of ``var/lakes/`` named after the lake's URI (``var/lakes/s3-bucket-prefix/<name>``): where
        local state that belongs to this lake lives outside it (the embedded server, the outbox, the
        simulator's truth)."""
        if self.is_local:
            return Path(self.lake_root.removeprefix("file://")).parent / name
        return DEFAULT_VAR_DIR / "lakes" / re.sub(r"[^A-Za-z0-9._-]+", "-", self.lake_root).strip("-") / name

    def zone(self, name: str) -> str:
        """The URI or path of one zone of the lake (``landing``, ``bronze``, ``silver``, ``gold``, ...)."""
        return f"{self.lake_root.rstrip('/')}/{name}"

    @property
    def storage_options(self) -> dict[str, str]:
        """Object-store options for deltalake and polars, from the standard ``AWS_*`` variables (empty when
        local)."""
        if self.is_local:
            return {}
        return object_store_options()

    @property
    def landing(self) -> str:
        """Where raw files arrive: ``cdc/<topic>/`` and ``clickstream/<source>/``."""
        return self.zone("landing")

    @property
    def simulator_truth(self) -> str:
        """Where the simulated company keeps its ground truth: inside a local lake's root, outside the landing
        zone; a local folder beside a lake on object storage (:meth:`beside_lake`), as the simulator is a
        program on this machine."""
        return self.zone("simulator_truth") if self.is_local else str(self.beside_lake("simulator_truth"))


def parse_switch(value: str) -> bool:
    """An on/off value (on, true, 1, yes / off, false, 0, no, in any case); ValueError otherwise."""
    word = value.strip().lower()
    if word in ("on", "true", "1", "yes"):
        return True
    if word in ("off", "false", "0", "no"):
        return False
    raise ValueError("expected on or off")


def parse_bytes(value: str) -> int:
    """A size in bytes from ``8GB`` (powers of 1000, as DuckDB reads them), ``512MiB`` (powers of 1024) or a
    number; ValueError otherwise."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        return int(TypeAdapter(ByteSize).validate_python(value.strip()))
    except ValidationError:
        raise ValueError("expected a size such as 8GB, 512MiB or a number of bytes") from None


DBT_TARGETS = ("local", "spark")


def parse_dbt_target(value: str) -> str:
    """One of :data:`DBT_TARGETS`; ValueError otherwise."""
    if value.strip() not in DBT_TARGETS:
        raise ValueError(f"expected one of {', '.join(DBT_TARGETS)}")
    return value.strip()


VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "schedule_timezone": ("SCHEDULE_TIMEZONE", str),
    "max_reject_rate": ("INGEST_MAX_REJECT_RATE", float),
    "min_rejected_records": ("INGEST_MIN_REJECTED_RECORDS", int),
    "bronze_retention_days": ("BRONZE_RETENTION_DAYS", int),
    "first_snapshot_date": ("FIRST_SNAPSHOT_DATE", date.fromisoformat),
    "snapshot_person_dates_per_dbt_run": ("SNAPSHOT_PERSON_DATES_PER_DBT_RUN", int),
    "contracts_dir": ("DATA_CONTRACTS_DIR", Path),
    "automation": ("AUTOMATION", parse_switch),
    "duckdb_memory_limit": ("LAKE_DUCKDB_MEMORY_LIMIT", str),
    "warehouse_memory_limit": ("WAREHOUSE_MEMORY_LIMIT", str),
    "duckdb_threads": ("LAKE_DUCKDB_THREADS", int),
    "batch_bytes": ("LAKE_BATCH_BYTES", int),
    "apply_step_rows": ("LAKE_APPLY_STEP_ROWS", int),
    "dbt_target": ("DBT_TARGET", parse_dbt_target),
    "spark_remote": ("SPARK_REMOTE", str),
    "spark_warehouse_dir": ("SPARK_WAREHOUSE_DIR", str),
    "spark_memory_limit": ("SPARK_MEMORY_LIMIT", parse_bytes),
}
"""The fields of :class:`Settings` an environment variable sets: field, (variable, parser of its value)."""


def from_environment(variables: dict[str, tuple[str, Callable[[str], object]]]) -> dict[str, object]:
    """The fields of ``variables`` whose variable is set (and not blank), parsed: the others keep the default
    of their dataclass. A value the parser refuses raises ValueError naming the variable."""
    fields = {}
    for field, (name, parse) in variables.items():
        value = os.environ.get(name, "")
        if value.strip():
            try:
                fields[field] = parse(value)
            except ValueError as error:
                raise ValueError(f"{name}={value!r}: {error}") from error
    return fields


def get_settings() -> Settings:
    """Read the settings from the environment: ``LAKEHOUSE_ENV``, ``LAKE_ROOT``, ``WAREHOUSE_PATH``,
    ``MLFLOW_TRACKING_URI``, ``PII_SECRET`` and the variables of :data:`VARIABLES`; what is unset keeps its
    local default. Raises :class:`SettingsError` for an unknown ``LAKEHOUSE_ENV``, and when the tokenisation
    secret would fall back to the development value outside local development (with
    ``LAKEHOUSE_ENV=production`` or a lake root on object storage)."""
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
        pii_secret=_pii_secret(lake_root),
        **from_environment(VARIABLES),
    )


OBJECT_STORE_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ALLOW_HTTP",
)
"""The standard variables of an S3-compatible object store that the lake passes on to deltalake, polars and
pyarrow (unset ones are left to each client's own defaults: instance credentials, the default region)."""


def object_store_options() -> dict[str, str]:
    """The set (and not blank) variables of :data:`OBJECT_STORE_VARIABLES`, by name."""
    return {name: os.environ[name] for name in OBJECT_STORE_VARIABLES if os.environ.get(name, "").strip()}


def _is_local(lake_root: str) -> bool:
    return "://" not in lake_root or lake_root.startswith("file://")


def _pii_secret(lake_root: str) -> str:
    """``PII_SECRET``, or the development value for a local lake in development; fails closed otherwise."""
    environment = os.environ.get("LAKEHOUSE_ENV") or "development"
    if environment not in ENVIRONMENTS:
        raise SettingsError(f"LAKEHOUSE_ENV={environment!r} is not one of {', '.join(ENVIRONMENTS)}")
    secret = os.environ.get("PII_SECRET") or ""
    if environment == "development" and _is_local(lake_root):
        return secret or DEVELOPMENT_PII_SECRET
    if not secret or secret == DEVELOPMENT_PII_SECRET:
        where = "LAKEHOUSE_ENV=production" if environment == "production" else f"the lake root {lake_root}"
        raise SettingsError(
            f"PII_SECRET is not set (or is the development value) and {where} needs a secret of its own: "
            "set PII_SECRET to this environment's tokenisation key; personal data is not tokenised with the "
            "development key outside local development"
        )
    return secret


def without_password(uri: str) -> str:
    """``uri`` with the password of its user info masked (``postgresql://user:***@host/db``), to be shown or
    logged: a production database URL carries its password."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def disable_telemetry() -> None:
    """Switch off the usage telemetry of Dagster, dbt and MLflow for this process and its children."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
