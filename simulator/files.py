"""Writing landing files on background threads, with a bound on how much waits in memory."""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from isal import igzip


class FileWriter:
    """Writes files on ``threads`` threads; :meth:`write` blocks while ``max_pending`` files wait, so memory
    stays bounded however fast the simulation produces lines. Safe to call from several threads."""

    def __init__(self, threads: int = 2, max_pending: int = 8) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="simulator-writer")
        self.pending: deque[Future] = deque()
        self.max_pending = max_pending
        self.lock = threading.Lock()

    def write(self, path: Path, lines: pl.Series, gzip: bool, mtime_us: int | None = None) -> None:
        """Queue ``lines`` to be written to ``path`` (see :func:`write_lines`)."""
        with self.lock:
            while len(self.pending) >= self.max_pending:
                self.pending.popleft().result()
            self.pending.append(self.executor.submit(write_lines, path, lines, gzip, mtime_us))

    def close(self) -> None:
        """Wait for every queued file, re-raising the first write error."""
        with self.lock:
            while self.pending:
                self.pending.popleft().result()
        self.executor.shutdown()


def write_lines(path: Path, lines: pl.Series, gzip: bool, mtime_us: int | None = None) -> None:
    """Write ``lines`` (each ending with its newline) as a text file, gzipped (level 1, no timestamp in the
    header) or plain, and set its modification time to ``mtime_us`` when given (the simulated arrival)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _text_bytes(lines)
    path.write_bytes(igzip.compress(text, compresslevel=1, mtime=0) if gzip else text)
    if mtime_us is not None:
        os.utime(path, ns=(mtime_us * 1000, mtime_us * 1000))


def _text_bytes(lines: pl.Series) -> memoryview:
    """The lines as one contiguous buffer (no copy through Python strings)."""
    array = lines.to_arrow(compat_level=pl.CompatLevel.oldest())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array) + 1, offset=array.offset * 8)
    return memoryview(array.buffers()[2])[offsets[0] : offsets[-1]]
