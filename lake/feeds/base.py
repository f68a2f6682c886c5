"""What every kind of feed has: the :class:`Feed` base class, its silver tables and the registry of kinds.

A feed is built from its contract (:func:`feed_of`) and answers everything that differs between kinds: where
its files land, how a chunk of raw lines becomes bronze rows (and which lines are quarantined, with what
reason), its bronze and silver tables, how bronze is applied to silver and how far that got (the watermark),
and how its silver tables are described to the warehouse, dbt, quality checks and erasure. The generic
machinery (ingestion batches, the ledger, quarantine, maintenance, views) asks the feed and never its kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import duckdb
import polars as pl
import pyarrow as pa

from data_contracts import Contract
from lake import delta
from lake.landing import LandedFile, survey
from lake.privacy import TOKEN_SUFFIX, protect
from lake.settings import Settings

METADATA_FIELDS = [
    ("_source_file", pa.string()),
    ("_line", pa.int64()),
    ("_batch_seq", pa.int64()),
    ("_batch_id", pa.string()),
    ("_ingested_at", pa.timestamp("us", tz="UTC")),
    ("_ingest_date", pa.date32()),
]
"""Ingestion metadata at the end of every bronze row, whatever the kind of feed."""

PARSE_ERRORS_SQL = """
    select row_id, file_idx, line_no, line, is_object,
        case when is_object then null
             when trim(line) = '' then 'empty line'
             when trim(line) = 'null' and $tombstones then null
             when not json_valid(line) then 'invalid JSON'
             else 'not a JSON object' end as reason
    from (select *, case when json_valid(line) then json_type(line) = 'OBJECT' else false end as is_object
          from chunk)
