"""The daily batch of next-best actions: score every person of a snapshot date with the champion model, decide
with the policy, and publish the decisions to gold.

:func:`score_and_decide` reads gold ``person_features_daily`` of the date in chunks (one model call per chunk,
bounded memory), leaves out erased persons (the suppression list) and persons who objected to profiling
(``has_profiling_consent`` false) before anything is scored, and decides with :func:`ml.policy.decide`. The
model is the version behind ``models:/<model_name>@champion``; when none is usable (none registered, loading
or scoring fails, a feature it needs is missing) the policy file's rule-based fallback decides and its rows
say ``decided_by = "fallback"`` with the reason. A registered challenger scores the same persons into
``nba_shadow_decisions`` (never sent) and serves the policy's canary share of persons.

The features are read and the models run by the engine of ``SCORING_ENGINE`` (:class:`Features`): this
process (:class:`LocalFeatures`, polars in chunks) or a Spark Connect server
(:class:`ml.spark_scoring.SparkFeatures`, each model an MLflow Spark UDF); the exclusions, the checks of the
scores, the policy and the writes are the same on both.

Gold tables written: ``nba_decisions`` and ``nba_shadow_decisions`` (partitioned by ``decision_date``; a
re-run of a date replaces that date's rows in one commit) and ``nba_current`` (the decisions of the latest
decision date: the current decision of every person still decided for; an erased or objecting person has
none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from lake import delta, suppression
from lake.gold import gold_uri
from lake.settings import Settings, disable_telemetry, get_settings
from ml.data import DECISIONS_TABLE, FEATURES_TABLE, IDENTITY_TABLE
from ml.policy import (
    NBA_SCHEMA,
    NO_ACTION,
    ModelRef,
    Policy,
    count_touches,
    decide,
    fallback_scores,
    load_policy,
)
from ml.registry import CHALLENGER, CHAMPION
from ml.settings import MlSettings, get_ml_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

log = logging.getLogger(__name__)

CURRENT = "nba_current"
SHADOW = "nba_shadow_decisions"
PROFILING_CONSENT = "has_profiling_consent"
KEY_COLUMNS = ("person_id", "snapshot_date")


class ScoringError(RuntimeError):
    """The batch cannot decide for the date at all (no features for it, or no profiling consent column)."""


@dataclass
class ScoringReport:
    """What a scoring run decided, in aggregate (no personal data)."""

    decision_date: str
    policy_version: str
    persons: int
    """Persons decided for."""
    excluded_erased: int
    excluded_profiling_objection: int
    decided_by: str
    """``champion`` or ``fallback`` (the canary share is served by the challenger either way)."""
    fallback_reason: str | None
    model_name: str
    model_version: str | None
    challenger_version: str | None
    decisions: dict[str, int] = field(default_factory=dict)
    """Decisions per ``action/channel`` (``no_action`` alone)."""
    holdout_share: float = 0.0
    exploration_share: float = 0.0
    canary_share: float = 0.0
    expected_value_total: float = 0.0
    """Sum of the chosen actions' expected incremental values (EUR)."""
    shadow_rows: int = 0
    shadow_error: str | None = None

    def summary(self) -> str:
        """A few readable lines for the terminal."""
        who = (
            f"champion {self.model_name} v{self.model_version}"
            if self.decided_by == "champion"
            else f"fallback policy ({self.fallback_reason})"
        )
        lines = [
            f"decisions of {self.decision_date} (policy {self.policy_version}) by {who}: {self.persons} "
            "persons",
            f"  left out: {self.excluded_erased} erased, {self.excluded_profiling_objection} objected to "
            "profiling",
            f"  holdout {self.holdout_share:.2%}, exploration {self.exploration_share:.2%}, "
            f"canary {self.canary_share:.2%}, expected value {self.expected_value_total:,.2f} EUR",
        ]
        lines += [f"  {key:<24} {n:>9}" for key, n in sorted(self.decisions.items())]
        if self.challenger_version is not None:
            lines.append(f"  shadow: challenger v{self.challenger_version}, {self.shadow_rows} decisions")
        return "\n".join(lines)


# -- reading -------------------------------------------------------------------------------------------------


