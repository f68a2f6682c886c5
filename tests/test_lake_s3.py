"""The lake on object storage: a real S3 server (SeaweedFS, started by the ``s3_server`` fixture), concurrent
Delta writers on it, and the ingestion, its exactly-once repair, the warehouse and maintenance with
``LAKE_ROOT=s3://...``."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from conftest import GOLD_SELECT, S3_PII_SECRET, gold_models, read_warehouse, run_dbt
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from processes import command_line
from test_activation_sync import GRANTED, crm_sync, decision, write_consents, write_decisions
from test_foundation import materialize_small_company

from activation import state
from activation.sync import progress_dir, run_sync
from data_contracts import scan_contracts
from lake import delta, object_store, s3_server
from lake.gold import gold_uri, gold_uris, publish_gold
from lake.landing import arrival_order, survey
from lake.maintenance import maintain
from lake.settings import REPO_ROOT, get_settings
from lake.summary import delta_tables
from lake.warehouse import mirror_dir, publish_silver, silver_tables
from ml.data import load_training_set, read_gold
from simulator import SimulationConfig, generate

WRITERS = 4
COMMITS_PER_WRITER = 6


def _write_until_committed(uri: str, options: dict[str, str], writer: int, start_at: float) -> list[int]:
    """One writer process: append (even writers) or merge (odd writers) its rows one commit at a time, each
    commit allowed no retry inside delta-rs, so a commit that loses the race for its version fails and is
    tried again here; the failed attempts per commit."""
    while time.time() < start_at:  # every writer starts at the same instant
        time.sleep(0.001)
    failures = []
    for commit in range(COMMITS_PER_WRITER):
        rows = pa.table({"writer": [writer], "commit": [commit], "value": [writer * 100 + commit]})
        properties = CommitProperties(
            max_commit_retries=0, custom_metadata={"writer": str(writer), "commit": str(commit)}
        )
        failed = 0
        while True:
            try:
                if writer % 2 == 0:
                    write_deltalake(
                        uri, rows, mode="append", storage_options=options, commit_properties=properties
                    )
                else:
                    DeltaTable(uri, storage_options=options).merge(
                        rows,
                        "t.writer = s.writer and t.commit = s.commit",
                        source_alias="s",
                        target_alias="t",
                        commit_properties=properties,
                    ).when_matched_update_all().when_not_matched_insert_all().execute()
                break
            except CommitFailedError:
                failed += 1
        failures.append(failed)
    return failures


def test_concurrent_writers_on_the_s3_server_lose_no_commit(s3_lake) -> None:
    uri = object_store.join(s3_lake.lake_root, "concurrency")
    options = s3_lake.storage_options
    empty = pa.table(
        {"writer": pa.array([], pa.int64()), "commit": pa.array([], pa.int64()), "value": []},
        schema=pa.schema([("writer", pa.int64()), ("commit", pa.int64()), ("value", pa.int64())]),
    )
    write_deltalake(uri, empty, storage_options=options)
    start_at = time.time() + 4  # after every spawned process has imported deltalake
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        failures = pool.starmap(
            _write_until_committed, [(uri, options, writer, start_at) for writer in range(WRITERS)]
        )
    commits = WRITERS * COMMITS_PER_WRITER
    # the race was real: some commits found their version taken by another writer (a create refused by the
    # server's conditional put) and had to be tried again
    assert sum(map(sum, failures)) > 0, failures
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == commits  # version 0 created the table; one version per commit, none twice
    written = [c for c in table.history() if "writer" in c]
    assert len(written) == commits
    assert {(c["writer"], c["commit"]) for c in written} == {
        (str(w), str(c)) for w in range(WRITERS) for c in range(COMMITS_PER_WRITER)
    }
    assert sorted(c["version"] for c in written) == list(range(1, commits + 1))
    rows = pl.read_delta(uri, storage_options=options).sort("writer", "commit")
    expected = pl.DataFrame(
        [(w, c, w * 100 + c) for w in range(WRITERS) for c in range(COMMITS_PER_WRITER)],
        schema=["writer", "commit", "value"],
        orient="row",
    )
    assert rows.equals(expected)


# ------------------------------------------------------------------------------------- the lake on S3

COMPANY = SimulationConfig(persons=400, days=4, seed=5, start=date(2026, 9, 1), history_days=7)
CRASH_FEEDS = ["crm.public.contacts", "shop.shop.orders", "clickstream"]
VOLATILE = ("_ingested_at", "quarantined_at", "recorded_at")
LEDGER = "bronze/_ingestion_ledger"
LEDGER_COLUMNS = [
    "feed_id",
    "batch_seq",
    "relpath",
    "size",
    "status",
    "records",
    "bronze_rows",
    "quarantined",
]


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The landing zone of a small simulated company (local files)."""
    root = tmp_path_factory.mktemp("s3-company")
    generate(COMPANY, root / "landing", root / "truth", progress=False)
    return root / "landing"


