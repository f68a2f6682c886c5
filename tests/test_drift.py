"""Drift: the population stability index of features and scores between a reference profile and a scoring
run."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from ml.drift import (
    MISSING,
    OTHER,
    SHARE_FLOOR,
    DriftThresholds,
    bin_shares,
    drift_plot,
    psi,
    reference_profile,
    summarize,
)


def normal_frame(seed: int, rows: int = 5_000, shift: float = 0.0) -> pl.DataFrame:
    """A feature frame with a continuous, a count, a categorical and a boolean column, and a score."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "monetary_value": rng.normal(50 + 20 * shift, 20, rows),
            "order_count": rng.poisson(1.5, rows),
            "top_category": rng.choice(["books", "garden", "toys", "shoes"], rows, p=[0.4, 0.3, 0.2, 0.1]),
            "has_email_consent": rng.random(rows) < 0.7,
            "expected_revenue__discount_10": rng.gamma(2.0, 5.0 * (1 + shift), rows),
        }
    )


def test_psi_of_a_numeric_column_matches_the_hand_computed_value():
    reference = pl.DataFrame({"x": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]})
    profile = reference_profile(reference, ["x"], bins=2)
    # two bins: the reference median (5) is the one edge, so (-inf, 5] and (5, inf) hold half each
    assert profile["columns"]["x"] == {
        "kind": "numeric",
        "edges": [5.0],
        "shares": [0.5, 0.5],
        "missing_share": 0.0,
    }

    current = pl.DataFrame({"x": [1.0, 2, 3, 6, 7, 8, 9, 10, None, float("nan")]})
    # current shares: 3 of 10 at most 5, 5 above, 2 missing (null and NaN); the empty reference bin counts
    # with the floor share
    expected = (
        (0.3 - 0.5) * math.log(0.3 / 0.5)
        + (0.5 - 0.5) * math.log(0.5 / 0.5)
        + (0.2 - SHARE_FLOOR) * math.log(0.2 / SHARE_FLOOR)
    )
    assert psi(profile, current)["x"] == pytest.approx(expected, rel=1e-12)


def test_psi_of_a_categorical_column_matches_the_hand_computed_value_with_unseen_and_missing_values():
    reference = pl.DataFrame({"c": ["a", "a", "b", "c"]})
    profile = reference_profile(reference, ["c"], max_categories=2)
    # b and c tie: the first by name is kept, c goes to the other bucket
    assert profile["columns"]["c"] == {
        "kind": "categorical",
        "categories": ["a", "b"],
        "shares": [0.5, 0.25],
        "other_share": 0.25,
        "missing_share": 0.0,
    }
    current = pl.DataFrame({"c": ["a", "b", "d", None]})  # d was never seen: it counts in the other bucket
    labels, ref_shares, cur_shares = bin_shares(profile["columns"]["c"], current["c"])
    assert labels == ["a", "b", OTHER, MISSING]
    assert ref_shares.tolist() == [0.5, 0.25, 0.25, 0.0]
    assert cur_shares.tolist() == [0.25, 0.25, 0.25, 0.25]
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - SHARE_FLOOR) * math.log(0.25 / SHARE_FLOOR)
    assert psi(profile, current)["c"] == pytest.approx(expected, rel=1e-12)


def test_identical_distributions_give_a_psi_near_zero():
    reference = normal_frame(seed=1)
    profile = reference_profile(reference, reference.columns)
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in psi(profile, reference).values())
    # another sample of the same distribution: only sampling noise (about bins / rows)
    values = psi(profile, normal_frame(seed=2))
    assert max(values.values()) < 0.02, values
    assert summarize(values).status == "ok"


