"""What an operator sees and runs in Dagster: the code location loads from a fresh clone, descriptions of
jobs, schedules and sensors, what runs by default, metadata of dbt and lake assets, freshness and retention
from the contracts, maintenance of every zone."""

import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import lake_settings
from dagster_dbt import DbtCliResource, DbtProject, build_dbt_asset_selection
from deltalake import DeltaTable, write_deltalake

from data_contracts import CONTRACTS_DIR, ContractError, load_contracts
from lake import bronze, cdc, maintenance
from lake.gold import gold_uri, gold_uris, publish_gold
from lake.settings import REPO_ROOT, get_settings
from orchestration.dbt_assets import dbt_models
from orchestration.dbt_project import PARSE_STAGING, ManifestPreparer, dbt_project
from orchestration.lake_assets import lake_definitions
from orchestration.resources import LakeResource

CLONE_PARTS = ("data_contracts", "dbt_project", "lake", "orchestration", "simulator")
CLONE_FILES = ("workspace.yaml", "pyproject.toml")


def fresh_clone(root: Path) -> Path:
    """The repository's tracked parts copied under ``root``, without a dbt manifest or logs."""
    clone = root / "clone"
    for part in CLONE_PARTS:
        shutil.copytree(
            REPO_ROOT / part, clone / part, ignore=shutil.ignore_patterns("target", "logs", "__pycache__")
        )
    for name in CLONE_FILES:
        shutil.copy(REPO_ROOT / name, clone / name)
    return clone


@pytest.mark.slow
def test_a_fresh_clone_validates_without_a_dbt_manifest(tmp_path: Path) -> None:
    """`dagster definitions validate` parses the dbt project itself when the manifest is missing, with the dbt
    beside the Python even when the environment's bin folder is not on the PATH."""
    clone = fresh_clone(tmp_path)
    assert not (clone / "dbt_project" / "target").exists()
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent
        ),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (clone / "dbt_project" / "target" / "manifest.json").exists()


@pytest.mark.slow
def test_a_parse_replaces_the_manifest_whole(tmp_path: Path) -> None:
    """``dagster dev`` parses the dbt project on every load of the code location: a process that loads it
    meanwhile (a run's worker, a ``dagster`` command) reads the old manifest or the new one, never a
    half-written file."""
    project_dir = fresh_clone(tmp_path) / "dbt_project"
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    ManifestPreparer().prepare(project)
    manifest = project.manifest_path
    first = manifest.stat().st_ino
    stop, torn, reads = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                reads.append(len(json.loads(manifest.read_bytes())["nodes"]))
            except ValueError as error:
                torn.append(str(error))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        ManifestPreparer().prepare(project)
    finally:
        stop.set()
        reader.join()
    assert reads and not torn
    assert manifest.stat().st_ino != first  # a new file renamed over the old one, not the old one rewritten
    assert len(json.loads(manifest.read_bytes())["nodes"]) == reads[0] > 100
    assert not (manifest.parent / PARSE_STAGING).exists()


def test_every_job_schedule_and_sensor_says_what_it_does_and_the_loop_runs_by_default() -> None:
    from orchestration.definitions import defs

    repository = defs.get_repository_def()
    jobs = [j for j in repository.get_all_jobs() if not j.name.startswith("__")]  # __ASSET_JOB is hidden
    described = [*jobs, *repository.schedule_defs, *repository.sensor_defs]
    assert {d.name for d in described} >= {
        "ingest_lake",
        "lake_maintenance",
        "hourly_refresh",
        "nightly_snapshots",
        "nightly_refresh",
        "nightly_lake_maintenance",
        "new_landing_files",
        "after_nightly_snapshots",
        "record_run_failures",
    }
    assert [d.name for d in described if not (d.description or "").strip()] == []
    assert {s.name: s.default_status.value for s in repository.schedule_defs} == {
        "hourly_refresh": "RUNNING",
        "nightly_snapshots": "RUNNING",
        "nightly_lake_maintenance": "RUNNING",
    }
    assert {s.name: s.default_status.value for s in repository.sensor_defs} == {
        "new_landing_files": "RUNNING",
        "after_nightly_snapshots": "RUNNING",
        "record_run_failures": "RUNNING",
    }


def test_automation_off_starts_every_schedule_and_sensor_stopped(tmp_path: Path) -> None:
    code = (
        "from orchestration.definitions import defs; r = defs.get_repository_def(); "
        "print(sorted({d.default_status.value for d in [*r.schedule_defs, *r.sensor_defs]}))"
    )
    env = {**os.environ, "AUTOMATION": "off", "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['STOPPED']"


def schedule_tick(repository: dg.RepositoryDefinition, name: str, lake: LakeResource, tick: datetime):
    """The result of one tick of the schedule ``name`` at ``tick`` (its context closed afterwards)."""
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            resources={"lake": lake},
            repository_def=repository,
        ) as context,
    ):
        return repository.get_schedule_def(name).evaluate_tick(context)