"""
"""Lines that cannot be parsed at all; a kind's query only sees JSON objects (``is_object``) and, for CDC,
tombstones. A JSON object is recognised first: ``trim`` reads the whole line (16 us for a 3.6 KB change event
with its schema), so it only runs on the rare lines that are not objects."""


def parse_errors_sql(tombstones: bool) -> str:
    """:data:`PARSE_ERRORS_SQL` for a kind whose ``null`` lines are tombstones (kept) or not (quarantined)."""
    return PARSE_ERRORS_SQL.replace("$tombstones", str(tombstones).lower())


@dataclass(frozen=True)
class SilverTable:
    """One silver table of a feed: ``silver/<system>/<name>``, its asset and view name, its row key and what
    it is (the first table of a feed is its main one: contract rules and previews read it)."""

    system: str
    name: str
    key: tuple[str, ...]
    """The columns that identify a row (erasure rewrites rows by them)."""
    description: str
    """What the table holds, for the catalog (Dagster)."""
    history: bool = False
    """A table of versions with validity intervals (checked by :func:`lake.quality.history_problems`)."""

    def uri(self, settings: Settings) -> str:
        """Where the table lives."""
        return delta.table_uri(settings, "silver", self.system, self.name)

    @property
    def view(self) -> str:
        """The name of its warehouse view and dbt source table: ``<system>__<name>``."""
        return f"{self.system}__{self.name}"


FEED_KINDS: dict[str, type[Feed]] = {}
"""The class of each kind, by the ``feed`` a contract names; a subclass with a ``kind`` registers itself."""


def feed_of(contract: Contract) -> Feed:
    """The feed object of a contract, of the class its kind names."""
    try:
        return FEED_KINDS[contract.feed](contract)
    except KeyError:
        raise ValueError(
            f"{contract.path.name}: no feed class for kind {contract.feed!r} (known: {', '.join(FEED_KINDS)})"
        ) from None


def pending_steps(bronze: pl.LazyFrame, applied: int, max_rows: int) -> list[tuple[int, int]]:
    """The bronze batches after ``applied`` as ranges ``(after, up to and including)`` of at most ``max_rows``
    rows each (a single larger batch is a range of its own), for consumers that apply bronze incrementally."""
    sizes = (
        bronze.filter(pl.col("_batch_seq") > applied)
        .group_by("_batch_seq")
        .len()
        .sort("_batch_seq")
        .collect()
    )
    steps, low, upto, rows = [], applied, applied, 0
    for seq, count in sizes.iter_rows():
        if rows and rows + count > max_rows:
            steps.append((low, upto))
            low, rows = upto, 0
        upto, rows = seq, rows + count
    if rows:
        steps.append((low, upto))
    return steps


class Feed(ABC):
    """A source feed of the lake, of one kind (CDC, clickstream, ...), built from its contract."""

    kind: ClassVar[str]
    """The ``feed`` a contract names for this class (``customProperties.feed``)."""
    bronze_schema: ClassVar[pa.Schema]
    """The columns of the feed's bronze table (its kind's fields, ``raw`` and :data:`METADATA_FIELDS`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            FEED_KINDS[cls.kind] = cls

    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.contract.feed_id!r})"

    @property
    def feed_id(self) -> str:
        """The feed's id: the ledger, quarantine and ``--feed`` name it by this."""
        return self.contract.feed_id

    @property
    def landing_folder(self) -> str:
        """The folder of the landing zone the feed's files land in (relative to the zone)."""
        return self.feed_id

    def survey(self, landing: str) -> tuple[list[LandedFile], list[str]]:
        """The feed's landed data files and the other files of its folder (:func:`lake.landing.survey`)."""
        return survey(landing, self.feed_id, self.landing_folder)

    def discover(self, landing: str) -> list[LandedFile]:
        """The feed's landed data files, sorted by path."""
        return self.survey(landing)[0]

    @property
    @abstractmethod
    def silver(self) -> tuple[SilverTable, ...]:
        """The feed's silver tables, the main one first."""

    @property
    def asset_path(self) -> tuple[str, str]:
        """The feed's path below each zone in asset keys: its main silver table's ``(system, name)``."""
        return self.silver[0].system, self.silver[0].name

    def bronze_uri(self, settings: Settings) -> str:
        """Where the feed's bronze table lives: ``bronze/<system>/<name>`` unless the kind says otherwise."""
        return delta.table_uri(settings, "bronze", *self.asset_path)

    def silver_uris(self, settings: Settings) -> list[str]:
        """The URIs of the feed's silver tables, in :attr:`silver` order."""
        return [t.uri(settings) for t in self.silver]

    @abstractmethod
    def parse_sql(self) -> str:
        """The DuckDB query that splits a chunk of raw lines (table ``chunk(row_id, file_idx, line_no,
        line)``) into the feed's bronze columns and a ``reason`` that is NULL for valid records."""

    def check_parsed(self, con: duckdb.DuckDBPyConnection, parsed: pa.Table) -> pa.Table:
        """``parsed`` (from :meth:`parse_sql`) with the reasons of checks a single query cannot make."""
        return parsed

    def bronze_columns(self, files: list[LandedFile], rows: pa.Table) -> dict[str, pa.Array]:
        """Bronze columns taken from the files rather than the lines (``rows`` has ``file_idx`` and
        ``line_no``)."""
        return {}

    @abstractmethod
    def apply(self, settings: Settings) -> Any:
        """Bring the feed's silver tables up to date with bronze; the kind's report. Safe to re-run."""

    @abstractmethod
    def watermark(self, settings: Settings) -> int:
        """The last bronze batch that every silver table of the feed has applied."""

    @abstractmethod
    def summary(self, report: Any) -> str:
        """One line on what :meth:`apply` did (for the command line)."""

    @abstractmethod
    def apply_metadata(self, report: Any) -> list[dict[str, Any]]:
        """Figures of :meth:`apply`'s report per silver table, in :attr:`silver` order (for the catalog)."""

    @property
    def contract_names(self) -> dict[str, str]:
        """Silver columns renamed to the contract's names before its quality rules read the main table."""
        return {c.name + TOKEN_SUFFIX: c.name for c in self.contract.pii_columns}

    def silver_columns(self) -> dict[str, tuple[str, str]]:
        """Contract column -> (its name in silver, description) for the columns silver keeps: personal data
        under its protected name (``email_token``, ``birth_year``, ...)."""
        columns = {}
        for c in self.contract.columns:
            if c.pii:
                empty = pl.DataFrame(schema={c.name: pl.String})
                (name,) = protect(empty, {c.name: c.pii}, "-").columns
                how = "a keyed hash" if name.endswith(TOKEN_SUFFIX) else "a coarser value"
                columns[c.name] = (name, f"{c.description} Protected: {how} of it, never the raw value.")
            else:
                columns[c.name] = (c.name, c.description)
        return columns

    def empty_silver(self, table: SilverTable, settings: Settings) -> pl.DataFrame | None:
        """``table`` with no rows, for its warehouse view before the feed's first records (None: no view until
        then)."""
        return None

    @abstractmethod
    def source_doc(self, table: SilverTable, subject: str) -> tuple[str, str, dict[str, str]]:
        """For the dbt source of one silver table: its description (``subject`` says what a row is), its
        loaded-at column, and the descriptions of the columns silver adds to the contract's."""
