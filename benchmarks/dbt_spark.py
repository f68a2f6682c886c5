"""The nightly dbt build on Spark (Sail's Spark Connect server, started here) against the same build on
DuckDB, on one lake: wall time and peak memory of each, and the ratio Spark / DuckDB.

The lake and the DuckDB side are those of ``benchmarks/dbt_nightly.py`` (the same scratch folder by default,
so ``make bench`` builds the lake once for both): a simulated company of ``--persons`` persons ingested into
bronze and silver, every model the nightly ones read built, the daily feature snapshots built for every date
but the last. The measured build is the nightly job's dbt part: ``dbt build --select tag:nightly`` (models,
data tests and unit tests), which adds the newest snapshot date to the incremental ``person_features_daily``
and rebuilds the profile, training sets and outcomes.

1. DuckDB: the prepared warehouse copied, an unmeasured ``dbt parse``, then the measured build (wall time,
   peak RSS of the dbt process from ``wait4``).
2. Spark: a Sail server on a free port of 127.0.0.1 (``lake.spark_server``), the silver tables of the same
   lake registered in its catalog (``lake.spark_warehouse.publish_silver``), then with ``DBT_TARGET=spark``
   the same preparation (every model the nightly ones read built on Spark; the snapshots of every date but the
   last copied from the prepared DuckDB warehouse into the Delta table a dbt run over no date created, or with
   ``--build-snapshots`` built on Spark one date per dbt run, 20-26 s of Sail a date at 1,000,000 persons), an
   unmeasured ``dbt parse`` and the measured build. Its models are Delta tables under
   the scratch folder's ``spark/spark_warehouse``, rewritten by every run. Peak memory: the dbt process (a
   Spark Connect client) and the Sail server (its peak RSS reset just before the measured build).
3. Correctness: the row counts of the nightly tables are equal on both engines.

There is no target: the figure is the ratio, read with the crossover reasoning of the README (Benchmarks).

    python benchmarks/dbt_spark.py [--persons 1000000] [--days 30] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
from dbt_nightly import (  # benchmarks/, the folder of this script
    INCREMENTAL_MODEL,
    Measured,
    Scratch,
    build_snapshots_but_the_last,
    dbt,
    dbt_project_hash,
    nightly_models,
    node_completed,
    node_started,
    prepare_lake,
    prepare_warehouse,
    read_manifest,
    read_marker,
    read_results,
    reused,
    row_counts,
)

from lake import spark_server
from lake.settings import Settings, disable_telemetry
from orchestration.dbt_translation import snapshot_window_vars


@dataclass
class SparkScratch(Scratch):
    """The Spark side's folder (``<base>/spark``): its dbt target, logs and models; the lake is the base's."""

    base: Path = Path()
    remote: str = ""

    @property
    def lake(self) -> Path:
        return self.base / "lake"

    def env(self) -> dict[str, str]:
        """The DuckDB side's environment, with the Spark target of the server and this folder's models."""
        return {
            **super().env(),
            "DBT_TARGET": "spark",
            "SPARK_REMOTE": self.remote,
            "SPARK_WAREHOUSE_DIR": str(self.root / "spark_warehouse"),
        }


def failed_nodes(results: list[dict]) -> list[str]:
    """The nodes of a build that neither succeeded nor passed, with dbt's message."""
    return [
        f"{r['unique_id']} ({r['status']}): {' '.join((r['message'] or '').split())[:300]}"
        for r in results
        if r["status"] not in ("success", "pass", "skipped")
    ]


def nodes_seconds(results: list[dict]) -> float:
    """Seconds from the first node's start to the last node's end: the build without dbt's start and exit."""
    return (max(map(node_completed, results)) - min(map(node_started, results))).total_seconds()


def measure_duckdb(scratch: Scratch) -> tuple[Measured, list[dict]]:
    """The nightly build on DuckDB from a copy of the prepared warehouse; its measure and dbt's results."""
    shutil.copyfile(scratch.prepared, scratch.warehouse)
    dbt(scratch, "parse", log="parse")  # unmeasured: the measured build starts from a warm partial parse
    print("measuring dbt build --select tag:nightly on DuckDB ...", flush=True)
    measured = dbt(scratch, "build", "--select", "tag:nightly", log="nightly", check=False)
    return measured, read_results(scratch)


def reset_peak_rss(pid: int) -> None:
    """Reset the process's peak resident memory (``VmHWM``) to its current one."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_gib(pid: int) -> float:
    """The process's peak resident memory since its start or the last reset (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    raise RuntimeError(f"no VmHWM for process {pid}")


