"""Off-policy estimators against hand-computed values on a small log, and statistically on synthetic logged
bandit data whose true policy value is known."""

from __future__ import annotations

import math
import statistics

import numpy as np
import polars as pl
import pytest

from ml.ope import (
    doubly_robust,
    effective_sample_size,
    evaluate_policy,
    exploration_probabilities,
    ips,
    logging_policy_value,
    snips,
    support_matrix,
)

ACTIONS = ["no_action", "discount_10", "cart_reminder"]
Z95 = 1.959963984540054

# six logged decisions: the randomised campaign tried every action, the reminder campaign only reminders and
# no_action controls
LOGS = pl.DataFrame(
    {
        "action": ["no_action", "discount_10", "cart_reminder", "discount_10", "cart_reminder", "no_action"],
        "channel": [None, "email", "sms", "email", "email", None],
        "propensity": [0.5, 0.25, 0.25, 0.25, 0.8, 0.2],
        "reward": [2.0, 10.0, 0.0, 6.0, 4.0, 1.0],
        "campaign_id": ["explore", "explore", "explore", "explore", "bau", "bau"],
    }
)
# a stochastic target policy; row 4 (reminder campaign) puts 0.5 on discount_10, which that campaign never
# logged
TARGET = np.array(
    [
        [0.2, 0.8, 0.0],
        [0.0, 1.0, 0.0],
        [0.5, 0.0, 0.5],
        [0.1, 0.9, 0.0],
        [0.0, 0.5, 0.5],
        [1.0, 0.0, 0.0],
    ]
)
REWARD_MODEL = np.array(
    [[1.0, 8.0, 2.0], [1.0, 9.0, 2.0], [1.0, 7.0, 3.0], [2.0, 5.0, 2.0], [1.0, 3.0, 4.0], [1.0, 2.0, 3.0]]
)


def by_hand():
    """The estimates worked out row by row from the formulas."""
    rewards = LOGS["reward"].to_list()
    mu = LOGS["propensity"].to_list()
    logged = [ACTIONS.index(a) for a in LOGS["action"]]
    n = len(rewards)
    w = [TARGET[i][logged[i]] / mu[i] for i in range(n)]
    assert w == pytest.approx([0.4, 4.0, 2.0, 3.6, 0.625, 5.0])
    ips_terms = [w[i] * rewards[i] for i in range(n)]
    ips_value = sum(ips_terms) / n
    snips_value = sum(ips_terms) / sum(w)
    snips_terms = [w[i] * (rewards[i] - snips_value) / (sum(w) / n) for i in range(n)]
    dr_terms = [
        sum(TARGET[i][a] * REWARD_MODEL[i][a] for a in range(3))
        + w[i] * (rewards[i] - REWARD_MODEL[i][logged[i]])
        for i in range(n)
    ]
    dr_value = sum(dr_terms) / n
    ess = sum(w) ** 2 / sum(x * x for x in w)
    # supported mass per row: every action of the randomised campaign; in the reminder campaign only
    # no_action and cart_reminder, so row 4 has 0.5 of its probability supported
    support = (1 + 1 + 1 + 1 + 0.5 + 1) / 6

    def interval(value, terms):
        half = Z95 * statistics.stdev(terms) / math.sqrt(n)
        return value - half, value + half

    return (
        {
            "ips": (ips_value, interval(ips_value, ips_terms)),
            "snips": (snips_value, interval(snips_value, snips_terms)),
            "dr": (dr_value, interval(dr_value, dr_terms)),
        },
        ess,
        support,
    )