@pytest.fixture(scope="module")
def local_lake(company: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The company ingested (every feed) into a lake in a local folder with the key of the lakes on S3: the
    reference they are compared with."""
    root = tmp_path_factory.mktemp("s3-reference") / "lake"
    shutil.copytree(company, root / "landing")
    environment = {"LAKE_ROOT": str(root), "WAREHOUSE_PATH": str(root.parent / "warehouse.duckdb")}
    done = run_ingest({**environment, "PII_SECRET": S3_PII_SECRET})  # the tokens of the lake on S3
    assert done.returncode == 0, done.stderr[-3000:]
    return str(root)


def run_ingest(
    environment: dict[str, str] | None = None, crash_at: str | None = None, feeds: list[str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m lake.ingest`` in a child process, with ``environment`` added to this one's."""
    env = {**os.environ, **(environment or {})}
    if crash_at:
        env["LAKE_CRASH_AT"] = crash_at
    arguments = [a for feed in feeds or [] for a in ("--feed", feed)]
    return subprocess.run(
        [sys.executable, "-m", "lake.ingest", *arguments],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tables_of(root: str, options: dict[str, str] | None = None, feeds: list[str] | None = None) -> dict:
    """Every Delta table of the lake at ``root`` (by relative path), sorted, without the columns that hold
    times of the run; the ledger's rows of its committed files only, and of ``feeds`` when given."""
    tables = {}
    for table in delta_tables(root, options):
        frame = pl.read_delta(object_store.join(root, table), storage_options=options or None)
        frame = frame.drop([c for c in VOLATILE if c in frame.columns])
        if table == LEDGER:
            frame = frame.filter(pl.col("status") == "committed").select(LEDGER_COLUMNS)
        if feeds and "feed_id" in frame.columns:
            frame = frame.filter(pl.col("feed_id").is_in(feeds))
        tables[table] = frame.select(sorted(frame.columns)).sort(sorted(frame.columns))
    return tables


def assert_same_tables(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, frame in expected.items():
        assert frame.equals(actual[name]), name


def test_the_lake_on_s3_holds_what_the_local_lake_holds(company: Path, local_lake: str, s3_lake) -> None:
    uploaded = object_store.upload_folder(company, s3_lake.landing)
    done = run_ingest()
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tables(tables_of(local_lake), tables_of(s3_lake.lake_root, s3_lake.storage_options))
    # arrival time on object storage: the objects' LastModified, whole seconds, recorded by the ledger
    ledger = pl.read_delta(
        object_store.join(s3_lake.lake_root, LEDGER), storage_options=s3_lake.storage_options
    )
    committed = ledger.filter(pl.col("status") == "committed")
    assert committed.height == uploaded
    assert committed.filter(pl.col("mtime_ns") % 1_000_000_000 != 0).is_empty()
    # the ledger's (size, LastModified) identity holds: a second run finds nothing new and nothing changed
    again = run_ingest()
    assert again.returncode == 0 and "CHANGED" not in again.stderr, again.stderr[-3000:]
    assert tables_of(s3_lake.lake_root, s3_lake.storage_options)[LEDGER].height == committed.height
    # the warehouse's silver views read the mirror of the live files: as many rows as each silver table
    contracts = scan_contracts(s3_lake.contracts_dir).contracts
    views = silver_tables(s3_lake, contracts)

    def view_rows() -> dict[str, int]:
        return {
            v.view: read_warehouse(s3_lake, f'select count(*) as n from silver."{v.view}"')["n"][0]
            for v in views
            if delta.open_table(v.uri, s3_lake.storage_options) is not None
        }

    counts = view_rows()
    assert counts == {
        v.view: delta.row_count(v.uri, s3_lake.storage_options)
        for v in views
        if delta.open_table(v.uri, s3_lake.storage_options) is not None
    }
    assert sum(counts.values()) > 0
    # maintenance on S3: compaction and vacuum change no row; the views, refreshed, drop the vacuumed files
    before = tables_of(s3_lake.lake_root, s3_lake.storage_options)
    cared = maintain(s3_lake, contracts, retention_hours=0)
    assert any(c.files_vacuumed for c in cared)
    publish_silver(s3_lake, contracts)
    assert_same_tables(before, tables_of(s3_lake.lake_root, s3_lake.storage_options))
    assert view_rows() == counts
    live = {
        str(mirror_dir(s3_lake) / f.removeprefix(s3_lake.lake_root + "/"))
        for v in views
        if (table := delta.open_table(v.uri, s3_lake.storage_options)) is not None
        for f in table.file_uris()
    }
    assert {str(p) for p in mirror_dir(s3_lake).rglob("*.parquet")} == live


@pytest.mark.parametrize("crash_at", ["ingest:after_bronze", "cdc:after_history"])
def test_a_run_killed_on_s3_is_repaired_by_a_rerun(
    company: Path, local_lake: str, s3_lake, crash_at: str
) -> None:
    object_store.upload_folder(company, s3_lake.landing)
    killed = run_ingest(crash_at=crash_at, feeds=CRASH_FEEDS)
    assert killed.returncode == -9, killed.stderr[-3000:]
    rerun = run_ingest(feeds=CRASH_FEEDS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    expected = tables_of(local_lake, feeds=CRASH_FEEDS)
    actual = tables_of(s3_lake.lake_root, s3_lake.storage_options, feeds=CRASH_FEEDS)
    assert {LEDGER, "silver/crm/contacts", "silver/shop/orders", "silver/clickstream/events"} <= actual.keys()
    assert_same_tables({name: expected[name] for name in actual}, actual)


# --------------------------------------------------------------------- the other users of the lake root


def test_files_on_s3_are_replaced_whole_and_uploaded_in_arrival_order(s3_lake, tmp_path: Path) -> None:
    uri = object_store.join(s3_lake.lake_root, "activation", "_progress", "hubspot.json")
    assert object_store.read_bytes(uri) is None
    object_store.write_bytes(uri, b'{"diff_id": 1}')
    object_store.write_bytes(uri, b'{"diff_id": 2}')
    assert object_store.read_bytes(uri) == b'{"diff_id": 2}'
    # the HTTP destinations' progress lives in the lake, on object storage too
    assert progress_dir(s3_lake) == object_store.join(s3_lake.lake_root, "activation", "_progress")

    # arrival on S3 is the object's LastModified (whole seconds), then the Kafka offset: a file that lands a
    # second later comes later whatever its offset
    def land(offset: int, mtime: int) -> Path:
        path = tmp_path / f"landed-{offset}" / "cdc" / "t" / f"t+0+{offset:010d}.json"
        path.parent.mkdir(parents=True)
        path.write_text('{"a": 1}\n')
        os.utime(path, (mtime, mtime))
        return path.parents[2]

    assert object_store.upload_folder(land(9, 10), s3_lake.landing) == 1
    time.sleep(1.1)
    for offset, mtime in ((0, 20), (5, 30)):
        object_store.upload_folder(land(offset, mtime), s3_lake.landing)
    landed = sorted(survey(s3_lake.landing, "t", "cdc/t")[0], key=arrival_order)
    assert [f.kafka_start_offset for f in landed] == [9, 0, 5]
    assert landed[0].mtime_ns < landed[1].mtime_ns and all(f.mtime_ns % 1_000_000_000 == 0 for f in landed)


def test_the_sync_engine_keeps_its_state_in_the_lake_on_s3(s3_lake, crm_url, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ACTIVATION_SYNCS_DIR", str(tmp_path / "syncs"))
    (tmp_path / "syncs").mkdir()
    write_decisions(s3_lake, [decision(1), decision(2, "free_shipping", "sms"), decision(3)])
    write_consents(s3_lake, GRANTED)
    config = crm_sync(s3_lake)
    first = run_sync(config, s3_lake)
    assert (first["added"], first["sent"], first["status"]) == (3, 3, "succeeded")
    assert run_sync(config, s3_lake)["sent"] == 0  # the synced state, read back from S3, equals the source
    assert state.state_version(s3_lake, "crm") == 1
    assert state.runs(s3_lake, "crm")["sent"].to_list() == [3, 0]
    assert delta.open_table(state.uri(s3_lake, "state", "crm"), s3_lake.storage_options) is not None


def test_dagster_compute_logs_go_to_the_s3_server(s3_lake, s3_server, tmp_path, monkeypatch) -> None:
    import dagster as dg

    home = tmp_path / "dagster"
    home.mkdir()
    profile = (
        REPO_ROOT / "orchestration" / name for name in ("dagster.yaml", "dagster-s3-compute-logs.yaml")
    )
    (home / "dagster.yaml").write_text("".join(p.read_text() for p in profile))  # as make install does
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", s3_server.bucket)

    @dg.asset
    def says_hello() -> None:
        print("hello from a step")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([says_hello], instance=instance).success
    fs, base = object_store.filesystem(f"s3://{s3_server.bucket}/dagster/compute-logs")
    outputs = [
        i.path
        for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
        if i.type == pafs.FileType.File and i.path.endswith(".out")
    ]
    assert [fs.open_input_stream(p).read() for p in outputs] == [b"hello from a step\n"]


@pytest.mark.slow  # a dbt build of the marts the models read (about 40 s)
def test_dbt_builds_on_the_lake_on_s3_and_gold_is_published_there(
    company: Path, s3_lake, tmp_path: Path
) -> None:
    object_store.upload_folder(company, s3_lake.landing)
    assert run_ingest().returncode == 0  # also refreshes the silver views (over the mirror)
    run_dbt(s3_lake, tmp_path, "build", "--select", *GOLD_SELECT)
    models = gold_models(tmp_path)
    published = publish_gold(s3_lake, models)
    assert gold_uris(s3_lake) == sorted(object_store.join(s3_lake.zone("gold"), m) for m in models)
    for model, rows in published.items():
        assert read_warehouse(s3_lake, f'select count(*) as n from "{model}"')["n"][0] == rows
        frame, ref = read_gold(model, s3_lake)  # the models' reader, on S3
        assert frame.height == rows and ref.uri.startswith("s3://"), model
    assert published["identity_person_map"] > 0


def test_a_model_learns_from_gold_on_s3_and_keeps_its_artifacts_there(gold_lake, s3_lake, tmp_path) -> None:
    from ml.ope import logging_policy_value
    from ml.pipeline import ope_logs, value_policy
    from ml.policy import load_policy
    from ml.settings import get_ml_settings
    from ml.tracking import log_training_run, reproduce_and_compare
    from ml.train import TrainingConfig, train_uplift

    frame, _ = read_gold("training_decisions", gold_lake)
    write_deltalake(
        gold_uri(s3_lake, "training_decisions"), frame.to_arrow(), storage_options=s3_lake.storage_options
    )
    settings = replace(get_ml_settings(), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert settings.artifact_root == object_store.join("s3://lake", "mlflow")  # MLFLOW_ARTIFACT_ROOT
    training, ref = load_training_set(s3_lake)
    assert ref.uri.startswith("s3://") and training.height == frame.height
    config = TrainingConfig(validation_days=2, max_rounds=60)
    result = train_uplift(training, config)
    policy = load_policy(settings.policy_file)
    evaluation = value_policy(result.validation_predictions, result.validation, policy, result.model.actions)
    run = log_training_run(
        result,
        ref,
        evaluation,
        logging_policy_value(ope_logs(result.validation, policy)),
        settings,
        config=config,
    )
    fs, base = object_store.filesystem(settings.artifact_root)
    stored = [i.path for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))]
    assert any(p.endswith(f"{run.run_id}/artifacts/training_snapshot/training_set.parquet") for p in stored)
    assert any(p.endswith("/MLmodel") for p in stored)
    # the run is reproduced from its snapshot on S3 and the served model (loaded from S3) predicts the same
    assert reproduce_and_compare(run.run_id, settings) == 0.0


def test_the_command_runs_a_command_with_the_lake_on_a_server_on_the_given_port(tmp_path: Path) -> None:
    port = s3_server.free_port_block(len(s3_server.COMPONENT_PORTS))
    probe = (
        "import os; from lake import object_store; "
        "object_store.write_bytes(os.environ['LAKE_ROOT'] + '/probe.txt', b'written'); "
        "print(os.environ['AWS_ENDPOINT_URL'], os.environ['LAKE_ROOT'])"
    )
    options = ["--data-dir", str(tmp_path), "--port", str(port), "--prefix", "probe-lake"]
    done = subprocess.run(
        [sys.executable, "-m", "lake.s3_server", "run", *options, sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == f"http://127.0.0.1:{port} s3://lake/probe-lake"
    # the server is stopped afterwards; its data stays in the folder: a new server on it serves the object
    assert (tmp_path / "s3.json").exists()
    with s3_server.running(tmp_path) as server:
        probe_uri = server.uri("probe-lake/probe.txt")
        assert object_store.read_bytes(probe_uri, server.storage_options) == b"written"


def test_sigterm_to_the_command_stops_its_server(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "lake.s3_server", "run", "--data-dir", str(tmp_path), "sleep", "120"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("SeaweedFS S3 on http://127.0.0.1:")
    pids = [int(p.name) for p in Path("/proc").glob("[0-9]*")]
    servers = [pid for pid in pids if str(tmp_path) in command_line(pid)]
    assert servers, "no server process found for the data folder"
    process.terminate()
    assert process.wait(timeout=60) == 128 + 15
    assert not [pid for pid in servers if "weed" in command_line(pid)]


def test_the_simulated_company_lands_on_s3_as_a_sink_delivers(s3_lake, tmp_path: Path, monkeypatch) -> None:
    from lake.summary import landing_summary

    monkeypatch.setattr("lake.settings.DEFAULT_VAR_DIR", tmp_path / "var")  # the lake's local state
    stale = object_store.join(s3_lake.landing, "cdc", "crm.public.contacts", "left-by-an-earlier-run.json")
    object_store.write_bytes(stale, b"{}\n")
    result = materialize_small_company()
    metadata = result.asset_materializations_for_node("simulated_company")[0].metadata
    on_s3 = landing_summary(s3_lake.landing, s3_lake.storage_options)
    assert sum(files for _, files, _ in on_s3) == metadata["files"].value  # every file, none left from before
    assert object_store.read_bytes(stale) is None
    # the ground truth stays on this machine, in the lake's own local folder
    truth = Path(get_settings().simulator_truth)
    assert truth.is_relative_to(tmp_path / "var" / "lakes") and (truth / "identifiers.parquet").exists()
    # uploaded in the order the simulator wrote them: along the files' local times LastModified never falls
    written = get_settings().beside_lake("simulated_landing")
    local = sorted((p for p in written.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
    landed = {f.relpath: f.mtime_ns for f in survey(s3_lake.landing, "clickstream", "clickstream")[0]}
    relpaths = [p.relative_to(written).as_posix() for p in local]
    seconds = [landed[relpath] for relpath in relpaths if relpath.startswith("clickstream/")]
    assert len(seconds) > 10 and seconds == sorted(seconds)
