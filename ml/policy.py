"""The next-best-action policy: which actions a person is eligible for, what each is worth, and the one
decision per person and day, with the probability the policy gave it.

The policy itself lives in a versioned file (``ml/policy.yaml``, :func:`load_policy`); this module applies it:

- eligibility (:func:`eligibility`): an action needs a channel the person consented to as of the decision date
  (and an address on it: the CRM contact holding the consent, or the app user for push), a person over the
  frequency cap gets no action, recent purchasers get no discount;
- value: ``expected_revenue(x, a) - expected_revenue(x, no_action) - message_cost[channel]`` through the
  action's cheapest eligible channel (``no_action`` is worth 0);
- :func:`decide`: the highest-value eligible action, under daily budgets per action and channel; a stable
  hashed holdout gets ``no_action``; a hashed share of decisions explores uniformly among the eligible
  actions; a hashed canary share is served by the challenger. Every random draw is a hash of the person (and
  date), so deciding twice gives the same decisions.

Candidates (one row per person to decide for) carry ``person_id``, the consent column of every channel,
``address__<channel>`` (the CRM contact id for e-mail and SMS, the app user id for push; null when none),
``days_since_last_order``, ``touches`` (contacts within the frequency-cap window; missing means 0) and the
feature columns the fallback rules read.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

NO_ACTION = "no_action"
DECIDERS = ("champion", "challenger", "fallback")
ACTION_REASONS = (
    "eligible",
    "no_consent",
    "no_address",
    "frequency_cap",
    "recent_purchaser",
    "budget",
    "not_scored",
    "no_fallback_rule",
)
"""Why an action was (not) open to a person, as recorded in ``action_scores.reason``: ``eligible``; no
consented channel for it; consent but no address on any such channel; the frequency cap is reached; a recent
purchaser (discount actions); eligible, but its daily budget went to higher-value decisions; no score for it
(the model gave none); under the fallback policy, no rule holds for it."""
DECISION_REASONS = (
    "holdout",
    "exploration",
    "best_value",
    "budget_next_best",
    "no_positive_value",
    "no_eligible_action",
    "budget_exhausted",
)
"""Why the chosen action was chosen (``reason``): the person is in the holdout group; an exploration draw; the
highest positive value; the highest value once budgets were spent on better decisions; no eligible action has
a positive value; no action is eligible; the eligible actions of positive value had no budget left. Under the
fallback policy the reason reads ``fallback:<why the model was not used>;<code>``."""
NBA_SCHEMA = {
    "decision_id": pl.String,
    "decision_date": pl.Date,
    "person_id": pl.String,
    "action": pl.String,
    "channel": pl.String,
    "crm_contact_id": pl.Int64,
    "app_user_id": pl.String,
    "expected_value": pl.Float64,
    "probability": pl.Float64,
    "action_scores": pl.List(
        pl.Struct(
            {
                "action": pl.String,
                "expected_revenue": pl.Float64,
                "value": pl.Float64,
                "eligible": pl.Boolean,
                "reason": pl.String,
            }
        )
    ),
    "reason": pl.String,
    "is_holdout": pl.Boolean,
    "is_exploration": pl.Boolean,
    "is_canary": pl.Boolean,
    "decided_by": pl.String,
    "model_name": pl.String,
    "model_version": pl.String,
    "policy_version": pl.String,
    "as_of": pl.Datetime("us", "UTC"),
    "decided_at": pl.Datetime("us", "UTC"),
}
"""The columns of gold ``nba_decisions`` (and ``nba_current``, ``nba_shadow_decisions``)."""


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid (the message names the file and the field)."""


# -- the policy file -----------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Channel(_Strict):
    message_cost: float = Field(ge=0)
    consent: StrictStr = Field(min_length=1)
    address: Literal["crm_contact_id", "app_user_id"]


class _Action(_Strict):
    name: StrictStr = Field(min_length=1)
    channels: tuple[StrictStr, ...] = ()
    discount: bool = False


class _FrequencyCap(_Strict):
    touches: int = Field(ge=0)
    window_days: int = Field(ge=1)


class _RecentPurchasers(_Strict):
    days: int = Field(ge=0)


class _Eligibility(_Strict):
    frequency_cap: _FrequencyCap
    recent_purchasers: _RecentPurchasers


