"""Drift of the model's features and scores: population stability index (PSI) between a training reference and
a scoring run.

The reference profile is computed once, when a model is trained, on the population it will score (and on its
scores for them): the persons scorable on the last decision date of its training set
(:func:`scoring_reference`), and saved with the model as JSON. Each scoring run compares its own rows with
that profile: for a numeric column the bins are the reference's quantiles plus a bin of missing values (null
or NaN); for a categorical column (string, categorical, boolean) the bins are the reference's categories, an
``other`` bucket for the rare and the unseen ones, and the missing bin. Then, over the bins,

    PSI = sum((current_share - reference_share) * ln(current_share / reference_share))

with every share floored at :data:`SHARE_FLOOR` so that an empty bin on either side gives a large finite
value. Common reading: below 0.1 stable, 0.1 to 0.25 a moderate shift (warn), above 0.25 a major shift
(error).

:func:`drift_report` compares a decision date's scoring population (the persons the champion decided for in
gold ``nba_decisions``, their features of that date in ``person_features_daily`` and the champion's scores
recorded with the decisions) with the reference profile of the training run of the model version that decided,
and logs the plot and the PSI per column as artifacts of that run (``drift/<date>/``), beside the reference
profile.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

PROFILE_FORMAT = 1
"""Version of the profile's JSON layout."""
SHARE_FLOOR = 1e-4
"""Smallest share a bin counts with in the PSI (an empty bin would make the logarithm infinite)."""
DEFAULT_BINS = 10
"""Quantile bins of a numeric column (fewer when the reference has fewer distinct values)."""
DEFAULT_MAX_CATEGORIES = 20
"""Most frequent categories kept by name; the rest of the reference goes to the ``other`` bucket."""
OTHER = "__other__"
MISSING = "__missing__"
SCORE_PREFIX = "expected_revenue__"
"""Columns of a reference profile that are the model's scores (the others are its features)."""
DRIFT_ARTIFACT_DIR = "drift"
"""Folder of a training run's artifacts where each decision date's drift is logged (``drift/<date>/``)."""
STATUSES = ("ok", "warn", "error")
"""Drift verdicts, mildest first."""
REFERENCE_SEED = 0
"""Seed of the sample of persons a reference is built from when the scoring population is larger than
allowed."""

if TYPE_CHECKING:
    from lake.settings import Settings
    from ml.settings import MlSettings


def _is_categorical(dtype: pl.DataType) -> bool:
    return dtype == pl.String or dtype == pl.Boolean or isinstance(dtype, pl.Categorical | pl.Enum)


def _numeric_values(series: pl.Series) -> np.ndarray:
    """The column as float64, missing values (null and NaN) as NaN."""
    return series.cast(pl.Float64).to_numpy()


def _category_values(series: pl.Series) -> pl.Series:
    """The column as strings (booleans as ``true`` / ``false``), missing values as null."""
    return series.cast(pl.String)


def _column_profile(series: pl.Series, bins: int, max_categories: int) -> dict:
    rows = len(series)
    if _is_categorical(series.dtype):
        values = _category_values(series)
        counts = values.drop_nulls().value_counts(name="n").sort(["n", values.name], descending=[True, False])
        kept = counts.head(max_categories)
        missing = values.null_count()
        return {
            "kind": "categorical",
            "categories": kept[values.name].to_list(),
            "shares": [n / rows for n in kept["n"].to_list()],
            "other_share": (rows - missing - int(kept["n"].sum())) / rows,
            "missing_share": missing / rows,
        }
    if not series.dtype.is_numeric():
        raise ValueError(f"column {series.name!r} of type {series.dtype}: neither numeric nor categorical")
    values = _numeric_values(series)
    present = values[~np.isnan(values)]
    levels = np.arange(1, bins) / bins
    edges = np.unique(np.quantile(present, levels, method="inverted_cdf")) if present.size else np.array([])
    shares = _numeric_shares(edges, values)
    return {
        "kind": "numeric",
        "edges": [float(edge) for edge in edges],
        "shares": [float(share) for share in shares[:-1]],
        "missing_share": float(shares[-1]),
    }


