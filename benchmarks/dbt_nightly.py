"""Nightly dbt build benchmark: wall time and peak memory of ``dbt build --select tag:nightly`` on the
simulated company at 1,000,000 persons over 30 days, against the same compiled SQL run directly in DuckDB in
the same run.

1. Preparation, kept in the scratch folder and reused by later runs with the same arguments (a marker file per
   step): simulate the company, ingest it into bronze and silver (``python -m lake.ingest``), publish the
   silver views into a warehouse file and ``dbt build`` everything the nightly models depend on. The models
   tagged both hourly and nightly are built there too (hourly models read them). The daily feature snapshots
   are built for every date but the last, a few dates per dbt run (as Dagster backfills their partitions), so
   that the measured build does what a night does: add the newest snapshot date to the incremental
   ``person_features_daily``. Every other nightly relation is dropped, so the measured build creates them from
   scratch. The warehouse is rebuilt when a file of the dbt project changed.
2. The prepared warehouse is copied twice, so that both measured runs start from the same state.
3. dbt: ``dbt build --select tag:nightly`` (models, data tests and unit tests) in a subprocess, after an
   unmeasured ``dbt parse`` so that it starts from a warm partial parse as a deployed project does. Wall time,
   and peak RSS of the process from ``wait4``. A failed build is reported (its time, peak RSS and failed
   nodes) and ends the benchmark with exit status 1.
4. Raw DuckDB: the compiled SQL of every node that build ran, in the order dbt started them, executed in a
   subprocess by one DuckDB connection opened with the DuckDB options of the dbt profile: models as
   ``create or replace table|view <relation> as <sql>`` (the incremental one as ``insert into <relation> by
   name <sql>``), tests as queries whose rows are counted.
5. Correctness: the row counts of the nightly tables are equal in both warehouses.

Target: dbt wall time at most 1.5 x the raw DuckDB wall time.

    python benchmarks/dbt_nightly.py [--persons 1000000] [--days 30] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import jinja2
import yaml

from lake.settings import REPO_ROOT, TELEMETRY_OFF, disable_telemetry, get_settings
from orchestration.dbt_translation import dates_per_dbt_run, snapshot_window_vars, snapshot_windows
from orchestration.snapshot_dates import warehouse_persons

TARGET_RATIO = 1.5
SEED = 7
DBT_PROJECT = REPO_ROOT / "dbt_project"
DBT = Path(sys.executable).with_name("dbt")
# the same file name for every copy of the warehouse: compiled SQL names the catalog after the file
WAREHOUSE_FILE = "engagement.duckdb"
PROFILE_KEYS = {"type", "path", "threads", "config_options", "settings", "extensions"}
SLOWEST = 8
INCREMENTAL_MODEL = "person_features_daily"


@dataclass
class Measured:
    """One measured subprocess: wall time, peak resident memory, and when it started (epoch seconds)."""

    seconds: float
    peak_gib: float
    started_at: float
    returncode: int


@dataclass
class Scratch:
    """The scratch folder's layout."""

    root: Path

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def prepared(self) -> Path:
        """The warehouse as it is before the nightly build (never written after preparation)."""
        return self.root / "prepared" / WAREHOUSE_FILE

    @property
    def warehouse(self) -> Path:
        """The warehouse dbt builds into."""
        return self.root / "warehouse" / WAREHOUSE_FILE

    @property
    def raw(self) -> Path:
        """The warehouse the raw DuckDB run builds into."""
        return self.root / "raw" / WAREHOUSE_FILE

    @property
    def target(self) -> Path:
        return self.root / "target"

    def env(self) -> dict[str, str]:
        """The environment of every subprocess: the scratch lake and warehouse, telemetry off."""
        return {
            **os.environ,
            **TELEMETRY_OFF,
            "LAKE_ROOT": str(self.lake),
            "WAREHOUSE_PATH": str(self.warehouse),
        }


