"""When to retrain before the weekly training: the champion's drift and its age.

Retraining is requested when the latest drift check of the champion's scoring population is at or above the
error threshold (a warning alone is shown, not acted on: a moderate shift is common after a campaign or a
season and the weekly training follows anyway), or when the champion version is older than
``CHAMPION_MAX_AGE_DAYS`` (counted from its registration, the day it was trained). Each cause is requested at
most once per champion version: its key names the model, the version and the cause, so a refused candidate
does not make the same cause ask again every day (the weekly training still runs); a new champion starts
afresh.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ml.drift import STATUSES

DRIFT_CAUSE = "drift"
AGE_CAUSE = "age"


@dataclass(frozen=True)
class DriftObservation:
    """The latest result of one drift check: which check, the model version and the decision date it compared,
    its verdict (``ok``, ``warn`` or ``error``) and the worst column with its PSI, for people."""

    check: str
    model_version: str
    decision_date: str
    status: str
    worst: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"drift status {self.status!r} is not one of {STATUSES}")


@dataclass(frozen=True)
class Champion:
    """The serving version of the registered model and when it was registered (UTC)."""

    model_name: str
    version: str
    registered_at: datetime


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to request a training run, why (a sentence), the run key and the cause keys the request
    covers."""

    retrain: bool
    reason: str
    run_key: str | None = None
    causes: tuple[str, ...] = ()


def cause_key(champion: Champion, cause: str) -> str:
    """The key of one cause for one champion version, e.g. ``drift:nba_uplift:v3``."""
    return f"{cause}:{champion.model_name}:v{champion.version}"


def retrain_decision(
    champion: Champion | None,
    drift: Sequence[DriftObservation],
    now: datetime,
    max_age_days: int,
    requested: Collection[str] = (),
    trigger: str = "error",
) -> RetrainDecision:
    """Decide whether to request retraining now.

    ``drift``: the latest result of each drift check (results about another version than the champion are
    ignored: they measured a model that no longer serves); ``requested``: the cause keys already requested
    (:func:`cause_key`); ``trigger``: the drift verdict from which retraining is requested (``error`` or
    ``warn``). Without a champion nothing is requested (the weekly training makes the first one)."""
    if trigger not in STATUSES[1:]:
        raise ValueError(f"trigger {trigger!r} must be warn or error")
    if champion is None:
        return RetrainDecision(False, "no champion yet: the weekly training registers the first one")
    causes: list[tuple[str, str]] = []
    own = [d for d in drift if d.model_version == champion.version]
    drifted = [d for d in own if STATUSES.index(d.status) >= STATUSES.index(trigger)]
    if drifted:
        described = ", ".join(f"{d.check} {d.status} on {d.decision_date} ({d.worst})" for d in drifted)
        causes.append((cause_key(champion, DRIFT_CAUSE), f"drift of version {champion.version}: {described}"))
    age = now - champion.registered_at
    days = age / timedelta(days=1)
    if age > timedelta(days=max_age_days):
        causes.append(
            (
                cause_key(champion, AGE_CAUSE),
                f"version {champion.version} is {days:.1f} days old (limit {max_age_days})",
            )
        )
    new = [key for key, _ in causes if key not in requested]
    if new:
        return RetrainDecision(
            True,
            "retrain: " + "; ".join(text for _, text in causes),
            run_key="+".join(new),
            causes=tuple(key for key, _ in causes),
        )
    if causes:
        return RetrainDecision(
            False,
            "retraining already requested for "
            + "; ".join(text for _, text in causes)
            + " (each cause once per champion version; the weekly training goes on)",
        )
    latest = ", ".join(f"{d.check} {d.status} on {d.decision_date}" for d in own) or "no drift check yet"
    return RetrainDecision(
        False,
        f"champion version {champion.version} is {days:.1f} days old (limit {max_age_days}) and its latest "
        f"drift is below the {trigger} threshold ({latest})",
    )
