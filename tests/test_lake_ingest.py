"""Landing to bronze on real generated files: nothing lost, nothing duplicated, crashes repaired by a
re-run."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import Simulated, lake_settings, lake_tables, read_lines
from deltalake import DeltaTable

from data_contracts import load_contracts
from lake import bronze
from lake.ingest import ingest_all
from lake.landing import discover
from lake.ledger import Ledger
from lake.settings import REPO_ROOT

CRASH_FEEDS = ["crm.public.contacts", "shop.shop.orders", "clickstream"]


def landed_lines(landing: Path) -> dict[str, int]:
    """Lines per feed in the landing zone, counted straight from the files."""
    counts: dict[str, int] = {}
    for path in landing.rglob("*.json*"):
        feed = "clickstream" if path.relative_to(landing).parts[0] == "clickstream" else path.parent.name
        counts[feed] = counts.get(feed, 0) + len(read_lines(path))
    return counts


def test_every_landed_record_is_in_bronze_or_quarantine(simulated: Simulated, ingested) -> None:
    settings, run = ingested
    lines = landed_lines(simulated.landing)
    quarantine = pl.read_delta(bronze.quarantine_uri(settings))
    contracts = load_contracts()
    for report in run.ingested:
        if not report.records:  # a feed nothing landed for yet (the CRM's echo of the sync) has no table
            assert report.feed_id not in lines
            continue
        table = pl.read_delta(bronze.bronze_uri(settings, contracts[report.feed_id]))
        rejected = quarantine.filter(pl.col("feed_id") == report.feed_id)
        assert table.height + rejected.height == lines[report.feed_id] == report.records, report.feed_id
        # each record once: (file, line) is a key across bronze and quarantine together
        keys = pl.concat(
            [
                table.select("_source_file", "_line"),
                rejected.select(pl.col("source_file").alias("_source_file"), pl.col("line").alias("_line")),
            ]
        )
        assert keys.n_unique() == keys.height
    faults = simulated.manifest["faults"]
    click = quarantine.filter(pl.col("feed_id") == "clickstream")
    assert click.height == faults["click_malformed_lines"] + faults["click_missing_field_messages"]
    assert click.filter(pl.col("reason") == "invalid JSON").height == faults["click_malformed_lines"]
    assert quarantine.filter(pl.col("feed_id") != "clickstream").height == 0
    # a quarantined line is the raw text of that line of that file
    row = click.row(0, named=True)
    assert read_lines(simulated.landing / row["source_file"])[row["line"] - 1] == row["raw"]


def test_tombstones_and_kafka_offsets_are_kept(simulated: Simulated, ingested) -> None:
    settings, _ = ingested
    orders = pl.read_delta(bronze.bronze_uri(settings, load_contracts()["shop.shop.orders"]))
    assert orders["is_tombstone"].sum() == orders.filter(pl.col("op") == "d").height > 0
    start = pl.col("_source_file").str.extract(r"\+(\d+)\.json").cast(pl.Int64)
    partition = pl.col("_source_file").str.extract(r"\+(\d+)\+").cast(pl.Int64)
    assert orders.filter(pl.col("_kafka_offset") != start + pl.col("_line") - 1).height == 0
    assert orders.filter(pl.col("_kafka_partition") != partition).height == 0


def test_raw_records_are_written_with_zstd_and_no_dictionary(ingested) -> None:
    settings, _ = ingested
    files = [Path(f) for f in DeltaTable(bronze.quarantine_uri(settings)).file_uris()]
    files += [Path(f) for f in DeltaTable(f"{settings.zone('bronze')}/clickstream/events").file_uris()]
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
        raw = metadata.row_group(0).column(names.index("raw"))
        assert raw.compression == "ZSTD", file
        assert "RLE_DICTIONARY" not in raw.encodings and "PLAIN_DICTIONARY" not in raw.encodings, file


def test_ingesting_again_changes_nothing(simulated: Simulated, tmp_path: Path) -> None:
    settings = lake_settings(tmp_path / "lake", simulated.landing)
    ingest_all(settings, CRASH_FEEDS)
    first = lake_tables(settings)
    again = ingest_all(settings, CRASH_FEEDS)
    assert sum(r.files for r in again.ingested) == 0
    after = lake_tables(settings)
    assert first.keys() == after.keys()
    for name, frame in first.items():
        assert frame.equals(after[name]), name


def run_ingest(lake_root: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAKE_ROOT": str(lake_root)}
    if crash_at:
        env["LAKE_CRASH_AT"] = crash_at
    feeds = [arg for feed in CRASH_FEEDS for arg in ("--feed", feed)]
    return subprocess.run(
        [sys.executable, "-m", "lake.ingest", *feeds],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash_at", ["ingest:after_plan", "ingest:after_bronze", "ingest:after_quarantine", "cdc:after_history"]
)
def test_a_killed_run_repaired_by_a_rerun_equals_an_uninterrupted_run(
    simulated: Simulated, tmp_path: Path, crash_at: str
) -> None:
    clean = lake_settings(tmp_path / "clean", simulated.landing)
    assert run_ingest(tmp_path / "clean").returncode == 0
    crashed = lake_settings(tmp_path / "crashed", simulated.landing)
    killed = run_ingest(tmp_path / "crashed", crash_at)
    assert killed.returncode == -9, killed.stderr
    rerun = run_ingest(tmp_path / "crashed")
    assert rerun.returncode == 0, rerun.stderr
    expected, actual = lake_tables(clean), lake_tables(crashed)
    ledger = "bronze/_ingestion_ledger"
    assert expected.keys() == actual.keys()
    for name in expected:
        if (
            name == ledger
        ):  # the repaired run's ledger has the same committed files (and the batch it resumed)
            columns = ["feed_id", "batch_seq", "relpath", "records", "bronze_rows", "quarantined"]
            committed = [
                t.filter(pl.col("status") == "committed").select(columns).sort(columns)
                for t in (expected[name], actual[name])
            ]
            assert committed[0].equals(committed[1])
        else:
            assert expected[name].equals(actual[name]), name


def test_a_file_over_the_reject_threshold_fails_loudly_but_keeps_every_record(
    simulated: Simulated, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    topic = "crm.public.consents"
    shutil.copytree(simulated.landing / "cdc" / topic, landing / "cdc" / topic)
    good = max((read_lines(p) for p in (landing / "cdc" / topic).glob("*.json")), key=len)[:20]
    bad_file = landing / "cdc" / topic / f"{topic}+0+9000000000.json"
    bad = [
        "{not json",
        '{"op": "x"}',
        "[1, 2]",
        '{"before": null, "after": {"consent_id": 1}, "op": "c", "source": {"lsn": 1}}',
    ] * 5
    bad_file.write_text("\n".join(good + bad) + "\n")
    settings = lake_settings(tmp_path / "lake", landing)
    report = bronze.ingest(settings, load_contracts()[topic])
    assert [r.relpath for r in report.rejections] == [f"cdc/{topic}/{bad_file.name}"]
    rejection = report.rejections[0]
    assert (rejection.records, rejection.quarantined) == (40, 20)
    assert "invalid JSON" in str(rejection) and "40" in str(rejection)
    quarantine = pl.read_delta(bronze.quarantine_uri(settings)).filter(
        pl.col("source_file") == rejection.relpath
    )
    assert sorted(quarantine["line"].to_list()) == list(range(21, 41))
    reasons = set(quarantine["reason"].to_list())
    assert {"invalid JSON", "unknown op x", "not a JSON object"} <= reasons
    assert any(r.startswith("missing required field") for r in reasons)
    # the command line names the file and exits 1; the file is not taken in twice
    env = {**os.environ, "LAKE_ROOT": str(tmp_path / "lake2")}
    lake_settings(tmp_path / "lake2", landing)
    done = subprocess.run(
        [sys.executable, "-m", "lake.ingest", "--feed", topic],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and bad_file.name in done.stderr
    assert bronze.ingest(settings, load_contracts()[topic]).files == 0


@pytest.mark.slow  # ingests part of the test company's clickstream twice, once in 4 KiB chunks
def test_large_files_are_read_in_chunks_with_the_same_result(simulated: Simulated, tmp_path: Path) -> None:
    contract = load_contracts()["clickstream"]
    landing = tmp_path / "landing"
    for source in sorted(simulated.landing.glob("clickstream/**/*.jsonl.gz"))[:120]:
        (landing / source.relative_to(simulated.landing)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, landing / source.relative_to(simulated.landing))
    small = lake_settings(tmp_path / "small", landing)
    large = lake_settings(tmp_path / "large", landing)
    bronze.ingest(small, contract, chunk_bytes=4096, max_files_per_batch=50)
    bronze.ingest(large, contract)
    columns = ["message_id", "raw", "_source_file", "_line"]
    a, b = (
        pl.read_delta(bronze.bronze_uri(s, contract)).select(columns).sort(columns) for s in (small, large)
    )
    assert a.equals(b)
    assert Ledger(bronze.ledger_uri(small)).committed_files()["batch_seq"].n_unique() > 1


def test_invalid_utf8_and_gzipped_lines_are_quarantined_with_their_line(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "clickstream" / "web" / "2026-09-01" / "00"
    folder.mkdir(parents=True)
    message = (
        '{"messageId": "m%d", "type": "page", "anonymousId": "a", "receivedAt": '
        '"2026-09-01T00:00:01Z", "sentAt": "2026-09-01T00:00:00Z", "originalTimestamp": '
        '"2026-09-01T00:00:00Z", "timestamp": "2026-09-01T00:00:00Z"}'
    )
    lines = [(message % i).encode() for i in range(5)]
    lines[2] = b'{"messageId": "\xff\xfe"}'
    with gzip.open(folder / "part-0000.jsonl.gz", "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    settings = lake_settings(tmp_path / "lake", tmp_path / "landing")
    report = bronze.ingest(settings, load_contracts()["clickstream"])
    assert (report.records, report.bronze_rows, report.quarantined) == (5, 4, 1)
    row = pl.read_delta(bronze.quarantine_uri(settings)).row(0, named=True)
    assert (row["line"], row["reason"]) == (3, "invalid UTF-8") and "\\xff" in row["raw"]
    assert [f.relpath for f in discover(settings.landing, "clickstream", "clickstream")] == [
        "clickstream/web/2026-09-01/00/part-0000.jsonl.gz"
    ]


def test_a_truncated_gzip_file_keeps_what_was_readable_and_quarantines_the_rest(
    simulated: Simulated, tmp_path: Path
) -> None:
    source = max(simulated.landing.glob("clickstream/**/*.jsonl.gz"), key=lambda p: p.stat().st_size)
    folder = tmp_path / "landing" / source.parent.relative_to(simulated.landing)
    folder.mkdir(parents=True)
    data = gzip.compress(b"\n".join(line.encode() for line in read_lines(source) * 200) + b"\n")
    (folder / source.name).write_bytes(data[: len(data) // 2])
    settings = lake_settings(tmp_path / "lake", tmp_path / "landing")
    report = bronze.ingest(settings, load_contracts()["clickstream"], chunk_bytes=64 * 1024)
    quarantine = pl.read_delta(bronze.quarantine_uri(settings))
    unreadable = quarantine.filter(pl.col("reason").str.starts_with("file unreadable from line"))
    assert unreadable.height == 1 and "EOFError" in unreadable["reason"][0]
    lines = pl.read_delta(bronze.bronze_uri(settings, load_contracts()["clickstream"]))["_line"].to_list()
    lines += quarantine.filter(~pl.col("reason").str.starts_with("file unreadable"))["line"].to_list()
    assert (
        sorted(lines) == list(range(1, unreadable["line"][0])) and len(lines) > 1000
    )  # every line before it
    assert report.records == len(lines) + 1
