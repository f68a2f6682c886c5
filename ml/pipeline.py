"""Training a candidate end to end: load the training set, train, estimate off-policy values, log, register,
gate.

The candidate, the current champion (if any) and the logging policy are valued on the same logs: the
out-of-time validation decisions of this training set (the latest ``validation_days`` decision dates). The
policy evaluated is the greedy one the model would serve: in each logged row, among the actions the policy
file allows as of that row (a channel with consent; no discount for a recent purchaser), the one with the
highest ``expected_revenue(a) - expected_revenue(no_action) - message cost`` (``no_action`` is worth 0).
Addresses and frequency caps are not known per logged row and are not applied.

CLI: ``python -m ml.pipeline`` trains a candidate and prints the report (no personal data);
``python -m ml.pipeline reproduce <run id>`` retrains a logged run from its snapshot and compares predictions.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from ml.data import GoldRef, load_training_set
from ml.settings import MlSettings, get_ml_settings

PRIMARY_ESTIMATOR = "dr"
"""The off-policy estimator the promotion gate compares (doubly robust)."""
OUTCOME = "revenue_in_horizon"


@dataclass(frozen=True)
class CandidateReport:
    """What a training produced: the run, the registered version, the gate's decision and the figures behind
    it. Holds no personal data (ids of runs and versions, figures)."""

    run_id: str
    model_uri: str
    model_version: str
    outcome: str
    """The gate's outcome on the version: champion, pending, challenger or rejected."""
    promote: bool
    bootstrap: bool
    reason: str
    data: GoldRef
    metrics: dict[str, float]
    candidate_value: object
    champion_value: object | None
    logging_value: object
    quality_failures: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """Lines for people: run, version, gate decision and reason, the values compared."""

        def fmt(value) -> str:
            return (
                f"{value.value:.4f} [{value.ci_low:.4f}, {value.ci_high:.4f}] (support {value.support:.1%})"
            )

        lines = [
            f"run {self.run_id} on {self.data.name} v{self.data.version}",
            f"registered version {self.model_version}: {self.outcome}"
            + (" (bootstrap)" if self.bootstrap else ""),
            f"gate: {self.reason}",
            f"learned policy ({PRIMARY_ESTIMATOR}): {fmt(self.candidate_value)}",
            f"champion ({PRIMARY_ESTIMATOR}): "
            + (fmt(self.champion_value) if self.champion_value else "none"),
            f"logging policy: {fmt(self.logging_value)}",
        ]
        if self.quality_failures:
            lines.append("quality checks failed: " + "; ".join(self.quality_failures))
        for name in sorted(self.metrics):
            lines.append(f"  {name} = {self.metrics[name]:.4f}")
        return "\n".join(lines)


def ope_logs(validation: pl.DataFrame, policy) -> pl.DataFrame:
    """The logs off-policy evaluation reads: each logged decision's action, channel, propensity, campaign and
    its reward, ``revenue_in_horizon - message_cost[logged channel]`` (no cost for ``no_action``)."""
    cost = pl.col("channel").replace_strict(dict(policy.message_cost), default=0.0, return_dtype=pl.Float64)
    return validation.select(
        "action",
        "channel",
        pl.col("propensity").cast(pl.Float64),
        "campaign_id",
        (pl.col(OUTCOME).cast(pl.Float64).fill_null(0.0) - cost.fill_null(0.0)).alias("reward"),
    )


