"""The next-best-action policy: the policy file, eligibility (consent, caps, suppression), value, budgets,
holdout, exploration, canary and determinism, on hand-made candidates and scores."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from ml.policy import (
    NO_ACTION,
    ModelRef,
    PolicyError,
    count_touches,
    decide,
    eligibility,
    fallback_scores,
    load_policy,
    uniform,
)
from ml.settings import DEFAULT_POLICY_FILE

DAY = date(2026, 9, 10)
CHAMPION = ModelRef("nba_uplift", "3")


def write_policy(tmp_path: Path, **changes) -> Path:
    """The project's policy file with top-level ``changes`` (dotted keys reach into mappings)."""
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        target = raw
        for parent in parents:
            target = target[parent]
        target[last] = value
    path = tmp_path / f"policy-{abs(hash(repr(sorted(changes.items()))))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def quiet_policy(tmp_path: Path, **changes):
    """A policy without holdout, exploration and canary (each test switches on what it measures)."""
    base = {"holdout__share": 0.0, "exploration__share": 0.0, "canary__share": 0.0}
    return load_policy(write_policy(tmp_path, **{**base, **changes}))


def candidates(n: int, **columns) -> pl.DataFrame:
    """``n`` persons with every consent and address, no touches and no recent order, unless overridden."""
    frame = pl.DataFrame(
        {
            "person_id": [f"p{i:05d}" for i in range(n)],
            "has_email_consent": [True] * n,
            "has_sms_consent": [True] * n,
            "has_push_consent": [True] * n,
            "address__email": pl.Series(range(100, 100 + n), dtype=pl.Int64),
            "address__sms": pl.Series(range(500, 500 + n), dtype=pl.Int64),
            "address__push": [f"usr_{i}" for i in range(n)],
            "days_since_last_order": pl.Series([None] * n, dtype=pl.Int64),
            "touches": [0] * n,
            "days_since_cart_abandoned": pl.Series([None] * n, dtype=pl.Int64),
            "order_count": [0] * n,
        }
    )
    return frame.with_columns(pl.Series(name, values) for name, values in columns.items())


def scores(persons: pl.Series, **revenue) -> pl.DataFrame:
    """Expected revenue per action (a scalar or one value per person); absent actions get 10.0."""
    policy = load_policy()
    n = len(persons)
    return pl.DataFrame(
        {
            "person_id": persons,
            **{
                f"expected_revenue__{a}": np.broadcast_to(np.asarray(revenue.get(a, 10.0), float), n)
                for a in policy.actions
            },
        }
    )


def by_person(decisions: pl.DataFrame) -> dict[str, dict]:
    return {row["person_id"]: row for row in decisions.iter_rows(named=True)}


def action_scores(row: dict) -> dict[str, dict]:
    return {s["action"]: s for s in row["action_scores"]}


# -- the policy file -----------------------------------------------------------------------------------------


def test_the_project_policy_file_loads():
    policy = load_policy()
    assert policy.version == "2026-11-27.1"
    assert policy.actions == ("no_action", "discount_10", "free_shipping", "cart_reminder", "loyalty_offer")
    assert set(policy.message_cost) == {"email", "sms", "push"}
    assert policy.holdout_share == 0.10
    assert 0 < policy.exploration_share < 0.2
    assert policy.discount_actions == frozenset({"discount_10"})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"version": 2026.1}, "version"),
        ({"holdout__share": 1.5}, "holdout.share"),
        ({"eligibility__frequency_cap__window_days": 0}, "eligibility.frequency_cap.window_days"),
        ({"channels__email__message_cost": -1}, "channels.email.message_cost"),
        ({"exploration__surprise": 1}, "exploration.surprise"),
        ({"budgets": {"discount_10": {"fax": 10}}}, "budgets.discount_10.fax"),
        ({"actions": [{"name": "discount_10", "channels": ["email"]}]}, "actions.0.name"),
        (
            {"actions": [{"name": "no_action"}, {"name": "discount_10", "channels": ["pigeon"]}]},
            "actions.1.channels",
        ),
        (
            {"fallback__rules": [{"action": "teleport", "assumed_uplift": 1, "when": {"x": {"min": 1}}}]},
            "fallback.rules.0.action",
        ),
    ],
)
def test_a_bad_policy_file_is_refused_naming_the_field(tmp_path, changes, field):
    path = write_policy(tmp_path, **changes)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)
    assert field in str(caught.value)


