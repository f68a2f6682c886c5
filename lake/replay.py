"""``python -m lake.replay``: move the quarantined records that a feed's contract accepts now (after a fix of
the contract or of the code) into bronze, then apply them to silver.

A replay is a bronze batch like an ingestion batch: numbered by the ledger (planned there with status
``replay`` before anything is written), its valid records appended to the bronze table, and the quarantine
table rewritten (replayed records removed, records still refused given their new reason), both commits
carrying the application transaction ``(ingest:<feed>, batch number)``; the ledger then records, per file,
what moved. A run killed at any point is finished by the next one; running it again moves nothing twice.
Throughout, records in = bronze + quarantine, in the tables and in the ledger's counts.

Records quarantined for their bytes rather than their content (``invalid UTF-8``, an unreadable file) are not
replayed: their quarantine row does not hold the record as it arrived.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from data_contracts import Contract, load_contracts
from data_contracts.sql import sql_literal
from lake import delta
from lake.bronze import BatchParser, append_batch, bronze_uri, ledger_uri, quarantine_uri
from lake.faults import crash_point
from lake.landing import CHUNK_BYTES, LandedFile
from lake.ledger import REPLAY, FileCounts, Ledger
from lake.settings import Settings, disable_telemetry, get_settings

ROWS_PER_CHUNK = 200_000
"""Quarantined records parsed at once (whole files at a time)."""
NOT_REPLAYED = re.compile(r"^(invalid UTF-8|file unreadable from line )")


class ReplayRefused(RuntimeError):
    """The feed has an unfinished ingestion batch: ingestion must finish it first."""


@dataclass
class ReplayReport:
    """What one replay of one feed did."""

    feed_id: str
    batch: int | None = None
    selected: int = 0
    """Quarantined records that were tried again."""
    replayed: int = 0
    """Of those, the records now in bronze."""
    still_quarantined: int = 0
    seconds: float = 0.0


def like_pattern(pattern: str) -> str:
    """A SQL ``LIKE`` pattern (``%`` any text, ``_`` one character) as an anchored regular expression."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return "^(?s:" + "".join(parts) + ")$"


def _selection(settings: Settings, contract: Contract, reason_like: str | None) -> pl.LazyFrame | None:
    """The feed's quarantined records to try again (source file, line, raw text, reason)."""
    quarantine = delta.scan(quarantine_uri(settings), settings.storage_options)
    if quarantine is None:
        return None
    chosen = quarantine.filter(
        (pl.col("feed_id") == contract.feed_id) & ~pl.col("reason").str.contains(NOT_REPLAYED.pattern)
    )
    if reason_like is not None:
        chosen = chosen.filter(pl.col("reason").str.contains(like_pattern(reason_like)))
    return chosen.select("source_file", "line", "raw", "reason")


def _files(ledger: Ledger, feed_id: str, relpaths: list[str]) -> list[LandedFile]:
    """The landed files (as the ledger took them in) that the quarantined records come from."""
    committed = ledger.committed_files().filter(
        (pl.col("feed_id") == feed_id) & pl.col("relpath").is_in(relpaths)
    )
    latest = committed.sort("batch_seq").group_by("relpath", maintain_order=True).last().sort("relpath")
    return [
        LandedFile(
            feed_id,
            r["relpath"],
            r["size"],
            r["mtime_ns"],
            r["kafka_partition"],
            r["kafka_start_offset"],
        )
        for r in latest.iter_rows(named=True)
    ]


def _chunks(selection: pl.LazyFrame, files: list[LandedFile], rows_per_chunk: int) -> Iterator[pa.Table]:
    """The selected records as parser chunks ``(file_idx, line_no, line)``, whole files at a time."""
    index = {f.relpath: i for i, f in enumerate(files)}
    sizes = selection.group_by("source_file").len().sort("source_file").collect()
    group: list[str] = []
    rows = 0
    for relpath, count in sizes.iter_rows():
        group.append(relpath)
        rows += count
        if rows >= rows_per_chunk or relpath == sizes["source_file"][-1]:
            part = selection.filter(pl.col("source_file").is_in(group)).sort("source_file", "line").collect()
            yield pa.table(
                {
                    "file_idx": pa.array([index[p] for p in part["source_file"]], pa.int32()),
                    "line_no": part["line"].to_arrow(),
                    "line": part["raw"].to_arrow().cast(pa.large_string()),
                }
            )
            group, rows = [], 0


