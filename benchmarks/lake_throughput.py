"""Lake benchmark: bronze ingestion throughput, CDC apply cost, peak memory on one large file and at scale.

1. Bronze ingestion of the simulated company at 100,000 persons over 30 days (``lake.bronze.ingest`` over
   every feed), in events/s, against the floor of reading the same files with polars and appending them to
   Delta with deltalake, in the same run (the floor is told which lines are not JSON: polars cannot skip
   them). Target: ratio at most 2.
2. CDC apply (``lake.cdc.apply``: decode, history and current merges) of a bronze batch that updates 10% of
   a 1,000,000-row table, against a bare deltalake merge of the already-known changed rows into a
   1,000,000-row table. Target: within 3x.
3. Peak memory of a separate process ingesting one 2 GB clickstream file. Target: under 2 GB.
4. Bounded ingestion at scale: ``python -m lake.ingest`` (landing -> bronze -> silver, default settings) of
   the simulated company at 1,000,000 persons over 30 days, in a separate process: wall time, events/s, and
   its peak RSS against the target (under 4 GB whatever the landing zone's size) and against the landing
   zone's uncompressed size. The generated landing zone is kept in ``--scale-scratch`` (default: a folder in
   the temp dir) and reused by later runs; each run ingests it into a fresh lake.

    python benchmarks/lake_throughput.py [--persons 100000] [--days 30] [--rows 1000000] [--file-gb 2]
        [--scale-persons 1000000] [--scale-scratch DIR] [--only ingest|apply|memory|scale]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import DeltaTable, write_deltalake
from isal import igzip

from data_contracts import load_contract, load_contracts
from lake import bronze, cdc
from lake.landing import discover
from lake.settings import REPO_ROOT, TELEMETRY_OFF, get_settings
from simulator import SimulationConfig, generate

TARGET_INGEST_RATIO = 2.0
TARGET_APPLY_RATIO = 3.0
TARGET_PEAK_GB = 2.0
TARGET_SCALE_PEAK_GB = 4.0
REPEATS = 3
MEMORY_LAKE = "memory-lake"

BENCH_CONTRACT = """\
apiVersion: v3.1.0
kind: DataContract
id: bench.public.accounts
name: accounts
version: 1.0.0
status: active
description:
  purpose: A synthetic table for the CDC apply benchmark.
team:
  name: benchmarks
customProperties:
  - {property: feed, value: cdc}
  - {property: topic, value: bench.public.accounts}
  - {property: sourceSystem, value: bench}
  - {property: connector, value: postgresql}
  - {property: decimalHandlingMode, value: string}
  - {property: owner, value: team:benchmarks}
schema:
  - name: accounts
    physicalType: table
    logicalType: object
    properties:
      - {name: account_id, logicalType: integer, physicalType: bigint, required: true,
         primaryKey: true, primaryKeyPosition: 1}
      - {name: segment, logicalType: string, physicalType: varchar, required: true}
      - {name: balance, logicalType: number, physicalType: "numeric(12,2)", required: true,
         customProperties: [{property: debeziumType, value: org.apache.kafka.connect.data.Decimal}]}
      - {name: score, logicalType: number, physicalType: double precision, required: false}
      - {name: updated_at, logicalType: timestamp, physicalType: timestamp, required: true,
         customProperties: [{property: debeziumType, value: io.debezium.time.MicroTimestamp}]}
"""


def lines_of(path: Path) -> bytes:
    """A landing file's bytes, decompressed."""
    data = path.read_bytes()
    return igzip.decompress(data) if path.suffix == ".gz" else data


def writable(dtype: pl.DataType) -> pl.DataType:
    """The dtype with every all-null (``Null``) part made a string, which Delta can store."""
    if dtype == pl.Null:
        return pl.String
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: writable(f.dtype) for f in dtype.fields})
    if isinstance(dtype, pl.List):
        return pl.List(writable(dtype.inner))
    return dtype


