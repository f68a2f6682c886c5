"""The lake on object storage against the lake in a local folder: the same ingestion of one small company.

Generates the simulated company (default 2,000 persons x 5 days) once, then runs ``python -m lake.ingest``
(landing -> bronze -> silver, and the warehouse's silver views) in a child process twice per repeat: with the
lake in a local folder, and with the lake on a SeaweedFS server started here (``lake.s3_server``, its start-up
measured), whose landing zone is uploaded first (``lake.object_store.upload_folder``, measured apart). With
the lake on object storage the silver views read the mirror of the live files beside the warehouse, so the
second figure includes copying them; the views' refresh is measured apart as well, once with nothing new to
copy. Prints the wall times, the S3 / local ratio and the load average.

    python benchmarks/lake_s3.py [--persons 2000] [--days 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_contracts import scan_contracts
from lake import object_store, s3_server
from lake.settings import REPO_ROOT, TELEMETRY_OFF, get_settings
from lake.warehouse import MIRROR, publish_silver
from simulator import SimulationConfig, generate

PII_SECRET = "benchmark-secret-for-the-lake-on-object-storage"


def ingest(environment: dict[str, str]) -> float:
    """Seconds of one ``python -m lake.ingest`` in a child process with ``environment`` added."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lake.ingest"],
        cwd=REPO_ROOT,
        env={**os.environ, **TELEMETRY_OFF, **environment},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(
            f"lake.ingest failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return seconds


def refresh_views(environment: dict[str, str]) -> float:
    """Seconds of refreshing every silver view (in this process, with ``environment`` set)."""
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        settings = get_settings()
        began = time.perf_counter()
        publish_silver(settings, scan_contracts(settings.contracts_dir).contracts)
        return time.perf_counter() - began
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="lake-s3-bench-"))
    try:
        landing = scratch / "landing"
        report = generate(
            SimulationConfig(persons=args.persons, days=args.days, seed=7),
            landing,
            scratch / "truth",
            progress=False,
        )
        size = f"{report.files:,} files, {report.lines:,} lines"
        print(f"company: {args.persons:,} persons x {args.days} days, {size}")
        local_s, s3_s, upload_s, views_s, local_views_s, starts = [], [], [], [], [], []
        for repeat in range(args.repeats):
            lake = scratch / f"local-{repeat}"
            shutil.copytree(landing, lake / "landing")
            warehouse = scratch / f"local-{repeat}-warehouse" / "engagement.duckdb"
            local = {"LAKE_ROOT": str(lake), "WAREHOUSE_PATH": str(warehouse), "PII_SECRET": PII_SECRET}
            local_s.append(ingest(local))
            local_views_s.append(refresh_views(local))
            with s3_server.running(scratch / f"s3-{repeat}") as server:
                starts.append(server.started_in_s)
                environment = {
                    **server.environment(f"lake-{repeat}"),
                    "PII_SECRET": PII_SECRET,
                    "WAREHOUSE_PATH": str(scratch / f"s3-{repeat}-warehouse" / "engagement.duckdb"),
                }
                began = time.perf_counter()
                object_store.upload_folder(
                    landing, object_store.join(environment["LAKE_ROOT"], "landing"), server.storage_options
                )
                upload_s.append(time.perf_counter() - began)
                s3_s.append(ingest(environment))
                views_s.append(refresh_views(environment))
        mirror = scratch / f"s3-{args.repeats - 1}-warehouse" / MIRROR
        mirrored = [p.stat().st_size for p in mirror.rglob("*.parquet")]
        best_local, best_s3 = min(local_s), min(s3_s)
        print(f"S3 server start-up:      {', '.join(f'{s:.2f}' for s in starts)} s")
        print(f"upload of the landing:   {', '.join(f'{s:.2f}' for s in upload_s)} s")
        print(f"ingest, local lake:      {', '.join(f'{s:.1f}' for s in local_s)} s")
        print(
            f"ingest, lake on S3:      {', '.join(f'{s:.1f}' for s in s3_s)} s (views on the mirror included)"
        )
        print(f"views refreshed again:   {', '.join(f'{s:.2f}' for s in views_s)} s (nothing new to copy)")
        print(f"... with the lake local: {', '.join(f'{s:.2f}' for s in local_views_s)} s")
        print(f"mirror of the silver files: {len(mirrored):,} files, {sum(mirrored) / 1e6:.1f} MB")
        print(
            f"S3 / local (best runs):  {best_s3 / best_local:.2f} x   load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
