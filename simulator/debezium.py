"""Debezium change events as a Kafka Connect file sink writes them: one folder per topic, JSON lines.

A :class:`Connector` keeps the current rows of its server's tables, turns each day's row changes into change
events (``before``/``after``/``source``/``op``), assigns log positions (PostgreSQL LSNs, MySQL binlog
coordinates), and writes them to ``<topic>+<partition>+<start offset>.json[.gz]`` files with the faults of
at-least-once delivery: replayed blocks of events and files that arrive out of order.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import US_PER_DAY, SimulationConfig
from simulator.encoding import decimal_base64, decimal_strings, iso_utc
from simulator.files import FileWriter
from simulator.tables import Column, Server, Table

DEBEZIUM_VERSION = "2.7.3.Final"
TOMBSTONE = "null"
"""A tombstone (a Kafka record with a null value) as the sink writes it: the JSON literal ``null``."""

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
_CONNECT_TYPES = {
    "int32": ("int32", None),
    "int64": ("int64", None),
    "float64": ("double", None),
    "bool": ("boolean", None),
    "string": ("string", None),
    "json": ("string", "io.debezium.data.Json"),
    "decimal": ("bytes", "org.apache.kafka.connect.data.Decimal"),
    "date": ("int32", "io.debezium.time.Date"),
    "timestamp_ms": ("int64", "io.debezium.time.Timestamp"),
    "timestamp_us": ("int64", "io.debezium.time.MicroTimestamp"),
    "timestamptz": ("string", "io.debezium.time.ZonedTimestamp"),
}
_MYSQL_BINLOG_BYTES = 256 * 1024 * 1024


def state_schema(table: Table) -> dict[str, pl.DataType]:
    """The polars schema in which the simulator holds a table's rows (timestamps as epoch microseconds)."""
    return {c.name: _STATE_TYPES[c.kind] for c in table.columns}