def _numeric_shares(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Shares of the bins (-inf, e1], (e1, e2], ..., (ek, inf) and, last, of the missing values."""
    missing = np.isnan(values)
    index = np.searchsorted(edges, values[~missing], side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(float)
    return np.append(counts, missing.sum()) / len(values)


def reference_profile(
    frame: pl.DataFrame,
    columns: Sequence[str],
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> dict:
    """The reference distribution of each of ``columns`` of ``frame`` (a population and its scores), as a
    JSON-serialisable dict: quantile bin edges and shares for numeric columns, category shares with an
    ``other`` bucket for categorical ones, and the share of missing values for both."""
    if frame.height == 0:
        raise ValueError("a reference profile needs at least one row")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the frame: {missing}")
    return {
        "format": PROFILE_FORMAT,
        "rows": frame.height,
        "columns": {column: _column_profile(frame[column], bins, max_categories) for column in columns},
    }


def bin_shares(column_profile: Mapping, series: pl.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The bins of one column of a profile (labels), the reference's shares and ``series``' shares of them."""
    if len(series) == 0:
        raise ValueError(f"column {series.name!r} has no rows to compare")
    if column_profile["kind"] == "categorical":
        categories = list(column_profile["categories"])
        values = _category_values(series)
        counts = dict(values.drop_nulls().value_counts(name="n").iter_rows())
        known = [counts.get(category, 0) for category in categories]
        missing = values.null_count()
        other = len(values) - missing - sum(known)
        current = np.array([*known, other, missing], dtype=float) / len(values)
        reference = np.array(
            [*column_profile["shares"], column_profile["other_share"], column_profile["missing_share"]]
        )
        return [*categories, OTHER, MISSING], reference, current
    edges = np.asarray(column_profile["edges"], dtype=float)
    current = _numeric_shares(edges, _numeric_values(series))
    reference = np.array([*column_profile["shares"], column_profile["missing_share"]])
    bounds = ["-inf", *(f"{edge:.4g}" for edge in edges), "inf"]
    labels = [f"({low}, {high}]" for low, high in itertools.pairwise(bounds)]
    return [*labels, MISSING], reference, current


def psi_of_shares(reference: np.ndarray, current: np.ndarray) -> float:
    """The population stability index of two share vectors over the same bins (shares floored at
    :data:`SHARE_FLOOR`)."""
    expected = np.maximum(np.asarray(reference, dtype=float), SHARE_FLOOR)
    actual = np.maximum(np.asarray(current, dtype=float), SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi(reference: Mapping, frame: pl.DataFrame) -> dict[str, float]:
    """PSI of every column of the ``reference`` profile between the reference and ``frame`` (a scoring run's
    features and scores). A column of the profile that ``frame`` lacks is an error, not a zero."""
    columns = reference["columns"]
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"columns of the reference profile not in the frame: {missing}")
    result = {}
    for column, profile in columns.items():
        _, expected, actual = bin_shares(profile, frame[column])
        result[column] = psi_of_shares(expected, actual)
    return result


@dataclass(frozen=True)
class DriftThresholds:
    """PSI from which a column's drift warns, and from which it is an error."""

    warn: float = 0.1
    error: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.warn <= self.error:
            raise ValueError(f"drift thresholds need 0 < warn <= error, got {self.warn} and {self.error}")

    @classmethod
    def from_settings(cls, settings=None) -> DriftThresholds:
        """The thresholds of the ML settings (``DRIFT_WARN_PSI``, ``DRIFT_ERROR_PSI``)."""
        from ml.settings import get_ml_settings

        settings = settings or get_ml_settings()
        return cls(warn=settings.drift_warn_psi, error=settings.drift_error_psi)


@dataclass(frozen=True)
class DriftSummary:
    """Verdict of one comparison: the PSI per column, the columns past each threshold (worst first) and the
    overall status (``ok``, ``warn`` or ``error``)."""

    psi: dict[str, float]
    warn: tuple[str, ...]
    error: tuple[str, ...]
    thresholds: DriftThresholds

    @property
    def status(self) -> str:
        """``error`` when a column passed the error threshold, else ``warn`` when one passed the warning
        one."""
        return "error" if self.error else "warn" if self.warn else "ok"

    @property
    def worst(self) -> tuple[str, float] | None:
        """The column with the highest PSI and its value (None without columns)."""
        if not self.psi:
            return None
        column = max(self.psi, key=lambda name: self.psi[name])
        return column, self.psi[column]

    def to_dict(self) -> dict:
        """JSON-serialisable form (for asset check metadata and MLflow)."""
        return {
            "status": self.status,
            "warn_threshold": self.thresholds.warn,
            "error_threshold": self.thresholds.error,
            "warn": list(self.warn),
            "error": list(self.error),
            "psi": dict(self.psi),
        }


def summarize(psi_values: Mapping[str, float], thresholds: DriftThresholds | None = None) -> DriftSummary:
    """Which columns warn (warn <= PSI < error) and which are in error (PSI >= error), worst first."""
    thresholds = thresholds or DriftThresholds()
    ranked = sorted(psi_values, key=lambda name: psi_values[name], reverse=True)
    return DriftSummary(
        psi=dict(psi_values),
        warn=tuple(c for c in ranked if thresholds.warn <= psi_values[c] < thresholds.error),
        error=tuple(c for c in ranked if psi_values[c] >= thresholds.error),
        thresholds=thresholds,
    )


def drift_plot(
    reference: Mapping,
    frame: pl.DataFrame,
    path: Path,
    thresholds: DriftThresholds | None = None,
    worst: int = 4,
) -> Path:
    """Save a PNG at ``path``: the PSI of every column against the thresholds, and the reference and current
    shares per bin of the ``worst`` columns with the highest PSI. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = thresholds or DriftThresholds()
    values = psi(reference, frame)
    ranked = sorted(values, key=lambda name: values[name], reverse=True)
    shown = ranked[:worst]
    colours = {"ok": "tab:green", "warn": "tab:orange", "error": "tab:red"}

    def status(value: float) -> str:
        return "error" if value >= thresholds.error else "warn" if value >= thresholds.warn else "ok"

    rows = 1 + math.ceil(len(shown) / 2)
    figure = plt.figure(figsize=(12, 0.25 * len(values) + 2 + 3.2 * (rows - 1)))
    grid = figure.add_gridspec(rows, 2, height_ratios=[max(2.0, 0.25 * len(values)), *[3.0] * (rows - 1)])
    axis = figure.add_subplot(grid[0, :])
    order = ranked[::-1]
    axis.barh(order, [values[c] for c in order], color=[colours[status(values[c])] for c in order])
    axis.axvline(thresholds.warn, color="tab:orange", linestyle="--", label=f"warn {thresholds.warn:g}")
    axis.axvline(thresholds.error, color="tab:red", linestyle="--", label=f"error {thresholds.error:g}")
    axis.set_xlabel("population stability index")
    axis.set_title("Drift per column: reference vs current")
    axis.legend(loc="lower right")
    axis.tick_params(axis="y", labelsize=8)
    for number, column in enumerate(shown):
        labels, expected, actual = bin_shares(reference["columns"][column], frame[column])
        panel = figure.add_subplot(grid[1 + number // 2, number % 2])
        positions = np.arange(len(labels))
        panel.bar(positions - 0.2, expected, width=0.4, label="reference")
        panel.bar(positions + 0.2, actual, width=0.4, label="current")
        panel.set_xticks(positions, labels, rotation=45, ha="right", fontsize=7)
        panel.set_ylabel("share")
        panel.set_title(f"{column} (PSI {values[column]:.3f})", fontsize=9)
        panel.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


class DriftError(RuntimeError):
    """Drift cannot be measured for a date: no decisions for it, no reference profile for the model that
    decided, or a column of the profile missing from the scoring population; or no reference can be built
    (nobody scorable on its date)."""


def scoring_reference(
    model,
    snapshot_date: date,
    lake_settings: Settings | None = None,
    max_persons: int = 20_000,
    seed: int = REFERENCE_SEED,
) -> dict:
    """The reference profile of the population ``model`` (an :class:`ml.train.UpliftModel`) scores: the
    persons scorable on ``snapshot_date`` (:func:`ml.scoring.scorable_features`: that date's features less the
    erased persons and the objections to profiling), a sample of ``max_persons`` of them with ``seed`` when
    there are more, their features and the model's expected revenues. Its ``population`` says which date and
    persons it describes."""
    from ml.scoring import scorable_features

    features = list(model.feature_columns)
    frame = scorable_features(snapshot_date, lake_settings, features)
    if frame.height == 0:
        raise DriftError(f"nobody is scorable on {snapshot_date}: no reference profile to build")
    persons = frame.height
    if persons > max_persons:
        frame = frame.sample(max_persons, seed=seed)
    scores = [f"{SCORE_PREFIX}{action}" for action in model.actions]
    rows = pl.concat(
        [frame.select(features), model.predict(frame.select(features)).select(scores)], how="horizontal"
    )
    return reference_profile(rows, [*features, *scores]) | {
        "population": {
            "kind": "scorable",
            "snapshot_date": snapshot_date.isoformat(),
            "persons": persons,
            "profiled": frame.height,
            "seed": seed,
        }
    }


@dataclass(frozen=True)
class DriftReport:
    """Drift of one decision date's scoring population from the reference of the model version that decided:
    the features' verdict and the scores' verdict, separately."""

    decision_date: date
    model_name: str
    model_version: str
    run_id: str
    """The training run of the model version (it holds the reference profile and the logged drift)."""
    persons: int
    """Persons compared: those the champion decided for on the date."""
    features: DriftSummary
    scores: DriftSummary
    plot_uri: str | None = None
    """The plot, an artifact of the training run (None when not logged)."""
    psi_uri: str | None = None
    """The PSI per column and the verdicts as JSON, an artifact of the training run (None when not logged)."""

    @property
    def status(self) -> str:
        """The worse of the features' and the scores' verdicts."""
        return max(self.features.status, self.scores.status, key=STATUSES.index)

    def worst(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` columns (features and scores) with the highest PSI, highest first."""
        values = {**self.features.psi, **self.scores.psi}
        return sorted(values.items(), key=lambda item: item[1], reverse=True)[:n]

    def to_dict(self) -> dict:
        """JSON-serialisable form (no personal data: column names and figures)."""
        return {
            "decision_date": self.decision_date.isoformat(),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "persons": self.persons,
            "status": self.status,
            "features": self.features.to_dict(),
            "scores": self.scores.to_dict(),
        }


def scoring_population(decisions: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
    """One row per person decided for: the person's feature columns (``features``, one date) and the scores
    the decisions recorded, ``expected_revenue__<action>`` per action (from ``action_scores``)."""
    scores = (
        decisions.select("person_id", "action_scores")
        .explode("action_scores")
        .unnest("action_scores")
        .select("person_id", (pl.lit(SCORE_PREFIX) + pl.col("action")).alias("column"), "expected_revenue")
        .pivot(on="column", index="person_id", values="expected_revenue")
    )
    return (
        decisions.select("person_id")
        .join(features, on="person_id", how="left")
        .join(scores, on="person_id", how="left")
    )


def _reference(run_id: str) -> dict:
    """The reference profile logged with a training run (``drift/reference_profile.json``)."""
    import mlflow

    from ml.tracking import REFERENCE_PROFILE_ARTIFACT

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_PROFILE_ARTIFACT}")
    except Exception as error:  # a missing artifact surfaces as one of several MLflow and OS errors
        raise DriftError(
            f"run {run_id} has no reference profile ({REFERENCE_PROFILE_ARTIFACT}): {error}"
        ) from error


def drift_report(
    decision_date: date,
    lake_settings: Settings | None = None,
    ml_settings: MlSettings | None = None,
    log_artifacts: bool = True,
) -> DriftReport | None:
    """The drift of ``decision_date``'s scoring population from the reference profile of the model version
    that decided it (gold ``nba_decisions``: the rows decided by the champion), with the thresholds of the ML
    settings (``DRIFT_WARN_PSI``, ``DRIFT_ERROR_PSI``). With ``log_artifacts`` the plot (``drift.png``) and
    the figures (``psi.json``) are logged to that version's training run under ``drift/<date>/`` (a re-run
    replaces them).

    None when the rule-based fallback decided the whole date (no model, nothing to compare). Raises
    :class:`DriftError` when the date has no decisions or the reference cannot be compared."""
    import mlflow

    from lake import delta
    from lake.gold import gold_uri
    from lake.settings import get_settings
    from ml.data import DECISIONS_TABLE, FEATURES_TABLE
    from ml.registry import CHAMPION
    from ml.settings import get_ml_settings
    from ml.tracking import configure

    settings = lake_settings or get_settings()
    ml = configure(ml_settings or get_ml_settings())
    decisions = delta.scan(gold_uri(settings, DECISIONS_TABLE), settings.storage_options)
    if decisions is None:
        raise DriftError(f"gold {DECISIONS_TABLE} does not exist: decide first")
    day = decisions.filter(pl.col("decision_date") == decision_date)
    decided = (
        day.filter(pl.col("decided_by") == CHAMPION)
        .select("person_id", "model_name", "model_version", "action_scores")
        .collect()
    )
    if decided.height == 0:
        if day.select(pl.len()).collect().item() == 0:
            raise DriftError(f"gold {DECISIONS_TABLE} has no decisions for {decision_date}")
        return None
    models = decided.select("model_name", "model_version").unique()
    if models.height != 1:
        raise DriftError(f"several champion versions decided {decision_date}: {models.rows()}")
    model_name, model_version = models.row(0)
    client = mlflow.MlflowClient(tracking_uri=ml.tracking_uri, registry_uri=ml.tracking_uri)
    run_id = client.get_model_version(model_name, model_version).run_id
    reference = _reference(run_id)
    columns = list(reference["columns"])
    score_columns = [c for c in columns if c.startswith(SCORE_PREFIX)]
    feature_columns = [c for c in columns if not c.startswith(SCORE_PREFIX)]
    lazy = delta.scan(gold_uri(settings, FEATURES_TABLE), settings.storage_options)
    if lazy is None:
        raise DriftError(f"gold {FEATURES_TABLE} does not exist")
    available = lazy.collect_schema().names()
    lacking = [c for c in feature_columns if c not in available]
    if lacking:
        raise DriftError(f"{FEATURES_TABLE} lacks features of the reference profile: {lacking}")
    features = (
        lazy.filter(pl.col("snapshot_date") == decision_date)
        .select("person_id", *feature_columns)
        .join(decided.lazy().select("person_id"), on="person_id", how="semi")
        .collect()
    )
    population = scoring_population(decided, features)
    lacking = [c for c in score_columns if c not in population.columns]
    if lacking:
        raise DriftError(f"the decisions of {decision_date} hold no scores {lacking}")
    thresholds = DriftThresholds(warn=ml.drift_warn_psi, error=ml.drift_error_psi)
    values = psi(reference, population)
    report = DriftReport(
        decision_date=decision_date,
        model_name=model_name,
        model_version=model_version,
        run_id=run_id,
        persons=population.height,
        features=summarize({c: values[c] for c in feature_columns}, thresholds),
        scores=summarize({c: values[c] for c in score_columns}, thresholds),
    )
    if not log_artifacts:
        return report
    folder = f"{DRIFT_ARTIFACT_DIR}/{decision_date.isoformat()}"
    with tempfile.TemporaryDirectory() as scratch:
        plot = drift_plot(reference, population, Path(scratch) / "drift.png", thresholds)
        figures = Path(scratch) / "psi.json"
        figures.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        client.log_artifact(run_id, str(plot), folder)
        client.log_artifact(run_id, str(figures), folder)
    base = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return dataclasses.replace(
        report, plot_uri=f"{base}/{folder}/drift.png", psi_uri=f"{base}/{folder}/psi.json"
    )
