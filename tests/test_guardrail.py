"""The lift guardrail: the anytime-valid interval against hand-computed values, its error rate under daily
looks (no harm: rollbacks stay under alpha; harm: it triggers), and the rollback on a real MLflow registry
with the check recorded in the lake."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml import guardrail, registry
from ml.guardrail import GuardrailRule, lift_interval, mixture_radius, mixture_rho2
from ml.ope import PolicyValue
from ml.settings import get_ml_settings
from tests.conftest import lake_settings


def test_mixture_boundary_matches_the_closed_form_by_hand():
    # alpha = 0.05: -2 log alpha = 5.99146, log(5.99146 + 1) = 1.94470, so rho^2 t_opt = 7.93616.
    rho2 = mixture_rho2(100, 0.05)
    assert rho2 == pytest.approx(0.0793616, rel=1e-5)
    # t = 100, sd = 1: t rho^2 + 1 = 8.93616; 2 x 8.93616 / (100^2 x 0.0793616) = 0.0225207;
    # log(sqrt(8.93616) / 0.05) = log(59.7868) = 4.09077; sqrt(0.0225207 x 4.09077) = 0.303526.
    assert mixture_radius(100, 1.0, 0.05, rho2) == pytest.approx(0.303526, rel=1e-4)
    # Twice the standard deviation, twice the width; no observations, no bound.
    assert mixture_radius(100, 2.0, 0.05, rho2) == pytest.approx(0.607052, rel=1e-4)
    assert mixture_radius(0, 1.0, 0.05, rho2) == math.inf
    # Wider than the fixed-sample 95% interval (1.95996 / sqrt(100) = 0.195996) at every t: the price of
    # looking as often as one likes.
    for t in (10, 100, 1_000, 100_000):
        assert mixture_radius(t, 1.0, 0.05, rho2) > 1.959964 / math.sqrt(t)
    # Tightest, relative to 1 / sqrt(t), near t_opt.
    ts = np.array([10, 30, 100, 300, 1_000, 10_000])
    scaled = [mixture_radius(t, 1.0, 0.05, rho2) * math.sqrt(t) for t in ts]
    assert ts[int(np.argmin(scaled))] == 100


def test_lift_interval_of_two_small_groups_by_hand():
    # treated 1, 2, 3, 4: mean 2.5, variance 5/3; holdout 0, 2: mean 1, variance 2. t = 6,
    # variance per observation 6 x (5/3 / 4 + 2 / 2) = 8.5; with t_opt = 6, rho^2 = 7.93616 / 6 = 1.322693.
    # radius = sqrt(8.5) x sqrt(2 x 8.93616 / (36 x 1.322693) x log(sqrt(8.93616) / 0.05))
    #        = 2.915476 x sqrt(0.375339 x 4.090771) = 2.915476 x 1.239154 = 3.612751.
    interval = lift_interval(np.array([1, 2, 3, 4]), np.array([0, 2]), alpha=0.05, t_opt=6)
    assert (interval.treated, interval.holdout) == (4, 2)
    assert interval.lift == pytest.approx(1.5)
    assert interval.upper - interval.lift == pytest.approx(3.612751, rel=1e-4)
    assert interval.lift - interval.lower == pytest.approx(3.612751, rel=1e-4)
    one = lift_interval(np.array([1.0, 2.0]), np.array([3.0]))
    assert (one.lower, one.upper) == (-math.inf, math.inf)
    # Nobody in the holdout bought, every treated decision cost a message: no spread, no interval (a point
    # interval at -0.01 would roll back on no evidence).
    nobody = lift_interval(np.array([-0.01, -0.01, 4.0]), np.zeros(500))
    assert (nobody.lift, nobody.lower, nobody.upper) == (
        pytest.approx(4.0 / 3 - 0.01 * 2 / 3),
        -math.inf,
        math.inf,
    )


def test_verdict_needs_the_whole_interval_below_the_threshold_and_enough_holdout():
    rule = GuardrailRule(threshold=0.0, min_holdout=3)
    low = guardrail.LiftInterval(10, 5, 0.0, 1.0, -1.0, -1.5, -0.1, 0.05)
    assert guardrail.verdict(low, rule) == guardrail.VERDICT_ROLLBACK
    straddling = guardrail.LiftInterval(10, 5, 0.0, 1.0, -1.0, -1.5, 0.1, 0.05)
    assert guardrail.verdict(straddling, rule) == guardrail.VERDICT_OK
    assert guardrail.verdict(low, GuardrailRule(threshold=-0.2, min_holdout=3)) == guardrail.VERDICT_OK
    assert guardrail.verdict(low, GuardrailRule(threshold=0.0, min_holdout=6)) == guardrail.VERDICT_TOO_FEW


REPLICATIONS = 400
DAYS = 30
TREATED_PER_DAY, HOLDOUT_PER_DAY = 900, 100


def daily_revenue(rng: np.random.Generator, shape: tuple[int, int], shift: float) -> np.ndarray:
    """Net revenue per decision as the shop makes it: 4% buy, baskets log-normal around 50 EUR, heavy tailed;
    ``shift`` added to every decision (a message cost or a discount given to everyone)."""
    buys = rng.random(shape) < 0.04
    basket = rng.lognormal(mean=math.log(50.0), sigma=0.8, size=shape)
    return buys * basket + shift


def first_rollback_day(effect: float, seed: int, rule: GuardrailRule) -> tuple[np.ndarray, np.ndarray]:
    """Daily looks at ``REPLICATIONS`` experiments of ``DAYS`` days whose true lift is ``effect``: the first
    day each one's guardrail rolls back (DAYS when never), and the same for a fixed-sample 95% interval."""
    rng = np.random.default_rng(seed)
    first = np.full(REPLICATIONS, DAYS)
    naive = np.full(REPLICATIONS, DAYS)
    treated = daily_revenue(rng, (REPLICATIONS, DAYS * TREATED_PER_DAY), effect)
    holdout = daily_revenue(rng, (REPLICATIONS, DAYS * HOLDOUT_PER_DAY), 0.0)
    for day in range(DAYS):
        n1, n0 = (day + 1) * TREATED_PER_DAY, (day + 1) * HOLDOUT_PER_DAY
        for r in range(REPLICATIONS):
            interval = lift_interval(treated[r, :n1], holdout[r, :n0], rule.alpha, rule.t_opt)
            if first[r] == DAYS and guardrail.verdict(interval, rule) == guardrail.VERDICT_ROLLBACK:
                first[r] = day
            se = math.sqrt(treated[r, :n1].var(ddof=1) / n1 + holdout[r, :n0].var(ddof=1) / n0)
            if naive[r] == DAYS and n0 >= rule.min_holdout and interval.lift + 1.959964 * se < 0:
                naive[r] = day
    return first, naive


