"""The batch scorer's Spark engine (``SCORING_ENGINE=spark``): gold ``person_features_daily`` read by a Spark
Connect session (``SPARK_REMOTE``) and each model scored on the Spark engine as an MLflow Spark UDF
(:func:`mlflow.pyfunc.spark_udf`).

What runs where: Spark reads the date's features, leaves out the persons who objected to profiling and the
erased persons (an anti-join with their ids, which the driver sends), and runs every model over the rest; the
driver (the process of :func:`ml.scoring.score_and_decide`) finds the erased persons (the suppression list is
keyed by secret hashes), reads the other tables, checks the scores and decides with :func:`ml.policy.decide`,
as with the local engine. Only ids, the policy's columns and the scores come back to the driver.

The UDF loads the model version from its artifacts (the version's download URI, not ``models:/``: the
executors then need no registry, and a cached model of another registry with the same name and version is
never taken) in the executors' own Python (``env_manager="local"``): they need this project's environment and
the artifact store's location, as the driver does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date

import polars as pl

from lake.gold import gold_uri
from lake.settings import Settings
from lake.spark_warehouse import connected
from ml.data import FEATURES_TABLE
from ml.scoring import PROFILING_CONSENT, Scorer, ScoringError, ScoringPass, checked_scores, excluded
from ml.settings import MlSettings

SCORES = "scores"
"""The struct column the UDF gives, one field per ``expected_revenue__<action>``."""


class SparkScoringError(ScoringError):
    """The Spark engine cannot be used (no ``SPARK_REMOTE``)."""


def model_input(frame, columns: list[str]):
    """The struct of ``columns`` a model's UDF takes: numbers and booleans as doubles (nulls stay null, NaN
    in pandas), everything else as strings: the format of :func:`ml.model.pyfunc_input`."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, NumericType

    types = {f.name: f.dataType for f in frame.schema.fields}
    return F.struct(
        *[
            F.col(c).cast("double" if isinstance(types[c], NumericType | BooleanType) else "string").alias(c)
            for c in columns
        ]
    )


def model_udf(spark, scorer: Scorer, tracking_uri: str, actions: tuple[str, ...]):
    """The MLflow Spark UDF of the scorer's model version: a struct of ``expected_revenue__<action>`` doubles
    per row of its input."""
    import mlflow
    from pyspark.sql.types import DoubleType, StructField, StructType

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    uri = client.get_model_version_download_uri(scorer.ref.name, scorer.ref.version)
    result = StructType([StructField(f"expected_revenue__{a}", DoubleType()) for a in actions])
    return mlflow.pyfunc.spark_udf(spark, uri, result_type=result, env_manager="local")


class SparkFeatures:
    """The features read and scored by a Spark Connect session (see the module's documentation)."""

    def __init__(self, spark, uri: str, tracking_uri: str):
        self.spark, self.uri, self.tracking_uri = spark, uri, tracking_uri

    @classmethod
    @contextlib.contextmanager
    def connect(cls, settings: Settings, ml: MlSettings) -> Iterator[SparkFeatures]:
        """The features of the settings' lake on the Spark Connect server of ``settings.spark_remote``, while
        the block runs."""
        if not settings.spark_remote:
            raise SparkScoringError("SCORING_ENGINE=spark needs SPARK_REMOTE, the Spark Connect URL")
        with connected(settings.spark_remote) as spark:
            yield cls(spark, gold_uri(settings, FEATURES_TABLE), ml.tracking_uri)

    def _table(self):
        return self.spark.read.format("delta").load(self.uri)

    def _dated(self, day: date):
        from pyspark.sql import functions as F

        return self._table().where(F.col("snapshot_date") == F.lit(day))

    def columns(self) -> list[str] | None:
        """The table's columns; None when it does not exist."""
        from pyspark.errors import AnalysisException

        try:
            return self._table().columns
        except AnalysisException:
            return None

    def latest_date(self) -> date | None:
        """The latest snapshot date; None when the table has no rows."""
        from pyspark.sql import functions as F

        return self._table().agg(F.max("snapshot_date")).collect()[0][0]

    def person_ids(self, day: date) -> pl.Series:
        """The persons of snapshot date ``day``."""
        return _collect(self._dated(day).select("person_id"))["person_id"]

    def score(
        self,
        day: date,
        erased: pl.Series,
        wanted: list[str],
        scorers: list[Scorer],
        actions: tuple[str, ...],
    ) -> ScoringPass:
        """The pass of :meth:`ml.scoring.Features.score`: the candidates' columns in one query, then one query
        per model."""
        from pyspark.sql import functions as F

        dated = self._dated(day)
        rows = _collect(dated.select(*dict.fromkeys(["person_id", PROFILING_CONSENT, *wanted])))
        gone, objected = excluded(rows, erased)
        candidates = rows.filter(~gone & ~objected).select(wanted)
        scorable = dated.where(F.coalesce(F.col(PROFILING_CONSENT), F.lit(True)))
        if erased.len():
            ids = self.spark.createDataFrame([(p,) for p in erased.to_list()], "person_id string")
            scorable = scorable.join(ids, on="person_id", how="left_anti")
        persons = candidates["person_id"].sort()
        for scorer in scorers:
            scorer.attempt(lambda scorer=scorer: self._scores(scorable, scorer, persons, actions))
        return ScoringPass(candidates, int(gone.sum()), int(objected.sum()))

    def _scores(self, scorable, scorer: Scorer, persons: pl.Series, actions: tuple[str, ...]) -> pl.DataFrame:
        """The scores of ``scorer`` for the rows of ``scorable``, checked (:func:`ml.scoring.checked_scores`)
        to be those of exactly the candidates ``persons`` (sorted)."""
        udf = model_udf(self.spark, scorer, self.tracking_uri, actions)
        scored = scorable.select("person_id", udf(model_input(scorable, scorer.columns)).alias(SCORES))
        frame = _collect(scored.select("person_id", f"{SCORES}.*")).sort("person_id")
        if not frame["person_id"].equals(persons):
            raise ValueError(f"the engine scored {frame.height} persons, not the {persons.len()} candidates")
        return checked_scores(frame["person_id"], frame.drop("person_id"), actions)


def _collect(frame) -> pl.DataFrame:
    """A Spark DataFrame's rows on the driver, through Arrow."""
    return pl.from_arrow(frame.toArrow())