def test_a_missing_policy_file_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(tmp_path / "absent.yaml")


# -- eligibility ---------------------------------------------------------------------------------------------


def test_an_action_needs_a_consented_channel_with_an_address(tmp_path):
    policy = quiet_policy(tmp_path)
    people = candidates(
        4,
        has_email_consent=[False, False, True, False],
        has_sms_consent=[False, True, False, False],
        has_push_consent=[False, False, False, True],
        address__email=pl.Series([100, 101, None, 103], dtype=pl.Int64),
        address__push=pl.Series(["usr_0", "usr_1", "usr_2", None], dtype=pl.String),
    )
    table = eligibility(people, policy).filter(pl.col("action") == "free_shipping")
    rows = {r["person_id"]: r for r in table.iter_rows(named=True)}
    assert (rows["p00000"]["eligible"], rows["p00000"]["reason"]) == (False, "no_consent")
    assert (rows["p00001"]["eligible"], rows["p00001"]["channel"]) == (True, "sms")
    # e-mail consent but no contact holding it; push consent but no app user
    assert (rows["p00002"]["eligible"], rows["p00002"]["reason"]) == (False, "no_address")
    assert (rows["p00003"]["eligible"], rows["p00003"]["reason"]) == (False, "no_address")

    decided = by_person(
        decide(scores(people["person_id"], free_shipping=15.0), people, policy, DAY, CHAMPION)
    )
    assert decided["p00000"]["action"] == NO_ACTION
    assert decided["p00000"]["reason"] == "no_eligible_action"
    assert (decided["p00001"]["action"], decided["p00001"]["channel"]) == ("free_shipping", "sms")
    assert decided["p00001"]["crm_contact_id"] == 501
    assert decided["p00001"]["app_user_id"] is None
    assert decided["p00002"]["action"] == decided["p00003"]["action"] == NO_ACTION


def test_frequency_cap_and_recent_purchaser_suppression(tmp_path):
    policy = quiet_policy(tmp_path)  # cap: 3 touches in 7 days; recent purchasers: 7 days
    people = candidates(
        4,
        touches=[2, 3, 0, 0],
        days_since_last_order=pl.Series([None, None, 6, 7], dtype=pl.Int64),
    )
    decided = by_person(
        decide(
            scores(people["person_id"], discount_10=14.0, free_shipping=12.0), people, policy, DAY, CHAMPION
        )
    )
    assert decided["p00000"]["action"] == "discount_10"
    assert decided["p00001"]["action"] == NO_ACTION
    assert action_scores(decided["p00001"])["free_shipping"]["reason"] == "frequency_cap"
    # ordered 6 days ago: no discount, the next-best action instead; 7 days ago is no longer recent
    assert decided["p00002"]["action"] == "free_shipping"
    assert action_scores(decided["p00002"])["discount_10"]["reason"] == "recent_purchaser"
    assert action_scores(decided["p00002"])["free_shipping"]["reason"] == "eligible"
    assert decided["p00003"]["action"] == "discount_10"


def test_touches_count_one_per_person_day_and_channel_within_the_window(tmp_path):
    policy = quiet_policy(tmp_path)  # window: the 7 days before the decision date
    events = pl.DataFrame(
        {
            "person_id": ["a", "a", "a", "a", "a", "b", "b"],
            "day": [
                date(2026, 9, 9),
                date(2026, 9, 9),  # the same day and channel again (the CRM's record of our decision)
                date(2026, 9, 9),
                date(2026, 9, 3),  # the window's first day
                date(2026, 9, 2),  # before the window
                date(2026, 9, 10),  # the decision date itself: not before it
                date(2026, 9, 5),
            ],
            "channel": ["email", "email", "sms", "push", "email", "email", "push"],
        }
    )
    counted = dict(count_touches(events, policy, DAY).iter_rows())
    assert counted == {"a": 3, "b": 1}