class _Share(_Strict):
    share: float = Field(ge=0, lt=1)
    salt: StrictStr = Field(min_length=1)


class Condition(_Strict):
    """A fallback rule's condition on one feature column (inclusive bounds, or equality)."""

    min: float | None = None
    max: float | None = None
    equals: bool | float | str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if self.min is None and self.max is None and self.equals is None:
            raise ValueError("a condition needs min, max or equals")
        return self


class FallbackRule(_Strict):
    """When every condition of ``when`` holds, ``action`` is scored at ``assumed_uplift`` EUR (fallback
    only)."""

    action: StrictStr
    assumed_uplift: float
    when: dict[StrictStr, Condition] = Field(min_length=1)


class _Fallback(_Strict):
    rules: tuple[FallbackRule, ...]


class _PolicyFile(_Strict):
    version: StrictStr = Field(min_length=1)
    channels: dict[StrictStr, _Channel] = Field(min_length=1)
    actions: tuple[_Action, ...] = Field(min_length=1)
    eligibility: _Eligibility
    budgets: dict[StrictStr, dict[StrictStr, int]] = {}
    holdout: _Share
    exploration: _Share
    canary: _Share
    fallback: _Fallback

    @model_validator(mode="after")
    def _consistent(self) -> _PolicyFile:
        names = [a.name for a in self.actions]
        if names[0] != NO_ACTION:
            raise ValueError(f"actions.0.name: the first action must be {NO_ACTION}, not {names[0]!r}")
        if len(set(names)) != len(names):
            raise ValueError("actions: an action is listed twice")
        for i, action in enumerate(self.actions):
            if action.name == NO_ACTION and (action.channels or action.discount):
                raise ValueError(f"actions.{i}: {NO_ACTION} has no channels and no discount")
            if action.name != NO_ACTION and not action.channels:
                raise ValueError(f"actions.{i}.channels: {action.name} needs at least one channel")
            for channel in action.channels:
                if channel not in self.channels:
                    raise ValueError(f"actions.{i}.channels: unknown channel {channel!r}")
        for action, per_channel in self.budgets.items():
            if action not in names[1:]:
                raise ValueError(f"budgets.{action}: not an action of the catalogue (other than no_action)")
            for channel, limit in per_channel.items():
                if channel not in self.channels:
                    raise ValueError(f"budgets.{action}.{channel}: unknown channel")
                if limit < 0:
                    raise ValueError(f"budgets.{action}.{channel}: a budget is not negative")
        for i, rule in enumerate(self.fallback.rules):
            if rule.action not in names[1:]:
                raise ValueError(f"fallback.rules.{i}.action: unknown action {rule.action!r}")
        return self