def measure(
    command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO_ROOT, check: bool = True
) -> Measured:
    """Run ``command`` with its output in ``log``; if it fails and ``check``, stop with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started_at = time.time()
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        # wait4: this child's own peak RSS (RUSAGE_CHILDREN: the largest of every child so far, the
        # simulator's)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if check and process.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}; end of {log}:\n{tail}")
    return Measured(seconds, usage.ru_maxrss / 1024**2, started_at, process.returncode)


def dbt(scratch: Scratch, *arguments: str, log: str, check: bool = True) -> Measured:
    """Run a dbt command on the project with the scratch warehouse and target; its console output goes to
    ``logs/<log>.out``, its log (JSON lines) to ``logs/<log>/dbt.log``."""
    log_path = scratch.root / "logs" / log
    shutil.rmtree(log_path, ignore_errors=True)
    command = [str(DBT), *arguments, "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT)]
    command += ["--target-path", str(scratch.target), "--log-path", str(log_path)]
    command += ["--log-format-file", "json"]
    return measure(command, scratch.env(), log_path.with_suffix(".out"), cwd=DBT_PROJECT, check=check)


def dbt_events(scratch: Scratch, log: str) -> dict[str, float]:
    """When (epoch seconds) each kind of event of a dbt invocation's log first happened."""
    first = {}
    for line in (scratch.root / "logs" / log / "dbt.log").read_text().splitlines():
        info = json.loads(line)["info"]
        first.setdefault(info["name"], datetime.fromisoformat(info["ts"]).timestamp())
    return first


def read_marker(path: Path, expected: dict) -> dict | None:
    """The marker's content when it records the ``expected`` inputs, else None."""
    if not path.exists():
        return None
    marker = json.loads(path.read_text())
    return marker if all(marker.get(k) == v for k, v in expected.items()) else None