def test_a_shifted_distribution_passes_the_error_threshold_and_a_small_shift_only_warns():
    reference = normal_frame(seed=1)
    profile = reference_profile(reference, reference.columns)
    # a shift of one standard deviation: the PSI of two normals one sd apart is about 1 (their symmetric
    # Kullback-Leibler divergence), less the little the binning loses
    shifted = psi(profile, normal_frame(seed=3, shift=1.0))
    assert shifted["monetary_value"] > 0.25
    assert shifted["expected_revenue__discount_10"] > 0.25
    # columns that did not move stay quiet
    assert shifted["top_category"] < 0.02 and shifted["order_count"] < 0.02

    small = psi(profile, normal_frame(seed=3, shift=0.4))  # 0.4 sd: about 0.16
    summary = summarize(small, DriftThresholds(warn=0.1, error=0.25))
    assert 0.1 <= small["monetary_value"] < 0.25
    assert "monetary_value" in summary.warn
    assert summary.error == ()
    assert summary.status == "warn"


def test_summary_orders_columns_worst_first_and_applies_the_thresholds_inclusively():
    summary = summarize({"a": 0.05, "b": 0.1, "c": 0.3, "d": 0.25, "e": 0.2}, DriftThresholds(0.1, 0.25))
    assert summary.error == ("c", "d")
    assert summary.warn == ("e", "b")
    assert summary.status == "error"
    assert summary.worst == ("c", 0.3)
    assert json.loads(json.dumps(summary.to_dict()))["error"] == ["c", "d"]
    with pytest.raises(ValueError):
        DriftThresholds(warn=0.3, error=0.2)


def test_thresholds_come_from_the_settings(monkeypatch):
    assert DriftThresholds.from_settings() == DriftThresholds(0.1, 0.25)
    monkeypatch.setenv("DRIFT_WARN_PSI", "0.05")
    monkeypatch.setenv("DRIFT_ERROR_PSI", "0.5")
    assert DriftThresholds.from_settings() == DriftThresholds(0.05, 0.5)


def test_profile_survives_a_json_round_trip_with_every_column_type():
    frame = normal_frame(seed=4, rows=500).with_columns(
        pl.Series("monetary_value_30d", [Decimal("1.25") * (i % 7) for i in range(500)], pl.Decimal(18, 2)),
        pl.Series("days_since_last_order", [None if i % 3 else i for i in range(500)], pl.Int64),
        pl.Series("top_category_cat", ["x", "y"] * 250, pl.Categorical),
        pl.Series("never_known", [None] * 500, pl.Float64),
    )
    profile = reference_profile(frame, frame.columns)
    loaded = json.loads(json.dumps(profile, allow_nan=False))
    assert loaded == profile
    current = normal_frame(seed=5, rows=300, shift=0.5).with_columns(
        pl.Series("monetary_value_30d", [Decimal("2.50") * (i % 5) for i in range(300)], pl.Decimal(18, 2)),
        pl.Series("days_since_last_order", list(range(300)), pl.Int64),
        pl.Series("top_category_cat", ["x", "z", "y"] * 100, pl.Categorical),
        pl.Series("never_known", [1.0] * 300, pl.Float64),
    )
    assert psi(loaded, current) == psi(profile, current)
    # a column missing in the reference and present now is a major shift
    assert psi(loaded, current)["never_known"] > 0.25
    assert profile["columns"]["days_since_last_order"]["missing_share"] == pytest.approx(333 / 500)


def test_a_column_of_the_profile_missing_from_the_scoring_run_is_an_error():
    frame = normal_frame(seed=1, rows=100)
    profile = reference_profile(frame, frame.columns)
    with pytest.raises(ValueError, match="order_count"):
        psi(profile, frame.drop("order_count"))
    with pytest.raises(ValueError, match="no rows"):
        psi(profile, frame.head(0))


def test_drift_plot_writes_a_png(tmp_path):
    reference = normal_frame(seed=1, rows=1_000)
    profile = reference_profile(reference, reference.columns)
    path = drift_plot(profile, normal_frame(seed=2, rows=1_000, shift=1.0), tmp_path / "plots" / "drift.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