@dataclass(frozen=True, eq=False)
class Policy:
    """The parsed and validated policy file."""

    version: str
    actions: tuple[str, ...]
    """The catalogue, ``no_action`` first."""
    channels: tuple[str, ...]
    message_cost: Mapping[str, float]
    """EUR per message, per channel."""
    consent_column: Mapping[str, str]
    """The feature column holding the person's consent to each channel."""
    address: Mapping[str, str]
    """What each channel sends to: ``crm_contact_id`` or ``app_user_id``."""
    action_channels: Mapping[str, tuple[str, ...]]
    discount_actions: frozenset[str]
    cap_touches: int
    cap_window_days: int
    recent_purchaser_days: int
    budgets: Mapping[tuple[str, str], int]
    """Daily decisions allowed per (action, channel); a pair left out is unlimited."""
    holdout_share: float
    holdout_salt: str
    exploration_share: float
    exploration_salt: str
    canary_share: float
    canary_salt: str
    fallback_rules: tuple[FallbackRule, ...]

    @property
    def rule_columns(self) -> tuple[str, ...]:
        """The feature columns the fallback rules read."""
        return tuple(sorted({column for rule in self.fallback_rules for column in rule.when}))


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate the policy file (default: ``MlSettings.policy_file``); :class:`PolicyError` naming
    the file and the field when it is missing or invalid."""
    if path is None:
        from ml.settings import get_ml_settings

        path = get_ml_settings().policy_file
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PolicyError(f"policy file {path}: cannot be read: {error}") from error
    try:
        parsed = _PolicyFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in error.errors()
        )
        raise PolicyError(f"policy file {path}: {problems}") from None
    return Policy(
        version=parsed.version,
        actions=tuple(a.name for a in parsed.actions),
        channels=tuple(parsed.channels),
        message_cost={c: s.message_cost for c, s in parsed.channels.items()},
        consent_column={c: s.consent for c, s in parsed.channels.items()},
        address={c: s.address for c, s in parsed.channels.items()},
        action_channels={a.name: a.channels for a in parsed.actions},
        discount_actions=frozenset(a.name for a in parsed.actions if a.discount),
        cap_touches=parsed.eligibility.frequency_cap.touches,
        cap_window_days=parsed.eligibility.frequency_cap.window_days,
        recent_purchaser_days=parsed.eligibility.recent_purchasers.days,
        budgets={(a, c): n for a, per in parsed.budgets.items() for c, n in per.items()},
        holdout_share=parsed.holdout.share,
        holdout_salt=parsed.holdout.salt,
        exploration_share=parsed.exploration.share,
        exploration_salt=parsed.exploration.salt,
        canary_share=parsed.canary.share,
        canary_salt=parsed.canary.salt,
        fallback_rules=parsed.fallback.rules,
    )


# -- hashing -------------------------------------------------------------------------------------------------


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = 0xFFFFFFFFFFFFFFFF


def key_hashes(keys: Iterable[str] | pl.Series) -> np.ndarray:
    """The 64-bit FNV-1a hash of the UTF-8 bytes of every key (vectorised over the keys; uint64)."""
    series = keys if isinstance(keys, pl.Series) else pl.Series(list(keys), dtype=pl.String)
    binary = series.cast(pl.Binary).to_arrow()
    if isinstance(binary, pa.ChunkedArray):
        binary = binary.combine_chunks()
    n = len(binary)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if not n:
        return h
    buffers = binary.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[binary.offset : binary.offset + n + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    prime = np.uint64(_FNV_PRIME)
    with np.errstate(over="ignore"):
        if (lengths == lengths[0]).all():  # ids of one length: a byte matrix, one column at a time
            matrix = data[offsets[0] : offsets[-1]].reshape(n, int(lengths[0]))
            for j in range(matrix.shape[1]):
                h = (h ^ matrix[:, j].astype(np.uint64)) * prime
        else:
            padded = np.append(data, np.uint8(0))
            for j in range(int(lengths.max())):
                byte = padded[np.minimum(offsets[:-1] + j, len(padded) - 1)].astype(np.uint64)
                h = np.where(lengths > j, (h ^ byte) * prime, h)
    return h


def uniform(keys: Iterable[str] | pl.Series | np.ndarray, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per key, stable across runs, machines and library versions: the key's
    :func:`key_hashes` (or those hashes, given as uint64) XOR the FNV-1a hash of ``salt``, through the
    SplitMix64 finaliser."""
    h = keys.copy() if isinstance(keys, np.ndarray) else key_hashes(keys)
    seed = _FNV_OFFSET
    for byte in salt.encode():
        seed = ((seed ^ byte) * _FNV_PRIME) & _MASK
    with np.errstate(over="ignore"):
        h ^= np.uint64(seed)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def decision_ids(
    person_ids: Iterable[str] | pl.Series, decision_date: date, policy_version: str
) -> pl.Series:
    """The decision id of each person: the first 32 hex digits of sha256(``<person>|<date>|<version>``),
    computed by DuckDB (native code, every core)."""
    ids = person_ids if isinstance(person_ids, pl.Series) else pl.Series(list(person_ids), dtype=pl.String)
    persons = pl.DataFrame({"person_id": ids})
    with duckdb.connect() as connection:
        connection.register("persons", persons)
        hashed = connection.sql(
            "select left(sha256(person_id || $suffix), 32) as decision_id from persons",
            params={"suffix": f"|{decision_date.isoformat()}|{policy_version}"},
        ).to_arrow_table()
    return pl.Series("decision_id", hashed["decision_id"], dtype=pl.String)


def holdout_mask(person_ids: Iterable[str] | np.ndarray, policy: Policy) -> np.ndarray:
    """True for the persons of the stable holdout group (the same on every date); ids or their key hashes."""
    return uniform(person_ids, policy.holdout_salt) < policy.holdout_share


def canary_mask(person_ids: Iterable[str] | np.ndarray, policy: Policy) -> np.ndarray:
    """True for the persons the challenger serves when one is registered (the same on every date)."""
    return uniform(person_ids, policy.canary_salt) < policy.canary_share