# -- value, channels, budgets --------------------------------------------------------------------------------


def test_value_is_incremental_revenue_minus_the_cheapest_eligible_channel(tmp_path):
    policy = quiet_policy(tmp_path)
    people = candidates(2, has_push_consent=[True, False])
    decided = by_person(
        decide(
            scores(people["person_id"], no_action=10.0, loyalty_offer=13.0),
            people,
            policy,
            DAY,
            CHAMPION,
            deploy=False,
        )
    )
    push, email = policy.message_cost["push"], policy.message_cost["email"]
    assert push < email < policy.message_cost["sms"]
    assert (decided["p00000"]["channel"], decided["p00000"]["app_user_id"]) == ("push", "usr_0")
    assert decided["p00000"]["expected_value"] == pytest.approx(3.0 - push)
    assert (decided["p00001"]["channel"], decided["p00001"]["crm_contact_id"]) == ("email", 101)
    assert decided["p00001"]["expected_value"] == pytest.approx(3.0 - email)
    assert decided["p00001"]["probability"] == 1.0
    listed = action_scores(decided["p00001"])
    assert list(listed) == list(policy.actions)
    assert listed["discount_10"]["value"] == pytest.approx(0.0 - email)
    assert listed[NO_ACTION]["value"] == 0.0


def test_no_action_when_no_action_is_worth_its_message(tmp_path):
    policy = quiet_policy(tmp_path)
    people = candidates(1)
    decided = decide(scores(people["person_id"], discount_10=10.001), people, policy, DAY, CHAMPION).row(
        0, named=True
    )
    assert decided["action"] == NO_ACTION
    assert decided["reason"] == "no_positive_value"


def test_budgets_go_to_the_highest_values_and_the_rest_fall_to_the_next_best(tmp_path):
    policy = quiet_policy(
        tmp_path,
        budgets={"discount_10": {"email": 2}, "free_shipping": {"email": 1}},
    )
    people = candidates(5, has_sms_consent=[False] * 5, has_push_consent=[False] * 5)
    discount = np.array([15.0, 19.0, 16.0, 18.0, 17.0])
    free = np.array([12.0, 11.0, 13.0, 11.5, 12.5])
    decided = by_person(
        decide(
            scores(people["person_id"], discount_10=discount, free_shipping=free),
            people,
            policy,
            DAY,
            CHAMPION,
        )
    )
    # discount by e-mail: the two highest values (p1: 19, p3: 18); free shipping by e-mail: the best of the
    # rest by its value (p2: 13); the others have nothing left
    assert {p for p, r in decided.items() if r["action"] == "discount_10"} == {"p00001", "p00003"}
    assert {p for p, r in decided.items() if r["action"] == "free_shipping"} == {"p00002"}
    assert decided["p00002"]["reason"] == "budget_next_best"
    assert action_scores(decided["p00002"])["discount_10"]["reason"] == "budget"
    for person in ("p00000", "p00004"):
        assert decided[person]["action"] == NO_ACTION
        assert decided[person]["reason"] == "budget_exhausted"
    # without deployment the budgets do not apply
    fair = by_person(
        decide(
            scores(people["person_id"], discount_10=discount, free_shipping=free),
            people,
            policy,
            DAY,
            CHAMPION,
            deploy=False,
        )
    )
    assert all(r["action"] == "discount_10" for r in fair.values())


def test_a_spent_channel_budget_moves_the_action_to_the_next_channel(tmp_path):
    policy = quiet_policy(tmp_path, budgets={"discount_10": {"push": 1}})
    people = candidates(2)
    decided = by_person(
        decide(scores(people["person_id"], discount_10=np.array([15.0, 16.0])), people, policy, DAY, CHAMPION)
    )
    assert (decided["p00001"]["action"], decided["p00001"]["channel"]) == ("discount_10", "push")
    assert (decided["p00000"]["action"], decided["p00000"]["channel"]) == ("discount_10", "email")
    assert decided["p00000"]["reason"] == "budget_next_best"


