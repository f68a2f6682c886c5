"""Decision quality against the truth: each policy's true value worked out by hand on a few persons, the
oracle never beaten, ineligible actions never credited."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date

import numpy as np
import polars as pl
import pytest

from lake.settings import Settings
from ml.evaluate import (
    LoggingDesign,
    credit,
    decision_quality,
    evaluate_decisions,
    format_table,
    greedy_choices,
    logged_truth,
    logging_choices,
    random_choices,
    scoring_candidates,
    single_action_choices,
    uplift_frame,
    write_policy_evaluation,
)
from simulator.catalog import ACTIONS as ACTIONS_ALL
from simulator.truth import lake_expected_revenue
from tests.conftest import Simulated, lake_settings

ACTIONS = ("no_action", "discount_10", "cart_reminder")
COST = {"email": 0.1, "sms": 0.5, "push": 0.0}


def truth() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "person_id": ["p1", "p2", "p3"],
            "expected_revenue__no_action": [10.0, 5.0, 0.0],
            "expected_revenue__discount_10": [14.0, 4.0, 3.0],
            "expected_revenue__cart_reminder": [11.0, 9.0, 2.0],
        }
    )


def eligibility() -> pl.DataFrame:
    """p2 cannot get a cart reminder (no e-mail consent), p3 no discount (a recent purchaser)."""
    rows = [
        ("p1", "no_action", True, None),
        ("p1", "discount_10", True, "email"),
        ("p1", "cart_reminder", True, "email"),
        ("p2", "no_action", True, None),
        ("p2", "discount_10", True, "sms"),
        ("p2", "cart_reminder", False, None),
        ("p3", "no_action", True, None),
        ("p3", "discount_10", False, None),
        ("p3", "cart_reminder", True, "push"),
    ]
    return pl.DataFrame(rows, schema=["person_id", "action", "eligible", "channel"], orient="row")


def choices(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"person_id": pl.String, "action": pl.String, "channel": pl.String, "probability": pl.Float64},
        orient="row",
    )


def values(policy: pl.DataFrame) -> dict[str, float]:
    frame = credit(policy, uplift_frame(truth(), ACTIONS), eligibility(), COST)
    return dict(frame.select("person_id", "value").iter_rows())


# the true value of each eligible (person, action): uplift over no_action minus the channel's message cost
P1_DISCOUNT = (14.0 - 10.0) - 0.1  # 3.9
P1_CART = (11.0 - 10.0) - 0.1  # 0.9
P2_DISCOUNT = (4.0 - 5.0) - 0.5  # -1.5
P3_CART = (2.0 - 0.0) - 0.0  # 2.0


def test_single_actions_credit_only_the_eligible() -> None:
    discount = single_action_choices(eligibility(), "discount_10")
    assert values(discount) == pytest.approx({"p1": P1_DISCOUNT, "p2": P2_DISCOUNT, "p3": 0.0})
    cart = single_action_choices(eligibility(), "cart_reminder")
    assert values(cart) == pytest.approx({"p1": P1_CART, "p2": 0.0, "p3": P3_CART})
    # the ineligible get no_action, through no channel
    assert cart.filter(pl.col("person_id") == "p2").row(0) == ("p2", "no_action", None, 1.0)
    assert values(single_action_choices(eligibility(), "no_action")) == {"p1": 0.0, "p2": 0.0, "p3": 0.0}


def test_an_ineligible_choice_is_worth_no_action() -> None:
    # p2's cart reminder would be worth 4 - 0.1 and p3's discount 3 - 0.1, but neither may be sent
    ineligible = choices([("p1", "no_action", None, 1.0), ("p2", "cart_reminder", "email", 1.0)])
    ineligible = pl.concat([ineligible, choices([("p3", "discount_10", "email", 1.0)])])
    assert values(ineligible) == {"p1": 0.0, "p2": 0.0, "p3": 0.0}


def test_random_is_uniform_over_the_eligible_actions() -> None:
    random = random_choices(eligibility())
    assert values(random) == pytest.approx(
        {"p1": (0.0 + P1_DISCOUNT + P1_CART) / 3, "p2": (0.0 + P2_DISCOUNT) / 2, "p3": (0.0 + P3_CART) / 2}
    )


def test_oracle_takes_the_best_eligible_action() -> None:
    oracle = greedy_choices(truth(), eligibility(), COST, ACTIONS).sort("person_id")
    assert oracle.select("action", "channel").rows() == [
        ("discount_10", "email"),
        ("no_action", None),  # p2's only eligible offer loses money
        ("cart_reminder", "push"),
    ]


def test_logging_policy_is_the_expectation_over_the_campaigns() -> None:
    candidates = pl.DataFrame(
        {
            "person_id": ["p1", "p2", "p3"],
            "has_email_consent": [True, False, False],
            "has_sms_consent": [True, True, None],
            "has_push_consent": [False, False, False],
            "days_since_cart_abandoned": [1, None, 1],
        }
    )
    design = LoggingDesign(exploration_share=0.3, cart_reminder_share=0.5)
    logging = logging_choices(candidates, ACTIONS, design)
    # p1: explored with 0.3, each of the 3 actions 0.1; otherwise (0.7) a cart reminder half the time
    # (abandoned yesterday, accepts e-mail)
    p1 = logging.filter(pl.col("person_id") == "p1").sort("action")
    assert p1["action"].to_list() == ["cart_reminder", "discount_10", "no_action"]
    assert p1["probability"].to_list() == pytest.approx([0.1 + 0.35, 0.1, 0.1 + 0.35])
    expected = {
        "p1": 0.45 * P1_CART + 0.1 * P1_DISCOUNT,
        # p2: consents to SMS only: its explored cart reminder is not eligible (worth 0), its discount loses
        "p2": 0.1 * P2_DISCOUNT,
        # p3: no consented channel: never explored with an offer, and no e-mail for a reminder
        "p3": 0.0,
    }
    assert values(logging) == pytest.approx(expected)
    p3 = logging.filter(pl.col("person_id") == "p3")
    assert p3.select("action", "probability").rows() == [("no_action", 1.0)]


def test_decision_quality_table_by_hand() -> None:
    learned = choices(
        [
            ("p1", "discount_10", "email", 1.0),
            ("p2", "discount_10", "sms", 1.0),
            ("p3", "cart_reminder", "push", 1.0),
        ]
    )
    deployed = choices(  # p1 in the holdout, p3 explored
        [
            ("p1", "no_action", None, 1.0),
            ("p2", "discount_10", "sms", 1.0),
            ("p3", "cart_reminder", "push", 1.0),
        ]
    )
    table = decision_quality(truth(), eligibility(), {"learned": learned}, COST, ACTIONS, deployed=deployed)
    got = {row["policy"]: row for row in table.iter_rows(named=True)}
    oracle = P1_DISCOUNT + 0.0 + P3_CART  # 5.9
    best_single = P1_CART + 0.0 + P3_CART  # always cart_reminder: 2.9, beats always discount (2.4)
    totals = {
        "learned": P1_DISCOUNT + P2_DISCOUNT + P3_CART,
        "always_no_action": 0.0,
        "always_discount_10": P1_DISCOUNT + P2_DISCOUNT,
        "always_cart_reminder": best_single,
        "random": (P1_DISCOUNT + P1_CART) / 3 + P2_DISCOUNT / 2 + P3_CART / 2,
        "oracle": oracle,
        "deployed": P2_DISCOUNT + P3_CART,
    }
    assert set(got) == set(totals)
    for name, total in totals.items():
        assert got[name]["total_value"] == pytest.approx(total), name
        assert got[name]["mean_value"] == pytest.approx(total / 3), name
        assert got[name]["persons"] == 3
        assert got[name]["share_of_oracle"] == pytest.approx(total / oracle), name
        assert got[name]["headroom_share"] == pytest.approx((total - best_single) / (oracle - best_single))
    assert got["learned"]["headroom_share"] == pytest.approx(0.5)
    assert got["deployed"]["comparison"] == "deployed" and got["learned"]["comparison"] == "same eligibility"
    mix = {m["action"]: m["share"] for m in got["random"]["action_mix"]}
    # expected persons per action over the 3 persons: p1 draws among 3 actions, p2 and p3 among 2
    expected_mix = {
        "no_action": 1 / 3 + 1 / 2 + 1 / 2,
        "discount_10": 1 / 3 + 1 / 2,
        "cart_reminder": 1 / 3 + 1 / 2,
    }
    assert mix == pytest.approx({action: persons / 3 for action, persons in expected_mix.items()})


def test_a_policy_must_decide_for_every_person() -> None:
    partial = choices([("p1", "discount_10", "email", 1.0)])
    with pytest.raises(ValueError, match="policy learned decides for 1 of the 3 persons"):
        decision_quality(truth(), eligibility(), {"learned": partial}, COST, ACTIONS)
    with pytest.raises(ValueError, match="do not sum to 1"):
        values(choices([("p1", "discount_10", "email", 0.5)]))


def test_no_policy_beats_the_oracle_on_random_worlds() -> None:
    rng = np.random.default_rng(3)
    actions = ("no_action", "discount_10", "free_shipping", "cart_reminder", "loyalty_offer")
    n = 300
    persons = [f"p{i}" for i in range(n)]
    revenue = pl.DataFrame(
        {"person_id": persons, **{f"expected_revenue__{a}": rng.gamma(2.0, 5.0, n) for a in actions}}
    )
    channels = np.array(["email", "sms", "push"])
    elig = pl.DataFrame(
        {
            "person_id": np.repeat(persons, len(actions)),
            "action": np.tile(actions, n),
            "eligible": rng.random(n * len(actions)) < 0.6,
            "channel": channels[rng.integers(0, 3, n * len(actions))],
        }
    ).with_columns(pl.when("eligible").then("channel").alias("channel"))
    # arbitrary stochastic policies, ineligible actions included
    weights = rng.random((n, len(actions))) ** 3
    weights /= weights.sum(axis=1, keepdims=True)
    arbitrary = pl.DataFrame(
        {
            "person_id": np.repeat(persons, len(actions)),
            "action": np.tile(actions, n),
            "channel": channels[rng.integers(0, 3, n * len(actions))],
            "probability": weights.ravel(),
        }
    ).with_columns(pl.when(pl.col("action") != "no_action").then("channel").alias("channel"))
    greedy_on_noise = greedy_choices(
        revenue.with_columns(pl.col(f"expected_revenue__{a}") + rng.normal(0, 5, n) for a in actions),
        elig,
        COST,
        actions,
    )
    table = decision_quality(revenue, elig, {"arbitrary": arbitrary, "noisy": greedy_on_noise}, COST, actions)
    oracle = table.filter(pl.col("policy") == "oracle")["total_value"].item()
    assert oracle > 0
    assert (table["total_value"] <= oracle + 1e-9).all()
    # per person too
    uplift = uplift_frame(revenue, actions)
    best = credit(greedy_choices(revenue, elig, COST, actions), uplift, elig, COST)
    for policy in (arbitrary, greedy_on_noise, random_choices(elig)):
        value = credit(policy, uplift, elig, COST).join(best, on="person_id", suffix="_oracle")
        assert (value["value"] <= value["value_oracle"] + 1e-9).all()


def test_truths_on_the_logged_decisions() -> None:
    logs = pl.DataFrame(
        {
            "row_id": ["r1", "r2", "r3"],
            "person_id": ["p1", "p2", "p3"],
            "action": ["discount_10", "no_action", "cart_reminder"],
            "channel": ["email", None, "push"],
        }
    )
    by_row = eligibility().with_columns(pl.col("person_id").str.replace("p", "r").alias("row_id"))
    target = pl.DataFrame(
        {"row_id": ["r1", "r2", "r3"], "action": ["cart_reminder", "cart_reminder", "discount_10"]}
    )
    truths = logged_truth(logs, truth(), target, by_row, COST)
    # logged: p1's discount by e-mail, p2 nothing, p3's cart reminder by push (expected revenue net of the
    # cost)
    assert truths["logging"] == pytest.approx(((14.0 - 0.1) + 5.0 + (2.0 - 0.0)) / 3)
    # target: p1's cart reminder by e-mail; p2's and p3's choices are not eligible, so they get nothing
    assert truths["target"] == pytest.approx(((11.0 - 0.1) + 5.0 + 0.0) / 3)


def test_policy_evaluation_rerun_replaces_its_date(tmp_path) -> None:
    settings = lake_settings(tmp_path / "lake")
    table = decision_quality(truth(), eligibility(), {}, COST, ACTIONS)
    first, second = date(2026, 9, 10), date(2026, 9, 11)
    uri = write_policy_evaluation(settings, table, first)
    write_policy_evaluation(settings, table, second)
    write_policy_evaluation(settings, table.with_columns(pl.col("total_value") * 2), first)
    stored = pl.read_delta(uri)
    assert stored.group_by("evaluation_date").len().sort("evaluation_date").rows() == [
        (first, table.height),
        (second, table.height),
    ]
    oracle = stored.filter(pl.col("policy") == "oracle").sort("evaluation_date")["total_value"].to_list()
    assert oracle == pytest.approx([2 * (P1_DISCOUNT + P3_CART), P1_DISCOUNT + P3_CART])
    text = format_table(table)
    assert "oracle" in text and "p1" not in text


def test_evaluation_against_the_simulator_truth(gold_lake: Settings, simulated: Simulated, tmp_path) -> None:
    """The whole evaluation on the test company: a model trained on its logs, its decisions scored against the
    truth the simulator drew, the table written to gold (a copy of the test lake) and replaced on a re-run."""
    from ml.data import load_training_set
    from ml.policy import eligibility as policy_eligibility
    from ml.policy import load_policy
    from ml.train import TrainingConfig, train_uplift

    shutil.copytree(gold_lake.lake_root, tmp_path / "lake", symlinks=True)
    settings = replace(gold_lake, lake_root=str(tmp_path / "lake"))
    training, _ = load_training_set(settings)
    model = train_uplift(training, TrainingConfig(validation_days=2)).model
    report = evaluate_decisions(settings, model=model, truth_dir=simulated.truth)

    table = report.table
    assert 0.5 * report.persons < report.persons_with_truth <= report.persons
    fair = table.filter(pl.col("comparison") == "same eligibility")
    assert set(fair["policy"]) == {"learned", "logging", "random", "oracle"} | {
        f"always_{a}" for a in ACTIONS_ALL
    }
    assert table.filter(pl.col("comparison") == "deployed")["policy"].to_list() == ["deployed"]
    assert (table["persons"] == report.persons_with_truth).all()
    value = dict(table.select("policy", "total_value").rows())
    assert value["always_no_action"] == 0.0
    assert all(v <= value["oracle"] + 1e-6 for v in value.values())
    assert value["oracle"] > max(v for k, v in value.items() if k.startswith("always_")) > 0

    # one row worked out independently: loyalty_offer for every eligible person, from the truth's own tables
    policy = load_policy()
    candidates = scoring_candidates(settings, report.evaluation_date, policy)
    loyalty = policy_eligibility(candidates, policy).filter(
        (pl.col("action") == "loyalty_offer") & pl.col("eligible")
    )
    identity = pl.read_delta(f"{settings.lake_root}/gold/identity_person_map")
    revenue = lake_expected_revenue(identity, simulated.truth).pivot(
        on="action", index="person_id", values="expected_revenue"
    )
    expected = (
        loyalty.join(revenue, on="person_id")
        .select(
            pl.col("loyalty_offer")
            - pl.col("no_action")
            - pl.col("channel").replace_strict(policy.message_cost)
        )
        .to_series()
        .sum()
    )
    assert value["always_loyalty_offer"] == pytest.approx(expected)

    # the off-policy estimates beside the truths, on the same logged decisions
    ope = {
        row["policy"]: row
        for row in table.filter(pl.col("ope_decisions").is_not_null()).iter_rows(named=True)
    }
    assert set(ope) == {"learned", "logging"}
    assert {e["estimator"] for e in ope["learned"]["ope_estimates"]} == {"ips", "snips", "dr"}
    assert ope["learned"]["ope_decisions"] == ope["logging"]["ope_decisions"] > 100
    # valued on the randomised campaigns' decisions, as the promotion gate values it: every choice is
    # supported
    assert all(e["support"] == 1.0 and not e["unsupported"] for e in ope["learned"]["ope_estimates"])
    # the logs' mean reward is an unbiased estimate of the truth's expected reward of the logged decisions
    (logged,) = ope["logging"]["ope_estimates"]
    assert logged["ci_low"] <= ope["logging"]["ope_true_value"] <= logged["ci_high"]

    # a re-run of the date replaces its rows
    again = evaluate_decisions(
        settings, decision_date=report.evaluation_date, model=model, truth_dir=simulated.truth
    )
    stored = pl.read_delta(report.uri)
    assert stored.height == table.height
    assert dict(stored.select("policy", "total_value").rows()) == pytest.approx(
        dict(again.table.select("policy", "total_value").rows())
    )
