"""MLflow tracking of a training run: what was trained on what data, how well, and everything needed to redo
it.

A run records the method and its parameters, the out-of-time split, the feature list, the metrics per action,
the off-policy value of the learned policy beside the logging policy's, plots (feature importance, calibration
per action, Qini curves), the model as a pyfunc (signature, a feature-only input example, explicit pip
requirements), the gold Delta table and version it learned from as the run's input dataset, the training
snapshot (the rows and columns trained on) with the training configuration, the reference distributions of the
features and scores for drift (of the population the model will score when the caller builds them:
:func:`ml.drift.scoring_reference`), and a model card. :func:`reproduce` retrains from the snapshot and
configuration alone, so a run stays reproducible after the nightly vacuum has removed the table version it
read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import polars.selectors as cs

from lake.settings import REPO_ROOT, disable_telemetry
from ml.data import GoldRef
from ml.model import MODEL_ARTIFACT, UpliftPyfunc, pip_requirements, pyfunc_input
from ml.settings import MlSettings, get_ml_settings

MODEL_NAME_IN_RUN = "model"
SNAPSHOT_ARTIFACT = "training_snapshot/training_set.parquet"
"""The rows and columns trained on (train and validation), as parquet, among the run's artifacts."""
CONFIG_ARTIFACT = "reproduction/training_config.json"
"""The training configuration, among the run's artifacts (with the snapshot: all :func:`reproduce` needs)."""
REFERENCE_PROFILE_ARTIFACT = "drift/reference_profile.json"
"""The reference distributions (``ml.drift.reference_profile``) of the features and scores that drift is
measured against; its ``population`` says which persons of which dates they describe."""
MODEL_CARD_ARTIFACT = "model_card.md"
INPUT_EXAMPLE_ROWS = 5
OUTCOME = "revenue_in_horizon"
CONVERTED = "converted"


@dataclass(frozen=True)
class LoggedRun:
    """A logged training run: its id, the URI of its model, its experiment and the data it learned from."""

    run_id: str
    model_uri: str
    experiment_id: str
    data_ref: GoldRef


def configure(settings: MlSettings | None = None) -> MlSettings:
    """Point MLflow's tracking and registry at ``settings.tracking_uri`` (telemetry off; the folder of a local
    SQLite store created) and return the settings."""
    import mlflow

    settings = settings or get_ml_settings()
    disable_telemetry()
    settings.create_store_folder()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return settings


def experiment_id(settings: MlSettings) -> str:
    """The id of the experiment ``settings.experiment_name``, created if new (its artifacts where
    :meth:`MlSettings.experiment_artifact_location` says)."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(
        settings.experiment_name, artifact_location=settings.experiment_artifact_location()
    )


def training_config(recorded: Mapping):
    """The :class:`ml.train.TrainingConfig` of recorded values (its fields among ``recorded``; lists as
    tuples)."""
    from ml.train import TrainingConfig

    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    return TrainingConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in names}
    )


def training_snapshot(result) -> pl.DataFrame:
    """The rows trained and validated on (train, then validation) with the columns training reads: the
    decision, logging and label columns and the model's features (no other column of the table)."""
    from ml.train import DECISION_COLUMNS

    frame = pl.concat([result.train, result.validation], how="vertical_relaxed")
    keep = set(DECISION_COLUMNS) | set(result.model.feature_columns)
    return frame.select([c for c in frame.columns if c in keep])


def _flat_params(result, config, data_ref: GoldRef) -> dict[str, str]:
    """The run's parameters: method, training configuration, booster parameters, split dates, features,
    data."""
    model = result.model
    params = {"method": model.method, "actions": ",".join(model.actions)}
    params |= {f"config.{k}": v for k, v in dataclasses.asdict(config).items()}
    params |= {f"xgboost.{k}": v for k, v in config.xgboost_params("reg:squarederror").items()}
    params |= {f"split.{k}": v for k, v in result.split.items()}
    params |= {
        "features": ",".join(model.feature_columns),
        "feature_count": len(model.feature_columns),
        "data.table": data_ref.name,
        "data.uri": data_ref.uri,
        "data.version": data_ref.version,
        "rows.train": result.train.height,
        "rows.validation": result.validation.height,
    }
    return {k: str(v) for k, v in params.items()}