def test_the_refresh_schedules_skip_until_something_lands(tmp_path: Path) -> None:
    from orchestration.definitions import defs

    lake = LakeResource(lake_root=str(tmp_path / "lake"))
    repository = defs.get_repository_def()
    tick = datetime(2026, 9, 10, 2, 0, tzinfo=UTC)
    for name in ("hourly_refresh", "nightly_snapshots"):
        result = schedule_tick(repository, name, lake, tick)
        assert result.run_requests == [] and "nothing has landed" in result.skip_message
    folder = tmp_path / "lake" / "landing" / "cdc" / "crm.public.contacts"
    folder.mkdir(parents=True)
    (folder / "crm.public.contacts+0+0000000000.json").write_text("{}\n")
    assert len(schedule_tick(repository, "hourly_refresh", lake, tick).run_requests) == 1
    nightly = schedule_tick(repository, "nightly_snapshots", lake, tick).run_requests
    assert [r.partition_key for r in nightly] == ["2026-09-10"]  # the snapshot taken at 2026-09-10 00:00 UTC


@pytest.mark.slow
def test_dbt_materializations_carry_row_counts_and_column_schemas(
    ingested, tmp_path: Path, monkeypatch
) -> None:
    """The hourly models built under Dagster: tables report their row count as the warehouse holds it, every
    model its columns; the gold table published after them is written from the same warehouse."""

    settings, _ = ingested
    warehouse = tmp_path / "engagement.duckdb"  # the manifest's relations name the database after the file
    monkeypatch.setenv("WAREHOUSE_PATH", str(warehouse))
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [dbt_models],
            selection=build_dbt_asset_selection([dbt_models], dbt_select="tag:hourly"),
            resources={
                "lake": LakeResource(lake_root=settings.lake_root),
                "dbt": DbtCliResource(project_dir=dbt_project),
            },
            instance=instance,
        )
    assert result.success
    materialized = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    person_map = materialized["identity/identity_person_map"].materialization.metadata
    staging = materialized["staging/stg_crm__contacts"].materialization.metadata
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.sql("select count(*) from main.identity_person_map").fetchall()[0][0]
        columns = [c[0] for c in con.sql("describe main.stg_crm__contacts").fetchall()]
    assert person_map["dagster/row_count"].value == rows > 0
    assert (
        person_map["dagster/row_count"].value
        == pl.read_delta(gold_uri(settings, "identity_person_map")).height
    )
    assert [c.name for c in staging["dagster/column_schema"].value.columns] == columns
    assert "dagster/row_count" not in staging  # a view: counting would run its query
    assert "person_id" in {c.name for c in person_map["dagster/column_schema"].value.columns}


def test_silver_column_schemas_carry_the_contract_descriptions(simulated, tmp_path: Path) -> None:
    """A silver materialization describes its columns as the contract does: under the contract's name, its
    snake_case form (Segment's camelCase fields) and the tokenised form of personal columns."""

    contracts = {k: v for k, v in load_contracts().items() if k in ("crm.public.contacts", "clickstream")}
    settings = lake_settings(tmp_path / "lake", simulated.landing)
    for contract in contracts.values():
        bronze.ingest(settings, contract)
    assets, _ = lake_definitions(contracts, produced=set())
    silver = [
        a for a in assets if isinstance(a, dg.AssetsDefinition) and a.node_def.name.startswith("silver_")
    ]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            silver, resources={"lake": LakeResource(lake_root=settings.lake_root)}, instance=instance
        )
    assert result.success
    schemas = {
        m.asset_key.to_user_string(): {
            c.name: c.description for c in m.metadata["dagster/column_schema"].value.columns
        }
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    contacts = contracts["crm.public.contacts"]
    for table in ("silver/crm/contacts", "silver/crm/contacts_history"):
        columns = schemas[table]
        assert columns["contact_id"] == contacts.column("contact_id").description
        assert columns["country"] == contacts.column("country").description
        assert "email" not in columns
        assert contacts.column("email").description in columns["email_token"]
        assert (
            columns["_valid_from" if table.endswith("history") else "_changed_at"] is None
        )  # not the contract's
    events = schemas["silver/clickstream/events"]
    clickstream = contracts["clickstream"]
    assert events["message_id"] == clickstream.column("messageId").description
    assert events["anonymous_id"] == clickstream.column("anonymousId").description


def contract_with_sla(tmp_path: Path, topic: str, old: str, new: str) -> Path:
    """A copy of the contracts folder in which the contract of ``topic`` has ``old`` replaced by ``new``."""

    folder = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, folder)
    path = folder / f"{topic}.odcs.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return folder