def dbt_project_hash() -> str:
    """A hash of every file of the dbt project that dbt reads (not its target and logs)."""
    digest = hashlib.sha256()
    for path in sorted(DBT_PROJECT.rglob("*")):
        parts = path.relative_to(DBT_PROJECT).parts
        if path.is_file() and parts[0] not in ("target", "logs", "dbt_packages"):
            digest.update(str(path.relative_to(DBT_PROJECT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def prepare_lake(scratch: Scratch, persons: int, days: int) -> dict:
    """Generate the company and ingest it into bronze and silver, unless the scratch lake already holds it."""
    marker_path = scratch.root / "lake.json"
    inputs = {"persons": persons, "days": days, "seed": SEED}
    marker = read_marker(marker_path, inputs)
    if marker:
        return {**marker, "reused": True}
    shutil.rmtree(scratch.lake, ignore_errors=True)
    print(f"generating {persons:,} persons x {days} days ...", flush=True)
    generate = [sys.executable, "-m", "simulator", "generate", "--out", str(scratch.lake / "landing")]
    generate += ["--persons", str(persons), "--days", str(days), "--seed", str(SEED), "--no-progress"]
    generated = measure(generate, scratch.env(), scratch.root / "logs" / "generate.out")
    print("ingesting into bronze and silver ...", flush=True)
    command = [sys.executable, "-m", "lake.ingest"]
    ingested = measure(command, scratch.env(), scratch.root / "logs" / "ingest.out")
    marker = {**inputs, "generate_seconds": generated.seconds, "ingest_seconds": ingested.seconds}
    marker |= {"generate_peak_gib": generated.peak_gib, "ingest_peak_gib": ingested.peak_gib}
    marker["made_at"] = time.time()
    marker_path.write_text(json.dumps(marker))
    return {**marker, "reused": False}


def read_manifest(scratch: Scratch) -> dict:
    return json.loads((scratch.target / "manifest.json").read_text())


def nightly_models(manifest: dict) -> list[dict]:
    """The manifest nodes of the models tagged nightly."""
    return [
        node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and "nightly" in node["tags"]
    ]


def prepare_warehouse(scratch: Scratch, lake: dict) -> dict:
    """Build the warehouse as the nightly build finds it: silver views, and every model the nightly ones read,
    with no nightly relation; unless the prepared warehouse is of the same lake and dbt project."""
    marker_path = scratch.root / "warehouse.json"
    inputs = {
        "lake_made_at": lake["made_at"],
        "dbt_project": dbt_project_hash(),
        "snapshots": "all but the last",
    }
    marker = read_marker(marker_path, inputs)
    if marker and scratch.prepared.exists():
        return {**marker, "reused": True}
    # imported here: the raw run's process imports this module, and should load little more than duckdb
    from data_contracts import load_contracts
    from lake.warehouse import publish_silver

    print("building the models the nightly ones depend on ...", flush=True)
    started = time.perf_counter()
    shutil.rmtree(scratch.warehouse.parent, ignore_errors=True)
    settings = replace(get_settings(), lake_root=str(scratch.lake), warehouse_path=scratch.warehouse)
    publish_silver(settings, load_contracts(settings.contracts_dir))
    dbt(scratch, "parse", log="prepare-parse")
    models = nightly_models(read_manifest(scratch))
    # hourly models read the models tagged hourly and nightly: build those, leave out the nightly-only ones
    nightly_only = [node["name"] for node in models if "hourly" not in node["tags"]]
    dbt(scratch, "build", "--select", "+tag:nightly", "--exclude", *nightly_only, log="prepare-build")
    build_snapshots_but_the_last(scratch)
    with duckdb.connect(str(scratch.warehouse)) as con:
        for node in models:
            if node["name"] == INCREMENTAL_MODEL:
                continue
            kind = "view" if node["config"]["materialized"] == "view" else "table"
            con.execute(f"drop {kind} if exists {node['relation_name']}")
    scratch.prepared.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scratch.warehouse, scratch.prepared)
    marker = {**inputs, "dbt_seconds": time.perf_counter() - started}
    marker_path.write_text(json.dumps(marker))
    return {**marker, "reused": False}


def build_snapshots_but_the_last(scratch: Scratch, person_dates_per_run: int | None = None) -> None:
    """Build the daily feature snapshots of every supported date but the last, in dbt runs of at most
    ``person_dates_per_run`` (default ``SNAPSHOT_PERSON_DATES_PER_DBT_RUN``) persons x dates, as a Dagster
    backfill of their partitions does."""
    with duckdb.connect(str(scratch.warehouse), read_only=True) as con:
        first, last = con.execute(
            "select first_snapshot_date, last_snapshot_date from int_marts__data_window"
        ).fetchall()[0]
    budget = person_dates_per_run or get_settings().snapshot_person_dates_per_dbt_run
    dates = dates_per_dbt_run(warehouse_persons(scratch.warehouse), budget)
    for day, until in snapshot_windows(first, last, dates):
        print(f"  snapshot dates [{day}, {until}) ...", flush=True)
        window = snapshot_window_vars(day, until)
        dbt(scratch, "run", "--select", INCREMENTAL_MODEL, "--vars", window, log=f"prepare-snapshots-{day}")


def profile_target() -> dict:
    """The dbt profile's DuckDB target output (its values unrendered): the target ``DBT_TARGET`` names,
    ``local`` by default."""
    profiles = yaml.safe_load((DBT_PROJECT / "profiles.yml").read_text())
    profile = profiles[next(iter(profiles))]
    return profile["outputs"][rendered(profile["target"], dict(os.environ))]


def rendered(value: object, env: dict[str, str]) -> object:
    """A profile value with its ``env_var(...)`` Jinja rendered from ``env`` (as dbt renders it)."""
    if not isinstance(value, str) or "{{" not in value:
        return value
    return jinja2.Template(value).render(env_var=lambda name, default=None: env.get(name, default))


def duckdb_options(target: dict, env: dict[str, str]) -> dict:
    """The DuckDB options a dbt profile's target sets (rendered with ``env``): connection config, settings,
    extensions."""
    unknown = set(target) - PROFILE_KEYS
    if unknown:
        raise SystemExit(f"the raw run does not reproduce the profile's {sorted(unknown)}: teach it to")
    return {
        "config": {k: rendered(v, env) for k, v in (target.get("config_options") or {}).items()},
        "settings": {k: rendered(v, env) for k, v in (target.get("settings") or {}).items()},
        "extensions": target.get("extensions") or [],
    }


def node_started(result: dict) -> datetime:
    return min(datetime.fromisoformat(t["started_at"]) for t in result["timing"])


def node_completed(result: dict) -> datetime:
    return max(datetime.fromisoformat(t["completed_at"]) for t in result["timing"])


def read_results(scratch: Scratch) -> list[dict]:
    """dbt's results of the last build, in the order their nodes started."""
    results = json.loads((scratch.target / "run_results.json").read_text())["results"]
    return sorted(results, key=lambda r: node_started(r) if r["timing"] else datetime.max.replace(tzinfo=UTC))


def replay_statements(scratch: Scratch, results: list[dict]) -> list[dict]:
    """The raw statement of each node that ran: its compiled SQL as the build ran it (run_results has it for
    unit tests too, the manifest does not)."""
    manifest = read_manifest(scratch)
    statements = []
    for result in results:
        uid = result["unique_id"]
        kind = uid.split(".")[0]
        sql = result["compiled_code"]
        if kind == "model":
            node = manifest["nodes"][uid]
            if node["language"] != "sql":
                raise SystemExit(f"{uid} is a {node['language']} model: the raw run replays SQL only")
            materialized = node["config"]["materialized"]
            if materialized == "incremental":  # the dates after those present, as the dbt build added them
                sql = f"insert into {node['relation_name']} by name {sql}"
            else:
                relation = "view" if materialized == "view" else "table"
                sql = f"create or replace {relation} {node['relation_name']} as {sql}"
        elif kind in ("test", "unit_test"):
            sql = f"select count(*) from ({sql}) as dbt_test"
        else:
            raise SystemExit(f"{uid}: the raw run replays models and tests only")
        statements.append({"id": uid, "sql": sql})
    return statements


def replay(plan_path: Path) -> None:
    """The raw run (in its own process): execute the plan's statements in order, write the seconds of each."""
    plan = json.loads(plan_path.read_text())
    options = plan["duckdb"]
    seconds = {}
    with duckdb.connect(plan["database"], config=options["config"]) as con:
        for extension in options["extensions"]:  # a name, or dbt-duckdb's {name, repo}
            con.load_extension(extension if isinstance(extension, str) else extension["name"])
        for key, value in options["settings"].items():  # as dbt-duckdb sets them
            con.execute(f"set {key} = '{str(value).replace(chr(39), chr(39) * 2)}'")
        for statement in plan["statements"]:
            started = time.perf_counter()
            con.execute(statement["sql"]).fetchall()
            seconds[statement["id"]] = time.perf_counter() - started
    Path(plan["timings"]).write_text(json.dumps(seconds))


def row_counts(database: Path, relations: list[str]) -> dict[str, int]:
    with duckdb.connect(str(database), read_only=True) as con:
        return {r: con.execute(f"select count(*) from {r}").fetchall()[0][0] for r in relations}


def reused(marker: dict, seconds: str) -> str:
    """How long a preparation step took, and whether this run reused it."""
    return f"{seconds} [reused]" if marker["reused"] else seconds


def short(uid: str) -> str:
    """A node's unique id without the project name."""
    kind, _, rest = uid.split(".", 2)
    return f"{kind} {rest}"


def measure_raw(scratch: Scratch, statements: list[dict]) -> tuple[Measured, dict[str, float]]:
    """Run the statements in DuckDB in a separate process; its measure and the seconds of each statement."""
    plan_path = scratch.root / "raw" / "plan.json"
    timings_path = scratch.root / "raw" / "timings.json"
    options = duckdb_options(profile_target(), scratch.env())
    plan = {"database": str(scratch.raw), "duckdb": options, "statements": statements}
    plan_path.write_text(json.dumps({**plan, "timings": str(timings_path)}))
    command = [sys.executable, __file__, "--replay", str(plan_path)]
    raw = measure(command, scratch.env(), plan_path.with_suffix(".out"))
    return raw, json.loads(timings_path.read_text())


def report(scratch: Scratch, ours: Measured, results: list[dict], raw: Measured, raw_seconds: dict) -> None:
    """Print the measures, where dbt's time goes, and the slowest nodes."""
    print(
        f"  dbt build --select tag:nightly                 {ours.seconds:7.1f} s   peak RSS "
        f"{ours.peak_gib:5.2f} GiB"
    )
    events = dbt_events(scratch, "nightly")
    phases = [  # what, and when it ended
        ("python start-up and imports", events["MainReportVersion"]),
        ("project and manifest (warm partial parse)", events["FoundStats"]),
        ("warehouse metadata before the first node", min(node_started(r) for r in results).timestamp()),
        ("nodes: first start to last end", max(node_completed(r) for r in results).timestamp()),
        ("artifacts and exit", ours.started_at + ours.seconds),
    ]
    previous = ours.started_at
    for what, until in phases:
        print(f"    {what:<44} {until - previous:7.1f} s")
        previous = until
    print(
        f"  raw DuckDB, the same SQL in a process          {raw.seconds:7.1f} s   peak RSS "
        f"{raw.peak_gib:5.2f} GiB"
    )
    print(f"    statements, one after the other              {sum(raw_seconds.values()):7.1f} s")
    ratio = ours.seconds / raw.seconds
    verdict = "OK" if ratio <= TARGET_RATIO else "MISSED"
    print(f"  ratio dbt / raw: {ratio:.2f} (target <= {TARGET_RATIO}) {verdict}")
    print(f"  {'seconds by kind of node (dbt: its node timings)':<62} {'dbt':>7} {'raw':>7}")
    for kind, label in (("model", "models"), ("test", "data tests"), ("unit_test", "unit tests")):
        ids = [r["unique_id"] for r in results if r["unique_id"].startswith(kind + ".")]
        dbt_sum = sum(r["execution_time"] for r in results if r["unique_id"] in ids)
        print(f"    {f'{len(ids)} {label}':<60} {dbt_sum:7.1f} {sum(raw_seconds[i] for i in ids):7.1f}")
    print(f"  {'slowest nodes':<62} {'dbt':>7} {'raw':>7}")
    for result in sorted(results, key=lambda r: r["execution_time"], reverse=True)[:SLOWEST]:
        uid = result["unique_id"]
        print(f"    {short(uid)[:60]:<60} {result['execution_time']:7.1f} {raw_seconds[uid]:7.1f}")


def report_failure(scratch: Scratch, ours: Measured, failed: list[dict]) -> None:
    """Print what the failed nightly build measured and which nodes failed."""
    print(
        f"  dbt build --select tag:nightly FAILED after {ours.seconds:.1f} s, peak RSS {ours.peak_gib:.2f} "
        "GiB"
    )
    for result in failed:
        if result["status"] != "skipped":
            message = " ".join((result["message"] or "").split())
            print(f"    {short(result['unique_id'])} ({result['status']}): {message[:300]}")
    print(f"    and {sum(r['status'] == 'skipped' for r in failed)} nodes skipped")
    print(f"  no comparison with raw DuckDB (dbt's output: {scratch.root / 'logs' / 'nightly.out'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--scratch", type=Path, help="kept between runs (default: a folder in the temp dir)")
    # the raw run's own process
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        replay(args.replay)
        return 0
    disable_telemetry()
    root = args.scratch or Path(tempfile.gettempdir()) / f"dbt-nightly-{args.persons}x{args.days}"
    scratch = Scratch(root.resolve())
    scratch.root.mkdir(parents=True, exist_ok=True)
    print(
        f"dbt nightly build, {args.persons:,} persons x {args.days} days (scratch {scratch.root})", flush=True
    )

    lake = prepare_lake(scratch, args.persons, args.days)
    warehouse = prepare_warehouse(scratch, lake)
    made = (
        f"generate {lake['generate_seconds']:.0f} s (peak RSS {lake['generate_peak_gib']:.2f} GiB), "
        f"ingest {lake['ingest_seconds']:.0f} s (peak RSS {lake['ingest_peak_gib']:.2f} GiB)"
    )
    built = f"upstream dbt build {warehouse['dbt_seconds']:.0f} s"
    print(f"  preparation: {reused(lake, made)}; {reused(warehouse, built)}")
    for copy in (scratch.warehouse, scratch.raw):
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch.prepared, copy)
    dbt(scratch, "parse", log="parse")  # unmeasured: the measured build starts from a warm partial parse
    print("measuring dbt build --select tag:nightly ...", flush=True)
    ours = dbt(scratch, "build", "--select", "tag:nightly", log="nightly", check=False)
    results = read_results(scratch)
    failed = [r for r in results if r["status"] not in ("success", "pass")]
    if ours.returncode != 0 or failed:
        report_failure(scratch, ours, failed)
        return 1
    print("measuring the same SQL in DuckDB ...", flush=True)
    raw, raw_seconds = measure_raw(scratch, replay_statements(scratch, results))
    kinds = [r["unique_id"].split(".")[0] for r in results]
    print(
        f"  {kinds.count('model')} models, {kinds.count('test')} data tests, {kinds.count('unit_test')} unit "
        f"tests; dbt runs {profile_target()['threads']} at a time (the profile's threads), the raw run one "
        "after the other"
    )
    report(scratch, ours, results, raw, raw_seconds)

    tables = [
        n["relation_name"]
        for n in nightly_models(read_manifest(scratch))
        if n["config"]["materialized"] != "view"
    ]
    counts_dbt, counts_raw = row_counts(scratch.warehouse, tables), row_counts(scratch.raw, tables)
    differing = {t: (counts_dbt[t], counts_raw[t]) for t in tables if counts_dbt[t] != counts_raw[t]}
    verdict = "equal OK" if not differing else f"DIFFER {differing}"
    print(f"  row counts of the {len(tables)} nightly tables ({sum(counts_dbt.values()):,} rows): {verdict}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