def copy_snapshots_but_the_last(scratch: SparkScratch, prepared: Path, settings: Settings) -> int:
    """Give the Spark target the daily snapshots of every date but the last without building them on Spark: a
    dbt run over an empty window of dates creates ``person_features_daily`` as Spark declares it (its
    contract), then the rows of the prepared DuckDB warehouse ``prepared`` (the same dates, built by the same
    SQL) are appended to its Delta table, cast to that table's schema, in batches; the rows copied."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    copied = 0
    with duckdb.connect(str(prepared), read_only=True) as con:
        first = con.execute(f"select min(snapshot_date) from {INCREMENTAL_MODEL}").fetchall()[0][0]
        print("  snapshot dates but the last: copied from the DuckDB warehouse ...", flush=True)
        dbt(scratch, "run", "--select", INCREMENTAL_MODEL, "--vars", snapshot_window_vars(first, first),
            log="prepare-snapshots-empty")  # fmt: skip
        uri = settings.spark_model(INCREMENTAL_MODEL)
        table = DeltaTable(uri)
        schema = pa.schema(table.schema().to_arrow())
        reader = con.sql(f"select {', '.join(schema.names)} from {INCREMENTAL_MODEL}").to_arrow_reader(
            500_000
        )

        def batches():
            nonlocal copied
            for batch in reader:
                copied += batch.num_rows
                yield pa.RecordBatch.from_arrays(
                    [batch.column(i).cast(field.type) for i, field in enumerate(schema)], schema=schema
                )

        write_deltalake(
            uri,
            pa.RecordBatchReader.from_batches(schema, batches()),
            mode="append",
            partition_by=table.metadata().partition_columns or None,
        )
    return copied


def prepare_spark_upstream(
    scratch: SparkScratch, settings: Settings, session, manifest: dict, lake_made_at: float
) -> dict:
    """Build on Spark every model the nightly ones read (the DuckDB side's preparation), unless an earlier run
    built them from the same lake (``lake_made_at``) and dbt project (``upstream.json``): then its Delta
    tables are registered in the new server's catalog and the views run again, as a Dagster step does on a
    restarted server. Either way no model tagged nightly only is left. The marker, with ``reused``."""
    from lake.spark_warehouse import known_relations, register_models, views_to_restore

    marker_path = scratch.root / "upstream.json"
    inputs = {"lake_made_at": lake_made_at, "dbt_project": dbt_project_hash()}
    marker = read_marker(marker_path, inputs)
    models = nightly_models(manifest)
    nightly_only = [node["name"] for node in models if "hourly" not in node["tags"]]
    if marker:
        for name in nightly_only:  # the models tagged hourly too are upstream of the others: kept
            shutil.rmtree(settings.spark_model(name), ignore_errors=True)
        register_models(settings, session, manifest)
        # the views, and the upstream tables an interrupted run left unwritten (dbt orders them)
        known = known_relations(session)
        lost = [n["name"] for n in models if n["name"] not in nightly_only and n["name"] not in known]
        selected = [*views_to_restore(session, manifest), *lost]
        dbt(scratch, "run", "--select", " ".join(selected), log="prepare-restore")
        return {**marker, "reused": True}
    shutil.rmtree(scratch.root / "spark_warehouse", ignore_errors=True)
    print("building the models the nightly ones depend on, on Spark ...", flush=True)
    upstream = dbt(
        scratch, "build", "--select", "+tag:nightly", "--exclude", *nightly_only, log="prepare-build"
    )
    marker = {**inputs, "dbt_seconds": upstream.seconds}
    marker_path.write_text(json.dumps(marker))
    return {**marker, "reused": False}


def measure_spark(
    scratch: SparkScratch,
    built: Path,
    server: spark_server.SparkServer,
    prepared: Path | None,
    lake_made_at: float,
) -> tuple:
    """Prepare the Spark catalog as the DuckDB warehouse was prepared (:func:`prepare_spark_upstream`; the
    snapshots but the last date copied from the prepared DuckDB warehouse ``prepared``, or with None built on
    Spark one date per dbt run), then measure the nightly build on Spark: its measure, dbt's results, the
    server's peak RSS during the build (GiB), the upstream preparation's marker and the row counts."""
    from data_contracts import load_contracts
    from lake.settings import get_settings
    from lake.spark_warehouse import publish_silver, spark_session

    scratch.warehouse.parent.mkdir(parents=True, exist_ok=True)
    # the snapshot dates and the persons are read from the DuckDB build's warehouse file (the same lake)
    shutil.copyfile(built, scratch.warehouse)
    settings = replace(
        get_settings(), lake_root=str(scratch.lake), spark_warehouse_dir=str(scratch.root / "spark_warehouse")
    )
    session = spark_session(scratch.remote)
    publish_silver(settings, load_contracts(settings.contracts_dir), session)
    dbt(scratch, "parse", log="prepare-parse")
    manifest = read_manifest(scratch)
    models = nightly_models(manifest)
    upstream = prepare_spark_upstream(scratch, settings, session, manifest, lake_made_at)
    if prepared is not None:
        copied = copy_snapshots_but_the_last(scratch, prepared, settings)
        print(f"  {copied:,} snapshot rows copied", flush=True)
    else:
        # one date per dbt run: Sail took over 4 minutes and 14 GB for 28 dates of 20,000 persons in one query
        build_snapshots_but_the_last(scratch, person_dates_per_run=1)
    dbt(scratch, "parse", log="parse")
    print("measuring dbt build --select tag:nightly on Spark ...", flush=True)
    reset_peak_rss(server.process.pid)
    measured = dbt(scratch, "build", "--select", "tag:nightly", log="nightly", check=False)
    server_peak = peak_rss_gib(server.process.pid)
    counts = {
        node["name"]: session.sql(f"select count(*) from main.{node['name']}").collect()[0][0]
        for node in models
        if node["config"]["materialized"] != "view"
    }
    session.stop()
    return measured, read_results(scratch), server_peak, upstream, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--scratch", type=Path, help="kept between runs (default: the folder of benchmarks/dbt_nightly.py)"
    )
    parser.add_argument(
        "--build-snapshots",
        action="store_true",
        help="build the Spark side's snapshots of every date but the last on Spark, one date per dbt run, "
        "instead of copying them from the DuckDB warehouse (one date of 1,000,000 persons: 20-26 s)",
    )
    args = parser.parse_args()
    disable_telemetry()
    root = args.scratch or Path(tempfile.gettempdir()) / f"dbt-nightly-{args.persons}x{args.days}"
    scratch = Scratch(root.resolve())
    scratch.root.mkdir(parents=True, exist_ok=True)
    print(
        f"dbt nightly build on Spark (Sail) and DuckDB, {args.persons:,} persons x {args.days} days "
        f"(scratch {scratch.root})",
        flush=True,
    )
    lake = prepare_lake(scratch, args.persons, args.days)
    warehouse = prepare_warehouse(scratch, lake)
    upstream = f"DuckDB upstream dbt build {warehouse['dbt_seconds']:.0f} s"
    print(f"  preparation: {reused(lake, 'lake')}; {reused(warehouse, upstream)}")
    scratch.warehouse.parent.mkdir(parents=True, exist_ok=True)
    duck, duck_results = measure_duckdb(scratch)

    with spark_server.running(log=scratch.root / "logs" / "sail.log") as server:
        spark = SparkScratch(scratch.root / "spark", base=scratch.root, remote=server.remote)
        spark_measured, spark_results, server_peak, upstream, spark_counts = measure_spark(
            spark,
            scratch.warehouse,
            server,
            None if args.build_snapshots else scratch.prepared,
            lake["made_at"],
        )
    snapshots = "built on Spark" if args.build_snapshots else "copied from DuckDB"
    built_upstream = reused(upstream, f"upstream dbt build {upstream['dbt_seconds']:.0f} s")
    print(f"  Spark preparation: {built_upstream}; snapshots but the last date {snapshots}")

    failures = {"DuckDB": failed_nodes(duck_results), "Spark": failed_nodes(spark_results)}
    failures["DuckDB"] += [] if duck.returncode == 0 or failures["DuckDB"] else ["dbt exited non-zero"]
    failures["Spark"] += (
        [] if spark_measured.returncode == 0 or failures["Spark"] else ["dbt exited non-zero"]
    )
    nodes = len(duck_results)
    print(f"  {nodes} nodes on DuckDB (threads 2), {len(spark_results)} on Spark (threads 1)")
    print(
        f"  DuckDB  dbt build --select tag:nightly   {duck.seconds:7.1f} s   peak RSS dbt "
        f"{duck.peak_gib:5.2f} GiB; nodes {nodes_seconds(duck_results):5.1f} s"
    )
    print(
        f"  Spark   dbt build --select tag:nightly   {spark_measured.seconds:7.1f} s   peak RSS dbt "
        f"{spark_measured.peak_gib:5.2f} GiB, Sail server {server_peak:5.2f} GiB; nodes "
        f"{nodes_seconds(spark_results):5.1f} s"
    )
    for engine, failed in failures.items():
        for line in failed:
            print(f"    {engine} FAILED {line}")
    if any(failures.values()):
        return 1
    nodes_ratio = nodes_seconds(spark_results) / nodes_seconds(duck_results)
    ratio = spark_measured.seconds / duck.seconds
    print(f"  ratio Spark / DuckDB: {ratio:.2f} (nodes only {nodes_ratio:.2f})")

    relations = {n["name"]: n["relation_name"] for n in nightly_models(read_manifest(scratch))}
    by_relation = row_counts(scratch.warehouse, [relations[name] for name in spark_counts])
    counts_duck = {name: by_relation[relations[name]] for name in spark_counts}
    differing = {
        t: (counts_duck[t], spark_counts[t]) for t in spark_counts if counts_duck[t] != spark_counts[t]
    }
    verdict = "equal OK" if not differing else f"DIFFER {differing}"
    tables = f"{len(spark_counts)} nightly tables ({sum(counts_duck.values()):,} rows)"
    print(f"  row counts of the {tables}: {verdict}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