def latest_snapshot_date(settings: Settings | None = None) -> date:
    """The latest snapshot date of gold ``person_features_daily``."""
    return _latest(LocalFeatures(settings or get_settings()))


def _latest(features: Features) -> date:
    latest = features.latest_date()
    if latest is None:
        raise ScoringError(f"gold {FEATURES_TABLE} has no rows: build the features first")
    return latest


def _valid_at(lazy: pl.LazyFrame, instant: datetime) -> pl.LazyFrame:
    """The versions of a silver ``_history`` table live at ``instant`` (deletes and truncates left out)."""
    return lazy.filter(
        (pl.col("_valid_from") <= instant)
        & (pl.col("_valid_to").is_null() | (pl.col("_valid_to") > instant))
        & ~pl.col("_op").is_in(["d", "t"])
    )


def _identity(settings: Settings, as_of: datetime) -> pl.DataFrame:
    """CRM contacts and app users linked to their person before ``as_of``."""
    lazy = delta.scan(gold_uri(settings, IDENTITY_TABLE), settings.storage_options)
    if lazy is None:
        return pl.DataFrame(
            schema={
                "identifier_type": pl.String,
                "identifier": pl.String,
                "person_id": pl.String,
                "linked_at": pl.Datetime("us", "UTC"),
            }
        )
    return (
        lazy.filter(
            pl.col("identifier_type").is_in(["crm_contact_id", "app_user_id"]) & (pl.col("linked_at") < as_of)
        )
        .select("identifier_type", "identifier", "person_id", "linked_at")
        .collect()
    )


def addresses(settings: Settings, policy: Policy, as_of: datetime, identity: pl.DataFrame) -> pl.DataFrame:
    """Per person (in no particular order), ``address__<channel>``: for a CRM channel the person's live
    contact that holds a granted consent to it as of ``as_of`` (the latest granted, then the lowest contact
    id); for push the app user (the latest linked, then the lowest id)."""
    contacts = identity.filter(pl.col("identifier_type") == "crm_contact_id").select(
        "person_id", pl.col("identifier").cast(pl.Int64, strict=False).alias("contact_id")
    )
    silver = delta.table_uri(settings, "silver", "crm")
    consents_lazy = delta.scan(f"{silver}/consents_history", settings.storage_options)
    contacts_lazy = delta.scan(f"{silver}/contacts_history", settings.storage_options)
    granted = pl.DataFrame(
        schema={"contact_id": pl.Int64, "channel": pl.String, "updated_at": pl.Datetime("us", "UTC")}
    )
    if consents_lazy is not None and contacts_lazy is not None:
        live = _valid_at(contacts_lazy, as_of).select("contact_id").unique()
        granted = (
            _valid_at(consents_lazy, as_of)
            .filter(pl.col("status") == "granted")
            .select("contact_id", "channel", "updated_at")
            .join(live, on="contact_id", how="semi")
            .collect()
        )
    out = identity.select("person_id").unique()  # in no particular order: the callers join it
    for channel in policy.channels:
        if policy.address[channel] == "app_user_id":
            chosen = _first_per_person(
                identity.filter(pl.col("identifier_type") == "app_user_id"), "identifier", "linked_at"
            )
        else:
            chosen = _first_per_person(
                contacts.join(granted.filter(pl.col("channel") == channel), on="contact_id"),
                "contact_id",
                "updated_at",
            )
        out = out.join(chosen.rename({"address": f"address__{channel}"}), on="person_id", how="left")
    return out


def _first_per_person(rows: pl.DataFrame, address: str, latest: str) -> pl.DataFrame:
    """``person_id`` and ``address``: per person, the ``address`` of the row with the latest ``latest`` (an
    unknown time last), then the lowest ``address``."""
    return rows.group_by("person_id").agg(
        pl.col(address)
        .sort_by([latest, address], descending=[True, False], nulls_last=True)
        .first()
        .alias("address")
    )


