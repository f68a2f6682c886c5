"""File writing of a connector's Kafka Connect file sink: one folder per topic, ``<topic>+<partition>+<start
offset>.json[.gz]`` files rotated by time and flush size, with the faults of at-least-once delivery (replayed
blocks of events, files that arrive out of order)."""

from __future__ import annotations

from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import US_PER_DAY, SimulationConfig
from simulator.debezium.envelope import EnvelopeEncoder
from simulator.files import FileWriter
from simulator.tables import Server, Table


class TopicSink:
    """Plans a server's topic files (partitions, replays, rotation, arrival times) with ``rng`` in the
    caller's thread, and encodes and writes them on a background thread; ``offsets`` is the next offset of
    each (topic, partition)."""

    def __init__(
        self,
        server: Server,
        landing: Path,
        config: SimulationConfig,
        rng: np.random.Generator,
        writer: FileWriter,
        envelope: EnvelopeEncoder,
    ) -> None:
        self.server = server
        self.config = config
        self.rng = rng
        self.writer = writer
        self.envelope = envelope
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{server.name}-encoder")
        self.pending: deque[Future] = deque()
        self.cdc_root = landing / "cdc"
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.stats: Counter[str] = Counter()

    def write(self, day: int, table: Table, events: pl.DataFrame) -> None:
        """Plan a topic's files for one batch of events (partitions, replayed block, file rotation, arrival
        times: every random draw, here in order) and queue their encoding and writing on the encoder
        thread."""
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
        lines = self.envelope.encode(day, table, events)
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