def replay(
    settings: Settings,
    contract: Contract,
    *,
    reason_like: str | None = None,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> ReplayReport:
    """Try the feed's quarantined records (those whose reason matches the ``LIKE`` pattern ``reason_like``, or
    all) against the contract again: move those it accepts to bronze, give the others their new reason. First
    finishes a replay that an earlier run left open. Safe to run again at any time."""
    started = time.perf_counter()
    feed, options = contract.feed_id, settings.storage_options
    report = ReplayReport(feed)
    ledger = Ledger(ledger_uri(settings), options)
    state = ledger.state(feed)
    if state.open_batch is not None:
        raise ReplayRefused(
            f"{feed}: ingestion batch {state.open_batch[0]} is unfinished; run python -m lake.ingest first"
        )
    selection = _selection(settings, contract, reason_like)
    relpaths = [] if selection is None else selection.select(pl.col("source_file").unique()).collect()
    relpaths = sorted(relpaths["source_file"]) if len(relpaths) else []
    unfinished = ledger.open_replay(feed)
    if unfinished is None and not relpaths:
        report.seconds = time.perf_counter() - started
        return report
    if unfinished is None:
        seq, files = state.next_seq, _files(ledger, feed, relpaths)
        ledger.plan(feed, seq, files, status=REPLAY)
    else:
        seq, files = unfinished
    crash_point("replay:after_plan")
    report.batch = seq
    known = {f.relpath for f in files}
    if selection is not None:
        selection = selection.filter(pl.col("source_file").is_in(list(known)))
    parser = BatchParser(settings, contract, seq, files, CHUNK_BYTES)
    chunks = _chunks(selection, files, rows_per_chunk) if selection is not None and files else iter(())
    app_id, target, quarantine = f"ingest:{feed}", bronze_uri(settings, contract), quarantine_uri(settings)
    append_batch(settings, parser, app_id, chunks)
    crash_point("replay:after_bronze")
    moved = (
        delta.scan(target, options)
        .filter(pl.col("_batch_seq") == seq)
        .select(pl.col("_source_file").alias("source_file"), pl.col("_line").alias("line"))
        .collect()
    )
    refused = (
        pl.from_arrow(pa.concat_tables(parser.quarantine)).select("source_file", "line", "reason")
        if parser.quarantine
        else pl.DataFrame(schema={"source_file": pl.String, "line": pl.Int64, "reason": pl.String})
    )
    if delta.applied_version(quarantine, app_id, options) < seq:
        _rewrite_quarantine(quarantine, options, feed, moved, refused, app_id, seq)
    crash_point("replay:after_quarantine")
    per_file = dict(moved.group_by("source_file").len().iter_rows())
    ledger.commit(
        feed,
        seq,
        [(f, FileCounts(0, per_file.get(f.relpath, 0), -per_file.get(f.relpath, 0))) for f in files],
    )
    report.selected = sum(parser.records)
    report.replayed = moved.height
    report.still_quarantined = refused.height
    report.seconds = time.perf_counter() - started
    return report


def _rewrite_quarantine(
    uri: str,
    options: dict[str, str],
    feed_id: str,
    moved: pl.DataFrame,
    refused: pl.DataFrame,
    app_id: str,
    seq: int,
) -> None:
    """In one commit that records ``(app_id, seq)``: delete the quarantine rows of the records now in bronze,
    and give the records still refused their new reason."""
    changes = pl.concat(
        [
            moved.with_columns(pl.lit(True).alias("_moved"), pl.lit(None, pl.String).alias("reason")),
            refused.with_columns(pl.lit(False).alias("_moved")),
        ],
        how="diagonal_relaxed",
    ).with_columns(pl.lit(feed_id).alias("feed_id"))
    if not changes.height:
        delta.record_version(uri, app_id, seq, options)
        return
    table = delta.open_table(uri, options)
    (
        table.merge(
            changes.to_arrow(),
            predicate=f"t.feed_id = {sql_literal(feed_id)} AND t.feed_id = s.feed_id "
            "AND t.source_file = s.source_file AND t.line = s.line",
            source_alias="s",
            target_alias="t",
            commit_properties=delta.commit_properties(app_id, seq),
        )
        .when_matched_delete(predicate="s._moved")
        .when_matched_update({"reason": "s.reason"}, predicate="NOT s._moved")
        .execute()
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: replay, apply to silver, refresh the warehouse views, print a line per
    feed."""
    from lake.ingest import refresh
    from lake.warehouse import publish_silver

    parser = argparse.ArgumentParser(prog="python -m lake.replay", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--feed", action="append", help="only this feed (a CDC topic or 'clickstream'); repeatable"
    )
    parser.add_argument(
        "--reason-like",
        help="only records whose quarantine reason matches this SQL LIKE pattern ('%%decimal%%')",
    )
    args = parser.parse_args(argv)
    disable_telemetry()
    settings = get_settings()
    contracts = load_contracts(settings.contracts_dir)
    unknown = [f for f in args.feed or [] if f not in contracts]
    if unknown:
        print(f"no data contract for {', '.join(unknown)}", file=sys.stderr)
        return 2
    failed = False
    for feed_id, contract in contracts.items():
        if args.feed and feed_id not in args.feed:
            continue
        try:
            report = replay(settings, contract, reason_like=args.reason_like)
        except ReplayRefused as refused:
            print(f"REFUSED {refused}", file=sys.stderr)
            failed = True
            continue
        if report.batch is None:
            continue
        refresh(settings, contract)
        print(
            f"{feed_id}: {report.selected:,} quarantined records tried again, {report.replayed:,} replayed "
            f"into bronze (batch {report.batch}), {report.still_quarantined:,} still quarantined"
        )
    publish_silver(settings, contracts)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