def test_freshness_and_retention_come_from_the_contract(simulated, tmp_path: Path, monkeypatch) -> None:

    topic = "crm.public.consents"
    sla = "  - property: freshness\n    value: 1\n    unit: d"
    folder = contract_with_sla(
        tmp_path,
        topic,
        sla
        + "\n    element: consents.updated_at\n    description: The newest change in silver is at most a day "
        "old.\n  - property: retention\n    value: 90\n    unit: d",
        "  - property: freshness\n    value: 3\n    unit: h\n  - property: retention\n    value: "
        "10\n    unit: days",
    )
    contract = load_contracts(folder)[topic]
    assets, _ = lake_definitions({topic: contract}, produced=set())
    policies = {
        spec.key.to_user_string(): spec.freshness_policy
        for a in assets
        if isinstance(a, dg.AssetsDefinition)
        for spec in a.specs
    }
    assert policies["bronze/crm/consents"] is None
    for key in ("silver/crm/consents", "silver/crm/consents_history"):
        assert policies[key].fail_window.to_timedelta() == timedelta(hours=3)

    monkeypatch.delenv("BRONZE_RETENTION_DAYS", raising=False)
    settings = lake_settings(tmp_path / "lake", simulated.landing)
    assert maintenance.bronze_retention(settings, contract) == timedelta(days=10)
    bronze.ingest(settings, contract)
    cdc.apply(settings, contract)
    rows = pl.read_delta(bronze.bronze_uri(settings, contract)).height
    now = datetime.now(UTC)
    assert maintenance.expire_bronze(settings, contract, now=now + timedelta(days=9)) == 0
    # BRONZE_RETENTION_DAYS overrides every contract
    monkeypatch.setenv("BRONZE_RETENTION_DAYS", "30")
    overridden = lake_settings(tmp_path / "lake", bronze_retention_days=get_settings().bronze_retention_days)
    assert maintenance.bronze_retention(overridden, contract) == timedelta(days=30)
    assert maintenance.expire_bronze(overridden, contract, now=now + timedelta(days=11)) == 0
    assert maintenance.expire_bronze(settings, contract, now=now + timedelta(days=11)) == rows > 0

    # a contract that states no retention, or no duration, is named
    no_retention = load_contracts(
        contract_with_sla(tmp_path / "none", topic, "property: retention", "property: availability")
    )[topic]
    with pytest.raises(ContractError, match=r"crm\.public\.consents\.odcs\.yaml.*retention"):
        maintenance.maintain(settings, {topic: no_retention})
    fortnights = contract_with_sla(
        tmp_path / "fortnight", topic, sla, sla.replace("unit: d", "unit: fortnight")
    )
    with pytest.raises(ContractError, match=r"crm\.public\.consents\.odcs\.yaml.*fortnight"):
        lake_definitions(load_contracts(fortnights), produced=set())


def test_maintenance_compacts_and_vacuums_the_gold_tables(tmp_path: Path) -> None:
    """Gold tables published over and over, and appended to in small files, are compacted to one file whose
    rows are the same; the files of replaced versions are vacuumed."""

    settings = lake_settings(tmp_path / "lake", warehouse_path=tmp_path / "engagement.duckdb")
    assert gold_uris(settings) == []
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "create table person_scores as select range as person_id, range * 0.5 as score from range(100)"
        )
    for _ in range(3):  # every nightly build overwrites the table: the replaced files stay until vacuum
        publish_gold(settings, ["person_scores"])
    appended = gold_uri(settings, "feature_log")
    for day in range(4):
        write_deltalake(
            appended, pl.DataFrame({"day": [day] * 10, "value": list(range(10))}).to_arrow(), mode="append"
        )
    (tmp_path / "lake" / "gold" / "notes").mkdir()  # a folder that is no Delta table is left alone
    assert gold_uris(settings) == [appended, gold_uri(settings, "person_scores")]
    before = {uri: pl.read_delta(uri) for uri in gold_uris(settings)}
    files_on_disk = len(list((tmp_path / "lake" / "gold" / "person_scores").glob("*.parquet")))
    assert files_on_disk == 3

    cared = {c.uri: c for c in maintenance.maintain(settings, {}, retention_hours=0)}
    assert cared[appended].files_before == 4 and cared[appended].files_after == 1
    assert cared[appended].files_vacuumed == 4
    assert cared[gold_uri(settings, "person_scores")].files_vacuumed == 2
    assert len(list((tmp_path / "lake" / "gold" / "person_scores").glob("*.parquet"))) == 1
    for uri, frame in before.items():
        assert pl.read_delta(uri).sort(frame.columns).equals(frame.sort(frame.columns))
        assert len(DeltaTable(uri).file_uris()) == 1
