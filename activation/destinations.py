"""Destinations of a sync: the CRM's PostgreSQL database and an outbox folder of files.

A destination applies one diff (upserts and removals, by key) exactly once and keeps a checkpoint: the id of
the last diff it applied and the records it refused then. PostgreSQL commits the rows and the checkpoint in
one transaction, so after a crash at any point the checkpoint says exactly whether a diff was applied.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl
import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from lake.faults import crash_point

COPY_CHUNK_ROWS = 100_000
"""Rows encoded and streamed to PostgreSQL's COPY at a time (bounds the memory of the encoded text)."""
CHECKPOINTS = "activation_checkpoints"
"""The destination-side table of sync checkpoints (in the destination table's schema)."""

_PG_TYPES = {
    pl.Int64: "bigint",
    pl.Int32: "integer",
    pl.Float64: "double precision",
    pl.String: "text",
    pl.Boolean: "boolean",
    pl.Date: "date",
}
_RECORD_ERRORS = ("22", "23", "P0")
"""SQLSTATE classes of errors that concern one record (bad data, a constraint, a trigger's refusal)."""
_TRANSIENT_STATES = {"40001", "40P01", "57P03", "53300"}
"""SQLSTATEs worth retrying: serialization failure, deadlock, server starting up, too many connections."""


@dataclass
class Checkpoint:
    """The last diff a destination applied and the records it refused then (key: (op, reason))."""

    diff_id: int
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)


class Destination(Protocol):
    """What the sync engine needs of a destination."""

    name: str

    def checkpoint(self) -> Checkpoint | None:
        """The last applied diff, or None when nothing was ever applied (or the destination was reset)."""

    def apply(self, diff_id: int, upserts: pl.DataFrame, removals: pl.Series) -> dict[str, tuple[str, str]]:
        """Apply the diff once (a diff id at or below the checkpoint is not applied again); the refused
        records."""


def pg_type(dtype: pl.DataType) -> str:
    """The PostgreSQL column type of a polars type (scalars only)."""
    if isinstance(dtype, pl.Datetime):
        return "timestamptz" if dtype.time_zone else "timestamp"
    for known, name in _PG_TYPES.items():
        if dtype == known:
            return name
    raise ValueError(f"no PostgreSQL column type for {dtype} (only scalar columns can be synced)")


def _transient(error: BaseException) -> bool:
    """True for errors where the same transaction may succeed when tried again."""
    if isinstance(error, psycopg.OperationalError) and not isinstance(error, psycopg.errors.QueryCanceled):
        return True
    return getattr(error, "sqlstate", None) in _TRANSIENT_STATES


def retrying(attempts: int = 5, max_wait: float = 10.0) -> Retrying:
    """Retries with exponential backoff and full jitter on transient errors, re-raising the last error."""
    return Retrying(
        retry=retry_if_exception(_transient),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait),
        stop=stop_after_attempt(attempts),
        reraise=True,
    )


def copy_frame(cursor: psycopg.Cursor, table: sql.Composable, frame: pl.DataFrame) -> None:
    """Stream ``frame`` into ``table`` with COPY (CSV, ``\\N`` for null), in chunks of ``COPY_CHUNK_ROWS``."""
    columns = sql.SQL(", ").join(map(sql.Identifier, frame.columns))
    statement = sql.SQL("copy {} ({}) from stdin with (format csv, null '\\N')").format(table, columns)
    with cursor.copy(statement) as copy:
        for start in range(0, frame.height, COPY_CHUNK_ROWS):
            buffer = io.BytesIO()
            frame.slice(start, COPY_CHUNK_ROWS).write_csv(buffer, include_header=False, null_value="\\N")
            copy.write(buffer.getvalue())


