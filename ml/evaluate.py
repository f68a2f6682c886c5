"""Decision quality against the simulator's truth.

Every decision rule is scored on the same persons, under the same eligibility (consent, frequency caps,
suppression) and without holdout, exploration or canary, by the true value of what it chooses:

    value(x, a, channel) = true_expected_revenue(x, a) - true_expected_revenue(x, no_action) -
    message_cost[channel]

(``no_action`` is worth 0; an action a person is not eligible for is never credited: it is not sent, so it is
worth what ``no_action`` is worth; the channel is the one the eligibility sends the action through, the same
for every rule). A policy is a distribution over actions per person; its value per person is the expectation
of the true value over that distribution.

The rules compared: the learned policy (greedy on the model's predicted values), the logging policy (what the
simulator's campaigns did), every single action for everyone, a uniformly random eligible action, and the
oracle (the best eligible action by true value). The deployed policy (with holdout, exploration and canary) is
reported beside them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from deltalake import write_deltalake

from lake import delta, suppression
from lake.gold import gold_uri
from lake.settings import Settings, disable_telemetry, get_settings, without_password
from ml import scoring
from ml.data import (
    DECISIONS_TABLE,
    FEATURES_TABLE,
    IDENTITY_TABLE,
    load_features,
    load_training_set,
    read_gold,
)
from ml.pipeline import supported_logs
from ml.policy import ModelRef, Policy, decide, eligibility, load_policy
from ml.registry import CHAMPION
from ml.settings import MlSettings, get_ml_settings
from simulator.catalog import CHANNELS
from simulator.company.campaigns import EXPLORATION_SHARE
from simulator.truth import lake_expected_revenue

if TYPE_CHECKING:
    from ml.train import UpliftModel

NO_ACTION = "no_action"
REVENUE_PREFIX = "expected_revenue__"
FAIR, DEPLOYED = "same eligibility", "deployed"
"""The two comparisons: every rule under the same eligibility without holdout and exploration, and the
deployed policy with them."""
LEARNED, LOGGING, RANDOM, ORACLE, DEPLOYED_POLICY = "learned", "logging", "random", "oracle", "deployed"
SINGLE_PREFIX = "always_"
"""Single-action policies are named ``always_<action>``."""
CHOICE_SCHEMA = {"person_id": pl.String, "action": pl.String, "channel": pl.String, "probability": pl.Float64}


@dataclass(frozen=True)
class LoggingDesign:
    """The simulator's campaigns as a decision rule for one decision date: the always-on randomised campaign
    reaches ``exploration_share`` of the persons that day with a uniformly random action of the catalogue
    (no_action included) when they consented to any channel (else no_action); the others get the rule-based
    cart reminder with probability ``cart_reminder_share`` when they abandoned a cart the day before and
    accept e-mail, else nothing. (When both campaigns reach a person, the randomised message is sent later the
    same day and its offer is the one in force, as in the simulator.) Two simplifications: the simulator's
    campaign skips persons still under an earlier action's effect, here it may reach anyone; and it draws the
    channel uniformly among the consented ones, here, as for every rule of the comparison, an action goes
    through the channel the eligibility assigns it (the rules differ by what they choose, not by the price of
    a message)."""

    exploration_share: float = EXPLORATION_SHARE
    cart_reminder_share: float = 0.8


def uplift_frame(expected_revenue: pl.DataFrame, actions: Sequence[str]) -> pl.DataFrame:
    """Per person and action (long): ``uplift`` = expected revenue of the action minus that of no_action, from
    a wide frame ``person_id`` + ``expected_revenue__<action>``."""
    base = pl.col(REVENUE_PREFIX + NO_ACTION)
    return expected_revenue.select(
        "person_id", *[(pl.col(REVENUE_PREFIX + a) - base).alias(a) for a in actions]
    ).unpivot(index="person_id", variable_name="action", value_name="uplift")


def credit(
    choices: pl.DataFrame,
    uplift: pl.DataFrame,
    eligibility: pl.DataFrame,
    message_cost: Mapping[str, float],
) -> pl.DataFrame:
    """The true value per person (``person_id``, ``value``) of a policy's ``choices`` (``person_id``,
    ``action``, ``probability``; the probabilities of a person sum to 1): the expectation of
    ``uplift - message_cost[channel]`` over the choices, where the channel is the one ``eligibility``
    (``person_id``, ``action``, ``eligible``, ``channel``) sends the action through, and no_action and every
    action the person is not eligible for are worth 0."""
    totals = choices.group_by("person_id").agg(pl.col("probability").sum())
    off = totals.filter((pl.col("probability") - 1.0).abs() > 1e-9)
    if off.height:
        raise ValueError(f"{off.height} persons whose choice probabilities do not sum to 1")
    rows = (
        choices.select("person_id", "action", "probability")
        .join(uplift, on=["person_id", "action"], how="left")
        .join(
            eligibility.select("person_id", "action", "eligible", "channel"),
            on=["person_id", "action"],
            how="left",
        )
        .join(_costs(message_cost), on="channel", how="left")
    )
    credited = (pl.col("action") != NO_ACTION) & pl.col("eligible").fill_null(False)
    unknown = rows.filter(credited & (pl.col("uplift").is_null() | pl.col("cost").is_null()))
    if unknown.height:
        raise ValueError(f"{unknown.height} eligible choices without a true value or a message cost")
    value = pl.when(credited).then(pl.col("uplift") - pl.col("cost")).otherwise(0.0)
    return rows.group_by("person_id").agg((pl.col("probability") * value).sum().alias("value"))


def _costs(message_cost: Mapping[str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        {"channel": list(message_cost), "cost": [float(c) for c in message_cost.values()]},
        schema={"channel": pl.String, "cost": pl.Float64},
    )


def _eligible_actions(eligibility: pl.DataFrame) -> pl.DataFrame:
    """The eligible (person, action, channel) rows, with no_action for every person."""
    persons = eligibility.select("person_id").unique()
    nothing = persons.with_columns(
        action=pl.lit(NO_ACTION), channel=pl.lit(None, dtype=pl.String), eligible=pl.lit(True)
    )
    actions = eligibility.filter(pl.col("eligible") & (pl.col("action") != NO_ACTION))
    return pl.concat([nothing, actions.select(nothing.columns)], how="vertical_relaxed")


def single_action_choices(eligibility: pl.DataFrame, action: str) -> pl.DataFrame:
    """``action`` for every person eligible for it (through its channel), no_action for the others."""
    persons = eligibility.select("person_id").unique()
    chosen = eligibility.filter((pl.col("action") == action) & pl.col("eligible")).select(
        "person_id", "channel"
    )
    return (
        persons.join(chosen, on="person_id", how="left")
        .select(
            "person_id",
            pl.when(pl.col("channel").is_not_null() | pl.lit(action == NO_ACTION))
            .then(pl.lit(action))
            .otherwise(pl.lit(NO_ACTION))
            .alias("action"),
            pl.col("channel").cast(pl.String),
            pl.lit(1.0).alias("probability"),
        )
        .cast(CHOICE_SCHEMA)
    )


def random_choices(eligibility: pl.DataFrame) -> pl.DataFrame:
    """A uniformly random eligible action per person (no_action is always eligible), as a distribution."""
    rows = _eligible_actions(eligibility)
    return rows.select(
        "person_id",
        "action",
        "channel",
        (1.0 / pl.len().over("person_id")).alias("probability"),
    ).cast(CHOICE_SCHEMA)


def greedy_choices(
    expected_revenue: pl.DataFrame,
    eligibility: pl.DataFrame,
    message_cost: Mapping[str, float],
    actions: Sequence[str],
) -> pl.DataFrame:
    """Per person, the eligible action of highest value ``expected_revenue__<action>`` minus no_action's minus
    the message cost of its channel (no_action when none is positive; ties go to the earlier action of the
    catalogue). On the true expected revenue this is the oracle."""
    order = pl.DataFrame({"action": list(actions), "rank": list(range(len(actions)))})
    rows = (
        _eligible_actions(eligibility)
        .join(uplift_frame(expected_revenue, actions), on=["person_id", "action"], how="inner")
        .join(_costs(message_cost), on="channel", how="left")
        .join(order, on="action", how="inner")
        .with_columns(
            pl.when(pl.col("action") == NO_ACTION)
            .then(0.0)
            .otherwise(pl.col("uplift") - pl.col("cost").fill_null(0.0))
            .alias("value")
        )
    )
    return (
        rows.sort(["person_id", "value", "rank"], descending=[False, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
        .select("person_id", "action", "channel", pl.lit(1.0).alias("probability"))
        .cast(CHOICE_SCHEMA)
    )


def logging_choices(
    candidates: pl.DataFrame, actions: Sequence[str], design: LoggingDesign = LoggingDesign()
) -> pl.DataFrame:
    """The logging policy (:class:`LoggingDesign`) as a distribution over actions per person of
    ``candidates`` (``person_id``, ``has_<channel>_consent``, ``days_since_cart_abandoned``). The channel is
    left to the eligibility the policies are compared under (it sets the message cost)."""
    share, reminded = design.exploration_share, design.cart_reminder_share
    consented = pl.any_horizontal(*[pl.col(f"has_{c}_consent").fill_null(False) for c in CHANNELS])
    abandoner = (pl.col("days_since_cart_abandoned") == 1).fill_null(False) & pl.col(
        "has_email_consent"
    ).fill_null(False)
    base = candidates.select("person_id", consented.alias("consented"), abandoner.alias("abandoner"))
    # exploration (share): a uniformly random action of the catalogue when any channel is consented
    explored = [
        base.filter("consented").select(
            "person_id", pl.lit(action).alias("action"), pl.lit(share / len(actions)).alias("probability")
        )
        for action in actions
        if action != NO_ACTION
    ]
    explored_nothing = base.select(
        "person_id",
        pl.lit(NO_ACTION).alias("action"),
        pl.when("consented").then(share / len(actions)).otherwise(share).alias("probability"),
    )
    # otherwise (1 - share): the cart reminder to yesterday's abandoners who accept e-mail
    reminder = base.filter("abandoner").select(
        "person_id",
        pl.lit("cart_reminder").alias("action"),
        pl.lit((1.0 - share) * reminded).alias("probability"),
    )
    nothing = base.select(
        "person_id",
        pl.lit(NO_ACTION).alias("action"),
        pl.when("abandoner")
        .then((1.0 - share) * (1.0 - reminded))
        .otherwise(1.0 - share)
        .alias("probability"),
    )
    rows = pl.concat([*explored, explored_nothing, reminder, nothing], how="vertical_relaxed")
    return (
        rows.group_by("person_id", "action")
        .agg(pl.col("probability").sum())
        .filter(pl.col("probability") > 0)
        .select("person_id", "action", pl.lit(None, dtype=pl.String).alias("channel"), "probability")
        .cast(CHOICE_SCHEMA)
        .sort("person_id", "action")
    )


def _action_mix(choices: pl.DataFrame) -> list[dict]:
    """The expected share of persons per action under a policy's choices."""
    persons = choices["person_id"].n_unique()
    mix = (
        choices.group_by("action").agg((pl.col("probability").sum() / persons).alias("share")).sort("action")
    )
    return mix.to_dicts()