def test_daily_looks_without_harm_roll_back_less_often_than_alpha():
    # True lift 0, threshold 0: every rollback is false. The sequence's error bound is alpha for both sides
    # together, so below alpha / 2 = 0.025 is expected for one side; alpha itself is the promise. The
    # fixed-sample interval, looked at daily, errs more often than its nominal one-sided 2.5%.
    rule = GuardrailRule(threshold=0.0, alpha=0.05, min_holdout=200, t_opt=10_000)
    first, naive = first_rollback_day(0.0, seed=20261128, rule=rule)
    false_rate = float((first < DAYS).mean())
    naive_rate = float((naive < DAYS).mean())
    assert false_rate <= 0.05
    assert naive_rate > 0.025
    assert naive_rate > 2 * false_rate


def test_daily_looks_under_harm_roll_back_within_days():
    # Every treated decision loses 1.5 EUR of net revenue (a discount on purchases that happen anyway): with
    # 900 treated and 100 holdout decisions a day the guardrail rolls back in almost every experiment.
    rule = GuardrailRule(threshold=0.0, alpha=0.05, min_holdout=200, t_opt=10_000)
    first, _ = first_rollback_day(-1.5, seed=7, rule=rule)
    assert float((first < DAYS).mean()) >= 0.95
    assert float(np.median(first)) <= 15


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One MLflow store holding a run that logged a tiny pyfunc model (each test gets a copy): the database,
    the model's URI and the run id."""
    import mlflow
    import pandas as pd

    root = tmp_path_factory.mktemp("guardrail_mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input * 0.0

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("nba_uplift", artifact_location=str(root / "artifacts"))
    before = (
        mlflow.get_tracking_uri()
    )  # the process-wide URI wins over the environment: set it, then restore it
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            frame = pd.DataFrame({"x": [1.0, 2.0]})
            info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["pandas"])
            mlflow.log_input(mlflow.data.from_pandas(frame, name="training_decisions"))
    finally:
        mlflow.set_tracking_uri(before)
    return root / "mlflow.db", info.model_uri, run.info.run_id