class PostgresDestination:
    """A recommendations table in PostgreSQL, written by COPY into a temporary table and one
    ``insert ... on conflict do update``; rows and checkpoint commit in one transaction."""

    def __init__(
        self,
        url: str,
        name: str,
        sync: str,
        schema: str,
        table: str,
        columns: dict[str, pl.DataType],
        key: str,
    ):
        self.url, self.name, self.sync, self.key = url, name, sync, key
        self.columns = columns
        self.table = sql.Identifier(schema, table)
        self.checkpoints = sql.Identifier(schema, CHECKPOINTS)
        self.schema = schema

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, connect_timeout=10)

    def ensure_tables(self) -> None:
        """Create the recommendations table (key as primary key, plus ``_diff_id`` and ``_synced_at``) and the
        checkpoints table when missing."""
        definition = sql.SQL(", ").join(
            [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(pg_type(t))) for c, t in self.columns.items()]
            + [
                sql.SQL("_diff_id bigint not null"),
                sql.SQL("_synced_at timestamptz not null default now()"),
                sql.SQL("primary key ({})").format(sql.Identifier(self.key)),
            ]
        )
        for attempt in retrying():
            with attempt, self._connect() as conn:
                conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema)))
                conn.execute(sql.SQL("create table if not exists {} ({})").format(self.table, definition))
                conn.execute(
                    sql.SQL(
                        "create table if not exists {} (sync text primary key, diff_id bigint not null, "
                        "upserted bigint not null, removed bigint not null, failures jsonb not null, "
                        "applied_at timestamptz not null default now())"
                    ).format(self.checkpoints)
                )

    def checkpoint(self) -> Checkpoint | None:
        """The checkpoint row of this sync, or None (also when the checkpoints table does not exist yet)."""
        for attempt in retrying():
            with attempt, self._connect() as conn:
                exists = conn.execute("select to_regclass(%s)", [self.checkpoints.as_string()]).fetchone()[0]
                row = (
                    None
                    if exists is None
                    else conn.execute(
                        sql.SQL("select diff_id, failures from {} where sync = %s").format(self.checkpoints),
                        [self.sync],
                    ).fetchone()
                )
        if row is None:
            return None
        return Checkpoint(row[0], {k: tuple(v) for k, v in row[1].items()})

    def apply(self, diff_id: int, upserts: pl.DataFrame, removals: pl.Series) -> dict[str, tuple[str, str]]:
        """Apply the diff and the checkpoint in one transaction (retried whole on transient errors)."""
        self.ensure_tables()
        return retrying()(self._apply_once, diff_id, upserts, removals)

    def _apply_once(
        self, diff_id: int, upserts: pl.DataFrame, removals: pl.Series
    ) -> dict[str, tuple[str, str]]:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "insert into {} (sync, diff_id, upserted, removed, failures) values (%s, 0, 0, 0, "
                    "'{{}}') on conflict (sync) do nothing"
                ).format(self.checkpoints),
                [self.sync],
            )
            cur.execute(
                sql.SQL("select diff_id, failures from {} where sync = %s for update").format(
                    self.checkpoints
                ),
                [self.sync],
            )
            applied, failures_json = cur.fetchone()
            if applied >= diff_id:
                return {k: tuple(v) for k, v in failures_json.items()}
            failures: dict[str, tuple[str, str]] = {}
            if upserts.height:
                failures.update(self._upsert(cur, diff_id, upserts))
            if removals.len():
                cur.execute(
                    sql.SQL("delete from {} where {} = any(%s::{}[])").format(
                        self.table, sql.Identifier(self.key), sql.SQL(pg_type(removals.dtype))
                    ),
                    [removals.to_list()],
                )
            crash_point("activation.before_destination_commit")
            cur.execute(
                sql.SQL(
                    "update {} set diff_id = %s, upserted = %s, removed = %s, failures = %s, applied_at = "
                    "now() where sync = %s"
                ).format(self.checkpoints),
                [diff_id, upserts.height - len(failures), removals.len(), json.dumps(failures), self.sync],
            )
        return failures

    def _upsert(self, cur: psycopg.Cursor, diff_id: int, upserts: pl.DataFrame) -> dict[str, tuple[str, str]]:
        """COPY the rows into a temporary table and upsert them all at once; when the destination refuses a
        record, upsert row by row instead and return the refused ones with the destination's reason."""
        staging = sql.Identifier("activation_staging")
        columns = sql.SQL(", ").join(map(sql.Identifier, upserts.columns))
        cur.execute(
            sql.SQL("create temporary table {} on commit drop as select {} from {} limit 0").format(
                staging, columns, self.table
            )
        )
        copy_frame(cur, staging, upserts)
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c))
            for c in [*upserts.columns, "_diff_id", "_synced_at"]
        )
        statement = sql.SQL(
            "insert into {table} ({columns}, _diff_id, _synced_at) select {columns}, %s, now() from "
            "{staging} {where} on conflict ({key}) do update set {updates}"
        )
        bulk = statement.format(
            table=self.table,
            columns=columns,
            staging=staging,
            where=sql.SQL(""),
            key=sql.Identifier(self.key),
            updates=updates,
        )
        try:
            with cur.connection.transaction():
                cur.execute(bulk, [diff_id])
            return {}
        except psycopg.Error as error:
            if not (error.sqlstate or "").startswith(_RECORD_ERRORS):
                raise
        one = statement.format(
            table=self.table,
            columns=columns,
            staging=staging,
            where=sql.SQL("where {} = %s").format(sql.Identifier(self.key)),
            key=sql.Identifier(self.key),
            updates=updates,
        )
        failures = {}
        for key in upserts[self.key].to_list():
            try:
                with cur.connection.transaction():
                    cur.execute(one, [diff_id, key])
            except psycopg.Error as error:
                if not (error.sqlstate or "").startswith(_RECORD_ERRORS):
                    raise
                failures[str(key)] = ("upsert", f"{error.sqlstate}: {error.diag.message_primary}")
        return failures


class FilesDestination:
    """An outbox folder: per applied diff, ``diff-<id>.upserts.<fmt>`` and ``diff-<id>.removals.<fmt>``, then
    the checkpoint ``_checkpoint.json`` (replaced atomically). Readers take the files up to the checkpoint's
    diff."""

    def __init__(self, folder: Path, name: str, formats: tuple[str, ...], key: str):
        self.folder, self.name, self.formats, self.key = folder, name, formats, key

    def checkpoint(self) -> Checkpoint | None:
        """The checkpoint file's diff, or None."""
        path = self.folder / "_checkpoint.json"
        if not path.exists():
            return None
        return Checkpoint(json.loads(path.read_text())["diff_id"])

    def apply(self, diff_id: int, upserts: pl.DataFrame, removals: pl.Series) -> dict[str, tuple[str, str]]:
        """Write the diff's files (each under a temporary name, then renamed) and then the checkpoint."""
        done = self.checkpoint()
        if done is not None and done.diff_id >= diff_id:
            return {}
        self.folder.mkdir(parents=True, exist_ok=True)
        for part, frame in (("upserts", upserts), ("removals", removals.to_frame(self.key))):
            for fmt in self.formats:
                path = self.folder / f"diff-{diff_id:08d}.{part}.{fmt}"
                temporary = path.with_suffix(".tmp")
                frame.write_parquet(temporary) if fmt == "parquet" else frame.write_csv(temporary)
                os.replace(temporary, path)
        crash_point("activation.before_destination_commit")
        temporary = self.folder / "_checkpoint.json.tmp"
        temporary.write_text(
            json.dumps({"diff_id": diff_id, "upserted": upserts.height, "removed": removals.len()})
        )
        os.replace(temporary, self.folder / "_checkpoint.json")
        return {}