def _labels(name: str, names: Iterable[str], codes: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    """A string column from integer codes into ``names`` (null where ``null``)."""
    labels = pl.Series(name, list(names), dtype=pl.String).gather(codes)
    if null is None:
        return labels
    return labels.zip_with(pl.Series(~null), pl.Series(name, [None] * len(labels), dtype=pl.String))


def _any_last(flags: np.ndarray) -> np.ndarray:
    """``flags.any(axis=-1)`` as element-wise ors of its last-axis slices (a few channels or actions): numpy
    reduces a short last axis an order of magnitude slower."""
    return functools.reduce(np.logical_or, np.moveaxis(flags, -1, 0), np.zeros(flags.shape[:-1], bool))


# -- eligibility ---------------------------------------------------------------------------------------------


def count_touches(events: pl.DataFrame, policy: Policy, decision_date: date) -> pl.DataFrame:
    """Touches per person within the frequency-cap window ``[decision_date - window_days, decision_date)``,
    from touch events (``person_id``, ``day``, ``channel``): one touch per person, day and channel."""
    start = decision_date.toordinal() - policy.cap_window_days
    window = events.filter((pl.col("day") < decision_date) & (pl.col("day") >= date.fromordinal(start)))
    return (
        window.unique(["person_id", "day", "channel"])
        .group_by("person_id")
        .agg(pl.len().cast(pl.Int64).alias("touches"))
    )


@dataclass
class _Open:
    """Eligibility of every (person, action, channel), as arrays over the candidates' rows."""

    ok: np.ndarray  # bool [persons, actions, channels]: the action may go through the channel
    reason: np.ndarray  # int8 [persons, actions]: index into ACTION_REASONS


def _with_touches(candidates: pl.DataFrame, touches: pl.DataFrame | None) -> pl.DataFrame:
    if touches is not None:
        candidates = candidates.drop("touches", strict=False).join(
            touches.select("person_id", "touches"), on="person_id", how="left", maintain_order="left"
        )
    if "touches" not in candidates.columns:
        return candidates.with_columns(pl.lit(0, pl.Int64).alias("touches"))
    return candidates.with_columns(pl.col("touches").fill_null(0))


def _open(candidates: pl.DataFrame, policy: Policy) -> _Open:
    n, actions, channels = candidates.height, policy.actions, policy.channels
    consent = np.column_stack(
        [candidates[policy.consent_column[c]].fill_null(False).to_numpy() for c in channels]
    ).astype(bool)
    addressed = np.column_stack([candidates[f"address__{c}"].is_not_null().to_numpy() for c in channels])
    capped = candidates["touches"].to_numpy() >= policy.cap_touches
    days = candidates["days_since_last_order"].cast(pl.Float64).fill_null(np.inf).to_numpy()
    recent = days < policy.recent_purchaser_days
    ok = np.zeros((n, len(actions), len(channels)), dtype=bool)
    reason = np.zeros((n, len(actions)), dtype=np.int8)
    code = {name: i for i, name in enumerate(ACTION_REASONS)}
    for a, action in enumerate(actions[1:], start=1):
        offered = np.array([c in policy.action_channels[action] for c in channels])
        consented = _any_last(consent & offered)
        reachable = consent & addressed & offered
        blocked = capped | (recent if action in policy.discount_actions else np.zeros(n, bool))
        ok[:, a, :] = reachable & ~blocked[:, None]
        reason[:, a] = np.select(
            [
                ~consented,
                ~_any_last(reachable),
                capped,
                recent & (action in policy.discount_actions),
            ],
            [code["no_consent"], code["no_address"], code["frequency_cap"], code["recent_purchaser"]],
            code["eligible"],
        )
    return _Open(ok=ok, reason=reason)


def eligibility(
    candidates: pl.DataFrame, policy: Policy, touches: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per person and action: ``eligible``, ``channel`` (the cheapest eligible channel it would go through;
    null when none, and for no_action) and ``reason`` (``eligible`` or why not, see :data:`ACTION_REASONS`).
    ``touches`` (``person_id``, ``touches``) overrides the candidates' ``touches`` column."""
    candidates = _with_touches(candidates, touches)
    opened = _open(candidates, policy)
    cost = np.array([policy.message_cost[c] for c in policy.channels])
    order = np.argsort(cost, kind="stable")
    parts = []
    for a, action in enumerate(policy.actions):
        ok = opened.ok[:, a, :][:, order]
        first = np.where(ok.any(axis=1), order[ok.argmax(axis=1)], -1)
        parts.append(
            pl.DataFrame(
                {
                    "person_id": candidates["person_id"],
                    "action": pl.Series([action] * candidates.height, dtype=pl.String),
                    "channel": _labels("channel", policy.channels, np.maximum(first, 0), first < 0),
                    "eligible": pl.Series(ok.any(axis=1) | (a == 0)),
                    "reason": _labels("reason", ACTION_REASONS, opened.reason[:, a]),
                }
            )
        )
    return pl.concat(parts).sort("person_id", "action", maintain_order=True)


# -- fallback ------------------------------------------------------------------------------------------------


def fallback_scores(candidates: pl.DataFrame, policy: Policy) -> pl.DataFrame:
    """The rule-based scores of the fallback policy: ``expected_revenue__no_action`` 0, and for every other
    action the highest ``assumed_uplift`` among its rules that hold (null when none holds)."""
    columns = [pl.lit(0.0).alias(f"expected_revenue__{NO_ACTION}")]
    for action in policy.actions[1:]:
        best = None
        for rule in policy.fallback_rules:
            if rule.action != action:
                continue
            holds = pl.all_horizontal(_condition(column, c) for column, c in rule.when.items())
            value = pl.when(holds.fill_null(False)).then(pl.lit(rule.assumed_uplift))
            best = value if best is None else pl.max_horizontal(best, value)
        columns.append(
            (best if best is not None else pl.lit(None, pl.Float64))
            .cast(pl.Float64)
            .alias(f"expected_revenue__{action}")
        )
    return candidates.select("person_id", *columns)


def _condition(column: str, condition: Condition) -> pl.Expr:
    tests = []
    if condition.min is not None:
        tests.append(pl.col(column) >= condition.min)
    if condition.max is not None:
        tests.append(pl.col(column) <= condition.max)
    if condition.equals is not None:
        tests.append(pl.col(column) == condition.equals)
    return pl.all_horizontal(tests)


# -- deciding ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """The registered model version that scored: its name, version and role (``champion`` or
    ``challenger``)."""

    name: str
    version: str
    role: Literal["champion", "challenger"] = "champion"


def _revenue(scores: pl.DataFrame, person_ids: pl.Series, actions: tuple[str, ...]) -> np.ndarray:
    """Expected revenue [persons, actions] aligned to ``person_ids`` (NaN where no score)."""
    columns = [f"expected_revenue__{a}" for a in actions]
    if scores["person_id"].equals(person_ids):
        aligned = scores
    else:
        aligned = pl.DataFrame({"person_id": person_ids}).join(
            scores.select("person_id", *columns), on="person_id", how="left", maintain_order="left"
        )
    values = aligned.select(pl.col(columns).cast(pl.Float64).fill_nan(None)).to_numpy()
    if np.isinf(values).any():
        raise ValueError("scores hold infinite expected revenues")
    return values.astype(np.float64)


def _best_option(value: np.ndarray, available: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per person: the action, channel (-1: none) and value of the best available option, or no_action (0)."""
    n, a, c = value.shape
    flat = np.where(available, value, -np.inf).reshape(n, a * c)
    index = flat.argmax(axis=1)
    best = flat[np.arange(n), index]
    act = best > 0
    return (
        np.where(act, index // c, 0),
        np.where(act, index % c, -1),
        np.where(act, best, 0.0),
    )


def decide(
    scores: pl.DataFrame,
    candidates: pl.DataFrame,
    policy: Policy,
    decision_date: date,
    model: ModelRef | None,
    deploy: bool = True,
    challenger: ModelRef | None = None,
    challenger_scores: pl.DataFrame | None = None,
    fallback_reason: str | None = None,
    decided_at: datetime | None = None,
) -> pl.DataFrame:
    """One decision per candidate, as ``nba_decisions`` rows (:data:`NBA_SCHEMA`), sorted by person.

    ``scores``: ``person_id`` + ``expected_revenue__<action>`` per action of the policy (a person or action
    without a score is not eligible for it). ``model`` None means the fallback policy decided (``scores`` from
    :func:`fallback_scores`; ``fallback_reason`` says why). ``deploy=False`` decides without holdout,
    exploration, canary and budgets (the fair comparison of policies), under the same eligibility. With
    ``challenger`` and its ``challenger_scores``, the canary share of persons is decided on the challenger's
    scores."""
    candidates = _with_touches(candidates, None).sort("person_id")
    persons = candidates["person_id"]
    if persons.n_unique() < len(persons):  # on the sorted column: no hashing
        raise ValueError("candidates hold a person twice: one decision per person and day")
    n, actions, channels = candidates.height, policy.actions, policy.channels
    day = f"|{decision_date.isoformat()}"
    hashed = key_hashes(persons)
    revenue = _revenue(scores, persons, actions)
    holdout = holdout_mask(hashed, policy) if deploy else np.zeros(n, bool)
    canary = np.zeros(n, bool)
    if deploy and model is not None and challenger is not None and challenger_scores is not None:
        canary = canary_mask(hashed, policy)
        revenue = np.where(canary[:, None], _revenue(challenger_scores, persons, actions), revenue)
    scored = ~np.isnan(revenue) & ~np.isnan(revenue[:, :1])
    incremental = np.nan_to_num(revenue - revenue[:, :1])
    cost = np.array([policy.message_cost[c] for c in channels])
    value = incremental[:, :, None] - cost[None, None, :]
    value[:, 0, :] = 0.0

    opened = _open(candidates, policy)
    ok = opened.ok & scored[:, :, None]
    reason = opened.reason.copy()
    missing = (reason == 0) & ~scored
    reason[missing] = ACTION_REASONS.index("no_fallback_rule" if model is None else "not_scored")
    reason[:, 0] = 0
    eligible = _any_last(ok)
    eligible[:, 0] = True

    # the greedy choice, under the daily budgets (the highest values get them; ties by a hash of the person)
    available = ok.copy()
    first_action, first_channel, first_best = _best_option(value, available)
    action, channel, best = first_action.copy(), first_channel.copy(), first_best.copy()
    tiebreak = uniform(hashed, "budget" + day)
    budgets = [
        (actions.index(a), channels.index(c), limit) for (a, c), limit in policy.budgets.items() if deploy
    ]
    while True:  # every pass that spills removes options, so this ends
        spilled = []
        for a, c, limit in budgets:
            taking = np.flatnonzero(~holdout & (action == a) & (channel == c))
            if len(taking) > limit:
                order = np.lexsort((tiebreak[taking], -best[taking]))
                available[taking[order[limit:]], a, c] = False
                spilled.append(taking[order[limit:]])
        if not spilled:
            break
        # only the persons who lost an option choose again
        rows = np.unique(np.concatenate(spilled))
        action[rows], channel[rows], best[rows] = _best_option(value[rows], available[rows])
    greedy, greedy_channel = action, channel
    # the best value of each action through an open channel
    open_value = functools.reduce(np.maximum, np.moveaxis(np.where(ok, value, -np.inf), -1, 0))
    budget_hit = eligible & ~_any_last(available)
    budget_hit[:, 0] = False
    reason[budget_hit] = ACTION_REASONS.index("budget")

    # exploration: uniform among the eligible actions (no_action included), through the best open channel
    share = policy.exploration_share if deploy else 0.0
    k = eligible.sum(axis=1)
    explore = np.zeros(n, bool)
    if share > 0:
        explore = ~holdout & (uniform(hashed, policy.exploration_salt + day) < share)
        draw = np.minimum((uniform(hashed, policy.exploration_salt + day + "|draw") * k).astype(int), k - 1)
        drawn = np.argmax(np.cumsum(eligible, axis=1) > draw[:, None], axis=1)
        rows = np.flatnonzero(explore)
        picked = drawn[rows]
        open_now = available[rows, picked, :]
        pool = np.where(open_now.any(axis=1)[:, None], open_now, ok[rows, picked, :])
        pick_value = np.where(pool, value[rows, picked, :], -np.inf)
        action = action.copy()
        channel = channel.copy()
        action[rows] = picked
        channel[rows] = np.where(picked > 0, pick_value.argmax(axis=1), -1)
    action = np.where(holdout, 0, action)
    channel = np.where(holdout, -1, channel)
    chosen_value = np.where(action > 0, value[np.arange(n), action, np.maximum(channel, 0)], 0.0)
    probability = np.where(holdout, 1.0, (1 - share) * (action == greedy) + share / k)

    code = np.select(
        [
            holdout,
            explore,
            (action > 0) & (greedy == first_action) & (greedy_channel == first_channel),
            action > 0,
            ~_any_last(eligible[:, 1:]),
            _any_last(budget_hit & (open_value > 0)),
        ],
        [DECISION_REASONS.index(r) for r in DECISION_REASONS[:2]]
        + [DECISION_REASONS.index(r) for r in ("best_value", "budget_next_best")]
        + [DECISION_REASONS.index(r) for r in ("no_eligible_action", "budget_exhausted")],
        DECISION_REASONS.index("no_positive_value"),
    )
    reasons = _labels("reason", DECISION_REASONS, code)
    if model is None:
        reasons = (f"fallback:{fallback_reason or 'no_model'};" + reasons).alias("reason")
    chosen_channel = _labels("channel", channels, np.maximum(channel, 0), channel < 0)
    crm = pl.Series("crm_contact_id", [None] * n, dtype=pl.Int64)
    app = pl.Series("app_user_id", [None] * n, dtype=pl.String)
    for c, name in enumerate(channels):
        on = pl.Series(channel == c)
        if policy.address[name] == "crm_contact_id":
            crm = candidates[f"address__{name}"].cast(pl.Int64).zip_with(on, crm).alias("crm_contact_id")
        else:
            app = candidates[f"address__{name}"].cast(pl.String).zip_with(on, app).alias("app_user_id")

    none = np.ones(n, bool)
    if model is None:
        decided_by = _labels("decided_by", ["fallback"], np.zeros(n, int))
        model_name = _labels("model_name", [""], np.zeros(n, int), none)
        model_version = _labels("model_version", [""], np.zeros(n, int), none)
    else:
        served = canary.astype(int) if challenger is not None else np.zeros(n, int)
        refs = [model, challenger or model]
        decided_by = _labels("decided_by", [model.role, "challenger"], served)
        model_name = _labels("model_name", [r.name for r in refs], served)
        model_version = _labels("model_version", [r.version for r in refs], served)

    # the value an ineligible action would have had through its cheapest offered channel, for the record
    shown = open_value
    cheapest = np.array(
        [min((policy.message_cost[c] for c in policy.action_channels[a]), default=0.0) for a in actions]
    )
    shown = np.where(np.isfinite(shown), shown, incremental - cheapest[None, :])
    shown[:, 0] = 0.0
    shown = np.where(scored, shown, np.nan)
    width = len(actions)
    action_scores = (
        pl.DataFrame(
            {
                "action": _labels("action", actions, np.tile(np.arange(width), n)),
                "expected_revenue": pl.Series(revenue.ravel()).fill_nan(None),
                "value": pl.Series(shown.ravel()).fill_nan(None),
                "eligible": pl.Series(eligible.ravel()),
                "reason": _labels("reason", ACTION_REASONS, reason.ravel()),
            }
        )
        .select(pl.struct(pl.all()).alias("action_scores"))
        .to_series()
        .reshape((n, width))
        .arr.to_list()
    )
    frame = pl.DataFrame({"person_id": persons, "action_scores": action_scores})
    as_of = datetime(decision_date.year, decision_date.month, decision_date.day, tzinfo=UTC)
    decided_at = decided_at or datetime.now(UTC)
    out = frame.select(
        decision_ids(persons, decision_date, policy.version),
        pl.lit(decision_date, pl.Date).alias("decision_date"),
        "person_id",
        _labels("action", actions, action),
        chosen_channel,
        crm,
        app,
        pl.Series("expected_value", chosen_value, pl.Float64),
        pl.Series("probability", probability, pl.Float64),
        "action_scores",
        reasons,
        pl.Series("is_holdout", holdout, pl.Boolean),
        pl.Series("is_exploration", explore, pl.Boolean),
        pl.Series("is_canary", canary, pl.Boolean),
        decided_by,
        model_name,
        model_version,
        pl.lit(policy.version, pl.String).alias("policy_version"),
        pl.lit(as_of, pl.Datetime("us", "UTC")).alias("as_of"),
        pl.lit(decided_at, pl.Datetime("us", "UTC")).alias("decided_at"),
    )
    return out.cast(NBA_SCHEMA)