def floor_ingest(landing: Path, target: Path, bad_lines: dict[str, set[int]]) -> tuple[float, int]:
    """Seconds and rows to read every feed's files with polars and append each feed to Delta in one write."""
    feeds: dict[str, list[Path]] = {}
    for path in sorted(landing.rglob("*.json*")):
        feed = "clickstream" if path.relative_to(landing).parts[0] == "clickstream" else path.parent.name
        feeds.setdefault(feed, []).append(path)
    started = time.perf_counter()
    rows = 0
    for feed, paths in feeds.items():
        parts = []
        for path in paths:
            data = lines_of(path)
            skip = bad_lines.get(str(path.relative_to(landing)))
            if skip or b"null\n" in data:  # drop what polars cannot read: lines that are not JSON, tombstones
                kept = (
                    line
                    for i, line in enumerate(data.split(b"\n"), 1)
                    if i not in (skip or ()) and line not in (b"", b"null")
                )
                data = b"\n".join(kept) + b"\n"
            parts.append(data)
        frame = pl.read_ndjson(b"".join(parts), infer_schema_length=None)
        frame = frame.cast({name: writable(dtype) for name, dtype in frame.schema.items()})
        write_deltalake(str(target / feed), frame, mode="append")
        rows += frame.height
    return time.perf_counter() - started, rows


def bench_ingest(persons: int, days: int, scratch: Path) -> None:
    """Part 1: bronze ingestion against the polars + deltalake floor."""
    landing = scratch / "lake" / "landing"
    print(f"generating {persons:,} persons x {days} days ...", flush=True)
    generate(SimulationConfig(persons=persons, days=days, seed=7), landing, scratch / "truth", progress=False)
    settings = replace(get_settings(), lake_root=str(scratch / "lake"))
    contracts = load_contracts()
    started = time.perf_counter()
    reports = [bronze.ingest(settings, contract) for contract in contracts.values()]
    ours = time.perf_counter() - started
    records = sum(r.records for r in reports)
    quarantine = pl.read_delta(bronze.quarantine_uri(settings))
    bad = quarantine.filter(pl.col("reason") == "invalid JSON").group_by("source_file").agg("line")
    bad_lines = {row["source_file"]: set(row["line"]) for row in bad.iter_rows(named=True)}
    floor, floor_rows = floor_ingest(landing, scratch / "floor", bad_lines)
    print(
        f"bronze ingestion: {records:,} records ({sum(r.quarantined for r in reports):,} quarantined) in "
        f"{ours:.1f} s = {records / ours:,.0f} events/s"
    )
    print(
        f"  floor (polars read_ndjson + deltalake append, same files): {floor_rows:,} rows in {floor:.1f} s "
        f"= {floor_rows / floor:,.0f} events/s"
    )
    ratio = ours / floor
    print(
        f"  ratio to floor: {ratio:.2f} (target <= {TARGET_INGEST_RATIO}) "
        f"{'OK' if ratio <= TARGET_INGEST_RATIO else 'MISSED'}"
    )


def account_events(ids: np.ndarray, lsn0: int, op: str, seed: int) -> list[str]:
    """Debezium PostgreSQL change events (no envelope) for the benchmark's accounts table."""
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame(
        {
            "account_id": ids,
            "segment": rng.choice(["a", "b", "c", "d"], len(ids)),
            "balance": (rng.integers(0, 10_000_000, len(ids)) / 100).round(2),
            "score": rng.random(len(ids)),
            "lsn": lsn0 + np.arange(len(ids)),
        }
    )
    text = {
        "id": pl.col("account_id").cast(pl.String),
        "balance": pl.col("balance").cast(pl.Decimal(12, 2)).cast(pl.String),
        "score": pl.col("score").cast(pl.String),
        "lsn": pl.col("lsn").cast(pl.String),
        "us": (pl.col("lsn") * 1000).cast(pl.String),
    }
    line = pl.concat_str(
        pl.lit('{"before":null,"after":{"account_id":'),
        text["id"],
        pl.lit(',"segment":"'),
        pl.col("segment"),
        pl.lit('","balance":"'),
        text["balance"],
        pl.lit('","score":'),
        text["score"],
        pl.lit(',"updated_at":'),
        text["us"],
        pl.lit('},"source":{"connector":"postgresql","ts_ms":'),
        text["lsn"],
        pl.lit(',"lsn":'),
        text["lsn"],
        pl.lit('},"op":"' + op + '","ts_ms":'),
        text["lsn"],
        pl.lit("}"),
    )
    return frame.select(line).to_series().to_list()


def land_accounts(landing: Path, name: str, lines: list[str]) -> None:
    folder = landing / "cdc" / "bench.public.accounts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"bench.public.accounts+0+{name}.json").write_text("\n".join(lines) + "\n")


