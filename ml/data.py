"""Readers of the gold tables with their lineage: every read returns the rows and the exact Delta version
read.

Training, scoring, the notebooks and the Dagster assets all read gold through these functions, so a model can
name the data it learned from (:class:`GoldRef`: table name, URI and Delta version). Reads go through polars
(``scan_delta``), never through a parquet glob of the table's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl
from deltalake import DeltaTable

from lake.gold import gold_uri
from lake.settings import Settings, get_settings

TRAINING_TABLE = "training_decisions"
FEATURES_TABLE = "person_features_daily"
IDENTITY_TABLE = "identity_person_map"
DECISIONS_TABLE = "nba_decisions"
"""The decisions the scorer publishes to gold (one partition per decision date)."""


class GoldTableMissing(FileNotFoundError):
    """A gold table has not been published yet (the message names it and how to build it)."""


@dataclass(frozen=True)
class GoldRef:
    """The lineage of one read: which gold table, where, and at which Delta version."""

    name: str
    uri: str
    version: int

    @property
    def versioned_uri(self) -> str:
        """The table's URI with the version read, ``<uri>@v<version>`` (how the runs name their data)."""
        return f"{self.uri}@v{self.version}"


def gold_table(
    name: str, settings: Settings | None = None, version: int | None = None
) -> tuple[DeltaTable, GoldRef]:
    """The gold Delta table ``name`` at ``version`` (default: its current version) and its :class:`GoldRef`.

    Raises :class:`GoldTableMissing` when the table has not been published."""
    settings = settings or get_settings()
    uri = gold_uri(settings, name)
    options = settings.storage_options or None
    if not DeltaTable.is_deltatable(uri, storage_options=options):
        raise GoldTableMissing(
            f"gold table {name!r} not found at {uri}: build and publish the marts first "
            "(`make demo`, or materialize the dbt assets in Dagster; dbt's gold models are published to "
            "gold/ after each build)"
        )
    table = DeltaTable(uri, version=version, storage_options=options)
    return table, GoldRef(name=name, uri=uri, version=table.version())


def read_gold(
    name: str,
    settings: Settings | None = None,
    version: int | None = None,
    columns: list[str] | None = None,
    filters: pl.Expr | None = None,
) -> tuple[pl.DataFrame, GoldRef]:
    """The rows of gold table ``name`` at ``version`` (default: current), optionally only ``columns`` and the
    rows matching the polars expression ``filters``, with the lineage of the read."""
    table, ref = gold_table(name, settings, version)
    frame = pl.scan_delta(table)
    if filters is not None:
        frame = frame.filter(filters)
    if columns is not None:
        frame = frame.select(columns)
    return frame.collect(), ref


def load_training_set(
    settings: Settings | None = None, version: int | None = None
) -> tuple[pl.DataFrame, GoldRef]:
    """The logged decisions with their features and labels (gold ``training_decisions``), sorted by decision
    time and activity, and the lineage of the read."""
    frame, ref = read_gold(TRAINING_TABLE, settings, version)
    return frame.sort("decision_at", "activity_id"), ref


def load_features(as_of: date, settings: Settings | None = None) -> tuple[pl.DataFrame, GoldRef]:
    """The feature snapshot of every person at ``as_of`` (gold ``person_features_daily`` at ``snapshot_date =
    as_of``), sorted by person, and the lineage of the read."""
    frame, ref = read_gold(FEATURES_TABLE, settings, filters=pl.col("snapshot_date") == as_of)
    return frame.sort("person_id"), ref