def decision_quality(
    expected_revenue: pl.DataFrame,
    eligibility: pl.DataFrame,
    policies: Mapping[str, pl.DataFrame],
    message_cost: Mapping[str, float],
    actions: Sequence[str],
    deployed: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The decision quality table: one row per policy with its true value per person and in total, its share
    of the oracle's incremental value and its share of the personalisation headroom,
    ``(value - best single action) / (oracle - best single action)``.

    ``expected_revenue``: the true ``expected_revenue__<action>`` per ``person_id``; ``eligibility``: per
    person and action ``eligible`` and ``channel``; ``policies``: the choices of the rules decided under that
    eligibility (for example ``learned`` and ``logging``); single actions, random and oracle are added here;
    ``deployed``: the choices of the deployed policy, reported beside the others. Every policy is scored on
    the same persons: those of ``eligibility`` that have a true value."""
    expected_revenue = expected_revenue.join(eligibility.select("person_id").unique(), on="person_id")
    persons = expected_revenue.select("person_id")
    if persons.height == 0:
        raise ValueError("no person has both a true value and an eligibility")
    eligibility = eligibility.join(persons, on="person_id")
    uplift = uplift_frame(expected_revenue, actions)
    rules = dict(policies)
    for action in actions:
        rules[SINGLE_PREFIX + action] = single_action_choices(eligibility, action)
    rules[RANDOM] = random_choices(eligibility)
    rules[ORACLE] = greedy_choices(expected_revenue, eligibility, message_cost, actions)
    if deployed is not None:
        rules[DEPLOYED_POLICY] = deployed
    rows = []
    for name, choices in rules.items():
        choices = choices.join(persons, on="person_id")
        covered = choices["person_id"].n_unique()
        if covered != persons.height:
            raise ValueError(f"policy {name} decides for {covered} of the {persons.height} persons")
        values = credit(choices, uplift, eligibility, message_cost)
        total = float(values["value"].sum())
        rows.append(
            {
                "policy": name,
                "comparison": DEPLOYED if name == DEPLOYED_POLICY else FAIR,
                "persons": persons.height,
                "mean_value": total / persons.height,
                "total_value": total,
                "action_mix": _action_mix(choices),
            }
        )
    table = pl.DataFrame(rows)
    oracle = table.filter(pl.col("policy") == ORACLE)["total_value"].item()
    best_single = table.filter(pl.col("policy").str.starts_with(SINGLE_PREFIX))["total_value"].max()
    headroom = oracle - best_single
    return table.with_columns(
        (pl.col("total_value") / oracle if oracle > 0 else pl.lit(None, pl.Float64)).alias("share_of_oracle"),
        (
            (pl.col("total_value") - best_single) / headroom if headroom > 0 else pl.lit(None, pl.Float64)
        ).alias("headroom_share"),
    )


def logged_truth(
    logs: pl.DataFrame,
    expected_revenue: pl.DataFrame,
    target: pl.DataFrame,
    eligibility: pl.DataFrame,
    message_cost: Mapping[str, float],
) -> dict[str, float]:
    """The true values, on the same logged decisions the off-policy estimators read, of the logging policy
    (the logged action through the logged channel) and of a target policy (``target``: ``row_id``, ``action``:
    its choice for each logged row; ``eligibility`` per ``row_id`` and action): the mean true expected reward
    per decision, revenue net of the message cost (the unit of the estimates, not an uplift).

    ``logs``: ``row_id``, ``person_id``, ``action``, ``channel``; ``expected_revenue``: the true
    ``expected_revenue__<action>`` per ``person_id``."""
    costs = _costs(message_cost)
    truth = expected_revenue.select("person_id", pl.selectors.starts_with(REVENUE_PREFIX)).unpivot(
        index="person_id", variable_name="action", value_name="revenue"
    )
    truth = truth.with_columns(pl.col("action").str.strip_prefix(REVENUE_PREFIX))

    def reward(frame: pl.DataFrame) -> float:
        rows = frame.join(truth, on=["person_id", "action"], how="left").join(costs, on="channel", how="left")
        if rows["revenue"].null_count():
            raise ValueError("a logged decision without a true expected revenue")
        return float((rows["revenue"] - rows["cost"].fill_null(0.0)).mean())

    chosen = (
        logs.select("row_id", "person_id")
        .join(target.select("row_id", "action"), on="row_id")
        .join(
            eligibility.select("row_id", "action", "eligible", "channel"), on=["row_id", "action"], how="left"
        )
        .with_columns(  # an ineligible choice is not sent
            pl.when(pl.col("eligible").fill_null(False) & (pl.col("action") != NO_ACTION))
            .then(pl.col("action"))
            .otherwise(pl.lit(NO_ACTION))
            .alias("action")
        )
        .with_columns(pl.when(pl.col("action") != NO_ACTION).then("channel").alias("channel"))
    )
    if chosen.height != logs.height:
        raise ValueError("the target policy must choose for every logged decision")
    logged = logs.select("person_id", "action", pl.when(pl.col("action") != NO_ACTION).then("channel"))
    return {LOGGING: reward(logged), "target": reward(chosen)}


EVALUATION_TABLE = "policy_evaluation"


def write_policy_evaluation(settings: Settings, table: pl.DataFrame, evaluation_date: date) -> str:
    """Write the table's rows (one per policy) as the ``evaluation_date`` of gold ``policy_evaluation``,
    replacing that date's rows of an earlier run; the table's URI."""
    uri = gold_uri(settings, EVALUATION_TABLE)
    rows = table.with_columns(pl.lit(evaluation_date).alias("evaluation_date")).select(
        "evaluation_date", pl.exclude("evaluation_date")
    )
    exists = delta.open_table(uri, settings.storage_options) is not None
    write_deltalake(
        uri,
        rows.to_arrow(),
        mode="overwrite",
        predicate=f"evaluation_date = '{evaluation_date.isoformat()}'" if exists else None,
        storage_options=settings.storage_options or None,
    )
    return uri


def format_table(table: pl.DataFrame) -> str:
    """The decision quality table as text: one line per policy (no person is named)."""
    lines = [
        f"{'policy':<22} {'comparison':<16} {'persons':>9} {'EUR/person':>11} {'total EUR':>13} "
        f"{'of oracle':>9} {'headroom':>9}"
    ]
    for row in table.iter_rows(named=True):
        share = "" if row["share_of_oracle"] is None else f"{row['share_of_oracle']:.1%}"
        headroom = "" if row["headroom_share"] is None else f"{row['headroom_share']:.2f}"
        lines.append(
            f"{row['policy']:<22} {row['comparison']:<16} {row['persons']:>9,} {row['mean_value']:>11.4f} "
            f"{row['total_value']:>13,.0f} {share:>9} {headroom:>9}"
        )
    lines += ["", "action mix (share of persons)"]
    for row in table.filter(pl.col("policy").is_in([LEARNED, ORACLE, DEPLOYED_POLICY, LOGGING])).iter_rows(
        named=True
    ):
        mix = ", ".join(
            f"{m['action']} {m['share']:.1%}" for m in sorted(row["action_mix"], key=lambda m: -m["share"])
        )
        lines.append(f"{row['policy']:<22} {mix}")
    if "ope_true_value" in table.columns:
        lines += ["", "off-policy estimates on the logged decisions (EUR per decision, net of message cost)"]
        lines.append(
            f"{'policy':<22} {'estimator':<10} {'decisions':>9} {'truth':>9} {'estimate':>9} "
            f"{'95% interval':>21} {'ESS':>9} {'support':>8}"
        )
        for row in table.filter(pl.col("ope_true_value").is_not_null()).iter_rows(named=True):
            for e in row["ope_estimates"]:
                flag = " unsupported" if e["unsupported"] else ""
                lines.append(
                    f"{row['policy']:<22} {e['estimator']:<10} {row['ope_decisions']:>9,} "
                    f"{row['ope_true_value']:>9.3f} {e['value']:>9.3f} "
                    f"[{e['ci_low']:>8.3f}, {e['ci_high']:>8.3f}] {e['effective_sample_size']:>9,.0f} "
                    f"{e['support']:>8.1%}{flag}"
                )
    return "\n".join(lines)


OPE_SCHEMA = {
    "policy": pl.String,
    "ope_decisions": pl.Int64,
    "ope_true_value": pl.Float64,
    "ope_estimates": pl.List(
        pl.Struct(
            {
                "estimator": pl.String,
                "value": pl.Float64,
                "ci_low": pl.Float64,
                "ci_high": pl.Float64,
                "effective_sample_size": pl.Float64,
                "support": pl.Float64,
                "unsupported": pl.Boolean,
            }
        )
    ),
}
"""Columns of the off-policy estimates beside the truth (rows of the learned and logging policies)."""
OPE_DAYS = 7
"""The off-policy estimates read the logged decisions of the latest ``OPE_DAYS`` decision dates up to the
evaluation date (the out-of-time validation window of training)."""


@dataclass
class EvaluationReport:
    """What one evaluation computed and where it wrote it."""

    evaluation_date: date
    table: pl.DataFrame
    uri: str
    persons: int
    """Persons scored on the evaluation date."""
    persons_with_truth: int
    """Of them, those the simulator's truth knows (the persons of the table)."""
    model: str


def evaluate_decisions(
    settings: Settings | None = None,
    decision_date: date | None = None,
    model: UpliftModel | None = None,
    truth_dir: Path | None = None,
) -> EvaluationReport:
    """Evaluate the decisions of ``decision_date`` (default: the latest feature snapshot) against the
    simulator's truth (``truth_dir``, default the lake's ``simulator_truth``) and write the table as that date
    of gold ``policy_evaluation``. ``model``: the uplift model to evaluate; by default the registered
    champion, and the deployed policy is then the one gold ``nba_decisions`` holds for the date (decided anew
    with holdout, exploration and budgets when it does not cover every person evaluated)."""
    settings = settings or get_settings()
    ml_settings = get_ml_settings()
    policy = load_policy(ml_settings.policy_file)
    truth_dir = Path(truth_dir or settings.simulator_truth)
    if decision_date is None:
        snapshots, _ = read_gold(FEATURES_TABLE, settings, columns=["snapshot_date"])
        decision_date = snapshots["snapshot_date"].max()
    deployed = None
    if model is None:
        model, model_ref = champion_model(ml_settings)
        deployed = published_decisions(settings, decision_date)
    else:
        model_ref = ModelRef(ml_settings.model_name, "unregistered")
    candidates = scoring_candidates(settings, decision_date, policy)
    scores = candidates.select("person_id").hstack(
        model.predict(candidates).select(pl.selectors.starts_with(REVENUE_PREFIX))
    )
    eligible = eligibility(candidates, policy)
    learned = decide(scores, candidates, policy, decision_date, model_ref, deploy=False)
    if deployed is None or deployed.join(candidates, on="person_id", how="semi").height < candidates.height:
        deployed = decide(scores, candidates, policy, decision_date, model_ref, deploy=True)
    choices = {
        name: frame.select("person_id", "action", "channel", pl.lit(1.0).alias("probability"))
        for name, frame in ((LEARNED, learned), (DEPLOYED_POLICY, deployed))
    }
    truth = true_expected_revenue(settings, truth_dir, policy.actions)
    table = decision_quality(
        truth,
        eligible,
        {LEARNED: choices[LEARNED], LOGGING: logging_choices(candidates, policy.actions)},
        policy.message_cost,
        policy.actions,
        deployed=choices[DEPLOYED_POLICY],
    )
    addresses = candidates.select("person_id", pl.selectors.starts_with("address__"))
    estimates = off_policy_beside_truth(settings, decision_date, model, policy, truth, addresses)
    table = table.join(estimates, on="policy", how="left").with_columns(
        pl.lit(model_ref.name).alias("model_name"),
        pl.lit(model_ref.version).alias("model_version"),
        pl.lit(policy.version).alias("policy_version"),
        pl.lit(datetime.now(UTC)).alias("evaluated_at"),
    )
    uri = write_policy_evaluation(settings, table, decision_date)
    return EvaluationReport(
        evaluation_date=decision_date,
        table=table,
        uri=uri,
        persons=candidates.height,
        persons_with_truth=int(table["persons"][0]),
        model=f"{model_ref.name} {model_ref.version}",
    )


def off_policy_beside_truth(
    settings: Settings,
    decision_date: date,
    model: UpliftModel,
    policy: Policy,
    truth: pl.DataFrame,
    addresses: pl.DataFrame,
) -> pl.DataFrame:
    """The off-policy estimates (IPS, SNIPS, doubly robust) of the learned policy and the on-policy value of
    the logging policy, on the logged decisions of the latest :data:`OPE_DAYS` decision dates up to
    ``decision_date`` whose person the truth knows, those of the randomised campaigns as the promotion gate
    values them (:func:`ml.pipeline.supported_logs`), beside their true values on the same decisions
    (``addresses``: ``person_id`` and ``address__<channel>``, where the learned policy could reach them): one
    row per policy (``ope_decisions``, ``ope_true_value``, ``ope_estimates``)."""
    from ml.ope import evaluate_policy, logging_policy_value

    logs, _ = load_training_set(settings)
    logs = logs.filter(pl.col("decision_date") <= decision_date)
    dates = logs["decision_date"].unique().sort().tail(OPE_DAYS)
    logs = logs.filter(pl.col("decision_date").is_in(dates.implode())).join(
        truth.select("person_id"), on="person_id", how="semi"
    )
    logs, _ = supported_logs(logs, logs, policy.actions)
    if logs.height == 0:
        return pl.DataFrame(schema=OPE_SCHEMA)
    logs = logs.with_columns(
        pl.col("activity_id").cast(pl.String).alias("row_id"),
        (
            pl.col("revenue_in_horizon").cast(pl.Float64)
            - pl.col("channel")
            .replace_strict(policy.message_cost, default=0.0, return_dtype=pl.Float64)
            .fill_null(0.0)
        ).alias("reward"),
    )
    # the learned policy on each logged decision: greedy on the model's values under the policy's eligibility
    # (the person's addresses as of the evaluation date; the frequency caps of the logged dates are not
    # replayed)
    rows = logs.join(addresses, on="person_id", how="left").with_columns(
        pl.col("row_id").alias("person_id"), pl.lit(0, pl.Int64).alias("touches")
    )
    predicted = rows.select("person_id").hstack(
        model.predict(rows).select(pl.selectors.starts_with(REVENUE_PREFIX))
    )
    eligible = eligibility(rows, policy).rename({"person_id": "row_id"})
    target = greedy_choices(
        predicted, eligible.rename({"row_id": "person_id"}), policy.message_cost, policy.actions
    )
    target = target.rename({"person_id": "row_id"})
    order = logs.select("row_id").with_row_index("i")
    chosen = order.join(target, on="row_id").sort("i")
    index = {a: i for i, a in enumerate(policy.actions)}
    target_probabilities = np.zeros((logs.height, len(policy.actions)))
    target_probabilities[np.arange(logs.height), chosen["action"].replace_strict(index).to_numpy()] = 1.0
    channels = (  # the channel each action would go through (null: none, and for no_action)
        order.join(eligible, on="row_id")
        .pivot(on="action", index=["i", "row_id"], values="channel")
        .sort("i")
    )
    costs = channels.with_columns(
        pl.col(a).replace_strict(policy.message_cost, default=0.0, return_dtype=pl.Float64).fill_null(0.0)
        for a in policy.actions
    )
    revenue = order.join(predicted.rename({"person_id": "row_id"}), on="row_id").sort("i")
    reward_model = np.column_stack(
        [
            revenue[REVENUE_PREFIX + a].to_numpy() - (0.0 if a == NO_ACTION else costs[a].to_numpy())
            for a in policy.actions
        ]
    )
    target_channels = np.column_stack([channels[a].to_numpy() for a in policy.actions]).astype(object)
    estimates = evaluate_policy(logs, target_probabilities, reward_model, policy.actions, target_channels)
    truths = logged_truth(
        logs.select("row_id", "person_id", "action", "channel"), truth, target, eligible, policy.message_cost
    )
    rows = [
        (LEARNED, truths["target"], list(estimates.values())),
        (LOGGING, truths[LOGGING], [logging_policy_value(logs)]),
    ]
    return pl.DataFrame(
        [
            {
                "policy": name,
                "ope_decisions": logs.height,
                "ope_true_value": true_value,
                "ope_estimates": [
                    {
                        "estimator": e.estimator,
                        "value": e.value,
                        "ci_low": e.ci_low,
                        "ci_high": e.ci_high,
                        "effective_sample_size": e.effective_sample_size,
                        "support": e.support,
                        "unsupported": e.unsupported,
                    }
                    for e in values
                ],
            }
            for name, true_value, values in rows
        ],
        schema=OPE_SCHEMA,
    )


def scoring_candidates(settings: Settings, decision_date: date, policy: Policy) -> pl.DataFrame:
    """The persons the batch scores on ``decision_date``, as it sees them: their feature row, without erased
    persons and persons who objected to profiling, with their addresses per channel and their touches in the
    frequency-cap window (see :func:`ml.scoring.score_and_decide`)."""
    features, _ = load_features(decision_date, settings)
    if features.height == 0:
        raise ValueError(f"gold {FEATURES_TABLE} has no rows for {decision_date}")
    as_of = datetime(decision_date.year, decision_date.month, decision_date.day, tzinfo=UTC)
    identity = scoring._identity(settings, as_of)
    erased = scoring.erased_among(
        features["person_id"], identity, suppression.suppressed(settings), settings.pii_secret
    )
    gone = features["person_id"].is_in(erased.implode())
    objected = ~features[scoring.PROFILING_CONSENT].fill_null(True)
    return (
        features.filter(~gone & ~objected)
        .join(scoring.addresses(settings, policy, as_of, identity), on="person_id", how="left")
        .join(scoring.touches(settings, policy, decision_date, as_of, identity), on="person_id", how="left")
        .with_columns(pl.col("touches").fill_null(0))
        .sort("person_id")
    )


def true_expected_revenue(settings: Settings, truth_dir: Path, actions: Sequence[str]) -> pl.DataFrame:
    """The simulator's true expected revenue in the label horizon per lake person (mapped to their true person
    through gold ``identity_person_map``): ``person_id`` + ``expected_revenue__<action>``."""
    if not (truth_dir / "responses.parquet").exists():
        raise FileNotFoundError(
            f"no simulator truth in {truth_dir}: the evaluation needs the simulated company's"
        )
    identity, _ = read_gold(IDENTITY_TABLE, settings, columns=["identifier_type", "identifier", "person_id"])
    long = lake_expected_revenue(identity, truth_dir)
    wide = long.pivot(on="action", index="person_id", values="expected_revenue")
    return wide.select("person_id", *[pl.col(a).alias(REVENUE_PREFIX + a) for a in actions])


def published_decisions(settings: Settings, decision_date: date) -> pl.DataFrame | None:
    """The decisions gold ``nba_decisions`` holds for ``decision_date`` (what was deployed: champion, canary,
    holdout, exploration and budgets), or None when there are none."""
    lazy = delta.scan(gold_uri(settings, DECISIONS_TABLE), settings.storage_options)
    if lazy is None:
        return None
    decided = lazy.filter(pl.col("decision_date") == decision_date).select("person_id", "action", "channel")
    decided = decided.collect()
    return decided if decided.height else None


def champion_model(ml_settings: MlSettings) -> tuple[UpliftModel, ModelRef]:
    """The uplift model behind ``models:/<model_name>@champion`` and its reference."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=ml_settings.tracking_uri, registry_uri=ml_settings.tracking_uri)
    try:
        version = client.get_model_version_by_alias(ml_settings.model_name, CHAMPION)
    except MlflowException as error:
        raise LookupError(
            f"no champion of {ml_settings.model_name!r} in {without_password(ml_settings.tracking_uri)}: "
            "train and promote one first"
        ) from error
    mlflow.set_registry_uri(ml_settings.tracking_uri)
    mlflow.set_tracking_uri(ml_settings.tracking_uri)
    served = mlflow.pyfunc.load_model(f"models:/{ml_settings.model_name}/{version.version}")
    return served.unwrap_python_model().model, ModelRef(
        ml_settings.model_name, str(version.version), CHAMPION
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.evaluate [--date YYYY-MM-DD] [--truth DIR]``: evaluate the champion's decisions against
    the simulator's truth, print the table and write gold ``policy_evaluation``."""
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument(
        "--date", type=date.fromisoformat, help="decision date (default: the latest snapshot)"
    )
    parser.add_argument("--truth", type=Path, help="the simulator's truth folder (default: the lake's)")
    args = parser.parse_args(argv)
    disable_telemetry()
    report = evaluate_decisions(decision_date=args.date, truth_dir=args.truth)
    print(
        f"decision quality on {report.evaluation_date} (model {report.model}): {report.persons_with_truth:,} "
        f"of {report.persons:,} persons scored are known to the truth; value = true expected revenue uplift "
        "net of the message cost, EUR"
    )
    print(format_table(report.table))
    print(f"written to {report.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
