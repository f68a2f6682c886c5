"""The landing zone: which raw files have arrived, and their lines read in bounded chunks.

Layout (as the sinks write it): ``cdc/<topic>/<topic>+<partition>+<start offset>.<ext>`` for Kafka Connect
sinks (other names in a topic folder, as Debezium Server sinks write them, are taken in without a Kafka
position), and ``clickstream/**/*.<ext>`` for the Segment object-store destination, where ``<ext>`` is
``json``, ``jsonl`` or ``ndjson`` (newline-delimited JSON), each optionally gzipped (``.gz``). Any other file
in a feed's folder is not taken in and is reported (:func:`survey`). The zone is read through ``pyarrow.fs``,
so the same code lists a local folder or a bucket.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from isal import igzip

from lake.object_store import filesystem

DATA_SUFFIXES = tuple(f".{ext}{gz}" for ext in ("json", "jsonl", "ndjson") for gz in ("", ".gz"))
"""The endings of the files ingestion takes in: JSON lines, plain or gzipped."""
KAFKA_FILE_NAME = re.compile(
    r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.(?:json|jsonl|ndjson)(\.gz)?$"
)
CHUNK_BYTES = 32 * 1024 * 1024
"""Uncompressed bytes read per chunk: the bound on what one file holds in memory at a time."""


@dataclass(frozen=True)
class LandedFile:
    """One raw file in the landing zone, identified by its path relative to the zone, size and mtime."""

    feed_id: str
    """The feed the file belongs to (a CDC topic such as ``crm.public.contacts``, or ``clickstream``)."""
    relpath: str
    size: int
    mtime_ns: int
    kafka_partition: int | None = None
    kafka_start_offset: int | None = None
    """Offset of the file's first record in its Kafka partition, when the name carries it."""

    @property
    def compressed(self) -> bool:
        """True for gzipped files (``.gz``)."""
        return self.relpath.endswith(".gz")


def arrival_order(file: LandedFile) -> tuple[int, int, int, str]:
    """The order ingestion takes files in: by arrival time, then the files of one Kafka partition by their
    start offset, then by path. The arrival time is the file's modification time: on object storage the
    object's ``LastModified``, set by the server when the sink's upload completed, in whole seconds, so the
    offsets and paths order the files that arrived within the same second."""
    partition = -1 if file.kafka_partition is None else file.kafka_partition
    offset = -1 if file.kafka_start_offset is None else file.kafka_start_offset
    return file.mtime_ns, partition, offset, file.relpath


def landing_filesystem(landing: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of the landing zone (a local folder or an object-store URI, whose store
    the ``AWS_*`` variables describe: :func:`lake.object_store.filesystem`)."""
    return filesystem(landing)


def _landed(feed_id: str, relpath: str, info: pafs.FileInfo) -> LandedFile:
    match = KAFKA_FILE_NAME.match(relpath.rsplit("/", 1)[-1])
    return LandedFile(
        feed_id=feed_id,
        relpath=relpath,
        size=info.size,
        mtime_ns=info.mtime_ns or 0,
        kafka_partition=int(match["partition"]) if match else None,
        kafka_start_offset=int(match["offset"]) if match else None,
    )


def survey(landing: str, feed_id: str, folder: str) -> tuple[list[LandedFile], list[str]]:
    """The data files of one feed in its ``folder`` of the zone (``cdc/<topic>``, ``clickstream``: the feed's
    :attr:`~lake.feeds.Feed.landing_folder`) sorted by path, and the paths (relative to the zone) of the other
    files in that folder, which ingestion does not understand and leaves alone."""
    fs, base = landing_filesystem(landing)
    selector = pafs.FileSelector(f"{base.rstrip('/')}/{folder}", recursive=True, allow_not_found=True)
    files, others = [], []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        relpath = info.path[len(base.rstrip("/")) + 1 :]
        if info.path.endswith(DATA_SUFFIXES):
            files.append(_landed(feed_id, relpath, info))
        else:
            others.append(relpath)
    return sorted(files, key=lambda f: f.relpath), sorted(others)


def discover(landing: str, feed_id: str, folder: str) -> list[LandedFile]:
    """Every data file of one feed in its ``folder`` of the zone, sorted by path."""
    return survey(landing, feed_id, folder)[0]


def cdc_topics(landing: str) -> list[str]:
    """The topic folders present under ``cdc/``."""
    fs, base = landing_filesystem(landing)
    selector = pafs.FileSelector(f"{base.rstrip('/')}/cdc", recursive=False, allow_not_found=True)
    return sorted(i.base_name for i in fs.get_file_info(selector) if i.type == pafs.FileType.Directory)


def read_line_chunks(
    landing: str, file: LandedFile, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, pa.Array]]:
    """The file's lines as ``(number of the first line, large_binary array of lines)`` chunks of about
    ``chunk_bytes``, decompressing gzip on the fly. Line numbers start at 1; a final newline ends the last
    line instead of starting an empty one."""
    fs, base = landing_filesystem(landing)
    with fs.open_input_stream(f"{base.rstrip('/')}/{file.relpath}", compression=None) as raw:
        stream = igzip.GzipFile(fileobj=raw, mode="rb") if file.compressed else raw
        next_line, carry = 1, b""
        while True:
            block = stream.read(chunk_bytes)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            data, carry = data[:cut], data[cut + 1 :]
            lines = pc.split_pattern(pa.array([data], pa.large_binary()), b"\n").flatten()
            yield next_line, lines
            next_line += len(lines)
        if carry:
            yield next_line, pa.array([carry], pa.large_binary())