def touches(
    settings: Settings, policy: Policy, decision_date: date, as_of: datetime, identity: pl.DataFrame
) -> pl.DataFrame:
    """Touches per person within the frequency-cap window before ``decision_date``: the CRM's campaign touches
    (silver ``crm/activities``, through the person's contacts) and this policy's earlier decisions that were
    actions (gold ``nba_decisions``), one per person, day and channel."""
    start = decision_date - timedelta(days=policy.cap_window_days)
    events = [pl.DataFrame(schema={"person_id": pl.String, "day": pl.Date, "channel": pl.String})]
    activities = delta.scan(
        delta.table_uri(settings, "silver", "crm", "activities"), settings.storage_options
    )
    if activities is not None:
        contacts = identity.filter(pl.col("identifier_type") == "crm_contact_id").select(
            "person_id", pl.col("identifier").cast(pl.Int64, strict=False).alias("contact_id")
        )
        sent = (
            activities.filter(
                (pl.col("activity_type") == "campaign_touch")
                & (pl.col("sent_at") < as_of)
                & (pl.col("sent_at") >= as_of - timedelta(days=policy.cap_window_days))
            )
            .select("contact_id", pl.col("sent_at").dt.date().alias("day"), "channel")
            .collect()
        )
        events.append(sent.join(contacts, on="contact_id").select("person_id", "day", "channel"))
    earlier = delta.scan(gold_uri(settings, DECISIONS_TABLE), settings.storage_options)
    if earlier is not None:
        events.append(
            earlier.filter(
                (pl.col("decision_date") >= start)
                & (pl.col("decision_date") < decision_date)
                & (pl.col("action") != NO_ACTION)
            )
            .select("person_id", pl.col("decision_date").alias("day"), "channel")
            .collect()
        )
    return count_touches(pl.concat(events, how="vertical_relaxed"), policy, decision_date)


def erased_identities(identity: pl.DataFrame, suppressed: set[str], secret: str) -> pl.Series:
    """The persons whose CRM contact or app user (rows of ``identity``) is on the suppression list."""
    if not suppressed:
        return pl.Series("person_id", [], dtype=pl.String)
    wanted = pl.Series(list(suppressed), dtype=pl.String).implode()
    hits = [
        group.filter(suppression.hashes(kind, group["identifier"], secret).is_in(wanted).fill_null(False))
        for (kind,), group in identity.partition_by("identifier_type", as_dict=True).items()
    ]
    return pl.concat([identity.head(0), *hits])["person_id"].unique()


def erased_persons(
    person_ids: pl.Series, erased_ids: pl.Series, suppressed: set[str], secret: str
) -> pl.Series:
    """True for the persons erased: their person id is on the suppression list, or they are in ``erased_ids``
    (:func:`erased_identities`)."""
    if not suppressed:
        return pl.Series([False] * len(person_ids), dtype=pl.Boolean)
    wanted = pl.Series(list(suppressed), dtype=pl.String).implode()
    hit = suppression.hashes(suppression.PERSON_ID, person_ids, secret).is_in(wanted).fill_null(False)
    return hit | person_ids.is_in(erased_ids.implode())


def erased_among(
    person_ids: pl.Series, identity: pl.DataFrame, suppressed: set[str], secret: str
) -> pl.Series:
    """The persons of ``person_ids`` who are erased: their person id, CRM contact or app user (rows of
    ``identity``) is on the suppression list (:func:`erased_persons`)."""
    erased_ids = erased_identities(identity, suppressed, secret)
    return person_ids.filter(erased_persons(person_ids, erased_ids, suppressed, secret)).unique()


def excluded(chunk: pl.DataFrame, erased: pl.Series) -> tuple[pl.Series, pl.Series]:
    """For each row of a ``person_features_daily`` chunk: whether the person is erased (in ``erased``, see
    :func:`erased_among`), and whether, not erased, they objected to profiling (``has_profiling_consent``
    false). Neither is scored."""
    gone = chunk["person_id"].is_in(erased.implode())
    return gone, ~chunk[PROFILING_CONSENT].fill_null(True) & ~gone


