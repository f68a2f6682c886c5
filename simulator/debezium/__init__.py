"""Debezium change events as a Kafka Connect file sink writes them: one folder per topic, JSON lines.

A :class:`Connector` composes the rows of its server's tables (:mod:`simulator.debezium.rows`), the log
position it assigns to each change (PostgreSQL LSNs, MySQL binlog coordinates, transaction ids), the
encoding of change events (:mod:`simulator.debezium.envelope`) and its sink's files
(:mod:`simulator.debezium.sink`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import SimulationConfig
from simulator.debezium.envelope import EnvelopeEncoder
from simulator.debezium.rows import RowState, state_schema
from simulator.debezium.sink import TopicSink
from simulator.files import FileWriter
from simulator.tables import Server


class Connector:
    """One Debezium connector: its tables' rows, its log position (``position``, ``tx_id``) and its sink."""

    def __init__(
        self,
        server: Server,
        landing: Path,
        config: SimulationConfig,
        rng: np.random.Generator,
        writer: FileWriter,
    ) -> None:
        self.server = server
        self.rng = rng
        self.rows = RowState(server)
        self.sink = TopicSink(server, landing, config, rng, writer, EnvelopeEncoder(server))
        self.position = 24_000_000 if server.connector == "postgresql" else 0
        self.tx_id = 780
        self.stats: Counter[str] = self.sink.stats

    def apply(self, day: int, changes: dict[str, pl.DataFrame], emit: bool) -> None:
        """Apply one day's row changes (``_ts``, ``_op`` in c/u/d, then the columns) to the tables; when
        ``emit`` is true also write them as change events (before the observed window they only build the
        state that the initial snapshot captures)."""
        events = []
        for index, table in enumerate(self.server.tables):
            change = changes.get(table.name)
            if change is None or change.is_empty():
                continue
            change = self.rows.normalise(table, change)
            if emit:
                with_before = self.rows.before_images(table, change)
                events.append(with_before.with_columns(pl.lit(index, pl.Int32).alias("_table")))
            self.rows.record(table, change)
        if emit and events:
            self._emit(day, events)

    def snapshot(self, ts_us: int) -> None:
        """Write the initial snapshot: every current row as an ``op: r`` event, in table order and in chunks
        of the sink's flush size."""
        self.rows.snapshot_taken = True
        tables = [(i, t) for i, t in enumerate(self.server.tables) if not self.rows.current(t).is_empty()]
        size = self.sink.config.cdc_flush_size
        for n, (index, table) in enumerate(tables):
            rows = self.rows.current(table).sort(table.primary_key)
            count = rows.height
            first = pl.lit("first" if n == 0 else "first_in_data_collection")
            last = pl.lit("last" if n == len(tables) - 1 else "last_in_data_collection")
            for start in range(0, count, size):
                chunk = rows.slice(start, size)
                row_no = pl.int_range(pl.len()) + start
                marker = (
                    pl.when(row_no == count - 1)
                    .then(last)
                    .when(row_no == 0)
                    .then(first)
                    .otherwise(pl.lit("true"))
                )
                events = chunk.with_columns(
                    [pl.lit(None, dtype).alias(f"b_{c}") for c, dtype in state_schema(table).items()]
                ).with_columns(
                    pl.lit(ts_us + n * 1_000_000, pl.Int64).alias("_ts"),
                    pl.lit("r").alias("_op"),
                    pl.lit(index, pl.Int32).alias("_table"),
                    marker.alias("_snapshot"),
                    pl.lit(self.position, pl.Int64).alias("_pos"),
                    pl.lit(0, pl.Int64).alias("_row"),
                    pl.lit(self.tx_id, pl.Int64).alias("_tx"),
                    pl.lit(self.position, pl.Int64).alias("_prev_pos"),
                )
                self.sink.write(0, table, events)
            self.stats["snapshot_events"] += count
            if self.server.connector == "postgresql":  # no before images to look up: free the rows
                self.rows.release(table)

    def _emit(self, day: int, events: list[pl.DataFrame]) -> None:
        """Give one day's events their transactions and log positions, in commit order, and hand them to
        the sink."""
        frames = [e.select("_ts", "_table", "_seq") for e in events]
        order = pl.concat(frames).with_row_index("_i").sort(["_ts", "_table", "_seq"])
        n = order.height
        new_tx = np.ones(n, dtype=bool)
        ts = order["_ts"].to_numpy()
        tbl = order["_table"].to_numpy()
        new_tx[1:] = (ts[1:] != ts[:-1]) | (tbl[1:] != tbl[:-1])
        tx = self.tx_id + np.cumsum(new_tx)
        row = np.arange(n) - np.maximum.accumulate(np.where(new_tx, np.arange(n), 0))
        step = self.rng.integers(120, 2400, size=n)
        if self.server.connector == "postgresql":
            pos = self.position + np.cumsum(step)
            row = np.zeros(n, dtype=np.int64)
        else:  # MySQL: one binlog event per transaction, rows within it
            pos = self.position + np.cumsum(np.where(new_tx, step, 0))
        prev = np.concatenate([[self.position], pos[:-1]])
        self.position = int(pos[-1])
        self.tx_id = int(tx[-1])
        positions = (
            order.select("_i")
            .with_columns(
                pl.Series("_pos", pos),
                pl.Series("_row", row),
                pl.Series("_tx", tx),
                pl.Series("_prev_pos", prev),
            )
            .sort("_i")
        )
        offset = 0
        for e in events:
            part = positions.slice(offset, e.height).drop("_i")
            offset += e.height
            table = self.server.tables[e["_table"][0]]
            with_pos = pl.concat([e, part], how="horizontal").with_columns(pl.lit("false").alias("_snapshot"))
            self.sink.write(day, table, with_pos)

    def finish(self) -> None:
        """Wait until every planned file is queued for writing, re-raising any encoding error."""
        self.sink.finish()

    def export_state(self) -> dict:
        """What continuing this connector later needs: its tables' rows (by key: their order in memory
        varies, not what is written), log position and topic offsets."""
        return {
            "rows": {t.name: self.rows.current(t).sort(t.primary_key) for t in self.server.tables},
            "snapshot_taken": self.rows.snapshot_taken,
            "position": self.position,
            "tx_id": self.tx_id,
            "offsets": dict(self.sink.offsets),
        }

    def restore_state(self, state: dict) -> None:
        """Continue from an :meth:`export_state` (tables missing from it start empty)."""
        self.rows.rows.update(state["rows"])
        self.rows.snapshot_taken = state["snapshot_taken"]
        self.position = state["position"]
        self.tx_id = state["tx_id"]
        self.sink.offsets.update(state["offsets"])