# -- holdout, exploration, canary ----------------------------------------------------------------------------


def test_the_holdout_share_and_its_stability(tmp_path):
    policy = load_policy(write_policy(tmp_path, exploration__share=0.0))
    people = candidates(20_000)
    revenue = scores(people["person_id"], discount_10=15.0)
    first = decide(revenue, people, policy, DAY, CHAMPION)
    later = decide(revenue, people, policy, date(2026, 9, 25), CHAMPION)
    share = first["is_holdout"].mean()
    assert abs(share - policy.holdout_share) <= 0.01
    assert first["is_holdout"].to_list() == later["is_holdout"].to_list()
    held = first.filter("is_holdout")
    assert set(held["action"]) == {NO_ACTION}
    assert set(held["reason"]) == {"holdout"}
    assert set(held["probability"]) == {1.0}
    assert set(first.filter(~pl.col("is_holdout"))["action"]) == {"discount_10"}


def test_exploration_probabilities_are_exact(tmp_path):
    epsilon = 0.2
    policy = load_policy(write_policy(tmp_path, exploration__share=epsilon, canary__share=0.0))
    n = 20_000
    rng = np.random.default_rng(5)
    people = candidates(
        n,
        has_email_consent=rng.random(n) < 0.6,
        has_sms_consent=rng.random(n) < 0.2,
        has_push_consent=rng.random(n) < 0.3,
        touches=rng.integers(0, 5, n),
        days_since_last_order=pl.Series(rng.integers(0, 30, n), dtype=pl.Int64),
    )
    revenue = scores(people["person_id"], **{a: rng.normal(10, 1, n) for a in policy.actions})
    decided = decide(revenue, people, policy, DAY, CHAMPION)
    assert decided["person_id"].n_unique() == n
    assert ((decided["probability"] > 0) & (decided["probability"] <= 1)).all()
    explored_actions = {}
    for row in decided.iter_rows(named=True):
        if row["is_holdout"]:
            continue
        listed = row["action_scores"]
        open_actions = [s["action"] for s in listed if s["eligible"]]
        assert row["action"] in open_actions
        # the greedy choice from first principles: the highest positive value among the eligible actions
        greedy = max(open_actions, key=lambda a: next(s["value"] for s in listed if s["action"] == a))
        greedy_value = next(s["value"] for s in listed if s["action"] == greedy)
        if greedy_value <= 0:
            greedy = NO_ACTION
        expected = (1 - epsilon) * (row["action"] == greedy) + epsilon / len(open_actions)
        assert row["probability"] == pytest.approx(expected, abs=1e-12)
        if row["is_exploration"]:
            explored_actions.setdefault(len(open_actions), []).append(open_actions.index(row["action"]))
        else:
            assert row["action"] == greedy
    kept = decided.filter(~pl.col("is_holdout"))
    assert abs(kept["is_exploration"].mean() - epsilon) < 0.015
    # uniform among the eligible actions: every position about equally often (5 actions open: 1/5 each)
    positions = np.bincount(explored_actions[5], minlength=5) / len(explored_actions[5])
    assert np.abs(positions - 0.2).max() < 0.04


