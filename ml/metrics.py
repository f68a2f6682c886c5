"""Metrics of the response and uplift models, in plain numpy, each with optional sample weights.

The weights are usually inverse logged propensities, so that a randomised log with unequal assignment
probabilities stands for the population it was drawn from. Every metric treats a weight as a row count: a row
of weight 2 counts as two identical rows.

- :func:`roc_auc`: the weighted share of (positive, negative) pairs the score orders correctly, ties at 1/2.
- :func:`pr_auc`: average precision, the precision at each distinct score threshold weighted by the recall
  gained there (a step function, not the trapezoid, which is optimistic).
- :func:`brier_score`: the mean squared error of a probability.
- :func:`calibration_error`: the expected calibration error over equal-width probability bins.
- :func:`qini_curve`, :func:`qini_coefficient`, :func:`uplift_auc`: how well an uplift score ranks the rows
  by the incremental outcome of a treatment against a control.

Tied scores are never split: the curves have one point per distinct score, so the order of tied rows does not
change any metric.
"""

from __future__ import annotations

import numpy as np


def _weights(n: int, weight) -> np.ndarray:
    """``weight`` as a float array of length ``n`` (ones when None), checked non-negative."""
    if weight is None:
        return np.ones(n)
    w = np.asarray(weight, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weight has shape {w.shape}, expected ({n},)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    return w


def _binary(y) -> np.ndarray:
    """``y`` as a bool array, checked to hold only 0/1 (or False/True)."""
    y = np.asarray(y)
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0/1 or bool")
        y = y.astype(bool)
    return y


def roc_auc(y, score, weight=None) -> float:
    """Area under the ROC curve: the weighted share of (positive, negative) pairs in which the positive has
    the higher score, a tie counting 1/2 (the Mann-Whitney statistic). NaN when one class is absent."""
    y = _binary(y)
    score = np.asarray(score, dtype=float)
    w = _weights(len(y), weight)
    _, group = np.unique(score, return_inverse=True)  # rank of each row's distinct score, ascending
    positives = np.bincount(group, weights=w * y)
    negatives = np.bincount(group, weights=w * ~y)
    total_positive, total_negative = positives.sum(), negatives.sum()
    if total_positive == 0 or total_negative == 0:
        return float("nan")
    negatives_below = np.cumsum(negatives) - negatives
    correct = positives * (negatives_below + 0.5 * negatives)
    return float(correct.sum() / (total_positive * total_negative))


def pr_auc(y, score, weight=None) -> float:
    """Average precision: sum over the distinct score thresholds t, from the highest down, of
    precision(score >= t) times the recall gained at t. NaN when there is no positive."""
    y = _binary(y)
    score = np.asarray(score, dtype=float)
    w = _weights(len(y), weight)
    _, group = np.unique(-score, return_inverse=True)  # rank of each row's distinct score, descending
    positives = np.bincount(group, weights=w * y)
    everyone = np.bincount(group, weights=w)
    total_positive = positives.sum()
    if total_positive == 0:
        return float("nan")
    true_positives = np.cumsum(positives)
    selected = np.cumsum(everyone)
    precision = np.divide(true_positives, selected, out=np.zeros_like(selected), where=selected > 0)
    return float(np.sum(precision * positives) / total_positive)


def brier_score(y, probability, weight=None) -> float:
    """Weighted mean of (probability - y)^2."""
    y = _binary(y)
    p = np.asarray(probability, dtype=float)
    w = _weights(len(y), weight)
    return float(np.sum(w * (p - y) ** 2) / np.sum(w))


def calibration_error(y, probability, bins: int = 10, weight=None) -> float:
    """Expected calibration error over ``bins`` equal-width bins of [0, 1] (bin b holds b/bins <= p <
    (b+1)/bins, the last bin includes 1): the weighted mean over bins, by their share of the weight, of
    |observed rate - mean predicted probability|. Equal-width bins keep the metric comparable between models
    (quantile bins move with the model's score distribution)."""
    y = _binary(y)
    p = np.asarray(probability, dtype=float)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    w = _weights(len(y), weight)
    b = np.minimum((p * bins).astype(int), bins - 1)
    mass = np.bincount(b, weights=w, minlength=bins)
    observed = np.bincount(b, weights=w * y, minlength=bins)
    predicted = np.bincount(b, weights=w * p, minlength=bins)
    filled = mass > 0
    gap = np.abs(observed[filled] - predicted[filled]) / mass[filled]
    return float(np.sum(mass[filled] * gap) / mass.sum())


def _cumulative_by_score(outcome, treated, uplift_score, weight):
    """Cumulative weighted sums, at each distinct uplift score from the highest down, of the treated and
    control rows' count and outcome; with the total weight."""
    y = np.asarray(outcome, dtype=float)
    t = np.asarray(treated, dtype=bool)
    score = np.asarray(uplift_score, dtype=float)
    w = _weights(len(y), weight)
    _, group = np.unique(-score, return_inverse=True)

    def cumulative(values):
        return np.concatenate([[0.0], np.cumsum(np.bincount(group, weights=values))])

    return (
        cumulative(w * t),
        cumulative(w * t * y),
        cumulative(w * ~t),
        cumulative(w * ~t * y),
        w.sum(),
    )


def qini_curve(outcome, treated, uplift_score, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """The Qini curve of an uplift score: x, the weighted share of rows targeted (highest scores first, one
    point per distinct score, starting at (0, 0)); y, the cumulative incremental outcome of the targeted rows,
    ``Y_t - Y_c * N_t / N_c`` (Y: summed outcome, N: summed weight of the treated / control rows among the
    targeted; the control term is 0 while no control row is targeted). At x = 1, y = N_t * (mean outcome of
    the treated - mean outcome of the controls)."""
    n_t, y_t, n_c, y_c, total = _cumulative_by_score(outcome, treated, uplift_score, weight)
    control = np.divide(y_c * n_t, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return (n_t + n_c) / total, y_t - control


def qini_coefficient(outcome, treated, uplift_score, weight=None) -> float:
    """Area between the Qini curve and the random-targeting line (from (0, 0) to the curve's end), divided by
    the total weight: incremental outcome per row, averaged over the targeted shares. Positive when the
    score puts the rows that gain most first, about 0 for a random score."""
    x, y = qini_curve(outcome, treated, uplift_score, weight)
    total = _weights(len(np.asarray(outcome)), weight).sum()
    area = np.trapezoid(y, x) - y[-1] / 2
    return float(area / total)


def uplift_auc(outcome, treated, uplift_score, weight=None) -> float:
    """Area under the uplift curve: at the targeted share x (highest scores first), x times (mean outcome of
    the targeted treated rows - mean outcome of the targeted control rows), the incremental outcome per row of
    the population when the top share x is treated (a group without rows yet counts 0). A random score gives
    about half the average treatment effect."""
    n_t, y_t, n_c, y_c, total = _cumulative_by_score(outcome, treated, uplift_score, weight)
    x = (n_t + n_c) / total
    mean_t = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t > 0)
    mean_c = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    return float(np.trapezoid(x * (mean_t - mean_c), x))
