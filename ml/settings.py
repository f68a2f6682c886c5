"""Settings of the models and decisions, read from environment variables with local defaults.

They extend the lake's settings (:mod:`lake.settings`), which say where the lake, the warehouse and the MLflow
store are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lake.settings import DEFAULT_VAR_DIR, REPO_ROOT, from_environment, get_settings, parse_switch

DEFAULT_POLICY_FILE = REPO_ROOT / "ml" / "policy.yaml"
SQLITE_PREFIX = "sqlite:///"
TRACKING_SERVER_SCHEMES = ("http", "https", "databricks")
"""Tracking URIs of an MLflow server, which keeps the artifacts where its own configuration says."""
DATABASE_STORE_ARTIFACTS = DEFAULT_VAR_DIR / "mlflow" / "artifacts"
"""Where the experiments of a database server's store (PostgreSQL) keep their artifacts unless
``MLFLOW_ARTIFACT_ROOT`` says otherwise."""
SCORING_ENGINES = ("local", "spark")
"""Where the batch scorer reads the features and runs the models (``SCORING_ENGINE``)."""


def artifact_root_uri(value: str) -> str:
    """``MLFLOW_ARTIFACT_ROOT`` as MLflow takes it: a URI (``s3://...``) as it is, a folder as the ``file://``
    URI of its absolute path."""
    if "://" in value:
        return value
    return Path(value).expanduser().resolve().as_uri()


def parse_engine(value: str) -> str:
    """``SCORING_ENGINE``: one of :data:`SCORING_ENGINES`; ValueError otherwise."""
    engine = value.strip().lower()
    if engine not in SCORING_ENGINES:
        raise ValueError(f"expected one of {', '.join(SCORING_ENGINES)}")
    return engine


@dataclass(frozen=True)
class MlSettings:
    """Where models are tracked and registered, which policy decides, and how promotion is gated."""

    tracking_uri: str
    """The tracking store and model registry: a SQLite file by default, a PostgreSQL database
    (``postgresql+psycopg://...``) in production, or an MLflow tracking server."""
    artifact_root: str | None = None
    """Where a new experiment keeps its runs' artifacts and models (a URI): None for the default of
    :meth:`experiment_artifact_location`. In production an object-store URI (``s3://...``), shared by every
    machine that trains or scores."""
    experiment_name: str = "nba_uplift"
    model_name: str = "nba_uplift"
    """The registered model whose aliases (``champion``, ``challenger``) serve the decisions."""
    policy_file: Path = DEFAULT_POLICY_FILE
    promotion_requires_approval: bool = False
    """Whether a challenger that passes the gate waits for ``python -m ml.registry approve`` before
    serving."""
    promotion_margin: float = 0.02
    """Relative margin by which a challenger's estimated policy value must beat the champion's."""
    champion_max_age_days: int = 14
    """Age of the champion after which retraining is requested."""
    drift_warn_psi: float = 0.1
    """Population stability index of a feature or score from which its drift warns."""
    drift_error_psi: float = 0.25
    """Population stability index of a feature or score from which its drift is an error (retraining)."""
    drift_reference_persons: int = 20_000
    """Most persons of the scoring population a training run's drift reference profile is built from (a sample
    with a fixed seed above that)."""
    scoring_chunk_rows: int = 100_000
    """Persons the batch scorer reads and scores at a time (one model call per chunk): the bound on its
    memory."""
    scoring_engine: str = "local"
    """Where the batch scorer reads the features and runs the models: ``local`` (this process, polars) or
    ``spark`` (the Spark Connect server of the lake's settings, ``SPARK_REMOTE``, each model an MLflow Spark
    UDF; see :mod:`ml.spark_scoring`)."""
    guardrail_threshold: float = 0.0
    """Lift of net revenue per decision (EUR, treated against holdout) confidently below which the champion is
    rolled back (:mod:`ml.guardrail`)."""
    guardrail_alpha: float = 0.05
    """The guardrail's interval holds the true lift at every look at once with probability ``1 - alpha``."""
    guardrail_min_holdout: int = 200
    """Holdout decisions with complete outcomes the guardrail needs before it acts."""
    guardrail_t_opt: float = 10_000.0
    """Decisions at which the guardrail's confidence sequence is tightest."""

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a ``sqlite:///<path>`` tracking store (None for another store)."""
        if not self.tracking_uri.startswith(SQLITE_PREFIX):
            return None
        return Path(self.tracking_uri.removeprefix(SQLITE_PREFIX)).resolve()

    def create_store_folder(self) -> None:
        """Create the folder of a local SQLite store (MLflow creates the file, not its folder); nothing for
        another store."""
        if self.sqlite_path is not None:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)

    def experiment_artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: ``artifact_root`` when set, else ``artifacts/`` beside
        a SQLite store, else :data:`DATABASE_STORE_ARTIFACTS` for a database server's store (MLflow would
        take ``./mlruns`` of the working directory), else None: a tracking server decides."""
        if self.artifact_root is not None:
            return self.artifact_root
        if self.sqlite_path is not None:
            return (self.sqlite_path.parent / "artifacts").as_uri()
        if self.tracking_uri.split("://", 1)[0] in TRACKING_SERVER_SCHEMES:
            return None
        return DATABASE_STORE_ARTIFACTS.as_uri()


VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "artifact_root": ("MLFLOW_ARTIFACT_ROOT", artifact_root_uri),
    "experiment_name": ("MLFLOW_EXPERIMENT_NAME", str),
    "model_name": ("MLFLOW_MODEL_NAME", str),
    "policy_file": ("NBA_POLICY_FILE", Path),
    "promotion_requires_approval": ("PROMOTION_REQUIRES_APPROVAL", parse_switch),
    "promotion_margin": ("PROMOTION_MARGIN", float),
    "champion_max_age_days": ("CHAMPION_MAX_AGE_DAYS", int),
    "drift_warn_psi": ("DRIFT_WARN_PSI", float),
    "drift_error_psi": ("DRIFT_ERROR_PSI", float),
    "drift_reference_persons": ("DRIFT_REFERENCE_PERSONS", int),
    "scoring_chunk_rows": ("NBA_SCORING_CHUNK_ROWS", int),
    "scoring_engine": ("SCORING_ENGINE", parse_engine),
    "guardrail_threshold": ("GUARDRAIL_LIFT_THRESHOLD", float),
    "guardrail_alpha": ("GUARDRAIL_ALPHA", float),
    "guardrail_min_holdout": ("GUARDRAIL_MIN_HOLDOUT", int),
    "guardrail_t_opt": ("GUARDRAIL_T_OPT", float),
}
"""The fields of :class:`MlSettings` an environment variable sets: field, (variable, parser of its value)."""


def get_ml_settings() -> MlSettings:
    """Read the ML settings from the environment (``MLFLOW_TRACKING_URI`` through the lake's settings, and the
    variables of :data:`VARIABLES`); what is unset keeps its default."""
    return MlSettings(tracking_uri=get_settings().mlflow_tracking_uri, **from_environment(VARIABLES))
