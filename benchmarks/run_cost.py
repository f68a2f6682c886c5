"""The cost of an hourly run against a nightly run on the same lake: wall time and peak memory of each, and
their ratio. The jobs are the ones the schedules start (``hourly_refresh``; the nightly chain
``nightly_snapshots`` then ``nightly_refresh``, training included, as on a night it is due), each run in a
process of its own on a Dagster instance under ``--root``.

    python benchmarks/run_cost.py [--persons 100000] [--days 30] [--seed 7] [--root DIR]

A simulated company is landed but for its last hour of clickstream, then loaded (one hourly run, the daily
snapshots of every supported date in one run: not measured). Measured: the nightly of the last snapshot date,
then the last hour landed and one hourly run. The syncs are those of ``activation/syncs`` but the PostgreSQL
one (the files destination: no database server to start). Peak memory is the resident set size of the run's
largest process (the run's own process or a dbt process it started), from ``wait4``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lake.settings import REPO_ROOT, TELEMETRY_OFF

CHILD_FLAG = "--run-job"


def environment(root: Path) -> dict[str, str]:
    """The environment of the runs: the lake, warehouse, MLflow store, Dagster home, syncs under ``root``."""
    return {
        **os.environ,
        **TELEMETRY_OFF,
        "DAGSTER_HOME": str(root / "dagster"),
        "LAKE_ROOT": str(root / "lake"),
        "WAREHOUSE_PATH": str(root / "warehouse" / "engagement.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "ACTIVATION_SYNCS_DIR": str(root / "syncs"),
        "ACTIVATION_OUTBOX_DIR": str(root / "outbox"),
        "AUTOMATION": "off",
    }


def run_job(job: str, tags: dict[str, str], without: list[str]) -> int:
    """Execute ``job`` of the code location on the instance of ``DAGSTER_HOME`` (in this process), its assets
    but ``without``; 0 when it succeeded."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_module("orchestration.definitions", "defs", str(REPO_ROOT))
    definitions = repository.get_definition()
    keys = definitions.get_job(job).asset_layer.executable_asset_keys
    selection = sorted(k for k in keys if k.to_user_string() not in without)
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            repository.get_reconstructable_job(job), instance=instance, tags=tags, asset_selection=selection
        )
        if not result.success:
            for event in result.get_step_failure_events():
                print(f"{event.step_key}: {event.step_failure_data.error.message[-2000:]}", file=sys.stderr)
    return 0 if result.success else 1


def measured(root: Path, job: str, *arguments: str) -> tuple[float, float]:
    """Run ``job`` in a child process; its wall time (s) and peak resident memory (GiB, the largest process
    of its tree); SystemExit when it failed."""
    log = (root / "logs" / f"{job}.log").open("ab")
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, CHILD_FLAG, job, *arguments],
        cwd=REPO_ROOT,
        env=environment(root),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if child.returncode != 0:
        raise SystemExit(f"{job} failed: see {root / 'logs' / f'{job}.log'}")
    return seconds, usage.ru_maxrss / 2**20  # kilobytes on Linux


def last_hour(landing: Path) -> list[Path]:
    """The folders of the last landed hour of every clickstream source (``<source>/<date>/<hour>``)."""
    held = []
    for source in sorted((landing / "clickstream").iterdir()):
        hours = sorted(p for day in source.iterdir() for p in day.iterdir())
        held.append(hours[-1])
    return held


def prepare(root: Path, persons: int, days: int, seed: int) -> str:
    """Land the company but its last hour, load it (not measured), and return the last snapshot date."""
    from orchestration.snapshot_dates import supported_snapshot_dates

    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "dagster").mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", root / "dagster" / "dagster.yaml")
    (root / "syncs").mkdir(exist_ok=True)
    for sync in (REPO_ROOT / "activation" / "syncs").glob("*.yaml"):
        if "kind: postgres" not in sync.read_text():
            shutil.copy(sync, root / "syncs")
    landing = root / "lake" / "landing"
    subprocess.run(
        [
            *(sys.executable, "-m", "simulator", "generate", "--out", str(landing)),
            *("--truth", str(root / "lake" / "simulator_truth"), "--persons", str(persons)),
            *("--days", str(days), "--seed", str(seed), "--no-progress"),
        ],
        cwd=REPO_ROOT,
        env=environment(root),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for folder in last_hour(landing):
        target = root / "held_back" / folder.relative_to(landing)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(target)
    measured(root, "hourly_refresh")
    os.environ.update(environment(root))
    first, last = supported_snapshot_dates()
    range_tags = ["dagster/asset_partition_range_start", first, "dagster/asset_partition_range_end", last]
    measured(root, "nightly_snapshots", *range_tags)
    return last


def land_held_back(root: Path) -> None:
    """Move the held-back hour into the landing zone."""
    for folder in sorted((root / "held_back").rglob("*")):
        if folder.is_file():
            target = root / "lake" / "landing" / folder.relative_to(root / "held_back")
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(target)


def main() -> int:
    """Prepare the lake, measure the nightly then the hourly, print both and their ratio."""
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        job, rest = sys.argv[2], sys.argv[3:]
        without = [rest[i + 1] for i in range(0, len(rest), 2) if rest[i] == "--without"]
        tags = {rest[i]: rest[i + 1] for i in range(0, len(rest), 2) if rest[i] != "--without"}
        return run_job(job, tags, without)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--root", type=Path, help="the lake's folder (default var/bench/run_cost-PxD, replaced)"
    )
    args = parser.parse_args()
    root = args.root or REPO_ROOT / "var" / "bench" / f"run_cost-{args.persons}x{args.days}"
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    day = prepare(root, args.persons, args.days, args.seed)
    print(
        f"{args.persons:,} persons x {args.days} days landed and loaded in "
        f"{time.perf_counter() - started:.0f} s"
    )
    snapshots = measured(root, "nightly_snapshots", "dagster/partition", day)
    refresh = measured(root, "nightly_refresh", "dagster/partition", day)
    nightly = (snapshots[0] + refresh[0], max(snapshots[1], refresh[1]))
    land_held_back(root)
    hourly = measured(root, "hourly_refresh")
    print(
        f"nightly of {day}: {nightly[0]:.1f} s, peak {nightly[1]:.2f} GiB (snapshots {snapshots[0]:.1f} s, "
        f"refresh with training {refresh[0]:.1f} s)"
    )
    print(f"hourly, one new hour of clickstream: {hourly[0]:.1f} s, peak {hourly[1]:.2f} GiB")
    print(
        f"nightly / hourly: {nightly[0] / hourly[0]:.1f} x the time, "
        f"{nightly[1] / hourly[1]:.1f} x the memory"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