def scorable_features(
    snapshot_date: date, settings: Settings | None = None, columns: list[str] | None = None
) -> pl.DataFrame:
    """``person_id`` and the feature ``columns`` (default: every column but the keys) of the persons the batch
    scores for ``snapshot_date``: the date's rows of gold ``person_features_daily`` less the erased persons
    and those who objected to profiling, sorted by person."""
    settings = settings or get_settings()
    lazy = delta.scan(gold_uri(settings, FEATURES_TABLE), settings.storage_options)
    if lazy is None:
        raise ScoringError(f"gold {FEATURES_TABLE} does not exist: build the features first")
    available = lazy.collect_schema().names()
    if PROFILING_CONSENT not in available:
        raise ScoringError(f"gold {FEATURES_TABLE} has no {PROFILING_CONSENT} column: nobody can be scored")
    columns = [c for c in available if c not in KEY_COLUMNS] if columns is None else list(columns)
    frame = (
        lazy.filter(pl.col("snapshot_date") == snapshot_date)
        .select(list(dict.fromkeys(["person_id", PROFILING_CONSENT, *columns])))
        .collect()
    )
    as_of = datetime(snapshot_date.year, snapshot_date.month, snapshot_date.day, tzinfo=UTC)
    erased = erased_among(
        frame["person_id"], _identity(settings, as_of), suppression.suppressed(settings), settings.pii_secret
    )
    gone, objected = excluded(frame, erased)
    return frame.filter(~gone & ~objected).select("person_id", *columns).sort("person_id")


# -- scoring -------------------------------------------------------------------------------------------------


