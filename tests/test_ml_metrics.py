"""Metrics of the response and uplift models against values worked out from their definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.metrics import (
    brier_score,
    calibration_error,
    pr_auc,
    qini_coefficient,
    qini_curve,
    roc_auc,
    uplift_auc,
)

Y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
SCORE = np.array([0.9, 0.8, 0.8, 0.4, 0.4, 0.2, 0.1, 0.05])  # two ties, one across classes
WEIGHT = np.array([1.0, 2.0, 0.5, 3.0, 1.0, 1.5, 2.0, 1.0])


def pairwise_auc(y, score, weight):
    """AUC as the weighted share of correctly ordered (positive, negative) pairs, ties at 1/2."""
    num = den = 0.0
    for i, j in itertools.product(range(len(y)), repeat=2):
        if y[i] == 1 and y[j] == 0:
            pair = weight[i] * weight[j]
            den += pair
            num += pair * (1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0)
    return num / den


def test_roc_auc_is_the_share_of_correctly_ordered_pairs():
    ones = np.ones(len(Y))
    # unweighted, by hand: 16 pairs; positive 0.9 beats all 4 negatives (4); 0.8 beats 0.4, 0.2, 0.05 and ties
    # 0.8 (3.5); 0.4 beats 0.2, 0.05 and ties 0.4 (2.5); 0.1 beats 0.05 (1): 11 / 16
    assert roc_auc(Y, SCORE) == pytest.approx(11 / 16)
    assert roc_auc(Y, SCORE) == pytest.approx(pairwise_auc(Y, SCORE, ones))
    assert roc_auc(Y, SCORE, WEIGHT) == pytest.approx(pairwise_auc(Y, SCORE, WEIGHT))


def brute_force_average_precision(y, score, weight):
    """Average precision from its definition: at each distinct threshold t, precision(score >= t) times the
    recall gained at t."""
    total = sum(w for w, label in zip(weight, y, strict=True) if label)
    ap = 0.0
    for t in sorted(set(score), reverse=True):
        selected = [i for i in range(len(y)) if score[i] >= t]
        hits = sum(weight[i] for i in selected if y[i])
        gained = sum(weight[i] for i in range(len(y)) if y[i] and score[i] == t)
        ap += hits / sum(weight[i] for i in selected) * gained / total
    return ap


rows = st.lists(
    st.tuples(st.booleans(), st.integers(0, 4), st.floats(0.1, 5.0)), min_size=2, max_size=12
).filter(lambda r: any(y for y, _, _ in r) and not all(y for y, _, _ in r))


@settings(max_examples=200, deadline=None)
@given(rows)
def test_ranking_metrics_equal_their_definitions_on_random_small_arrays(data):
    y = np.array([d[0] for d in data])
    score = np.array([float(d[1]) for d in data])  # few distinct values: many ties
    weight = np.array([d[2] for d in data])
    assert roc_auc(y, score, weight) == pytest.approx(pairwise_auc(y, score, weight))
    assert pr_auc(y, score, weight) == pytest.approx(brute_force_average_precision(y, score, weight))


def test_average_precision_by_hand():
    # thresholds from the top: 0.9 (tp 1 of 1 selected, recall gain 1/4), 0.8 (tp 2 of 3, gain 1/4),
    # 0.4 (tp 3 of 5, gain 1/4), 0.2 (no positive), 0.1 (tp 4 of 7, gain 1/4)
    expected = (1 / 1 + 2 / 3 + 3 / 5 + 4 / 7) / 4
    assert pr_auc(Y, SCORE) == pytest.approx(expected)
    # weighted: positives weigh 1, 0.5, 3, 2 (total 6.5); selected weight at 0.9: 1, at 0.8: 3.5,
    # at 0.4: 7.5, at 0.2: 9, at 0.1: 11
    expected_weighted = (1 * 1 / 1 + 0.5 * 1.5 / 3.5 + 3 * 4.5 / 7.5 + 2 * 6.5 / 11) / 6.5
    assert pr_auc(Y, SCORE, WEIGHT) == pytest.approx(expected_weighted)


def test_integer_weights_equal_repeated_rows():
    counts = np.array([1, 2, 1, 3, 1, 2, 2, 1])
    repeated = np.repeat(np.arange(len(Y)), counts)
    p = np.clip(SCORE, 0, 1)
    for metric in (roc_auc, pr_auc, brier_score, calibration_error):
        assert metric(Y, p, weight=counts.astype(float)) == pytest.approx(metric(Y[repeated], p[repeated]))


@pytest.mark.slow  # importing scikit-learn takes seconds
def test_sklearn_agrees_on_auc_and_average_precision():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.3
    score = np.round(rng.random(500) + 0.5 * y, 1)  # rounded: many ties
    weight = rng.uniform(0.5, 5.0, 500)
    assert roc_auc(y, score, weight) == pytest.approx(roc_auc_score(y, score, sample_weight=weight))
    assert pr_auc(y, score, weight) == pytest.approx(average_precision_score(y, score, sample_weight=weight))


def test_ranking_metrics_unchanged_by_a_monotone_transform():
    rng = np.random.default_rng(5)
    y = rng.random(300) < 0.4
    score = rng.normal(size=300) + y
    for metric in (roc_auc, pr_auc):
        assert metric(y, np.exp(3 * score) + 7, None) == pytest.approx(metric(y, score))


def test_perfect_and_random_rankers():
    rng = np.random.default_rng(11)
    y = rng.random(20_000) < 0.2
    assert roc_auc(y, y.astype(float) + 0.1 * rng.random(len(y))) == 1.0
    assert pr_auc(y, y.astype(float)) == 1.0
    assert roc_auc(y, 1.0 - y) == 0.0
    assert roc_auc(y, rng.random(len(y))) == pytest.approx(0.5, abs=0.015)
    # a random score's average precision is about the positive rate
    assert pr_auc(y, rng.random(len(y))) == pytest.approx(y.mean(), abs=0.015)
    assert roc_auc(y, np.zeros(len(y))) == 0.5  # all tied
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5)))


def test_brier_score_and_calibration_error_by_hand():
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.12, 0.95, 0.9, 0.5])
    assert brier_score(y, p) == pytest.approx((0.05**2 + 0.85**2 + 0.12**2 + 0.05**2 + 0.1**2 + 0.5**2) / 6)
    # ten equal-width bins: [0, .1) holds 0.05 (observed 0, gap .05); [.1, .2) holds 0.15 and 0.12 (observed
    # 1/2, mean .135, gap .365); [.5, .6) holds 0.5 (gap .5); [.9, 1] holds .95 and .9 (observed 1, gap .075)
    assert calibration_error(y, p) == pytest.approx((0.05 + 2 * 0.365 + 0.5 + 2 * 0.075) / 6)
    # two bins: [0, .5) holds .05, .15, .12 (observed 1/3, mean .10667); [.5, 1] holds .95, .9, .5 (observed
    # 2/3, mean .78333)
    expected = (3 * abs(1 / 3 - 0.32 / 3) + 3 * abs(2 / 3 - 2.35 / 3)) / 6
    assert calibration_error(y, p, bins=2) == pytest.approx(expected)
    # a calibrated forecast: outcomes drawn with the forecast probability
    rng = np.random.default_rng(2)
    q = rng.random(50_000)
    assert calibration_error(rng.random(len(q)) < q, q) < 0.01
    assert calibration_error(rng.random(len(q)) < q, q * 0.5) > 0.2


# six rows, by decreasing uplift score: (treated, outcome)
QINI_SCORE = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
QINI_TREATED = np.array([True, False, True, False, True, False])
QINI_OUTCOME = np.array([10.0, 0.0, 5.0, 4.0, 0.0, 2.0])


def test_qini_curve_of_six_rows_by_hand():
    # targeted k rows: Y_t - Y_c * N_t / N_c
    # k=1: 10 (no control yet); k=2: 10 - 0; k=3: 15 - 0; k=4: 15 - 4 * 2/2 = 11; k=5: 15 - 4 * 3/2 = 9;
    # k=6: 15 - 6 * 3/3 = 9
    order = np.array([3, 0, 5, 1, 4, 2])  # the row order does not matter, only the scores
    x, y = qini_curve(QINI_OUTCOME[order], QINI_TREATED[order], QINI_SCORE[order])
    np.testing.assert_allclose(x, np.arange(7) / 6)
    np.testing.assert_allclose(y, [0, 10, 10, 15, 11, 9, 9])
    # area under the curve (trapezoids of width 1/6): (5 + 10 + 12.5 + 13 + 10 + 9) / 6 = 59.5 / 6; minus the
    # random line's area 9 / 2; per row: / 6
    assert qini_coefficient(QINI_OUTCOME, QINI_TREATED, QINI_SCORE) == pytest.approx((59.5 / 6 - 4.5) / 6)
    # uplift curve x * (mean treated - mean control): 0, 10/6, 20/6, 22.5/6, 22/6, 15/6, 18/6; trapezoids:
    # (5 + 15 + 21.25 + 22.25 + 18.5 + 16.5) / 6 / 6
    assert uplift_auc(QINI_OUTCOME, QINI_TREATED, QINI_SCORE) == pytest.approx(98.5 / 36)


def test_qini_weights_and_ties():
    # a weight of 2 on a row equals the row twice
    weight = np.array([1.0, 2.0, 1.0, 1.0, 2.0, 1.0])
    repeated = np.repeat(np.arange(6), weight.astype(int))
    for metric in (qini_coefficient, uplift_auc):
        assert metric(QINI_OUTCOME, QINI_TREATED, QINI_SCORE, weight) == pytest.approx(
            metric(QINI_OUTCOME[repeated], QINI_TREATED[repeated], QINI_SCORE[repeated])
        )
    # tied scores form one point: rows 2 and 3 tied, whichever comes first
    tied = QINI_SCORE.copy()
    tied[2] = tied[1]
    x, y = qini_curve(QINI_OUTCOME, QINI_TREATED, tied)
    np.testing.assert_allclose(x, [0, 1 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    np.testing.assert_allclose(y, [0, 10, 15, 11, 9, 9])


def test_uplift_metrics_rank_a_true_uplift_score_above_a_random_one():
    rng = np.random.default_rng(17)
    n = 40_000
    x = rng.random(n)
    effect = 4.0 * x - 1.0  # treatment effect from -1 to 3, average 1
    treated = rng.random(n) < 0.3
    outcome = 5.0 + x + treated * effect + rng.normal(0, 2, n)
    weight = np.where(treated, 1 / 0.3, 1 / 0.7)  # inverse propensities
    true_q = qini_coefficient(outcome, treated, effect, weight)
    random_q = qini_coefficient(outcome, treated, rng.random(n), weight)
    # half the weight is treated, so the curve per row at the share x is x * (3 - 2x) / 2 (the top share x has
    # mean effect 3 - 2x); its area 5/12 minus the random line's 1/4 is 1/6; the reversed score gives -1/6
    assert true_q == pytest.approx(1 / 6, abs=0.03)
    assert random_q == pytest.approx(0.0, abs=0.03)
    assert qini_coefficient(outcome, treated, -effect, weight) == pytest.approx(-1 / 6, abs=0.03)
    # uplift AUC: about the area under x * mean effect of the top share x; for the true score, the top share
    # x has mean effect 3 - 2x, so the area is int_0^1 (3x - 2x^2) dx = 5/6; a random score gives 1/2
    assert uplift_auc(outcome, treated, effect, weight) == pytest.approx(5 / 6, abs=0.06)
    assert uplift_auc(outcome, treated, rng.random(n), weight) == pytest.approx(0.5, abs=0.06)
    # the whole curve ends at N_t * average effect (weighted: half the weight is treated)
    _, curve = qini_curve(outcome, treated, effect, weight)
    assert curve[-1] / weight.sum() == pytest.approx(0.5 * 1.0, abs=0.05)