def bench_apply(rows: int, scratch: Path) -> None:
    """Part 2: CDC apply of a 10% update batch against a bare merge of the known changed rows."""
    contracts_dir = scratch / "contracts"
    contracts_dir.mkdir(parents=True)
    (contracts_dir / "bench.public.accounts.odcs.yaml").write_text(BENCH_CONTRACT)
    contract = load_contract(contracts_dir / "bench.public.accounts.odcs.yaml")
    settings = replace(get_settings(), lake_root=str(scratch / "lake"), contracts_dir=contracts_dir)
    landing = Path(settings.landing)
    ids = np.arange(1, rows + 1)
    land_accounts(landing, "0000000000", account_events(ids, 1_000, "r", 1))
    bronze.ingest(settings, contract)
    cdc.apply(settings, contract)
    changed = np.sort(np.random.default_rng(2).choice(ids, rows // 10, replace=False))
    land_accounts(landing, f"{rows:010d}", account_events(changed, 10_000_000, "u", 3))
    bronze.ingest(settings, contract)
    prepared = scratch / "prepared"
    shutil.copytree(settings.lake_root, prepared)
    current_uri, _ = cdc.silver_uris(settings, contract)
    source = pl.read_delta(current_uri).filter(pl.col("account_id").is_in(changed.tolist())).to_arrow()
    ours, bare = [], []
    for _ in range(REPEATS):  # each run from a fresh copy of the same prepared lake
        shutil.rmtree(settings.lake_root)
        shutil.copytree(prepared, settings.lake_root)
        started = time.perf_counter()
        report = cdc.apply(settings, contract)
        ours.append(time.perf_counter() - started)
        # the bare merge: the same changed rows, already typed, into the 1,000,000-row current table as it was
        target = str(scratch / "bare")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(prepared / "silver" / "bench" / "accounts", target)
        started = time.perf_counter()
        (
            DeltaTable(target)
            .merge(source, "t.account_id = s.account_id", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        bare.append(time.perf_counter() - started)
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    print(
        f"CDC apply: {report.changes:,} changes into a {rows:,}-row table (current + history): median "
        f"{ours_s:.2f} s of {REPEATS} runs ({', '.join(f'{t:.2f}' for t in ours)})"
    )
    print(
        f"  bare deltalake merge of the {len(changed):,} known changed rows: median {bare_s:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in bare)})"
    )
    ratio = ours_s / bare_s
    print(
        f"  ratio: {ratio:.2f} (target <= {TARGET_APPLY_RATIO}) "
        f"{'OK' if ratio <= TARGET_APPLY_RATIO else 'MISSED'}"
    )


def write_large_file(path: Path, gigabytes: float) -> int:
    """A clickstream file of about ``gigabytes`` GB: real-looking Segment messages with distinct ids."""
    template = (
        '{"messageId":"m-%012d","type":"track","event":"Product Viewed","anonymousId":"a-%09d",'
        '"userId":null,"properties":{"product_id":"SKU-00350","category":"toys","price":29.04,"currency":"EUR"},'
        '"context":{"library":{"name":"analytics.js","version":"next-1.76.0"},"page":{"path":"/product",'
        '"url":"https://shop.example.com/product"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) '
        'Gecko/20100101 Firefox/133.0","ip":"10.1.2.3","locale":"en-GB"},"originalTimestamp":'
        '"2026-09-07T20:34:13.454Z","sentAt":"2026-09-07T20:34:14.811Z","receivedAt":"2026-09-07T20:34:15.081Z",'
        '"channel":"client","version":2}\n'
    )
    block = 100_000
    lines = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        while f.tell() < gigabytes * 1e9:
            f.write("".join(template % (lines + i, (lines + i) % 1_000_000) for i in range(block)))
            lines += block
    return lines


def bench_memory(gigabytes: float, scratch: Path) -> None:
    """Part 3: peak resident memory of a separate process ingesting one large file."""
    lake = scratch / MEMORY_LAKE
    lines = write_large_file(
        lake / "landing" / "clickstream" / "web" / "2026-09-07" / "20" / "part-0000.jsonl", gigabytes
    )
    env = {**os.environ, "LAKE_ROOT": str(lake)}
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from lake import bronze; from data_contracts import load_contracts; "
            "from lake.settings import get_settings; print(bronze.ingest(get_settings(), "
            "load_contracts()['clickstream']))",
        ],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    file_gb = sum(p.stat().st_size for p in (lake / "landing").rglob("*.jsonl")) / 1e9
    print(
        f"one {file_gb:.2f} GB file ({lines:,} lines) ingested in {seconds:.1f} s: peak RSS {peak:.2f} GB "
        f"(target < {TARGET_PEAK_GB} GB) {'OK' if peak < TARGET_PEAK_GB else 'MISSED'}"
    )


def landing_bytes(landing: Path) -> int:
    """The landing zone's size once decompressed (as bronze batches count it)."""
    root = str(landing)
    folders = {"clickstream": "clickstream"} | {p.name: f"cdc/{p.name}" for p in (landing / "cdc").iterdir()}
    return sum(
        bronze.landed_bytes(root, f) for feed, folder in folders.items() for f in discover(root, feed, folder)
    )


def bench_scale(persons: int, days: int, scratch: Path) -> None:
    """Part 4: wall time and peak RSS of ``python -m lake.ingest`` over a whole simulated company."""
    landing = scratch / "landing"
    marker = scratch / "generated.json"
    inputs = {"persons": persons, "days": days, "seed": 7}
    if not marker.exists() or json.loads(marker.read_text()) != inputs:
        shutil.rmtree(landing, ignore_errors=True)
        print(
            f"generating {persons:,} persons x {days} days into {landing} (kept for later runs) ...",
            flush=True,
        )
        command = [sys.executable, "-m", "simulator", "generate", "--out", str(landing), "--no-progress"]
        command += ["--persons", str(persons), "--days", str(days), "--seed", "7"]
        subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        marker.write_text(json.dumps(inputs))
    lake = scratch / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    shutil.rmtree(scratch / "warehouse", ignore_errors=True)
    lake.mkdir()
    (lake / "landing").symlink_to(landing, target_is_directory=True)
    env = {
        **os.environ,
        **TELEMETRY_OFF,
        "LAKE_ROOT": str(lake),
        "WAREHOUSE_PATH": str(scratch / "warehouse" / "engagement.duckdb"),
    }
    started = time.perf_counter()
    with (scratch / "ingest.out").open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lake.ingest"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: a file over the reject threshold, still ingested
        raise SystemExit(f"python -m lake.ingest failed; see {scratch / 'ingest.out'}")
    peak = usage.ru_maxrss * 1024 / 1e9
    records = pl.read_delta(str(lake / "bronze" / "_ingestion_ledger")).filter(
        pl.col("status") == "committed"
    )
    events = int(records["records"].sum())
    raw_gb = landing_bytes(landing) / 1e9
    settings = get_settings()
    print(
        f"python -m lake.ingest, {persons:,} persons x {days} days ({events:,} events, {raw_gb:.1f} GB "
        f"uncompressed): {seconds:.0f} s = {events / seconds:,.0f} events/s, peak RSS {peak:.2f} GB"
    )
    print(
        f"  settings: {settings.batch_bytes >> 20} MiB batches, {settings.apply_step_rows:,}-row apply "
        f"steps, DuckDB memory limit {settings.duckdb_memory_limit}; peak RSS / uncompressed landing zone "
        f"{peak / raw_gb:.2f}"
    )
    print(
        f"  peak RSS / target: {peak / TARGET_SCALE_PEAK_GB:.2f} (target < {TARGET_SCALE_PEAK_GB} GB) "
        f"{'OK' if peak < TARGET_SCALE_PEAK_GB else 'MISSED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file-gb", type=float, default=2.0)
    parser.add_argument("--scale-persons", type=int, default=1_000_000)
    parser.add_argument("--scale-scratch", type=Path, help="keeps the generated landing zone between runs")
    parser.add_argument("--only", choices=["ingest", "apply", "memory", "scale"])
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lake-bench-"))
    try:
        if args.only in (None, "memory"):  # first: RUSAGE_CHILDREN counts only the child it runs
            bench_memory(args.file_gb, scratch)
        if args.only in (None, "ingest"):
            bench_ingest(args.persons, args.days, scratch)
        if args.only in (None, "apply"):
            bench_apply(args.rows, scratch)
        if args.only in (None, "scale"):
            kept = (
                args.scale_scratch
                or Path(tempfile.gettempdir()) / f"lake-scale-{args.scale_persons}x{args.days}"
            )
            kept.mkdir(parents=True, exist_ok=True)
            bench_scale(args.scale_persons, args.days, kept.resolve())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