def test_estimators_match_hand_computed_values_on_a_small_log():
    expected, ess, support = by_hand()
    # the numbers themselves: IPS = (0.8 + 40 + 0 + 21.6 + 2.5 + 5) / 6, SNIPS = 69.9 / 15.625
    assert expected["ips"][0] == pytest.approx(69.9 / 6)
    assert expected["snips"][0] == pytest.approx(69.9 / 15.625)
    assert ess == pytest.approx(15.625**2 / 58.510625)
    results = evaluate_policy(LOGS, TARGET, REWARD_MODEL, ACTIONS, min_support=0.9)
    assert set(results) == {"ips", "snips", "dr"}
    for name, (value, (low, high)) in expected.items():
        result = results[name]
        assert result.estimator == name
        assert result.value == pytest.approx(value)
        assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
        assert result.effective_sample_size == pytest.approx(ess)
        assert result.support == pytest.approx(support)
        assert result.n == 6
        assert result.confidence == 0.95
        assert not result.unsupported  # 0.917 >= 0.9
    # the default minimum support (0.95) flags it, the value is still reported
    flagged = evaluate_policy(LOGS, TARGET, REWARD_MODEL, ACTIONS)
    assert all(r.unsupported for r in flagged.values())
    assert flagged["dr"].value == pytest.approx(expected["dr"][0])