@pytest.fixture
def registry_store(registry_template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh copy of the template store, named by ``MLFLOW_TRACKING_URI``: ML settings, model URI and run
    id."""
    import shutil

    database, model_uri, run_id = registry_template
    shutil.copyfile(database, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return get_ml_settings(), model_uri, run_id


def policy_value(estimator: str, value: float) -> PolicyValue:
    """An off-policy value on 1,000 logged decisions with an interval of +-0.2."""
    return PolicyValue(
        estimator=estimator,
        value=value,
        ci_low=value - 0.2,
        ci_high=value + 0.2,
        confidence=0.95,
        effective_sample_size=250.0,
        support=1.0,
        n=1_000,
        unsupported=False,
    )


def attribution_rows(version: str, treated: np.ndarray, holdout: np.ndarray) -> pl.DataFrame:
    """Attribution rows of the champion ``version`` with these net revenues, complete windows."""
    n = len(treated) + len(holdout)
    return pl.DataFrame(
        {
            "decision_date": [date(2026, 11, 1 + i % 20) for i in range(n)],
            "model_version": [version] * n,
            "decided_by": ["champion"] * n,
            "is_holdout": [False] * len(treated) + [True] * len(holdout),
            "window_complete": [True] * n,
            "net_revenue": np.concatenate([treated, holdout]),
        }
    )


def test_harm_rolls_the_champion_back_and_the_check_is_recorded(registry_store, tmp_path: Path):
    ml_settings, model_uri, run_id = registry_store
    settings = lake_settings(tmp_path / "lake")
    first, second = registered_pair(model_uri, run_id, ml_settings)
    assert str(registry.champion(ml_settings).version) == second

    rng = np.random.default_rng(3)
    rule = GuardrailRule(threshold=0.0, alpha=0.05, min_holdout=200, t_opt=10_000)
    harmless = attribution_rows(
        second, daily_revenue(rng, (1, 9_000), 0.0)[0], daily_revenue(rng, (1, 1_000), 0.0)[0]
    )
    check = guardrail.check_champion(harmless, settings, ml_settings, rule)
    assert check.verdict == guardrail.VERDICT_OK and check.rolled_back_to is None
    assert str(registry.champion(ml_settings).version) == second

    harmful = attribution_rows(
        second, daily_revenue(rng, (1, 9_000), -2.0)[0], daily_revenue(rng, (1, 1_000), 0.0)[0]
    )
    check = guardrail.check_champion(harmful, settings, ml_settings, rule)
    assert check.verdict == guardrail.VERDICT_ROLLBACK and check.interval.upper < 0
    assert check.rolled_back_to == first
    assert str(registry.champion(ml_settings).version) == first
    client = registry._client(ml_settings)
    tags = client.get_model_version(ml_settings.model_name, second).tags
    assert tags["rollback.reason"].startswith("guardrail: net revenue lift")
    assert tags["rollback.to"] == first

    # The restored champion has no decisions of its own yet: too few to judge, nothing more rolled back.
    check = guardrail.check_champion(harmful, settings, ml_settings, rule)
    assert check.verdict == guardrail.VERDICT_TOO_FEW and check.model_version == first
    log = guardrail.read_checks(settings)
    assert log["verdict"].to_list() == ["ok", "rollback", "too_few"]
    assert log["model_version"].to_list() == [second, second, first]
    assert log.row(1, named=True)["rolled_back_to"] == first
    assert log.row(1, named=True)["upper"] < 0 < log.row(0, named=True)["upper"]


PERSONS = 3_000
LOOP_DAYS = 10


def promoted(model_uri: str, run_id: str, ml_settings, champion_value: PolicyValue | None = None) -> str:
    """A version of ``model_uri`` registered and promoted to champion by the gate (its off-policy value beats
    ``champion_value``, the serving champion's); its version."""
    better, logged = policy_value("snips", 2.0), policy_value("logged", 0.5)
    registered = registry.register_candidate(
        model_uri, run_id, policy_value("snips", 1.0), logged, "card", ml_settings
    )
    version = str(registered.version)
    registry.apply_gate(
        version, registry.gate(better, champion_value, logged, 0.02, True), False, ml_settings
    )
    return version


def registered_pair(model_uri: str, run_id: str, ml_settings) -> tuple[str, str]:
    """Two versions registered and promoted one after the other: the first, then the second as champion."""
    first = promoted(model_uri, run_id, ml_settings)
    return first, promoted(model_uri, run_id, ml_settings, policy_value("snips", 1.0))


def run_daily_loop(
    harmful_version: str | None, settings, ml_settings, seed: int
) -> list[guardrail.GuardrailCheck]:
    """``LOOP_DAYS`` days of the loop on plain functions: each day the serving champion decides for every
    person (the policy's real holdout draw; ``harmful_version`` gives everyone its most expensive discount,
    40% off, and any other version sends a message that changes nothing), the persons buy (20% a day, baskets
    log-normal around 50 EUR), the day's outcomes are attributed (``ml.attribution.attribute``) and the
    guardrail checks the champion on the real registry, rolling it back when it must."""
    from ml.attribution import attribute
    from ml.policy import NBA_SCHEMA, holdout_mask, load_policy
    from tests.test_loop import COST, decision

    rng = np.random.default_rng(seed)
    policy = load_policy()
    persons = [f"person-{i:05d}" for i in range(PERSONS)]
    held = holdout_mask(persons, policy)
    decisions, orders, executed, checks = [], [], [], []
    for day in range(1, LOOP_DAYS + 1):
        version = str(registry.champion(ml_settings).version)
        harmful = version == harmful_version
        action = "discount_10" if harmful else "cart_reminder"
        day_rows = [
            decision(f"{p}|{day}", p, day, holdout=True, version=version)
            if h
            else decision(f"{p}|{day}", p, day, action, "email", version=version)
            for p, h in zip(persons, held, strict=True)
        ]
        decisions += day_rows
        executed += [
            (r["decision_id"], len(executed) + i) for i, r in enumerate(day_rows) if not r["is_holdout"]
        ]
        buys = rng.random(PERSONS) < 0.2
        basket = rng.lognormal(math.log(50.0), 0.6, PERSONS)
        price = np.where(held | (not harmful), basket, basket * 0.6)
        orders += [
            (p, datetime(2026, 11, day + 1, 14, tzinfo=UTC), float(v))
            for p, b, v in zip(persons, buys, price, strict=True)
            if b
        ]
        attribution = attribute(
            pl.DataFrame(decisions, schema=NBA_SCHEMA),
            pl.DataFrame(
                orders,
                schema={
                    "person_id": pl.String,
                    "created_at": pl.Datetime("us", "UTC"),
                    "total_amount": pl.Float64,
                },
                orient="row",
            ),
            pl.DataFrame(executed, schema={"decision_id": pl.String, "activity_id": pl.Int64}, orient="row"),
            datetime(2026, 11, day + 2, tzinfo=UTC),
            COST,
        )
        checks.append(guardrail.check_champion(attribution, settings, ml_settings))
    return checks


def test_the_daily_loop_rolls_a_harmful_champion_back_and_keeps_a_harmless_one(
    registry_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GUARDRAIL_MIN_HOLDOUT", "200")
    ml_settings, model_uri, run_id = registry_store
    ml_settings = get_ml_settings()
    first, second = registered_pair(model_uri, run_id, ml_settings)

    harmless = run_daily_loop(None, lake_settings(tmp_path / "harmless"), ml_settings, seed=11)
    assert [c.verdict for c in harmless].count(guardrail.VERDICT_ROLLBACK) == 0
    assert str(registry.champion(ml_settings).version) == second
    assert all(c.model_version == second for c in harmless)

    harmful = run_daily_loop(second, lake_settings(tmp_path / "harmful"), ml_settings, seed=12)
    verdicts = [c.verdict for c in harmful]
    assert verdicts.count(guardrail.VERDICT_ROLLBACK) == 1
    day = verdicts.index(guardrail.VERDICT_ROLLBACK)
    assert day <= 6 and harmful[day].rolled_back_to == first and harmful[day].interval.upper < 0
    # From the next day the restored version decides (no discount): measured on its own decisions only.
    assert all(c.model_version == first for c in harmful[day + 1 :])
    assert str(registry.champion(ml_settings).version) == first
    log = guardrail.read_checks(lake_settings(tmp_path / "harmful"))
    assert log.height == LOOP_DAYS and log["verdict"].to_list().count("rollback") == 1
