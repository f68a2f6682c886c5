"""Settings of the models and decisions, read from environment variables with local defaults.

They extend the lake's settings (:mod:`lake.settings`), which say where the lake, the warehouse and the MLflow
store are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lake.settings import REPO_ROOT, get_settings

DEFAULT_POLICY_FILE = REPO_ROOT / "ml" / "policy.yaml"


@dataclass(frozen=True)
class MlSettings:
    """Where models are tracked and registered, which policy decides, and how promotion is gated."""

    tracking_uri: str
    experiment_name: str = "nba_uplift"
    model_name: str = "nba_uplift"
    """The registered model whose aliases (``champion``, ``challenger``) serve the decisions."""
    policy_file: Path = DEFAULT_POLICY_FILE
    promotion_requires_approval: bool = False
    """Whether a challenger that passes the gate waits for ``python -m ml.registry approve`` before serving."""
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
    """Persons the batch scorer reads and scores at a time (one model call per chunk): the bound on its memory."""


def get_ml_settings() -> MlSettings:
    """Read the ML settings from the environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``,
    ``MLFLOW_MODEL_NAME``, ``NBA_POLICY_FILE``, ``PROMOTION_REQUIRES_APPROVAL``, ``PROMOTION_MARGIN``,
    ``CHAMPION_MAX_AGE_DAYS``, ``DRIFT_WARN_PSI``, ``DRIFT_ERROR_PSI``, ``DRIFT_REFERENCE_PERSONS``,
    ``NBA_SCORING_CHUNK_ROWS``)."""
    approval = (os.environ.get("PROMOTION_REQUIRES_APPROVAL") or "off").strip().lower()
    if approval not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"PROMOTION_REQUIRES_APPROVAL={approval!r}: expected on or off")
    return MlSettings(
        tracking_uri=get_settings().mlflow_tracking_uri,
        experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "nba_uplift",
        model_name=os.environ.get("MLFLOW_MODEL_NAME") or "nba_uplift",
        policy_file=Path(os.environ.get("NBA_POLICY_FILE") or DEFAULT_POLICY_FILE),
        promotion_requires_approval=approval in ("on", "true", "1", "yes"),
        promotion_margin=float(os.environ.get("PROMOTION_MARGIN") or 0.02),
        champion_max_age_days=int(os.environ.get("CHAMPION_MAX_AGE_DAYS") or 14),
        drift_warn_psi=float(os.environ.get("DRIFT_WARN_PSI") or 0.1),
        drift_error_psi=float(os.environ.get("DRIFT_ERROR_PSI") or 0.25),
        drift_reference_persons=int(os.environ.get("DRIFT_REFERENCE_PERSONS") or 20_000),
        scoring_chunk_rows=int(os.environ.get("NBA_SCORING_CHUNK_ROWS") or 100_000),
    )