class Connector:
    """One Debezium connector: the state of its tables, its log position and its sink's files."""

    def __init__(
        self,
        server: Server,
        landing: Path,
        config: SimulationConfig,
        rng: np.random.Generator,
        writer: FileWriter,
    ) -> None:
        self.server = server
        self.config = config
        self.rng = rng
        self.writer = writer
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{server.name}-encoder")
        self.pending: deque[Future] = deque()
        self.cdc_root = landing / "cdc"
        self.state = {t.name: pl.DataFrame(schema=state_schema(t)) for t in server.tables}
        self.unapplied: dict[str, list[pl.DataFrame]] = {t.name: [] for t in server.tables}
        self.snapshot_taken = False
        self.position = 24_000_000 if server.connector == "postgresql" else 0
        self.tx_id = 780
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.stats: Counter[str] = Counter()

    # -- state --------------------------------------------------------------------------------------------
    def apply(self, day: int, changes: dict[str, pl.DataFrame], emit: bool) -> None:
        """Apply one day's row changes (``_ts``, ``_op`` in c/u/d, then the columns) to the tables; when
        ``emit`` is true also write them as change events (before the observed window they only build the
        state that the initial snapshot captures)."""
        events = []
        for index, table in enumerate(self.server.tables):
            change = changes.get(table.name)
            if change is None or change.is_empty():
                continue
            # a day of only deletes carries only the key: the other columns are null, as in any delete
            missing = [pl.lit(None, t).alias(c) for c, t in state_schema(table).items() if c not in change]
            change = change.with_columns(missing).select("_ts", "_op", *state_schema(table))
            change = change.cast(state_schema(table))
            if emit:
                with_before = self._before_images(table, change)
                events.append(with_before.with_columns(pl.lit(index, pl.Int32).alias("_table")))
            self._update_state(table, change)
        if emit and events:
            self._emit(day, events)

    def _before_images(self, table: Table, change: pl.DataFrame) -> pl.DataFrame:
        """The change with ``b_<column>`` before-image columns: the previous row for MySQL updates and deletes,
        only the key for PostgreSQL deletes (default replica identity), nothing otherwise."""
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

    def _update_state(self, table: Table, change: pl.DataFrame) -> None:
        """Queue a change for the table state; it is folded in when the state is next read. PostgreSQL
        tables need their state only for the snapshot, so after it their changes are not kept."""
        if self.server.connector == "mysql" or not self.snapshot_taken:
            self.unapplied[table.name].append(change)

    def current(self, table: Table) -> pl.DataFrame:
        """The current rows of ``table``, with every queued change folded in."""
        queued = self.unapplied[table.name]
        if queued:
            pk = table.primary_key
            last = pl.concat(queued).unique(subset=pk, keep="last", maintain_order=True)
            kept = self.state[table.name].join(last.select(pk), on=pk, how="anti")
            upserts = last.filter(pl.col("_op") != "d").drop("_ts", "_op")
            self.state[table.name] = pl.concat([kept, upserts]).rechunk()
            queued.clear()
        return self.state[table.name]

    # -- events -------------------------------------------------------------------------------------------
    def snapshot(self, ts_us: int) -> None:
        """Write the initial snapshot: every current row as an ``op: r`` event, in table order and in chunks
        of the sink's flush size."""
        self.snapshot_taken = True
        tables = [(i, t) for i, t in enumerate(self.server.tables) if not self.current(t).is_empty()]
        size = self.config.cdc_flush_size
        for n, (index, table) in enumerate(tables):
            rows = self.current(table).sort(table.primary_key)
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
                self._write_topic(0, table, events)
            self.stats["snapshot_events"] += count
            if self.server.connector == "postgresql":  # no before images to look up: free the rows
                self.state[table.name] = self.state[table.name].clear()

    def _emit(self, day: int, events: list[pl.DataFrame]) -> None:
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
            self._write_topic(day, table, with_pos)

    def _source(self, table: Table) -> pl.Expr:
        s = self.server
        ts_ms = pl.col("_ts") // 1000
        common = [
            pl.lit(DEBEZIUM_VERSION).alias("version"),
            pl.lit(s.connector).alias("connector"),
            pl.lit(s.name).alias("name"),
            ts_ms.alias("ts_ms"),
            pl.col("_snapshot").alias("snapshot"),
            pl.lit(s.database).alias("db"),
        ]
        if s.connector == "postgresql":
            fields = [
                *common,
                pl.concat_str(
                    [
                        pl.lit('["'),
                        pl.col("_prev_pos").cast(pl.String),
                        pl.lit('","'),
                        pl.col("_pos").cast(pl.String),
                        pl.lit('"]'),
                    ]
                ).alias("sequence"),
                pl.col("_ts").alias("ts_us"),
                (pl.col("_ts") * 1000).alias("ts_ns"),
                pl.lit(s.schema).alias("schema"),
                pl.lit(table.name).alias("table"),
                pl.col("_tx").alias("txId"),
                pl.col("_pos").alias("lsn"),
                pl.lit(None).alias("xmin"),
            ]
        else:
            binlog_no = 1 + pl.col("_pos") // _MYSQL_BINLOG_BYTES
            fields = [
                *common,
                pl.lit(None).alias("sequence"),
                pl.col("_ts").alias("ts_us"),
                (pl.col("_ts") * 1000).alias("ts_ns"),
                pl.lit(table.name).alias("table"),
                pl.lit(s.options["server_id"]).alias("server_id"),
                pl.lit(None).alias("gtid"),
                pl.format("mysql-bin.{}", binlog_no.cast(pl.String).str.zfill(6)).alias("file"),
                (154 + pl.col("_pos") % _MYSQL_BINLOG_BYTES).alias("pos"),
                pl.col("_row").alias("row"),
                pl.when(pl.col("_op") == "r").then(None).otherwise(pl.lit(7)).alias("thread"),
                pl.lit(None).alias("query"),
            ]
        return pl.struct(fields).alias("source")

    def _value(self, column: Column, prefix: str) -> pl.Expr:
        c = pl.col(prefix + column.name)
        kind = column.kind
        if kind == "timestamp_ms":
            c = c // 1000
        return c.alias(column.name)

    def _encode(self, day: int, table: Table, events: pl.DataFrame) -> pl.Series:
        """The change events as JSON with the columns that exist on ``day``, each ending with its newline
        (and a delete with its tombstone line)."""
        columns = table.columns_on(day)
        # decimals and zoned timestamps are encoded as strings first
        encoder = decimal_base64 if self.server.decimal_mode == "precise" else None
        digits = 6 if self.server.connector == "postgresql" else 0
        strings = []
        for c in columns:
            for name in (c.name, f"b_{c.name}"):
                if c.kind == "decimal":
                    strings.append(
                        encoder(events[name]) if encoder else decimal_strings(events[name], c.scale)
                    )
                elif c.kind == "timestamptz":
                    strings.append(iso_utc(events[name], digits))
        if strings:
            events = events.with_columns(strings)
        op = pl.col("_op")
        has_before = pl.col(f"b_{table.primary_key}").is_not_null()
        lag_ms = (pl.col("_ts") // 1000) + 150 + (pl.col("_pos") % 1700)
        payload = pl.struct(
            pl.when(has_before)
            .then(pl.struct([self._value(c, "b_") for c in columns]))
            .otherwise(None)
            .alias("before"),
            pl.when(op != "d")
            .then(pl.struct([self._value(c, "") for c in columns]))
            .otherwise(None)
            .alias("after"),
            self._source(table),
            pl.lit(None).alias("transaction"),
            op.alias("op"),
            lag_ms.alias("ts_ms"),
            (lag_ms * 1000).alias("ts_us"),
            (lag_ms * 1_000_000).alias("ts_ns"),
        ).struct.json_encode()
        # a tombstone follows each delete in the same partition: the two lines travel together
        end = pl.when(op == "d").then(pl.lit("\n" + TOMBSTONE + "\n")).otherwise(pl.lit("\n"))
        if self.server.schemas_enabled:
            schema = json.dumps(connect_schema(self.server, table, columns), separators=(",", ":"))
            line = pl.concat_str([pl.lit('{"schema":' + schema + ',"payload":'), payload, pl.lit("}"), end])
        else:
            line = pl.concat_str([payload, end])
        return events.select(line).to_series()

    # -- files --------------------------------------------------------------------------------------------
    def _write_topic(self, day: int, table: Table, events: pl.DataFrame) -> None:
        """Plan a topic's files for one batch of events (partitions, replayed block, file rotation, arrival
        times: every random draw, here in order) and queue their encoding and writing on the encoder thread."""
        topic = self.server.topic(table)
        events = events.sort("_pos", maintain_order=True).with_columns(
            (pl.col(table.primary_key).hash(7) % table.partitions).cast(pl.Int32).alias("_partition")
        )
        frame = events.select("_ts", "_op", "_partition").with_row_index("_i")
        plans = []
        for partition in range(table.partitions):
            rows = frame.filter(pl.col("_partition") == partition)
            if rows.is_empty():
                continue
            deletes = (rows["_op"] == "d").to_numpy()
            self.stats["events"] += rows.height
            self.stats["tombstones"] += int(deletes.sum())
            ts = rows["_ts"].to_numpy()
            block = None if rows["_op"][0] == "r" else self._replay(len(ts))
            if block:
                start, size = block
                self.stats["duplicate_events"] += size
                self.stats["tombstones"] += int(deletes[start : start + size].sum())
                ts = np.concatenate([ts, np.full(size, ts.max())])
            plans.append((rows["_i"].to_numpy(), block, self._plan_files(topic, partition, day, ts)))
        while len(self.pending) > 1:
            self.pending.popleft().result()
        self.pending.append(self.encoder.submit(self._encode_and_write, day, table, events, plans))

    def _replay(self, n: int) -> tuple[int, int] | None:
        """At-least-once delivery: a connector restart re-sends a contiguous block of already sent events
        (its start and size, or None)."""
        expected = self.config.faults.cdc_duplicate * n
        size = int(expected) + int(self.rng.random() < expected - int(expected))
        if size == 0:
            return None
        return int(self.rng.integers(0, n - size + 1)), size

    def _plan_files(self, topic: str, partition: int, day: int, ts: np.ndarray) -> list:
        """Split a partition's lines into files: a new file every rotation window and every flush size; each
        file gets its start offset and its arrival time (some arrive after the file that follows them)."""
        cfg = self.config
        day_start = cfg.start_us + day * US_PER_DAY
        window_us = cfg.cdc_rotate_hours * 3600 * 1_000_000
        window = np.maximum(ts - day_start, 0) // window_us
        _, first = np.unique(window, return_index=True)
        files = []
        for w in window[np.sort(first)]:
            members = np.flatnonzero(window == w)
            for chunk_start in range(0, len(members), cfg.cdc_flush_size):
                chunk = members[chunk_start : chunk_start + cfg.cdc_flush_size]
                offset = self.offsets[(topic, partition)]
                self.offsets[(topic, partition)] += len(chunk)
                arrival = day_start + (int(w) + 1) * window_us + int(self.rng.integers(30, 600)) * 1_000_000
                if self.rng.random() < cfg.faults.cdc_out_of_order_file:
                    arrival += window_us + int(self.rng.integers(3600, 86_400)) * 1_000_000
                    self.stats["out_of_order_files"] += 1
                suffix = ".json.gz" if self.server.gzip else ".json"
                files.append(
                    (chunk, self.cdc_root / topic / f"{topic}+{partition}+{offset:010d}{suffix}", arrival)
                )
                self.stats["files"] += 1
        return files

    def _encode_and_write(self, day: int, table: Table, events: pl.DataFrame, plans: list) -> None:
        """Encode the events and write the planned files (runs on the encoder thread)."""
        lines = self._encode(day, table, events)
        for rows, block, files in plans:
            if block:
                start, size = block
                rows = np.concatenate([rows, rows[start : start + size]])
            for chunk, path, arrival in files:
                self.writer.write(path, lines.gather(rows[chunk]), self.server.gzip, arrival)

    def finish(self) -> None:
        """Wait until every planned file is queued for writing, re-raising any encoding error."""
        while self.pending:
            self.pending.popleft().result()
        self.encoder.shutdown()


def connect_schema(server: Server, table: Table, columns: tuple[Column, ...]) -> dict:
    """The Kafka Connect JSON schema of a Debezium envelope for ``table`` with ``columns``."""

    def field(c: Column) -> dict:
        ctype, name = _CONNECT_TYPES[c.kind]
        f: dict = {"type": ctype, "optional": c.nullable}
        if name:
            f["name"] = name
            f["version"] = 1
        if c.kind == "decimal":
            f["parameters"] = {"scale": str(c.scale), "connect.decimal.precision": str(c.precision)}
        f["field"] = c.name
        return f

    topic = server.topic(table)
    row = {
        "type": "struct",
        "fields": [field(c) for c in columns],
        "optional": True,
        "name": f"{topic}.Value",
    }
    if server.connector == "postgresql":
        source_fields = [
            ("schema", "string", False),
            ("table", "string", False),
            ("txId", "int64", True),
            ("lsn", "int64", True),
            ("xmin", "int64", True),
        ]
        source_name = "io.debezium.connector.postgresql.Source"
    else:
        source_fields = [
            ("table", "string", True),
            ("server_id", "int64", False),
            ("gtid", "string", True),
            ("file", "string", False),
            ("pos", "int64", False),
            ("row", "int32", False),
            ("thread", "int64", True),
            ("query", "string", True),
        ]
        source_name = "io.debezium.connector.mysql.Source"
    source = {
        "type": "struct",
        "fields": [
            {"type": "string", "optional": False, "field": "version"},
            {"type": "string", "optional": False, "field": "connector"},
            {"type": "string", "optional": False, "field": "name"},
            {"type": "int64", "optional": False, "field": "ts_ms"},
            {
                "type": "string",
                "optional": True,
                "name": "io.debezium.data.Enum",
                "version": 1,
                "parameters": {
                    "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"
                },
                "default": "false",
                "field": "snapshot",
            },
            {"type": "string", "optional": False, "field": "db"},
            {"type": "string", "optional": True, "field": "sequence"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "int64", "optional": True, "field": "ts_ns"},
            *({"type": t, "optional": o, "field": n} for n, t, o in source_fields),
        ],
        "optional": False,
        "name": source_name,
        "field": "source",
    }
    transaction = {
        "type": "struct",
        "fields": [
            {"type": "string", "optional": False, "field": "id"},
            {"type": "int64", "optional": False, "field": "total_order"},
            {"type": "int64", "optional": False, "field": "data_collection_order"},
        ],
        "optional": True,
        "name": "event.block",
        "version": 1,
        "field": "transaction",
    }
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            source,
            transaction,
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "int64", "optional": True, "field": "ts_ns"},
        ],
        "optional": False,
        "name": f"{topic}.Envelope",
        "version": 2,
    }