def greedy_policy(
    predictions: pl.DataFrame, rows: pl.DataFrame, policy, actions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The greedy policy of a model's ``predictions`` on the logged ``rows`` (same order): its choice per row
    as one-hot target probabilities over ``actions``, the reward model (expected revenue of each action minus
    the message cost of the cheapest channel with consent) and that channel (None for ``no_action`` and where
    no channel of the action has consent), all ``(rows, actions)``.

    An action is allowed in a row when one of its channels has the row's consent (the policy file's consent
    columns) and, for a discount, the person did not order within the policy's recent-purchaser days."""
    n = rows.height
    revenue = np.column_stack(
        [predictions[f"expected_revenue__{a}"].cast(pl.Float64).to_numpy() for a in actions]
    )
    days = rows["days_since_last_order"].cast(pl.Float64).fill_null(np.inf).to_numpy()
    recent = days < policy.recent_purchaser_days
    costs = np.zeros((n, len(actions)))
    allowed = np.ones((n, len(actions)), dtype=bool)
    target_channels = np.full((n, len(actions)), None, dtype=object)
    for a, action in enumerate(actions[1:], start=1):
        channels = sorted(policy.action_channels[action], key=lambda c: policy.message_cost[c])
        consent = np.column_stack(
            [rows[policy.consent_column[c]].fill_null(False).cast(pl.Boolean).to_numpy() for c in channels]
        )
        first = np.argmax(consent, axis=1)
        reachable = consent.any(axis=1)
        cheapest = np.array([policy.message_cost[c] for c in channels])[first]
        costs[:, a] = np.where(reachable, cheapest, min(policy.message_cost[c] for c in channels))
        target_channels[:, a] = np.where(reachable, np.array(channels, dtype=object)[first], None)
        allowed[:, a] = reachable & ~(recent if action in policy.discount_actions else False)
    reward_model = revenue - costs
    value = np.where(allowed, reward_model - revenue[:, [0]], -np.inf)
    value[:, 0] = 0.0
    target = np.zeros((n, len(actions)))
    target[np.arange(n), np.argmax(value, axis=1)] = 1.0
    return target, reward_model, target_channels


