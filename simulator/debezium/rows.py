"""The rows of a connector's tables: the current rows, the changes not yet folded in, and the before
images."""

from __future__ import annotations

import polars as pl

from simulator.tables import Server, Table

_STATE_TYPES = {
    "int32": pl.Int32,
    "int64": pl.Int64,
    "float64": pl.Float64,
    "bool": pl.Boolean,
    "string": pl.String,
    "json": pl.String,
    "decimal": pl.Int64,
    "date": pl.Int32,
    "timestamp_ms": pl.Int64,
    "timestamp_us": pl.Int64,
    "timestamptz": pl.Int64,
}
"""The polars type of each column kind of :mod:`simulator.tables` (decimals unscaled, instants as
integers)."""


def state_schema(table: Table) -> dict[str, pl.DataType]:
    """The polars schema in which the simulator holds a table's rows (timestamps as epoch microseconds)."""
    return {c.name: _STATE_TYPES[c.kind] for c in table.columns}


class RowState:
    """The current rows of a server's tables. Changes are queued and folded in when the rows are next read;
    PostgreSQL tables need their rows only for the initial snapshot, so after it their changes are not
    kept."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.rows = {t.name: pl.DataFrame(schema=state_schema(t)) for t in server.tables}
        self.unapplied: dict[str, list[pl.DataFrame]] = {t.name: [] for t in server.tables}
        self.snapshot_taken = False

    @staticmethod
    def normalise(table: Table, change: pl.DataFrame) -> pl.DataFrame:
        """A change (``_ts``, ``_op``, then columns) with every column of ``table`` in order and type; a day
        of only deletes carries only the key: the other columns are null, as in any delete."""
        missing = [pl.lit(None, t).alias(c) for c, t in state_schema(table).items() if c not in change]
        change = change.with_columns(missing).select("_ts", "_op", *state_schema(table))
        return change.cast(state_schema(table))

    def before_images(self, table: Table, change: pl.DataFrame) -> pl.DataFrame:
        """The change with ``b_<column>`` before-image columns: the previous row for MySQL updates and
        deletes, only the key for PostgreSQL deletes (default replica identity), nothing otherwise."""
        pk = table.primary_key
        cols = list(state_schema(table))
        change = change.with_row_index("_seq").with_columns(pl.col("_seq").cast(pl.Int64))
        if self.server.connector == "postgresql":
            befores = [
                (pl.when(pl.col("_op") == "d").then(pl.col(c)) if c == pk else pl.lit(None, dtype)).alias(
                    f"b_{c}"
                )
                for c, dtype in state_schema(table).items()
            ]
            return change.with_columns(befores)
        prior = (
            self.current(table)
            .join(change.select(pk).unique(), on=pk, how="semi")
            .with_columns(
                pl.lit(-1, pl.Int64).alias("_ts"),
                pl.lit("s").alias("_op"),
                pl.lit(-1, pl.Int64).alias("_seq"),
            )
        )
        history = pl.concat([prior.select(change.columns), change]).sort([pk, "_ts", "_seq"])
        # sorted by key, the row before a change is its before image when it belongs to the same key
        history = history.with_columns(
            [pl.col(c).shift(1).alias(f"b_{c}") for c in cols]
            + [
                pl.col("_op").shift(1).alias("_prev_op"),
                (pl.col(pk).shift(1) == pl.col(pk)).alias("_same_key"),
            ]
        )
        no_before = (
            (pl.col("_op") == "c") | ~pl.col("_same_key").fill_null(False) | (pl.col("_prev_op") == "d")
        )
        return (
            history.filter(pl.col("_op") != "s")
            .with_columns(
                [pl.when(no_before).then(None).otherwise(pl.col(f"b_{c}")).alias(f"b_{c}") for c in cols]
            )
            .drop("_prev_op", "_same_key")
            .sort("_seq")
        )

    def record(self, table: Table, change: pl.DataFrame) -> None:
        """Queue a normalised change for the table's rows (not kept for PostgreSQL after the snapshot)."""
        if self.server.connector == "mysql" or not self.snapshot_taken:
            self.unapplied[table.name].append(change)

    def current(self, table: Table) -> pl.DataFrame:
        """The current rows of ``table``, with every queued change folded in."""
        queued = self.unapplied[table.name]
        if queued:
            pk = table.primary_key
            last = pl.concat(queued).unique(subset=pk, keep="last", maintain_order=True)
            kept = self.rows[table.name].join(last.select(pk), on=pk, how="anti")
            upserts = last.filter(pl.col("_op") != "d").drop("_ts", "_op")
            self.rows[table.name] = pl.concat([kept, upserts]).rechunk()
            queued.clear()
        return self.rows[table.name]

    def release(self, table: Table) -> None:
        """Forget the rows of ``table`` (a PostgreSQL table after its snapshot: no before images to look
        up)."""
        self.rows[table.name] = self.rows[table.name].clear()