def policy_value_metrics(prefix: str, value) -> dict[str, float]:
    """The metrics of one :class:`ml.ope.PolicyValue`: value, interval, effective sample size, support, n and
    whether it is unsupported (1.0) under ``<prefix>.``."""
    return {
        f"{prefix}.value": float(value.value),
        f"{prefix}.ci_low": float(value.ci_low),
        f"{prefix}.ci_high": float(value.ci_high),
        f"{prefix}.effective_sample_size": float(value.effective_sample_size),
        f"{prefix}.support": float(value.support),
        f"{prefix}.n": float(value.n),
        f"{prefix}.unsupported": float(value.unsupported),
    }


def _importance_plot(importance: Mapping[str, Mapping[str, float]], path: Path, top: int = 25) -> None:
    """Bar chart of the share of gain of each feature, averaged over the boosters (the ``top`` features)."""
    import matplotlib.pyplot as plt

    shares: dict[str, float] = {}
    for gains in importance.values():
        total = sum(gains.values()) or 1.0
        for feature, gain in gains.items():
            shares[feature] = shares.get(feature, 0.0) + gain / total / max(len(importance), 1)
    ranked = sorted(shares.items(), key=lambda item: item[1])[-top:]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ranked) + 1.5))
    ax.barh([name for name, _ in ranked], [share for _, share in ranked])
    ax.set_xlabel("share of gain (mean over boosters)")
    ax.set_title("Feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _calibration_plot(validation: pl.DataFrame, predictions: pl.DataFrame, actions, path: Path) -> None:
    """Reliability diagram per action on the validation rows that logged that action (deciles of the predicted
    purchase probability: mean prediction against the observed purchase rate)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(actions), figsize=(3.2 * len(actions), 3.4), squeeze=False)
    for ax, action in zip(axes[0], actions, strict=True):
        rows = (validation["action"] == action).to_numpy()
        probability = predictions[f"purchase_probability__{action}"].to_numpy()[rows]
        observed = validation[CONVERTED].cast(pl.Float64).to_numpy()[rows]
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        if rows.any():
            order = np.argsort(probability, kind="stable")
            bins = [b for b in np.array_split(order, min(10, len(order))) if len(b)]
            ax.plot([probability[b].mean() for b in bins], [observed[b].mean() for b in bins], marker="o")
        ax.set_title(f"{action} (n={int(rows.sum())})", fontsize=9)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("observed purchase rate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _qini_plot(validation: pl.DataFrame, predictions: pl.DataFrame, actions, path: Path) -> None:
    """Qini curve per action against ``no_action`` on the validation rows that logged one of the two, ranked
    by the predicted revenue uplift, weighted by inverse logged propensities."""
    import matplotlib.pyplot as plt

    from ml.metrics import qini_curve

    control, treatments = actions[0], actions[1:]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    logged = validation["action"].to_numpy()
    for action in treatments:
        rows = (logged == action) | (logged == control)
        if not ((logged == action).any() and (logged == control).any()):
            continue
        uplift = (
            predictions[f"expected_revenue__{action}"].to_numpy()
            - predictions[f"expected_revenue__{control}"].to_numpy()
        )[rows]
        x, y = qini_curve(
            validation[OUTCOME].cast(pl.Float64).to_numpy()[rows],
            logged[rows] == action,
            uplift,
            weight=1.0 / validation["propensity"].cast(pl.Float64).to_numpy()[rows],
        )
        ax.plot(x, y, label=action)
    ax.set_xlabel("share of persons targeted (by predicted uplift)")
    ax.set_ylabel("cumulative incremental revenue")
    ax.set_title("Qini curves (validation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _score_columns(actions) -> list[str]:
    return [f"expected_revenue__{a}" for a in actions]


def model_card(
    result,
    data_ref: GoldRef,
    evaluation: Mapping | None = None,
    logging_value=None,
    run_id: str | None = None,
) -> str:
    """The model card (markdown) of a trained model: its data and version, period, features, method, metrics
    per action, off-policy value against the logging policy, and known limits."""
    model = result.model
    split = result.split
    lines = [
        f"# Model card: {model.method} uplift model",
        "",
        "## Data",
        f"- Gold Delta table `{data_ref.name}` at `{data_ref.uri}`, version {data_ref.version}"
        + (f" (snapshot kept with run `{run_id}`: `{SNAPSHOT_ARTIFACT}`)" if run_id else ""),
        f"- Training period: {split.get('train_from')} to {split.get('train_until')} ({result.train.height} "
        f"logged decisions); out-of-time validation: {split.get('validation_from')} to "
        f"{split.get('validation_until')} ({result.validation.height})",
        f"- Outcome: `{OUTCOME}` (EUR in the 7-day label window), purchase: `{CONVERTED}`",
        "",
        "## Method",
        f"- `{model.method}`, actions: {', '.join(f'`{a}`' for a in model.actions)}",
        f"- Parameters: {', '.join(f'{k}={v}' for k, v in sorted(model.params.items()))}",
        f"- Features ({len(model.feature_columns)}): {', '.join(f'`{c}`' for c in model.feature_columns)}",
        "",
        "## Metrics per action (validation)",
    ]
    names = sorted({key.split("__", 1)[0] for key in result.metrics if "__" in key})
    lines.append("| action | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for action in model.actions:
        cells = [result.metrics.get(f"{name}__{action}") for name in names]
        lines.append(f"| {action} | " + " | ".join("" if c is None else f"{c:.4g}" for c in cells) + " |")
    lines += ["", "## Off-policy value (validation logs, reward per decision in EUR)"]
    if evaluation:
        lines += [
            "| policy | estimator | value | 95% interval | effective sample size | support |",
            "|---|---|---|---|---|---|",
        ]
        for name, value in evaluation.items():
            flag = " (unsupported)" if value.unsupported else ""
            lines.append(
                f"| learned | {name} | {value.value:.4f}{flag} | [{value.ci_low:.4f}, {value.ci_high:.4f}] | "
                f"{value.effective_sample_size:.0f} | {value.support:.1%} |"
            )
        if logging_value is not None:
            lines.append(
                f"| logging | on-policy | {logging_value.value:.4f} | [{logging_value.ci_low:.4f}, "
                f"{logging_value.ci_high:.4f}] | {logging_value.effective_sample_size:.0f} | 100.0% |"
            )
    else:
        lines.append("Not evaluated.")
    lines += [
        "",
        "## Known limits",
        "- Learned from logged campaign decisions: an action the logging policy never tried on a kind of "
        "person (for example cart reminders, sent only to cart abandoners with e-mail consent) has no "
        "support there; its estimates for such persons are extrapolations, and off-policy values only cover "
        "the supported share.",
        "- Off-policy values are estimates with the intervals above; a small effective sample size means a "
        "wide, unreliable interval.",
        "- Revenue within 7 days of the decision only: later effects (habituation, churn) are not modelled.",
        "- Features as of the decision day (00:00 UTC); a drift of their distributions from the reference "
        f"(`{REFERENCE_PROFILE_ARTIFACT}`) degrades the estimates.",
    ]
    unsupported = [name for name, value in (evaluation or {}).items() if value.unsupported]
    if unsupported:
        lines.append(
            f"- The learned policy's off-policy estimates ({', '.join(unsupported)}) are flagged "
            "unsupported: the logs support too small a share of its choices for them to be trusted."
        )
    return "\n".join(lines) + "\n"


def log_training_run(
    result,
    data_ref: GoldRef,
    evaluation: Mapping | None = None,
    logging_value=None,
    settings: MlSettings | None = None,
    *,
    config=None,
    extra_metrics: Mapping[str, float] | None = None,
    reference: Mapping | None = None,
) -> LoggedRun:
    """Log one training run to MLflow (see the module docstring for what it records) and return it.

    ``config`` is the :class:`ml.train.TrainingConfig` the result was trained with (default: the one its
    model's parameters record); ``evaluation`` the learned policy's off-policy values per estimator and
    ``logging_value`` the logging policy's; ``extra_metrics`` further figures to record (for example the
    champion's value on the same logs); ``reference`` the drift reference profile to log
    (:func:`ml.drift.scoring_reference`: the population the model will score), by default the profile of the
    training rows and their scores."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.models import infer_signature

    from ml.drift import reference_profile

    settings = configure(settings)
    config = config or training_config(result.model.params)
    model = result.model
    actions = list(model.actions)
    features = list(model.feature_columns)
    snapshot = training_snapshot(result)

    with (
        tempfile.TemporaryDirectory() as scratch,
        mlflow.start_run(experiment_id=experiment_id(settings)) as run,
    ):
        folder = Path(scratch)
        mlflow.set_tags(
            {
                "data.uri": data_ref.uri,
                "data.version": str(data_ref.version),
                "method": model.method,
                "reproduce": "ml.tracking.reproduce(run_id)",
            }
        )
        mlflow.log_params(_flat_params(result, config, data_ref))
        # a metric undefined on the validation set (NaN) is left out of the run
        metrics = {
            k: float(v) for k, v in result.metrics.items() if v is not None and math.isfinite(float(v))
        }
        for name, value in (evaluation or {}).items():
            metrics |= policy_value_metrics(f"ope.{name}", value)
        if logging_value is not None:
            metrics |= policy_value_metrics("ope.logging", logging_value)
        metrics |= {f"rounds.{k}": float(v) for k, v in getattr(result, "rounds", {}).items()}
        metrics |= {k: float(v) for k, v in (extra_metrics or {}).items()}
        mlflow.log_metrics(metrics)

        dataset = mlflow.data.from_polars(
            snapshot.with_columns(cs.decimal().cast(pl.Float64)),  # MLflow's dataset schema has no decimals
            source=DeltaDatasetSource(path=data_ref.uri, delta_table_version=data_ref.version),
            targets=OUTCOME,
            name=f"{data_ref.name}@v{data_ref.version}",
        )
        mlflow.log_input(dataset, context="training")
        snapshot_file = folder / Path(SNAPSHOT_ARTIFACT).name
        snapshot.write_parquet(snapshot_file)
        mlflow.log_artifact(str(snapshot_file), str(Path(SNAPSHOT_ARTIFACT).parent))
        mlflow.log_dict(dataclasses.asdict(config), CONFIG_ARTIFACT)

        plots = folder / "plots"
        plots.mkdir()
        _importance_plot(result.importance, plots / "feature_importance.png")
        _calibration_plot(
            result.validation, result.validation_predictions, actions, plots / "calibration.png"
        )
        _qini_plot(result.validation, result.validation_predictions, actions, plots / "qini.png")
        mlflow.log_artifacts(str(plots), "plots")

        if reference is None:
            train_scores = model.predict(result.train.select(features))
            profile_frame = pl.concat(
                [result.train.select(features), train_scores.select(_score_columns(actions))],
                how="horizontal",
            )
            reference = reference_profile(profile_frame, features + _score_columns(actions)) | {
                "population": {
                    "kind": "training_rows",
                    "from": result.split["train_from"],
                    "until": result.split["train_until"],
                }
            }
        mlflow.log_dict(dict(reference), REFERENCE_PROFILE_ARTIFACT)
        mlflow.log_text(
            model_card(result, data_ref, evaluation, logging_value, run.info.run_id), MODEL_CARD_ARTIFACT
        )

        saved = folder / MODEL_ARTIFACT
        model.save(saved)
        example = pyfunc_input(result.validation.head(INPUT_EXAMPLE_ROWS), features)
        output = model.predict(pl.from_pandas(example)).to_pandas()
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=UpliftPyfunc(),
            artifacts={MODEL_ARTIFACT: str(saved)},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=pip_requirements(),
            code_paths=[str(REPO_ROOT / "ml")],
        )
        mlflow.set_tag("model_uri", info.model_uri)
        return LoggedRun(
            run_id=run.info.run_id,
            model_uri=info.model_uri,
            experiment_id=run.info.experiment_id,
            data_ref=data_ref,
        )


def reproduce(run_id: str, settings: MlSettings | None = None):
    """Retrain the model of run ``run_id`` from what the run recorded (its training snapshot and
    configuration), without reading the gold table: the :class:`ml.train.TrainingResult` of the same data and
    configuration."""
    import mlflow

    from ml.train import train_uplift

    configure(settings)
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = pl.read_parquet(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=SNAPSHOT_ARTIFACT, dst_path=scratch
            )
        )
        config = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=CONFIG_ARTIFACT, dst_path=scratch
                )
            ).read_text()
        )
    return train_uplift(snapshot, training_config(config))


def reproduce_and_compare(run_id: str, settings: MlSettings | None = None) -> float:
    """Retrain run ``run_id`` (:func:`reproduce`) and return the largest absolute difference between the
    logged model's predictions (through its pyfunc) and the retrained model's, on the run's validation rows
    (0.0: the same model)."""
    import mlflow

    from ml.model import pyfunc_input

    configure(settings)
    result = reproduce(run_id, settings)
    model_uri = mlflow.get_run(run_id).data.tags["model_uri"]
    served = mlflow.pyfunc.load_model(model_uri)
    logged = served.predict(pyfunc_input(result.validation, list(result.model.feature_columns)))
    retrained = result.model.predict(result.validation).to_pandas()
    return float(
        np.abs(logged.to_numpy(dtype=float) - retrained[list(logged.columns)].to_numpy(dtype=float)).max()
    )
