"""The closed loop's measurement: outcome attribution of the decisions (last touch, point in time, net of the
message cost), the lift per action and channel against the comparable holdout, and the true lift from the
simulator's record of executed decisions, on small hand-built data with hand-computed expectations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from ml.attribution import ALL, attribute, intended_actions, lift_table
from ml.policy import NBA_SCHEMA
from orchestration.evaluation import true_daily_effect, true_lift

COST = {"email": 0.01, "sms": 0.06, "push": 0.005}
UNTIL = datetime(2026, 11, 4, tzinfo=UTC)


def scores(**values: tuple[bool, float]) -> list[dict]:
    """``action_scores`` with these (eligible, value) per action; no_action always eligible at 0."""
    rows = [
        {"action": "no_action", "expected_revenue": 1.0, "value": 0.0, "eligible": True, "reason": "eligible"}
    ]
    for action, (eligible, value) in values.items():
        rows.append(
            {
                "action": action,
                "expected_revenue": 1.0 + value,
                "value": value,
                "eligible": eligible,
                "reason": "x",
            }
        )
    return rows


def decision(
    decision_id: str,
    person: str,
    day: int,
    action: str = "no_action",
    channel: str | None = None,
    *,
    holdout: bool = False,
    exploration: bool = False,
    action_scores: list[dict] | None = None,
    version: str = "3",
) -> dict:
    """One ``nba_decisions`` row of November ``day``."""
    return {
        "decision_id": decision_id,
        "decision_date": date(2026, 11, day),
        "person_id": person,
        "action": action,
        "channel": channel,
        "crm_contact_id": 1,
        "app_user_id": None,
        "expected_value": 0.0,
        "probability": 1.0,
        "action_scores": action_scores or scores(),
        "reason": "holdout" if holdout else "best_value",
        "is_holdout": holdout,
        "is_exploration": exploration,
        "is_canary": False,
        "decided_by": "champion",
        "model_name": "nba_uplift",
        "model_version": version,
        "policy_version": "p1",
        "as_of": datetime(2026, 11, day, tzinfo=UTC),
        "decided_at": datetime(2026, 11, day, 1, tzinfo=UTC),
    }


def orders(*rows: tuple[str, datetime, float]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"person_id": pl.String, "created_at": pl.Datetime("us", "UTC"), "total_amount": pl.Float64},
        orient="row",
    )


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def test_intended_action_is_the_eligible_action_of_highest_positive_value():
    frame = pl.DataFrame(
        [
            decision("a", "p1", 1, action_scores=scores(discount_10=(True, 0.5), loyalty_offer=(False, 0.8))),
            decision(
                "b", "p2", 1, action_scores=scores(discount_10=(True, -0.1), free_shipping=(True, -0.2))
            ),
            decision(
                "c", "p3", 1, action_scores=scores(cart_reminder=(True, 0.2), loyalty_offer=(True, 0.3))
            ),
        ],
        schema=NBA_SCHEMA,
    )
    got = dict(intended_actions(frame).iter_rows())
    assert got == {"a": "discount_10", "b": "no_action", "c": "loyalty_offer"}


def test_outcomes_go_to_the_persons_latest_decision_net_of_the_message_cost():
    decisions = pl.DataFrame(
        [
            decision("p1-1", "p1", 1, "discount_10", "email"),
            decision("p1-2", "p1", 2),
            decision("p2-1", "p2", 1, holdout=True, action_scores=scores(discount_10=(True, 0.4))),
            decision("p2-2", "p2", 2, holdout=True),
            decision("p3-1", "p3", 1, "loyalty_offer", "sms"),
        ],
        schema=NBA_SCHEMA,
    )
    bought = orders(
        ("p1", at(1, 15), 80.0),  # on the decision's date, before the CRM acts on it: nobody's
        ("p1", at(2, 15), 40.0),  # the day after p1's first decision, when it acts: its outcome
        ("p1", at(3, 9), 20.0),  # once p1's second decision acts: that one's, not the first's
        ("p2", at(2, 0), 30.0),  # at the window's first instant: counts (half-open window from 00:00)
        ("p2", at(4, 5), 10.0),  # after the data reaches (data_until): not known yet
        ("p3", at(10, 0), 99.0),  # after p3's 7-day window
    )
    executed = pl.DataFrame({"decision_id": ["p1-1"], "activity_id": [501]})
    got = {row["decision_id"]: row for row in attribute(decisions, bought, executed, UNTIL, COST).to_dicts()}

    p1 = got["p1-1"]
    assert (p1["order_count"], p1["revenue"], p1["executed"], p1["activity_id"]) == (1, 40.0, True, 501)
    assert p1["message_cost"] == 0.01 and p1["net_revenue"] == pytest.approx(39.99)
    assert (p1["window_start"], p1["window_end"]) == (at(2, 0), at(3, 0)) and p1["window_complete"]
    assert (p1["model_version"], p1["policy_version"], p1["converted"]) == ("3", "p1", True)
    assert got["p1-2"]["revenue"] == 20.0 and not got["p1-2"]["window_complete"]  # its window ends 11-10
    assert got["p2-1"]["revenue"] == 30.0 and got["p2-1"]["message_cost"] == 0.0
    assert got["p2-1"]["intended_action"] == "discount_10"
    assert got["p2-2"]["order_count"] == 0 and got["p2-2"]["net_revenue"] == 0.0
    # Not executed (no activity carries its id): no message cost; its window runs 7 days and is not over.
    p3 = got["p3-1"]
    assert (p3["executed"], p3["message_cost"], p3["revenue"]) == (False, 0.0, 0.0)
    assert p3["window_end"] == at(9, 0) and not p3["window_complete"]


def test_lift_compares_the_greedy_decisions_with_the_holdout_the_policy_would_have_treated_alike():
    rows = []
    # Treated (champion, not held out): two discount_10 by e-mail, one by SMS, one explored free_shipping.
    for i, (action, channel, exploring) in enumerate(
        [
            ("discount_10", "email", False),
            ("discount_10", "email", False),
            ("discount_10", "sms", False),
            ("free_shipping", "push", True),
        ]
    ):
        rows.append(decision(f"t{i}", f"t{i}", 1, action, channel, exploration=exploring))
    # Holdout: three the policy would have given discount_10, one it would have given nothing.
    for i in range(3):
        rows.append(
            decision(f"h{i}", f"h{i}", 1, holdout=True, action_scores=scores(discount_10=(True, 1.0)))
        )
    rows.append(decision("h3", "h3", 1, holdout=True))
    decisions = pl.DataFrame(rows, schema=NBA_SCHEMA)
    bought = orders(
        ("t0", at(2, 10), 50.0),
        ("t2", at(2, 11), 20.0),
        ("t3", at(2, 12), 8.0),
        ("h0", at(2, 10), 30.0),
        ("h3", at(2, 10), 6.0),
    )
    executed = pl.DataFrame({"decision_id": ["t0", "t1", "t2", "t3"], "activity_id": [1, 2, 3, 4]})
    attribution = attribute(decisions, bought, executed, datetime(2026, 11, 9, tzinfo=UTC), COST)
    lift = {(r["action"], r["channel"]): r for r in lift_table(attribution).to_dicts()}

    # The policy: net revenue 49.99, -0.01, 19.94, 7.995 (mean 19.47875) against 30, 0, 0, 6 (mean 9).
    policy = lift[(ALL, ALL)]
    assert (policy["treated"], policy["holdout"]) == (4, 4)
    assert policy["treated_conversion"] == pytest.approx(0.75) and policy["holdout_conversion"] == 0.5
    assert policy["lift"] == pytest.approx(19.47875 - 9.0)
    assert policy["lower"] < policy["lift"] < policy["upper"]
    # discount_10 by e-mail: 49.99 and -0.01 (mean 24.99) against the holdout's discount_10 persons: 30, 0, 0.
    email = lift[("discount_10", "email")]
    assert (email["treated"], email["holdout"]) == (2, 3)
    assert email["lift"] == pytest.approx(24.99 - 10.0)
    sms = lift[("discount_10", "sms")]
    assert (sms["treated"], sms["holdout"], sms["lift"]) == (1, 3, pytest.approx(19.94 - 10.0))
    assert sms["lower"] is None and sms["upper"] is None  # one treated decision: no interval yet
    # The explored decision counts for the policy, not for its action.
    assert ("free_shipping", "push") not in lift


def test_true_lift_spreads_each_executed_effect_over_its_seven_days(tmp_path: Path):
    loop = tmp_path / "loop"
    loop.mkdir()
    pl.DataFrame(
        {
            "date": [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 2)],
            "model_version": ["3", "3", "2"],
            "true_incremental_revenue": [7.0, 14.0, 70.0],
            "message_cost": [0.01, 0.06, 0.01],
        }
    ).write_parquet(loop / "executed.parquet")
    effect = dict(true_daily_effect(tmp_path, "3").iter_rows())
    # 11-01: the first send's cost only; 11-02: 7 / 7 of the first, less the second's cost; 11-03: 1 + 14 / 7.
    assert effect[date(2026, 11, 1)] == pytest.approx(-0.01)
    assert effect[date(2026, 11, 2)] == pytest.approx(1.0 - 0.06)
    assert effect[date(2026, 11, 3)] == pytest.approx(3.0)
    assert effect[date(2026, 11, 8)] == pytest.approx(1.0 + 2.0)
    assert effect[date(2026, 11, 9)] == pytest.approx(2.0)
    assert date(2026, 11, 10) not in effect

    attribution = pl.DataFrame(
        {
            "decision_date": [date(2026, 11, 1)] * 2 + [date(2026, 11, 2)] * 3 + [date(2026, 11, 2)],
            "is_holdout": [False, False, False, False, False, True],
            "window_complete": [True] * 6,
            "model_version": ["3"] * 6,
            "decided_by": ["champion"] * 6,
        }
    )
    truth = true_lift(attribution, tmp_path, "3")
    # Decisions of 11-01 act on 11-02: 0.94 over 2 treated decisions; those of 11-02 on 11-03: 3.0 over 3;
    # to date (0.94 + 3.0) / 5.
    assert truth["true_lift"].to_list() == pytest.approx([0.47, 1.0])
    assert truth["true_lift_to_date"].to_list() == pytest.approx([0.47, 3.94 / 5])