def supported_logs(
    validation: pl.DataFrame, predictions: pl.DataFrame, actions: Sequence[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The validation decisions the promotion gate values policies on, with their rows of ``predictions``:
    those of the randomised campaigns, which logged every action, so that any policy's choices are in the
    logs' support. Rule-based campaigns (a cart reminder to abandoners) logged one action only: a policy that
    would choose another there cannot be valued from them. Without randomised decisions, every validation
    decision."""
    from ml.train import randomised_decisions

    indexed = validation.with_row_index("_row")
    rows = randomised_decisions(indexed, indexed, actions)["_row"]
    if rows.is_empty():
        return validation, predictions
    return validation[rows], predictions[rows]


def value_policy(predictions: pl.DataFrame, validation: pl.DataFrame, policy, actions: Sequence[str]) -> dict:
    """The off-policy values (every estimator of :func:`ml.ope.evaluate_policy`) of the greedy policy of
    ``predictions`` on the ``validation`` logs."""
    from ml.ope import evaluate_policy

    target, reward_model, channels = greedy_policy(predictions, validation, policy, actions)
    return evaluate_policy(
        ope_logs(validation, policy), target, reward_model, list(actions), target_channels=channels
    )


def quality_failures(result, evaluation: Mapping) -> list[str]:
    """Why a trained candidate may not serve (empty when it may): no validation rows, predictions that are not
    finite, probabilities outside [0, 1], or no finite off-policy value. The logs' support is the gate's
    concern (an unsupported challenger is not promoted), not a quality check: the first champion replaces the
    rule-based fallback, and its support is recorded with it."""
    failures = []
    if result.validation.height == 0:
        failures.append("no validation decisions")
    predictions = result.validation_predictions
    for name in predictions.columns:
        values = predictions[name].cast(pl.Float64).to_numpy()
        if not np.isfinite(values).all():
            failures.append(f"{name}: predictions not finite")
        elif name.startswith("purchase_probability__") and ((values < 0) | (values > 1)).any():
            failures.append(f"{name}: probability outside [0, 1]")
    primary = evaluation.get(PRIMARY_ESTIMATOR)
    if primary is None or not math.isfinite(primary.value):
        failures.append(f"learned policy has no finite off-policy value ({PRIMARY_ESTIMATOR})")
    return failures


def champion_value(validation: pl.DataFrame, policy, settings: MlSettings):
    """The off-policy values of the current champion's greedy policy on the same ``validation`` logs, or None
    when there is no champion. The champion is loaded from the registry and scored through its pyfunc."""
    import mlflow

    from ml.model import pyfunc_input
    from ml.registry import champion

    if champion(settings) is None:
        return None
    served = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    columns = served.metadata.get_input_schema().input_names()
    predictions = pl.from_pandas(served.predict(pyfunc_input(validation, columns)))
    actions = [
        c.removeprefix("expected_revenue__")
        for c in predictions.columns
        if c.startswith("expected_revenue__")
    ]
    return value_policy(predictions, validation, policy, actions)


def train_candidate(settings: MlSettings | None = None, config=None, lake_settings=None) -> CandidateReport:
    """Train a candidate on the current gold training set and take it through the registry: off-policy values
    of the candidate, the champion and the logging policy on the same validation logs
    (:func:`supported_logs`), the run logged, the version registered (with its model card) and the promotion
    gate applied. The run's drift reference describes the population the candidate will score: the persons
    scorable on the last decision date of the training set (:func:`ml.drift.scoring_reference`). ``config``:
    the training configuration (default
    :class:`ml.train.TrainingConfig`); ``lake_settings``: where the lake is (default from the environment)."""
    from ml.drift import scoring_reference
    from ml.ope import logging_policy_value
    from ml.policy import load_policy
    from ml.registry import apply_gate, gate, register_candidate
    from ml.tracking import configure, log_training_run, model_card
    from ml.train import TrainingConfig, train_uplift

    settings = configure(settings or get_ml_settings())
    config = config or TrainingConfig()
    policy = load_policy(settings.policy_file)
    training, data_ref = load_training_set(lake_settings)
    result = train_uplift(training, config)
    actions = list(result.model.actions)
    logs, predictions = supported_logs(result.validation, result.validation_predictions, actions)
    evaluation = value_policy(predictions, logs, policy, actions)
    logging_value = logging_policy_value(ope_logs(logs, policy))
    current = champion_value(logs, policy, settings)
    champion_primary = current[PRIMARY_ESTIMATOR] if current else None
    extra = {}
    if current:
        from ml.tracking import policy_value_metrics

        for name, value in current.items():
            extra |= policy_value_metrics(f"ope.champion.{name}", value)
    reference = scoring_reference(
        result.model,
        date.fromisoformat(result.split["validation_until"]),
        lake_settings,
        settings.drift_reference_persons,
    )
    logged = log_training_run(
        result,
        data_ref,
        evaluation,
        logging_value,
        settings,
        config=config,
        extra_metrics=extra,
        reference=reference,
    )
    card = model_card(result, data_ref, evaluation, logging_value, logged.run_id)
    version = register_candidate(
        logged.model_uri, logged.run_id, evaluation[PRIMARY_ESTIMATOR], logging_value, card, settings
    )
    failures = quality_failures(result, evaluation)
    decision = gate(
        evaluation[PRIMARY_ESTIMATOR],
        champion_primary,
        logging_value,
        settings.promotion_margin,
        passed_quality_checks=not failures,
    )
    outcome = apply_gate(version, decision, settings.promotion_requires_approval, settings)
    return CandidateReport(
        run_id=logged.run_id,
        model_uri=logged.model_uri,
        model_version=str(version.version),
        outcome=outcome,
        promote=decision.promote,
        bootstrap=decision.bootstrap,
        reason=decision.reason,
        data=data_ref,
        metrics={k: float(v) for k, v in result.metrics.items()},
        candidate_value=evaluation[PRIMARY_ESTIMATOR],
        champion_value=champion_primary,
        logging_value=logging_value,
        quality_failures=tuple(failures),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.pipeline`` (train a candidate) or ``python -m ml.pipeline reproduce <run id>``."""
    parser = argparse.ArgumentParser(prog="python -m ml.pipeline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    train = commands.add_parser(
        "train", help="train a candidate, register it and apply the promotion gate (default)"
    )
    train.add_argument("--method", help="the learner (default: the training configuration's)")
    train.add_argument("--validation-days", type=int, help="latest decision dates that validate (default 7)")
    train.add_argument("--seed", type=int, help="the seed of the boosters (default 7)")
    again = commands.add_parser(
        "reproduce", help="retrain a logged run from its snapshot and compare predictions"
    )
    again.add_argument("run_id")
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        from ml.tracking import reproduce_and_compare

        difference = reproduce_and_compare(args.run_id)
        print(f"run {args.run_id} reproduced: largest prediction difference {difference:.3g}")
        return 0 if difference == 0 else 1
    from ml.train import TrainingConfig

    chosen = {
        "method": getattr(args, "method", None),
        "validation_days": getattr(args, "validation_days", None),
        "seed": getattr(args, "seed", None),
    }
    config = TrainingConfig(**{k: v for k, v in chosen.items() if v is not None})
    print(train_candidate(config=config).describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
