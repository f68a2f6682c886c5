"""Prepare a whole simulated lake up to gold, for the measurements that need one (the decision quality against
the simulator's truth): simulate the company, ingest it into bronze and silver, publish the silver views,
build the marts with dbt (the daily feature snapshots in windows of dates, as a Dagster backfill does) and
publish the gold tables. Each step leaves a marker, so an interrupted preparation resumes; ``READY`` marks a
finished lake.

    python benchmarks/prepare_gold_lake.py --root /tmp/lake-200000x30
        [--persons 200000] [--days 30] [--seed 7]

The lake is under ``<root>/lake`` (``LAKE_ROOT``), the warehouse ``<root>/warehouse/engagement.duckdb``
(``WAREHOUSE_PATH``), the simulator's truth under ``<root>/truth``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from lake.settings import REPO_ROOT, Settings, disable_telemetry, get_settings
from orchestration.dbt_translation import dates_per_dbt_run, snapshot_window_vars, snapshot_windows
from orchestration.snapshot_dates import warehouse_persons

DBT_PROJECT = REPO_ROOT / "dbt_project"
GOLD_PARENTS = ["+training_decisions", "+training_propensity", "+decision_outcomes", "+identity_person_map"]
FEATURES = "person_features_daily"


def lake_settings(root: Path) -> Settings:
    """The settings of the lake under ``root``."""
    return replace(
        get_settings(),
        lake_root=str(root / "lake"),
        warehouse_path=root / "warehouse" / "engagement.duckdb",
    )


def environment(settings: Settings) -> dict[str, str]:
    """The environment of every subprocess: the lake and the warehouse of ``settings``."""
    return {
        **os.environ,
        "LAKE_ROOT": settings.lake_root,
        "WAREHOUSE_PATH": str(settings.warehouse_path),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "true",
    }


def run(command: list[str], settings: Settings, root: Path, log: str, cwd: Path = REPO_ROOT) -> None:
    """Run ``command``, its output to ``<root>/logs/<log>.out``; fail loudly."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(root / "logs" / f"{log}.out", "w") as out:
        done = subprocess.run(
            command, cwd=cwd, env=environment(settings), stdout=out, stderr=subprocess.STDOUT
        )
    print(f"  {log}: {time.monotonic() - started:.0f} s", flush=True)
    if done.returncode:
        raise SystemExit(f"{log} failed: see {root / 'logs' / (log + '.out')}")


def dbt(settings: Settings, root: Path, log: str, *arguments: str) -> None:
    """A dbt command on the project, against the lake and warehouse of ``settings``."""
    command = [str(Path(sys.executable).with_name("dbt")), *arguments, "--profiles-dir", str(DBT_PROJECT)]
    command += ["--target-path", str(root / "dbt-target"), "--log-path", str(root / "logs" / "dbt")]
    run(command, settings, root, log, cwd=DBT_PROJECT)


def step(root: Path, name: str) -> bool:
    """Whether the step ``name`` is still to do (no marker)."""
    return not (root / "steps" / name).exists()


def done(root: Path, name: str) -> None:
    """Mark the step ``name`` done."""
    (root / "steps").mkdir(parents=True, exist_ok=True)
    (root / "steps" / name).touch()


def gold_models(root: Path) -> list[str]:
    """The models of the dbt manifest marked ``meta: {gold: true}``."""
    manifest = json.loads((root / "dbt-target" / "manifest.json").read_text())
    return sorted(
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node.get("config", {}).get("meta", {}).get("gold")
    )


def prepare(root: Path, persons: int, days: int, seed: int) -> Settings:
    """Build the lake under ``root`` up to gold (resuming after the last finished step); its settings."""
    import duckdb

    from data_contracts import load_contracts
    from lake.gold import publish_gold
    from lake.warehouse import publish_silver

    disable_telemetry()
    settings = lake_settings(root)
    Path(settings.lake_root).mkdir(parents=True, exist_ok=True)
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    if step(root, "generate"):
        run(
            [python, "-m", "simulator", "generate", "--out", str(Path(settings.lake_root) / "landing"),
             "--truth", str(root / "truth"), "--persons", str(persons), "--days", str(days),
             "--seed", str(seed), "--overwrite", "--no-progress"],
            settings, root, "generate",
        )  # fmt: skip
        done(root, "generate")
    if step(root, "ingest"):
        run([python, "-m", "lake.ingest"], settings, root, "ingest")
        done(root, "ingest")
    if step(root, "parents"):
        publish_silver(settings, load_contracts(settings.contracts_dir))
        dbt(settings, root, "dbt-seed", "seed")
        dbt(settings, root, "dbt-parents", "run", "--select", *GOLD_PARENTS, "--exclude", f"{FEATURES}+")
        done(root, "parents")
    if step(root, "snapshots"):
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            first, last = con.sql(
                "select first_snapshot_date, last_snapshot_date from int_marts__data_window"
            ).fetchall()[0]
        dates = dates_per_dbt_run(
            warehouse_persons(settings.warehouse_path), settings.snapshot_person_dates_per_dbt_run
        )
        for day, until in snapshot_windows(first, last + timedelta(days=1), dates):
            window = snapshot_window_vars(day, until)
            dbt(settings, root, f"dbt-snapshots-{day}", "run", "--select", FEATURES, "--vars", window)
        done(root, "snapshots")
    if step(root, "children"):
        dbt(settings, root, "dbt-children", "run", "--select", f"{FEATURES}+", "--exclude", FEATURES)
        done(root, "children")
    if step(root, "gold"):
        published = publish_gold(settings, gold_models(root))
        print(f"  gold: {published}", flush=True)
        done(root, "gold")
    (root / "READY").write_text(
        json.dumps({"persons": persons, "days": days, "seed": seed, "lake_root": settings.lake_root,
                    "warehouse_path": str(settings.warehouse_path), "truth": str(root / "truth")}, indent=2)
        + "\n"
    )  # fmt: skip
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    prepare(args.root, args.persons, args.days, args.seed)
    print(f"ready: {args.root}")


if __name__ == "__main__":
    main()
