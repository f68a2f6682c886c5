"""The HubSpot sync at scale: the time a first sync of ``--decisions`` decisions takes under HubSpot's
documented quotas for private apps, as the sync engine plans it before sending (a dry run of the shipped
``hubspot_contacts`` sync over a lake of that many decisions), and a measured run of ``--short`` decisions
against the HubSpot emulator (tests/hubspot_emulator.py, a real HTTP server on 127.0.0.1) enforcing the real
per-10-seconds limit, to show that the client reaches the quota and never learns it from a 429.

    python benchmarks/sync_hubspot.py [--decisions 1000000] [--short 25000] [--per-10s 100] [--scratch DIR]

Exit 1 when the measured run got a 429, lost a record, exceeded the quota in some 10 s window or took more
than 20% longer than planned.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from sync_postgres import decisions, write_lake

from activation.config import load_sync
from activation.hubspot import batch_requests, plan_seconds
from activation.sync import run_sync
from lake.settings import REPO_ROOT, disable_telemetry, get_settings

sys.path.insert(0, str(REPO_ROOT / "tests"))
from hubspot_emulator import UPSERT, HubSpotEmulator

TIERS = {  # the API usage guidelines for private apps: (requests per 10 s, requests per day)
    "Free / Starter": (100, 250_000),
    "Professional": (190, 650_000),
    "Enterprise": (190, 1_000_000),
    "API limit increase pack": (250, 2_000_000),
}
TOKEN = "pat-benchmark"


def sync_file(folder: Path, per_10s: int) -> Path:
    """The shipped HubSpot sync with the quota of ``per_10s`` requests per 10 s."""
    text = (REPO_ROOT / "activation" / "syncs" / "hubspot_contacts.yaml").read_text()
    text = text.replace("quota: {requests: 100,", f"quota: {{requests: {per_10s},")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hubspot_contacts.yaml"
    path.write_text(text)
    return path


def main() -> int:
    """Print the plan of a large sync per tier and the measured short run; exit 1 when the run misbehaved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--short", type=int, default=25_000)
    parser.add_argument("--per-10s", type=int, default=100)
    parser.add_argument("--scratch", type=Path)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    disable_telemetry()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="hubspot-bench-"))
    parts = [scratch / p for p in ("lake-big", "lake-small", "progress", "syncs")]
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    emulator = HubSpotEmulator(token=TOKEN, max_requests=args.per_10s, interval_s=10.0).start()
    os.environ.update(
        HUBSPOT_ACCESS_TOKEN=TOKEN,
        HUBSPOT_BASE_URL=emulator.url,
        ACTIVATION_PROGRESS_DIR=str(scratch / "progress"),
    )
    try:
        config = load_sync(sync_file(scratch / "syncs", args.per_10s))
        big = replace(get_settings(), lake_root=str(scratch / "lake-big"))
        write_lake(big, decisions(args.decisions, args.seed))
        started = time.perf_counter()
        dry = run_sync(config, big, dry_run=True)
        dry_s = time.perf_counter() - started
        requests = batch_requests(dry["added"]) + 4
        print(
            f"hubspot: first sync of {args.decisions:,} decisions: {dry['added']:,} to send in {requests:,} "
            f"requests of up to 100 (dry run {dry_s:.1f} s, no request made: {len(emulator.log)})"
        )
        for tier, (per_10s, daily) in TIERS.items():
            seconds = plan_seconds(requests, per_10s, 10.0, daily)
            minutes = seconds / 60
            print(
                f"  {tier:<24} {per_10s:>3} per 10 s, {daily:>9,} a day: {seconds:7.0f} s ({minutes:.1f} min)"
            )
        print(f"  the engine's own plan at {args.per_10s} per 10 s: {dry['planned_s']:.0f} s")

        small = replace(get_settings(), lake_root=str(scratch / "lake-small"))
        write_lake(small, decisions(args.short, args.seed))
        started = time.perf_counter()
        run = run_sync(config, small)
        took = time.perf_counter() - started
        answered = [r for r in emulator.log if r["status"] != 429]
        window = [r["at"] for r in answered]
        span = window[-1] - window[0]
        peak = emulator.max_in_window(10.0)
        per_window = list(Counter(int((at - window[0]) // 10.0) for at in window).values())
        throttled = len(emulator.requests(status=429))
        print(
            f"  measured against the emulator at {args.per_10s} per 10 s: {args.short:,} decisions, "
            f"{len(answered)} requests ({len(emulator.requests(UPSERT))} upserts) in {span:.1f} s from the "
            f"first to the last (planned {run['planned_s']:.0f} s; sync {took:.1f} s end to end); requests "
            f"per 10 s window from the first: {per_window}, at most {peak} in any 10 s; 429s: {throttled}; "
            f"records changed at HubSpot: {emulator.state_changes:,}"
        )
        ok = (
            not emulator.requests(status=429)
            and emulator.state_changes == run["sent"] == args.short
            and peak <= args.per_10s
            and span <= 1.2 * max(run["planned_s"], 1.0)
        )
        return 0 if ok else 1
    finally:
        emulator.stop()
        for part in parts:
            shutil.rmtree(part, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
