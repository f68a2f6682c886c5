"""The lift guardrail: roll the champion back when its measured lift of net revenue against the holdout is
confidently below a threshold, on an interval that stays valid however often it is looked at.

The measured lift is the difference of the mean net revenue per decision (order totals, already net of the
discount an action gives, less the cost of the messages sent) between the champion's treated decisions and the
randomised holdout's. A daily fixed-sample 95% interval, looked at every day, crosses any threshold by chance
far more often than 5% of the time; the interval here is a confidence sequence: with probability at least
``1 - alpha`` it covers the true lift at every look at once, so daily looks do not inflate false rollbacks.

The sequence is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences" (Annals of Statistics, 2024),
Theorem 2.2, built on Robbins' normal-mixture boundary (Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Annals of Statistics, 2021, Section 3.2): after ``t``
observations with mean ``m`` and standard deviation ``s``, the interval is::

    m +/- s * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) )

``rho`` tunes where the sequence is tightest; ``rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t_opt``
makes it tightest at ``t_opt`` observations (their eq. (8)). For the difference of two randomised groups the
observations are the augmented inverse-propensity terms with constant outcome regressions (their Section 3),
whose mean is the difference of the group means and whose variance per observation is
``t * (s_treated^2 / n_treated + s_holdout^2 / n_holdout)`` with ``t = n_treated + n_holdout``.

The rollback itself is :func:`ml.registry.rollback` (the ``champion`` alias back to the previous champion, the
reason tagged on both versions); every check, rollback or not, is appended to the lake's
``gold/guardrail_checks`` Delta table, which an operator reads (``python -m ml.guardrail --log``).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import polars as pl

from lake.settings import Settings, get_settings
from ml.settings import MlSettings, get_ml_settings

CHECKS_TABLE = "guardrail_checks"
"""gold/<CHECKS_TABLE>: one row per guardrail check."""
VERDICT_OK = "ok"
VERDICT_TOO_FEW = "too_few"
VERDICT_ROLLBACK = "rollback"
VERDICT_NO_PREVIOUS = "harm_no_previous"
CHECKS_SCHEMA = {
    "checked_at": pl.Datetime("us", "UTC"),
    "through_date": pl.Date,
    "model_name": pl.String,
    "model_version": pl.String,
    "treated": pl.Int64,
    "holdout": pl.Int64,
    "treated_net_revenue": pl.Float64,
    "holdout_net_revenue": pl.Float64,
    "lift": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "threshold": pl.Float64,
    "alpha": pl.Float64,
    "verdict": pl.String,
    "rolled_back_to": pl.String,
    "reason": pl.String,
}
"""The columns of ``gold/guardrail_checks``: when, through which decision date, which champion, the groups'
sizes and mean net revenue per decision, the lift and its anytime-valid interval, the rule, and what was
done (``ok``, ``too_few``, ``rollback``, ``harm_no_previous``: harm measured but no earlier champion)."""


def mixture_rho2(t_opt: float, alpha: float) -> float:
    """The mixture variance ``rho^2`` that makes the sequence tightest at ``t_opt`` observations
    (Waudby-Smith et al. 2024, eq. (8))."""
    if t_opt <= 0 or not 0 < alpha < 1:
        raise ValueError("t_opt must be positive and alpha in (0, 1)")
    two_log = -2.0 * math.log(alpha)
    return (two_log + math.log(two_log + 1.0)) / t_opt


def mixture_radius(t: float, sd: float, alpha: float, rho2: float) -> float:
    """Half-width of the two-sided normal-mixture confidence sequence for a mean after ``t`` observations of
    standard deviation ``sd`` (Waudby-Smith et al. 2024, Theorem 2.2)."""
    if t <= 0:
        return math.inf
    tr = t * rho2
    return sd * math.sqrt(2.0 * (tr + 1.0) / (t * t * rho2) * math.log(math.sqrt(tr + 1.0) / alpha))


@dataclass(frozen=True)
class LiftInterval:
    """The lift of the treated over the holdout (difference of mean outcomes) with its interval."""

    treated: int
    holdout: int
    treated_mean: float
    holdout_mean: float
    lift: float
    lower: float
    upper: float
    alpha: float


def lift_interval(
    treated: np.ndarray, holdout: np.ndarray, alpha: float = 0.05, t_opt: float = 10_000.0
) -> LiftInterval:
    """The difference of means of ``treated`` and ``holdout`` outcomes with its anytime-valid ``1 - alpha``
    interval (the module's confidence sequence, tightest near ``t_opt`` observations). Infinite bounds while
    either group has fewer than two observations or no spread at all (every outcome the same, as when nobody
    bought yet: its variance is not estimated)."""
    treated = np.asarray(treated, dtype=float)
    holdout = np.asarray(holdout, dtype=float)
    n1, n0 = len(treated), len(holdout)
    m1 = float(treated.mean()) if n1 else math.nan
    m0 = float(holdout.mean()) if n0 else math.nan
    lift = m1 - m0
    if n1 < 2 or n0 < 2 or treated.var() == 0 or holdout.var() == 0:
        return LiftInterval(n1, n0, m1, m0, lift, -math.inf, math.inf, alpha)
    t = n1 + n0
    variance = t * (treated.var(ddof=1) / n1 + holdout.var(ddof=1) / n0)
    radius = mixture_radius(t, math.sqrt(variance), alpha, mixture_rho2(t_opt, alpha))
    return LiftInterval(n1, n0, m1, m0, lift, lift - radius, lift + radius, alpha)


@dataclass(frozen=True)
class GuardrailRule:
    """When the guardrail acts: the upper bound of the lift's ``1 - alpha`` anytime-valid interval below
    ``threshold`` (EUR of net revenue per decision), once the holdout has ``min_holdout`` decisions."""

    threshold: float = 0.0
    alpha: float = 0.05
    min_holdout: int = 200
    t_opt: float = 10_000.0


def rule_from(settings: MlSettings) -> GuardrailRule:
    """The guardrail rule of the ML settings."""
    return GuardrailRule(
        threshold=settings.guardrail_threshold,
        alpha=settings.guardrail_alpha,
        min_holdout=settings.guardrail_min_holdout,
        t_opt=settings.guardrail_t_opt,
    )


def verdict(interval: LiftInterval, rule: GuardrailRule) -> str:
    """``rollback`` when the interval lies confidently below the threshold, ``too_few`` while the holdout is
    smaller than the rule's minimum, else ``ok``."""
    if interval.holdout < rule.min_holdout:
        return VERDICT_TOO_FEW
    return VERDICT_ROLLBACK if interval.upper < rule.threshold else VERDICT_OK


@dataclass(frozen=True)
class GuardrailCheck:
    """One check of the serving champion: the interval, the verdict and what was done."""

    through_date: date | None
    model_name: str
    model_version: str
    interval: LiftInterval
    rule: GuardrailRule
    verdict: str
    rolled_back_to: str | None
    reason: str

    def line(self) -> str:
        """One line for logs and the loop's output."""
        i = self.interval
        done = f" -> rolled back to version {self.rolled_back_to}" if self.rolled_back_to else ""
        return (
            f"guardrail {self.model_name} v{self.model_version}: lift {i.lift:+.3f} EUR per decision "
            f"[{i.lower:+.3f}, {i.upper:+.3f}] ({i.treated:,} treated, {i.holdout:,} holdout), threshold "
            f"{self.rule.threshold:+.3f}: {self.verdict}{done}"
        )


def champion_outcomes(attribution: pl.DataFrame, model_version: str) -> tuple[np.ndarray, np.ndarray]:
    """Net revenue per decision of the champion's treated decisions and of the holdout, from the complete
    windows of ``ml.attribution`` rows decided by ``model_version`` (canary decisions left out)."""
    rows = attribution.filter(
        pl.col("window_complete")
        & (pl.col("model_version") == model_version)
        & (pl.col("decided_by") == "champion")
    )
    treated = rows.filter(~pl.col("is_holdout"))["net_revenue"].to_numpy()
    holdout = rows.filter(pl.col("is_holdout"))["net_revenue"].to_numpy()
    return treated, holdout


def check_champion(
    attribution: pl.DataFrame,
    settings: Settings | None = None,
    ml_settings: MlSettings | None = None,
    rule: GuardrailRule | None = None,
) -> GuardrailCheck | None:
    """Measure the serving champion's lift on ``attribution`` (rows of :func:`ml.attribution.attribute`), roll
    it back (:func:`ml.registry.rollback`) when the rule says so, and append the check to
    ``gold/guardrail_checks``. None when no champion serves."""
    from ml import registry

    settings = settings or get_settings()
    ml_settings = ml_settings or get_ml_settings()
    rule = rule or rule_from(ml_settings)
    champion = registry.champion(ml_settings)
    if champion is None:
        return None
    version = str(champion.version)
    treated, holdout = champion_outcomes(attribution, version)
    interval = lift_interval(treated, holdout, rule.alpha, rule.t_opt)
    outcome = verdict(interval, rule)
    complete = attribution.filter(pl.col("window_complete") & (pl.col("model_version") == version))
    through = complete["decision_date"].max() if complete.height else None
    reason = (
        f"net revenue lift {interval.lift:+.3f} EUR per decision, {1 - rule.alpha:.0%} anytime-valid "
        f"interval [{interval.lower:+.3f}, {interval.upper:+.3f}] below the threshold {rule.threshold:+.3f} "
        f"({interval.treated} treated, {interval.holdout} holdout decisions through {through})"
    )
    rolled_back_to = None
    if outcome == VERDICT_ROLLBACK:
        try:
            change = registry.rollback(f"guardrail: {reason}", ml_settings)
            rolled_back_to = change.current
        except registry.RegistryError as error:
            outcome = VERDICT_NO_PREVIOUS
            reason = f"{reason}; not rolled back: {error}"
    elif outcome == VERDICT_TOO_FEW:
        reason = f"{interval.holdout} holdout decisions with complete outcomes, fewer than {rule.min_holdout}"
    else:
        reason = (
            f"lift {interval.lift:+.3f} [{interval.lower:+.3f}, {interval.upper:+.3f}] not confidently below "
            f"{rule.threshold:+.3f}"
        )
    check = GuardrailCheck(
        through, ml_settings.model_name, version, interval, rule, outcome, rolled_back_to, reason
    )
    record_check(check, settings)
    return check


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def record_check(check: GuardrailCheck, settings: Settings) -> None:
    """Append the check to ``gold/guardrail_checks``."""
    from deltalake import write_deltalake

    from lake.gold import gold_uri

    i = check.interval
    row = pl.DataFrame(
        [
            {
                "checked_at": datetime.now(UTC),
                "through_date": check.through_date,
                "model_name": check.model_name,
                "model_version": check.model_version,
                "treated": i.treated,
                "holdout": i.holdout,
                "treated_net_revenue": _finite(i.treated_mean),
                "holdout_net_revenue": _finite(i.holdout_mean),
                "lift": _finite(i.lift),
                "lower": _finite(i.lower),
                "upper": _finite(i.upper),
                "threshold": check.rule.threshold,
                "alpha": check.rule.alpha,
                "verdict": check.verdict,
                "rolled_back_to": check.rolled_back_to,
                "reason": check.reason,
            }
        ],
        schema=CHECKS_SCHEMA,
    )
    write_deltalake(
        gold_uri(settings, CHECKS_TABLE),
        row.to_arrow(),
        mode="append",
        storage_options=settings.storage_options,
    )


def read_checks(settings: Settings | None = None) -> pl.DataFrame:
    """Every recorded guardrail check, oldest first (empty before the first)."""
    from deltalake import DeltaTable

    from lake.gold import gold_uri

    settings = settings or get_settings()
    uri = gold_uri(settings, CHECKS_TABLE)
    if not DeltaTable.is_deltatable(uri, storage_options=settings.storage_options or None):
        return pl.DataFrame(schema=CHECKS_SCHEMA)
    return pl.read_delta(uri, storage_options=settings.storage_options or None).sort("checked_at")


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.guardrail --log [N]``: the last guardrail checks."""
    parser = argparse.ArgumentParser(prog="python -m ml.guardrail", description=main.__doc__)
    parser.add_argument("--log", type=int, default=20, help="how many of the latest checks to show")
    args = parser.parse_args(argv)
    checks = read_checks().tail(args.log)
    if checks.is_empty():
        print("no guardrail check recorded yet")
        return 0
    with pl.Config(tbl_rows=args.log, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=200):
        print(checks.drop("reason"))
    for row in checks.filter(pl.col("verdict") != VERDICT_OK).iter_rows(named=True):
        print(f"{row['checked_at']:%Y-%m-%d %H:%M} v{row['model_version']} {row['verdict']}: {row['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