def test_canary_persons_are_decided_on_the_challengers_scores(tmp_path):
    policy = load_policy(
        write_policy(tmp_path, holdout__share=0.0, exploration__share=0.0, canary__share=0.25)
    )
    people = candidates(4000)
    champion_scores = scores(people["person_id"], discount_10=15.0)
    challenger_scores = scores(people["person_id"], loyalty_offer=15.0)
    challenger = ModelRef("nba_uplift", "4", "challenger")
    decided = decide(
        champion_scores,
        people,
        policy,
        DAY,
        CHAMPION,
        challenger=challenger,
        challenger_scores=challenger_scores,
    )
    canary = decided.filter("is_canary")
    assert abs(len(canary) / len(decided) - 0.25) < 0.02
    assert set(canary["action"]) == {"loyalty_offer"}
    assert set(canary["decided_by"]) == {"challenger"}
    assert set(canary["model_version"]) == {"4"}
    rest = decided.filter(~pl.col("is_canary"))
    assert set(rest["action"]) == {"discount_10"}
    assert set(rest["decided_by"]) == {"champion"}
    # assigned by a hash of the person: the same persons on another date
    again = decide(
        champion_scores,
        people,
        policy,
        date(2026, 10, 1),
        CHAMPION,
        challenger=challenger,
        challenger_scores=challenger_scores,
    )
    assert again["is_canary"].to_list() == decided["is_canary"].to_list()


# -- determinism, ids, fallback ------------------------------------------------------------------------------


def test_deciding_twice_gives_the_same_decisions(tmp_path):
    policy = load_policy()
    rng = np.random.default_rng(9)
    people = candidates(3000, has_sms_consent=rng.random(3000) < 0.5)
    revenue = scores(people["person_id"], **{a: rng.normal(10, 2, 3000) for a in policy.actions})
    once = decide(revenue, people, policy, DAY, CHAMPION).drop("decided_at")
    twice = decide(
        revenue.sample(fraction=1.0, shuffle=True, seed=1), people.reverse(), policy, DAY, CHAMPION
    )
    assert once.equals(twice.drop("decided_at"))
    row = once.row(17, named=True)
    digest = hashlib.sha256(f"{row['person_id']}|{DAY.isoformat()}|{policy.version}".encode()).hexdigest()
    assert row["decision_id"] == digest[:32]
    assert once["decision_id"].n_unique() == 3000


def test_one_decision_per_person_is_enforced(tmp_path):
    people = pl.concat([candidates(2), candidates(1)])
    with pytest.raises(ValueError, match="one decision per person"):
        decide(scores(people["person_id"]), people, load_policy(), DAY, CHAMPION)


def test_fallback_rules_score_and_mark_their_decisions(tmp_path):
    policy = quiet_policy(
        tmp_path
    )  # cart_reminder (2.0) when abandoned within 3 days; loyalty (1.0) from 3 orders
    people = candidates(
        3,
        days_since_cart_abandoned=pl.Series([1, None, 5], dtype=pl.Int64),
        order_count=[5, 4, 0],
    )
    rule_scores = {r[0]: r[1:] for r in fallback_scores(people, policy).iter_rows()}
    # no_action, discount_10, free_shipping, cart_reminder, loyalty_offer
    assert rule_scores["p00000"] == (0.0, None, None, 2.0, 1.0)
    assert rule_scores["p00001"] == (0.0, None, None, None, 1.0)
    assert rule_scores["p00002"] == (0.0, None, None, None, None)
    decided = by_person(
        decide(fallback_scores(people, policy), people, policy, DAY, None, fallback_reason="no_champion")
    )
    assert decided["p00000"]["action"] == "cart_reminder"
    assert decided["p00001"]["action"] == "loyalty_offer"
    assert decided["p00002"]["action"] == NO_ACTION
    assert action_scores(decided["p00002"])["discount_10"]["reason"] == "no_fallback_rule"
    assert {r["decided_by"] for r in decided.values()} == {"fallback"}
    assert {r["model_version"] for r in decided.values()} == {None}
    assert decided["p00000"]["reason"] == "fallback:no_champion;best_value"


def test_uniform_is_stable_and_uniform():
    keys = [f"person-{i}" for i in range(50_000)]
    u = uniform(keys, "salt")
    assert ((u >= 0) & (u < 1)).all()
    assert np.abs(np.histogram(u, bins=10, range=(0, 1))[0] / len(u) - 0.1).max() < 0.01
    assert uniform(keys[:3], "salt").tolist() == u[:3].tolist()
    assert not np.array_equal(uniform(keys[:100], "other"), u[:100])
