"""Simulator benchmark: throughput at 100,000 persons over 30 days, peak memory at 1,000,000 persons.

Prints events (lines) per second, the ratio of the whole run to the floor of writing the same bytes (gzip
level 1 and plain writes, no simulation), and the peak resident memory of a separate process generating the
large scale. Targets: at least 200,000 events/s on 2 cores; peak memory under 4 GB at 1,000,000 persons.

    python benchmarks/simulator_throughput.py [--persons 100000] [--days 30] [--memory-persons 1000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isal import igzip

from simulator import SimulationConfig, generate

TARGET_EVENTS_PER_SECOND = 200_000
TARGET_PEAK_GB = 4.0


def write_floor(landing: Path, scratch: Path) -> float:
    """Seconds to write the same files again from memory (gzip level 1 where the original is gzipped)."""
    files = [(p, p.read_bytes()) for p in landing.rglob("*") if p.is_file()]
    started = time.perf_counter()
    for i, (path, data) in enumerate(files):
        out = scratch / f"{i}"
        out.write_bytes(
            igzip.compress(igzip.decompress(data), compresslevel=1, mtime=0) if path.suffix == ".gz" else data
        )
    elapsed = time.perf_counter() - started
    decompress = time.perf_counter()
    for path, data in files:
        if path.suffix == ".gz":
            igzip.decompress(data)
    return elapsed - (time.perf_counter() - decompress)


def throughput(persons: int, days: int, work: Path) -> None:
    config = SimulationConfig(persons=persons, days=days)
    report = generate(config, work / "landing", overwrite=True, progress=False)
    size = sum(p.stat().st_size for p in (work / "landing").rglob("*") if p.is_file())
    scratch = work / "floor"
    scratch.mkdir()
    floor = write_floor(work / "landing", scratch)
    verdict = "meets" if report.events_per_second >= TARGET_EVENTS_PER_SECOND else "MISSES"
    print(f"simulator {persons:,} persons x {days} days on {os.cpu_count()} cores")
    print(
        f"  lines written        {report.lines:>14,}  (cdc {report.lines_by_feed['cdc']:,}, "
        f"clickstream {report.lines_by_feed['clickstream']:,})"
    )
    print(f"  files / bytes        {report.files:>14,}  {size / 1e6:,.0f} MB on disk")
    print(f"  wall time            {report.seconds:>14.1f} s")
    print(
        f"  throughput           {report.events_per_second:>14,.0f} events/s  ({verdict} the "
        f"{TARGET_EVENTS_PER_SECOND:,} target)"
    )
    print(f"  write floor          {floor:>14.1f} s  (same bytes written without simulating)")
    print(f"  ratio to floor       {report.seconds / floor:>14.1f} x")


def peak_memory(persons: int, days: int, work: Path) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "generate",
            "--out",
            str(work / "big"),
            "--persons",
            str(persons),
            "--days",
            str(days),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    verdict = "meets" if peak_gb < TARGET_PEAK_GB else "MISSES"
    print(f"simulator {persons:,} persons x {days} days in a separate process")
    print(f"  wall time            {elapsed:>14.1f} s (with interpreter start-up)")
    print(f"  generator reported   {done.stdout.splitlines()[0]}")
    print(f"  peak resident memory {peak_gb:>14.2f} GB  ({verdict} the {TARGET_PEAK_GB:.0f} GB target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--memory-persons", type=int, default=1_000_000, help="0 skips the memory run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="simulator-bench-"))
    try:
        throughput(args.persons, args.days, work)
        if args.memory_persons:
            peak_memory(args.memory_persons, args.days, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