def model_input(frame: pl.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The pandas frame the served model takes (:func:`ml.model.pyfunc_input`, the format of its signature:
    numbers and booleans as floats, categories as strings); the model itself maps categories and missing
    values."""
    from ml.model import pyfunc_input  # imports mlflow: only when a model scores

    return pyfunc_input(frame, columns)


def predict_scores(model, frame: pl.DataFrame, columns: list[str], actions: tuple[str, ...]) -> pl.DataFrame:
    """``person_id`` and ``expected_revenue__<action>`` of every action, from one model call on ``frame``;
    ValueError when the model gives fewer rows, lacks an action or gives a non-finite value."""
    uplift = uplift_model(model)
    if uplift is not None:
        predicted = uplift.predict(frame.select(columns))
    else:
        import pandas as pd  # imported with mlflow, in the thread that loads the models

        output = model.predict(model_input(frame, columns))
        predicted = pl.from_pandas(output) if isinstance(output, pd.DataFrame) else pl.DataFrame(output)
    return checked_scores(frame["person_id"], predicted, actions)


def checked_scores(person_ids: pl.Series, predicted: pl.DataFrame, actions: tuple[str, ...]) -> pl.DataFrame:
    """``person_id`` and ``expected_revenue__<action>`` of every action, from a model's output ``predicted``
    for ``person_ids`` (row for row); ValueError when it has fewer rows, lacks an action or holds a missing
    or non-finite value."""
    wanted = [f"expected_revenue__{a}" for a in actions]
    lacking = [c for c in wanted if c not in predicted.columns]
    if lacking:
        raise ValueError(f"the model gives no {', '.join(lacking)}")
    if predicted.height != person_ids.len():
        raise ValueError(f"the model gave {predicted.height} rows for {person_ids.len()}")
    values = predicted.select(pl.col(wanted).cast(pl.Float64))
    if not np.isfinite(values.to_numpy()).all():
        raise ValueError("the model gave a missing or infinite expected revenue")
    return pl.concat([person_ids.to_frame("person_id"), values], how="horizontal")


def uplift_model(model):
    """The :class:`ml.train.UpliftModel` a loaded pyfunc serves (:class:`ml.model.UpliftPyfunc`), else None.
    The batch scores through it directly: the same numbers as the pyfunc's ``predict``, without the round trip
    through pandas and the signature check (the batch checks the columns itself)."""
    from ml.model import UpliftPyfunc  # imports mlflow: only when a model scores

    try:
        python_model = model.unwrap_python_model()
    except Exception:  # not a pyfunc of a Python model (another flavour, a test double): use its predict
        return None
    return python_model.model if isinstance(python_model, UpliftPyfunc) else None


def input_columns(model, available: list[str]) -> list[str]:
    """The feature columns the model takes: its signature's inputs, or every column but the keys."""
    schema = model.metadata.get_input_schema() if hasattr(model, "metadata") else None
    if schema is not None and schema.has_input_names():
        return list(schema.input_names())
    return [c for c in available if c not in KEY_COLUMNS]


def score_frame(
    features: pl.DataFrame,
    model,
    policy: Policy,
    decision_date: date,
    model_ref: ModelRef,
    chunk_rows: int = 100_000,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Score and decide for persons already in memory (the benchmark's path): ``features`` holds the feature
    columns and the candidates' columns (see :mod:`ml.policy`); one model call per chunk of ``chunk_rows``,
    then one :func:`ml.policy.decide` over all of them. Returns the decisions."""
    columns = columns or input_columns(model, features.columns)
    scores = pl.concat(
        [
            predict_scores(model, features.slice(start, chunk_rows), columns, policy.actions)
            for start in range(0, features.height, chunk_rows)
        ]
    )
    return decide(scores, features, policy, decision_date, model_ref)


@dataclass
class Scorer:
    """A registered model version loaded for scoring, and the scores it gave, until it fails."""

    ref: ModelRef
    model: object
    columns: list[str]
    """The feature columns the model takes (:func:`input_columns`)."""
    scores: list[pl.DataFrame] = field(default_factory=list)
    error: str | None = None

    def score(self, chunk: pl.DataFrame, actions: tuple[str, ...]) -> None:
        """Score a chunk of features in this process (:func:`predict_scores`)."""
        self.attempt(lambda: predict_scores(self.model, chunk, self.columns, actions))

    def attempt(self, scoring: Callable[[], pl.DataFrame]) -> None:
        """Keep the scores ``scoring`` gives (see :func:`checked_scores`); after a failure, score no more."""
        if self.error is not None:
            return
        try:
            self.scores.append(scoring())
        except Exception as error:  # any failure of the model hands the decision to the fallback
            log.warning("scoring with %s v%s failed: %s", self.ref.name, self.ref.version, error)
            self.error = "scoring_failed"


def _load(ml: MlSettings, alias: str, available: list[str]) -> tuple[Scorer | None, str | None]:
    """The model version behind ``models:/<name>@<alias>`` loaded for scoring, or None and why not."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=ml.tracking_uri, registry_uri=ml.tracking_uri)
    try:
        version = client.get_model_version_by_alias(ml.model_name, alias)
    except MlflowException:
        return None, f"no_{alias}"
    try:
        mlflow.set_registry_uri(ml.tracking_uri)
        mlflow.set_tracking_uri(ml.tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{ml.model_name}/{version.version}")
    except Exception as error:  # a model that cannot be loaded is not usable, whatever the cause
        log.warning("loading %s v%s (%s) failed: %s", ml.model_name, version.version, alias, error)
        return None, f"{alias}_load_failed"
    columns = input_columns(model, available)
    lacking = [c for c in columns if c not in available]
    if lacking:
        log.warning("%s v%s needs features the table lacks: %s", ml.model_name, version.version, lacking)
        return None, "features_missing"
    return Scorer(ModelRef(ml.model_name, str(version.version), alias), model, columns), None


def _load_scorers(
    ml: MlSettings, available: list[str]
) -> tuple[tuple[Scorer | None, str | None], tuple[Scorer | None, str | None]]:
    """The champion and the challenger loaded for scoring (:func:`_load`), each with why not when not."""
    return _load(ml, CHAMPION, available), _load(ml, CHALLENGER, available)


# -- the engines --------------------------------------------------------------------------------------------


@dataclass
class ScoringPass:
    """What one pass of an engine over the features of a date gave (each model's scores are on its
    :class:`Scorer`)."""

    candidates: pl.DataFrame
    """The persons scored (neither erased nor objecting to profiling), with the columns the policy reads."""
    excluded_erased: int
    objected: int
    """Persons left out because they objected to profiling (and are not erased)."""


class Features(Protocol):
    """Gold ``person_features_daily`` as an engine reads and scores it: :class:`LocalFeatures` or
    :class:`ml.spark_scoring.SparkFeatures`."""

    def columns(self) -> list[str] | None:
        """The table's columns; None when it does not exist."""

    def latest_date(self) -> date | None:
        """The latest snapshot date; None when the table has no rows."""

    def person_ids(self, day: date) -> pl.Series:
        """The persons of snapshot date ``day``."""

    def score(
        self,
        day: date,
        erased: pl.Series,
        wanted: list[str],
        scorers: list[Scorer],
        actions: tuple[str, ...],
    ) -> ScoringPass:
        """Leave out the persons of ``day`` erased (in ``erased``) or objecting to profiling
        (:func:`excluded`), score the others with every scorer (its scores, or its error, are kept on it) and
        return them with their ``wanted`` columns."""


class LocalFeatures:
    """The features read in this process (polars over delta-rs) and scored in chunks of ``chunk_rows``
    persons, one model call per chunk."""

    def __init__(self, settings: Settings, chunk_rows: int = 100_000):
        self.lazy = delta.scan(gold_uri(settings, FEATURES_TABLE), settings.storage_options)
        self.chunk_rows = chunk_rows

    def columns(self) -> list[str] | None:
        """The table's columns; None when it does not exist."""
        return None if self.lazy is None else self.lazy.collect_schema().names()

    def latest_date(self) -> date | None:
        """The latest snapshot date; None when the table does not exist or has no rows."""
        return None if self.lazy is None else self.lazy.select(pl.col("snapshot_date").max()).collect().item()

    def person_ids(self, day: date) -> pl.Series:
        """The persons of snapshot date ``day``."""
        return self._dated(day).select("person_id").collect()["person_id"]

    def _dated(self, day: date) -> pl.LazyFrame:
        return self.lazy.filter(pl.col("snapshot_date") == day)

    def score(
        self,
        day: date,
        erased: pl.Series,
        wanted: list[str],
        scorers: list[Scorer],
        actions: tuple[str, ...],
    ) -> ScoringPass:
        """The pass of :meth:`Features.score`, chunk by chunk."""
        parts, excluded_erased, objected = [], 0, 0
        for chunk in self._dated(day).collect_batches(chunk_size=self.chunk_rows):
            gone, no_profiling = excluded(chunk, erased)
            excluded_erased += int(gone.sum())
            objected += int(no_profiling.sum())
            chunk = chunk.filter(~gone & ~no_profiling)
            if not chunk.height:
                continue
            parts.append(chunk.select(wanted))
            for scorer in scorers:
                scorer.score(chunk, actions)
        schema = self.lazy.collect_schema()
        candidates = pl.concat(parts) if parts else pl.DataFrame(schema={c: schema[c] for c in wanted})
        return ScoringPass(candidates, excluded_erased, objected)


@contextlib.contextmanager
def open_features(settings: Settings, ml: MlSettings) -> Iterator[Features]:
    """The features on the engine of ``ml.scoring_engine`` while the block runs (on Spark, a connection to the
    server, closed afterwards)."""
    if ml.scoring_engine == "spark":
        from ml.spark_scoring import SparkFeatures  # imports pyspark: only on that engine

        with SparkFeatures.connect(settings, ml) as features:
            yield features
        return
    yield LocalFeatures(settings, ml.scoring_chunk_rows)


# -- writing -------------------------------------------------------------------------------------------------


def write_date(uri: str, rows: pl.DataFrame | pa.Table, decision_date: date, settings: Settings) -> None:
    """Replace the rows of ``decision_date`` in the table at ``uri`` with ``rows`` (one commit)."""
    write_deltalake(
        uri,
        _arrow(rows),
        mode="overwrite",
        predicate=f"decision_date = '{decision_date.isoformat()}'",
        partition_by=["decision_date"],
        storage_options=settings.storage_options or None,
    )


def _arrow(rows: pl.DataFrame | pa.Table) -> pa.Table:
    """``rows`` as Arrow, without copying a polars frame's strings (string views, which delta-rs writes as
    strings)."""
    return rows.to_arrow(compat_level=pl.CompatLevel.newest()) if isinstance(rows, pl.DataFrame) else rows


def _clear_date(uri: str, decision_date: date, settings: Settings) -> None:
    """Remove the rows of ``decision_date`` from the table at ``uri``, if it exists."""
    if delta.open_table(uri, settings.storage_options) is not None:
        DeltaTable(uri, storage_options=settings.storage_options or None).delete(
            f"decision_date = '{decision_date.isoformat()}'"
        )


def refresh_current(settings: Settings) -> int:
    """Overwrite gold ``nba_current`` with the decisions of the latest date of ``nba_decisions``; its rows."""
    lazy = delta.scan(gold_uri(settings, DECISIONS_TABLE), settings.storage_options)
    if lazy is None:
        return 0
    latest = lazy.select(pl.col("decision_date").max()).collect().item()
    current = lazy.filter(pl.col("decision_date") == latest).collect().cast(NBA_SCHEMA)
    _write_current(settings, current)
    return current.height


def _write_current(settings: Settings, current: pl.DataFrame | pa.Table) -> None:
    write_deltalake(
        gold_uri(settings, CURRENT),
        _arrow(current),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=settings.storage_options or None,
    )


def publish(settings: Settings, decisions: pl.DataFrame, decision_date: date) -> None:
    """Write the decisions of ``decision_date`` to ``nba_decisions`` and refresh ``nba_current``. When the
    date is the latest decided (the daily batch), ``nba_current`` is these decisions, and both Delta writes
    run side by side (delta-rs encodes outside the GIL); otherwise ``nba_current`` is refreshed from the table
    afterwards."""
    uri = gold_uri(settings, DECISIONS_TABLE)
    lazy = delta.scan(uri, settings.storage_options)
    latest = None if lazy is None else lazy.select(pl.col("decision_date").max()).collect().item()
    if not decisions.height or (latest is not None and decision_date < latest):
        write_date(uri, decisions, decision_date, settings)
        refresh_current(settings)
        return
    # converted once, for both tables
    rows = _arrow(decisions.cast(NBA_SCHEMA))
    with ThreadPoolExecutor(max_workers=2) as pool:
        writes = [
            pool.submit(write_date, uri, rows, decision_date, settings),
            pool.submit(_write_current, settings, rows),
        ]
        for write in writes:
            write.result()


# -- the batch -----------------------------------------------------------------------------------------------


def score_and_decide(
    decision_date: date | None = None,
    settings: Settings | None = None,
    ml_settings: MlSettings | None = None,
) -> ScoringReport:
    """Decide the next-best action of every person of ``decision_date`` (default: the latest snapshot date)
    and publish ``nba_decisions``, ``nba_current`` and ``nba_shadow_decisions``; the run's aggregate
    report. The features are read and the models run on the engine of ``ml_settings.scoring_engine``
    (:func:`open_features`); the exclusions, the policy and the writes run here on either."""
    disable_telemetry()
    settings = settings or get_settings()
    ml = ml_settings or get_ml_settings()
    policy = load_policy(ml.policy_file)
    with open_features(settings, ml) as features:
        available = features.columns()
        if available is None:
            raise ScoringError(f"gold {FEATURES_TABLE} does not exist: build the features first")
        if PROFILING_CONSENT not in available:
            raise ScoringError(
                f"gold {FEATURES_TABLE} has no {PROFILING_CONSENT} column: persons who objected to profiling "
                "cannot be left out, so nobody is scored"
            )
        decision_date = decision_date or _latest(features)
        as_of = datetime(decision_date.year, decision_date.month, decision_date.day, tzinfo=UTC)

        # the models load (GIL-bound imports and MLflow's store) while the lake is read and the identifiers
        # hashed (native code, outside the GIL)
        with ThreadPoolExecutor(max_workers=1) as loader:
            loading = loader.submit(_load_scorers, ml, available)
            identity = _identity(settings, as_of)
            erased = erased_among(
                features.person_ids(decision_date),
                identity,
                suppression.suppressed(settings),
                settings.pii_secret,
            )
            reachable = addresses(settings, policy, as_of, identity)
            touched = touches(settings, policy, decision_date, as_of, identity)
            (champion, fallback_reason), (challenger, shadow_error) = loading.result()
        if shadow_error == "no_challenger":
            shadow_error = None
        wanted = [
            "person_id",
            *policy.consent_column.values(),
            "days_since_last_order",
            *policy.rule_columns,
        ]
        scored = features.score(
            decision_date,
            erased,
            list(dict.fromkeys(wanted)),
            [s for s in (champion, challenger) if s is not None],
            policy.actions,
        )
    if not scored.candidates.height and not (scored.excluded_erased or scored.objected):
        raise ScoringError(f"gold {FEATURES_TABLE} has no rows for {decision_date}: nothing to decide")

    candidates = (
        scored.candidates.join(reachable, on="person_id", how="left")
        .join(touched, on="person_id", how="left")
        .with_columns(pl.col("touches").fill_null(0))
        .sort("person_id")
    )
    if champion is not None and champion.error is not None:
        fallback_reason = f"champion_{champion.error}"
    if challenger is not None and challenger.error is not None:
        shadow_error = f"challenger_{challenger.error}"
    usable = champion is not None and champion.error is None
    shadow = challenger is not None and challenger.error is None
    decided_at = datetime.now(UTC)
    if usable:
        decisions = decide(
            _concat(champion.scores, policy),
            candidates,
            policy,
            decision_date,
            champion.ref,
            challenger=challenger.ref if shadow else None,
            challenger_scores=_concat(challenger.scores, policy) if shadow else None,
            decided_at=decided_at,
        )
    else:
        decisions = decide(
            fallback_scores(candidates, policy),
            candidates,
            policy,
            decision_date,
            None,
            fallback_reason=fallback_reason,
            decided_at=decided_at,
        )
    publish(settings, decisions, decision_date)
    shadow_rows = 0
    if shadow:
        shadow_decisions = decide(
            _concat(challenger.scores, policy),
            candidates,
            policy,
            decision_date,
            challenger.ref,
            decided_at=decided_at,
        )
        write_date(gold_uri(settings, SHADOW), shadow_decisions, decision_date, settings)
        shadow_rows = shadow_decisions.height
    else:
        _clear_date(gold_uri(settings, SHADOW), decision_date, settings)
    return _report(
        decisions,
        decision_date,
        policy,
        ml,
        scored.excluded_erased,
        scored.objected,
        champion.ref if usable else None,
        None if usable else fallback_reason,
        challenger.ref if challenger is not None else None,
        shadow_rows,
        shadow_error,
    )


def _concat(parts: list[pl.DataFrame], policy: Policy) -> pl.DataFrame:
    if parts:
        return pl.concat(parts)
    return pl.DataFrame(
        schema={"person_id": pl.String, **{f"expected_revenue__{a}": pl.Float64 for a in policy.actions}}
    )


def _report(
    decisions: pl.DataFrame,
    decision_date: date,
    policy: Policy,
    ml: MlSettings,
    erased: int,
    objected: int,
    champion: ModelRef | None,
    fallback_reason: str | None,
    challenger: ModelRef | None,
    shadow_rows: int,
    shadow_error: str | None,
) -> ScoringReport:
    n = decisions.height
    keys = decisions.select(
        pl.when(pl.col("channel").is_null())
        .then(pl.col("action"))
        .otherwise(pl.col("action") + "/" + pl.col("channel"))
        .value_counts()
        .struct.unnest()
    )

    def share(column: str) -> float:
        return float(decisions[column].mean()) if n else 0.0

    return ScoringReport(
        decision_date=decision_date.isoformat(),
        policy_version=policy.version,
        persons=n,
        excluded_erased=erased,
        excluded_profiling_objection=objected,
        decided_by="champion" if champion is not None else "fallback",
        fallback_reason=fallback_reason,
        model_name=ml.model_name,
        model_version=champion.version if champion is not None else None,
        challenger_version=challenger.version if challenger is not None else None,
        decisions={key: int(n) for key, n in keys.iter_rows()},
        holdout_share=share("is_holdout"),
        exploration_share=share("is_exploration"),
        canary_share=share("is_canary"),
        expected_value_total=float(decisions["expected_value"].sum()) if n else 0.0,
        shadow_rows=shadow_rows,
        shadow_error=shadow_error,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.score [--date YYYY-MM-DD]``: decide for the date (default: the latest snapshot date)."""
    parser = argparse.ArgumentParser(
        prog="python -m ml.score",
        description="Decide the next-best action of every person for a date and publish gold nba_decisions.",
    )
    parser.add_argument("--date", type=date.fromisoformat, default=None, help="decision date (YYYY-MM-DD)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = score_and_decide(args.date)
    except ScoringError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 0