def test_array_estimators_and_wider_intervals_at_higher_confidence():
    rewards, mu = LOGS["reward"].to_numpy(), LOGS["propensity"].to_numpy()
    logged = np.array([ACTIONS.index(a) for a in LOGS["action"]])
    pi_logged = TARGET[np.arange(6), logged]
    mask = np.ones(6, dtype=bool)
    expected, _, _ = by_hand()
    assert ips(rewards, mu, pi_logged, mask).value == pytest.approx(expected["ips"][0])
    assert snips(rewards, mu, pi_logged, mask).value == pytest.approx(expected["snips"][0])
    dr = doubly_robust(rewards, mu, pi_logged, TARGET, REWARD_MODEL, logged, mask)
    assert dr.value == pytest.approx(expected["dr"][0])
    assert dr.support == 1.0 and not dr.unsupported
    wide = ips(rewards, mu, pi_logged, mask, confidence=0.99)
    narrow = ips(rewards, mu, pi_logged, mask)
    assert wide.ci_low < narrow.ci_low < narrow.value < narrow.ci_high < wide.ci_high
    assert effective_sample_size([1.0, 1.0, 1.0]) == 3.0
    assert effective_sample_size([3.0, 0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="propensities"):
        ips(rewards, np.zeros(6), pi_logged, mask)


def test_snips_is_invariant_to_a_reward_shift_and_ips_is_not():
    rewards, mu = LOGS["reward"].to_numpy(), LOGS["propensity"].to_numpy()
    logged = np.array([ACTIONS.index(a) for a in LOGS["action"]])
    pi_logged = TARGET[np.arange(6), logged]
    mask = np.ones(6)
    base, shifted = snips(rewards, mu, pi_logged, mask), snips(rewards + 5, mu, pi_logged, mask)
    assert shifted.value == pytest.approx(base.value + 5)
    assert shifted.ci_high - shifted.ci_low == pytest.approx(base.ci_high - base.ci_low)
    assert ips(rewards + 5, mu, pi_logged, mask).value != pytest.approx(
        ips(rewards, mu, pi_logged, mask).value + 5
    )


def test_logging_policy_value_is_the_mean_reward_with_its_interval():
    value = logging_policy_value(LOGS)
    rewards = LOGS["reward"].to_list()
    half = Z95 * statistics.stdev(rewards) / math.sqrt(6)
    assert value.value == pytest.approx(23 / 6)
    assert (value.ci_low, value.ci_high) == pytest.approx((23 / 6 - half, 23 / 6 + half))
    assert value.estimator == "logged" and value.support == 1.0 and value.effective_sample_size == 6
    assert not value.unsupported


def test_an_action_the_logging_policy_never_took_is_flagged_unsupported():
    # a target that always sends the loyalty offer, which no campaign logged: support 0, IPS 0, SNIPS
    # undefined
    actions = [*ACTIONS, "loyalty_offer"]
    target = np.zeros((6, 4))
    target[:, 3] = 1.0
    results = evaluate_policy(LOGS, target, np.zeros((6, 4)), actions)
    for result in results.values():
        assert result.support == 0.0 and result.unsupported
    assert results["ips"].value == 0.0
    assert math.isnan(results["snips"].value)
    assert results["ips"].effective_sample_size == 0.0
    # a target that always sends discount_10: supported in the four rows of the randomised campaign only
    target = np.zeros((6, 3))
    target[:, 1] = 1.0
    results = evaluate_policy(LOGS, target, REWARD_MODEL, ACTIONS)
    assert results["dr"].support == pytest.approx(4 / 6)
    assert results["dr"].unsupported
    assert not evaluate_policy(LOGS, target, REWARD_MODEL, ACTIONS, min_support=0.6)["dr"].unsupported
    np.testing.assert_array_equal(
        support_matrix(LOGS, ACTIONS),
        [[True, True, True]] * 4 + [[True, False, True]] * 2,
    )


def test_a_daily_campaign_is_one_design_for_the_support():
    logs = pl.DataFrame(
        {
            "action": ["no_action", "discount_10", "no_action", "cart_reminder"],
            "channel": [None, "email", None, "email"],
            "propensity": [0.5, 0.5, 0.5, 0.5],
            "reward": [0.0, 1.0, 2.0, 3.0],
            "campaign_id": [
                "explore-2026-11-01",
                "explore-2026-11-01",
                "explore-2026-11-02",
                "explore-2026-11-02",
            ],
        }
    )
    # each day's sample tried one action, the design tried both: every row supports every action
    assert support_matrix(logs, ACTIONS).all()
    by_day = support_matrix(logs, ACTIONS, campaign=pl.col("campaign_id"))
    np.testing.assert_array_equal(by_day, [[True, True, False]] * 2 + [[True, False, True]] * 2)


def test_channels_the_target_would_not_use_get_no_weight():
    # the target sends discount_10 by e-mail and cart_reminder by e-mail: row 2 (reminder by sms) counts 0
    channels = np.array([[None, "email", "email"]] * 6, dtype=object)
    results = evaluate_policy(LOGS, TARGET, REWARD_MODEL, ACTIONS, target_channels=channels, min_support=0.5)
    w = np.array([0.4, 4.0, 0.0, 3.6, 0.625, 5.0])
    rewards = LOGS["reward"].to_numpy()
    assert results["ips"].value == pytest.approx(np.mean(w * rewards))
    assert results["snips"].value == pytest.approx(np.sum(w * rewards) / w.sum())
    # support through the target's channel: the randomised campaign never logged a reminder by e-mail, so
    # row 2 (0.5 on the reminder) and row 4 (0.5 on the discount) are half supported
    assert results["ips"].support == pytest.approx(5 / 6)
    # without channels, the logs' several channels per action are pointed out
    logs = LOGS.with_columns(pl.Series("channel", [None, "email", "sms", "sms", "email", None]))
    with pytest.warns(UserWarning, match="several channels"):
        evaluate_policy(logs, TARGET, REWARD_MODEL, ACTIONS)


def test_a_first_row_without_any_channel_is_unsupported_through_one():
    # the first logged person could be reached through no channel (no consent): polars refused to build the
    # channel column from such an object array; only no_action is supported for that row
    channels = np.array([[None, None, None]] + [[None, "email", "email"]] * 5, dtype=object)
    np.testing.assert_array_equal(
        support_matrix(LOGS, ACTIONS, channels),
        [[True, False, False]] + [[True, True, False]] * 3 + [[True, False, True]] * 2,
    )


def test_exploration_probabilities():
    eligible = np.array([[True, True, False, True], [True, False, False, False], [True, False, True, False]])
    probabilities = exploration_probabilities(np.array([1, 0, 2]), eligible, 0.1)
    np.testing.assert_allclose(
        probabilities,
        [
            [0.1 / 3, 0.9 + 0.1 / 3, 0.0, 0.1 / 3],
            [1.0, 0.0, 0.0, 0.0],
            [0.05, 0.0, 0.95, 0.0],
        ],
    )
    np.testing.assert_allclose(exploration_probabilities(np.array([1, 0, 2]), eligible, 0.0).sum(axis=1), 1)


# -- synthetic logged bandit data with a known true policy value ---------------------------------------------
K = 4
BASE = np.array([0.10, 0.05, 0.15, 0.12])  # purchase probability of each action at x0 = 0 ...
SLOPE = np.array([0.10, 0.50, -0.10, 0.20])  # ... rising with x0 by this much at x0 = 1
COST = np.array([0.0, 0.5, 0.2, 0.3])
AMOUNT = 40.0  # mean order amount (gamma, shape 2)
THETA = np.array([0.0, 1.0, -1.0, 0.5])  # logging policy: softmax of THETA * x1
EPSILON = 0.15  # the target: the best action with 1 - EPSILON, else uniform


def expected_reward(x0):
    """f(x, a): expected reward of every action, (..., K)."""
    return (BASE + SLOPE * x0[..., None]) * AMOUNT - COST


def target_policy(x0):
    best = np.argmax(expected_reward(x0), axis=-1)
    return np.where(np.arange(K) == best[..., None], 1.0 - EPSILON, 0.0) + EPSILON / K


def true_value():
    """E_x sum_a pi(a | x) f(x, a): the target depends on x0 only, x0 uniform on [0, 1] (midpoint rule)."""
    x0 = (np.arange(1_000_000) + 0.5) / 1_000_000
    return float(np.mean(np.sum(target_policy(x0) * expected_reward(x0), axis=-1)))


def draws(n_draws=300, n=2_000, seed=20261127):
    """``n_draws`` logs of ``n`` decisions each, as (n_draws, n) arrays."""
    rng = np.random.default_rng(seed)
    x0, x1 = rng.random((n_draws, n)), rng.random((n_draws, n))
    logits = THETA * x1[..., None]
    mu = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    action = np.minimum((rng.random((n_draws, n))[..., None] > np.cumsum(mu, axis=-1)).sum(axis=-1), K - 1)
    f = expected_reward(x0)
    purchase_probability = np.take_along_axis(BASE + SLOPE * x0[..., None], action[..., None], -1)[..., 0]
    bought = rng.random((n_draws, n)) < purchase_probability
    reward = bought * rng.gamma(2.0, AMOUNT / 2, (n_draws, n)) - COST[action]
    propensity = np.take_along_axis(mu, action[..., None], -1)[..., 0]
    return x0, action, propensity, reward, f


def run_estimators(reward_model_of):
    """Every estimator on every draw: (estimates, covered) per estimator name."""
    x0, action, propensity, reward, f = draws()
    pi = target_policy(x0)
    truth = true_value()
    out = {name: ([], []) for name in ("ips", "snips", "dr")}
    for d in range(len(x0)):
        pi_logged = pi[d, np.arange(action.shape[1]), action[d]]
        mask = np.ones(action.shape[1], dtype=bool)
        results = {
            "ips": ips(reward[d], propensity[d], pi_logged, mask),
            "snips": snips(reward[d], propensity[d], pi_logged, mask),
            "dr": doubly_robust(
                reward[d], propensity[d], pi_logged, pi[d], reward_model_of(f[d]), action[d], mask
            ),
        }
        for name, result in results.items():
            out[name][0].append(result.value)
            out[name][1].append(result.ci_low <= truth <= result.ci_high)
    return truth, {name: (np.array(values), np.array(covered)) for name, (values, covered) in out.items()}


@pytest.fixture(scope="module")
def good_model_runs():
    # a good but imperfect reward model: 5% too high and shifted by 0.2 EUR
    return run_estimators(lambda f: 1.05 * f + 0.2)


def test_intervals_cover_the_true_value_in_at_least_90_percent_of_draws(good_model_runs):
    truth, runs = good_model_runs
    assert 3.0 < truth < 20.0  # a sane value: EUR per decision
    coverage = {name: covered.mean() for name, (_, covered) in runs.items()}
    print("coverage of the 95% intervals:", coverage)
    for name, share in coverage.items():
        assert share >= 0.90, f"{name} covered the truth in {share:.1%} of draws"


def test_estimators_are_unbiased_on_average(good_model_runs):
    truth, runs = good_model_runs
    for name, (values, _) in runs.items():
        standard_error = values.std(ddof=1) / math.sqrt(len(values))
        assert abs(values.mean() - truth) < 3 * standard_error, (name, values.mean(), truth, standard_error)


def test_doubly_robust_has_less_variance_than_ips_with_a_good_reward_model(good_model_runs):
    _, runs = good_model_runs
    variance = {name: values.var(ddof=1) for name, (values, _) in runs.items()}
    print("variance over draws:", variance)
    # the reward's own noise (a purchase or not, a gamma amount) is most of the variance and no reward model
    # removes it; the model removes the part due to the weights: about 15% of IPS's variance here (0.81 to
    # 0.89 of it over six seeds)
    assert variance["dr"] < 0.95 * variance["ips"]


def test_doubly_robust_stays_unbiased_with_a_wrong_reward_model():
    # a constant reward model far from the truth: the importance-weighted correction removes its bias
    truth, runs = run_estimators(lambda f: np.full_like(f, 30.0))
    values, covered = runs["dr"]
    assert abs(values.mean() - truth) < 3 * values.std(ddof=1) / math.sqrt(len(values))
    assert covered.mean() >= 0.90


def test_evaluate_policy_on_a_synthetic_log_matches_the_array_estimators():
    x0, action, propensity, reward, f = draws(n_draws=1, n=3_000, seed=5)
    actions = ["no_action", "a1", "a2", "a3"]
    logs = pl.DataFrame(
        {
            "action": np.array(actions)[action[0]],
            "channel": np.where(action[0] == 0, None, "email"),
            "propensity": propensity[0],
            "reward": reward[0],
            "campaign_id": "explore",
        }
    )
    pi = target_policy(x0[0])
    results = evaluate_policy(logs, pi, f[0], actions)
    pi_logged = pi[np.arange(3_000), action[0]]
    assert results["ips"].value == pytest.approx(
        ips(reward[0], propensity[0], pi_logged, np.ones(3_000)).value
    )
    assert results["snips"].value == pytest.approx(
        snips(reward[0], propensity[0], pi_logged, np.ones(3_000)).value
    )
    assert results["dr"].value == pytest.approx(
        doubly_robust(reward[0], propensity[0], pi_logged, pi, f[0], action[0], np.ones(3_000)).value
    )
    assert results["dr"].support == pytest.approx(1.0) and not results["dr"].unsupported


def test_empty_logs_give_no_estimate_and_are_flagged():
    results = evaluate_policy(LOGS.clear(), np.zeros((0, 3)), np.zeros((0, 3)), ACTIONS)
    for result in results.values():
        assert math.isnan(result.value) and result.n == 0 and result.unsupported
    assert math.isnan(logging_policy_value(LOGS.clear()).value)


def test_channel_randomised_logs_need_the_targets_channels():
    # the logging policy draws the action uniformly, then the channel uniformly among the consented ones, and
    # logs the propensity of both; the target sends discount_10 to everyone by e-mail (the cheaper channel)
    rng = np.random.default_rng(8)
    n = 200_000
    both = rng.random(n) < 0.5  # consent to e-mail and SMS, else e-mail only
    action = rng.integers(0, 3, n)
    sms = both & (rng.random(n) < 0.5)
    channel = np.where(action == 0, None, np.where(sms, "sms", "email"))
    propensity = np.where(action == 0, 1 / 3, np.where(both, 1 / 6, 1 / 3))
    cost = np.where(action == 0, 0.0, np.where(sms, 0.5, 0.1))
    mean_revenue = np.array([10.0, 14.0, 12.0])
    reward = mean_revenue[action] + 3.0 * both + rng.normal(0, 5, n) - cost
    logs = pl.DataFrame(
        {
            "action": np.array(ACTIONS)[action],
            "channel": channel,
            "propensity": propensity,
            "reward": reward,
            "campaign_id": "explore-2026-11-02",
        }
    )
    target = np.zeros((n, 3))
    target[:, 1] = 1.0
    model = np.zeros((n, 3))
    channels = np.array([[None, "email", "email"]] * n, dtype=object)
    truth = 14.0 + 1.5 - 0.1  # discount revenue, half the persons earn 3 more, the e-mail cost
    results = evaluate_policy(logs, target, model, ACTIONS, target_channels=channels)
    for result in results.values():
        assert result.support == 1.0
        assert abs(result.value - truth) < 2 * (result.ci_high - result.ci_low), (result, truth)
    # taken as the logged channel, an SMS decision counts as the target's too, with its propensity 1/6 instead
    # of the action's 1/3: IPS puts the double-consent persons twice in the value
    with pytest.warns(UserWarning, match="several channels"):
        naive = evaluate_policy(logs, target, model, ACTIONS)
    assert naive["ips"].value > truth + 3.0
