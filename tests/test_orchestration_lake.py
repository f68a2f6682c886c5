"""The lake under Dagster: assets from contracts, checks, the landing sensor, maintenance, a new feed by
contract."""

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import Simulated, lake_settings

from data_contracts import CONTRACTS_DIR, load_contracts
from lake import bronze, cdc, maintenance
from lake.ingest import backlog
from lake.settings import REPO_ROOT
from orchestration.jobs import maintenance_job
from orchestration.lake_assets import lake_definitions
from orchestration.resources import LakeResource
from orchestration.sensors import landing_sensor


def materialize_lake(contracts, lake: LakeResource) -> dg.ExecuteInProcessResult:
    """Materialize every bronze and silver asset of ``contracts`` with their checks."""
    assets, checks = lake_definitions(contracts, produced=set())
    executable = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    return dg.materialize(
        [*executable, *checks], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral()
    )


@pytest.mark.slow
def test_lake_assets_materialize_with_their_checks_and_the_sensor_follows_the_ledger(
    simulated: Simulated, tmp_path: Path
) -> None:
    contracts = {
        k: v
        for k, v in load_contracts().items()
        if k in ("crm.public.contacts", "shop.shop.orders", "clickstream")
    }
    settings = lake_settings(tmp_path / "lake", simulated.landing)
    lake = LakeResource(lake_root=settings.lake_root)
    sensor = landing_sensor(contracts)
    request = sensor(dg.build_sensor_context(resources={"lake": lake}))
    assert (
        isinstance(request, dg.RunRequest)
        and int(request.tags["landing_files"]) == len(backlog(settings, contracts)) > 0
    )

    result = materialize_lake(contracts, lake)
    assert result.success
    contacts = result.asset_materializations_for_node("silver_crm_contacts")
    current = next(m for m in contacts if m.asset_key == dg.AssetKey(["silver", "crm", "contacts"]))
    assert (
        current.metadata["dagster/row_count"].value
        == pl.read_delta(f"{settings.lake_root}/silver/crm/contacts").height
        > 0
    )
    assert "preview" in current.metadata and "dagster/column_schema" in current.metadata
    evaluations = result.get_asset_check_evaluations()
    names = {e.check_name for e in evaluations}
    assert {
        "quarantine_rate",
        "validity_intervals",
        "contacts_primary_key_unique",
        "orders_status_accepted",
    } <= names
    failed = [(e.asset_key, e.check_name) for e in evaluations if not e.passed]
    assert failed == []
    # a blocking contract rule is blocking, a warning is not
    specs = {s.name: s for d in lake_definitions(contracts, set())[1] for s in d.check_specs}
    assert specs["orders_status_accepted"].blocking and not specs["orders_not_empty"].blocking

    assert isinstance(sensor(dg.build_sensor_context(resources={"lake": lake})), dg.SkipReason)
    # a feed whose silver is behind its bronze (a failed apply) is in the backlog too
    behind = lake_settings(tmp_path / "behind", simulated.landing)
    bronze.ingest(behind, contracts["crm.public.contacts"])
    assert backlog(behind, {"crm.public.contacts": contracts["crm.public.contacts"]}) == [
        "silver:crm.public.contacts"
    ]


def test_a_rejected_file_fails_the_bronze_asset_and_names_the_file(
    simulated: Simulated, tmp_path: Path
) -> None:
    topic = "crm.public.activities"
    landing = tmp_path / "landing"
    shutil.copytree(simulated.landing / "cdc" / topic, landing / "cdc" / topic)
    (landing / "cdc" / topic / f"{topic}+0+8000000000.json").write_text("{broken\n" * 30)
    contracts = {topic: load_contracts()[topic]}
    lake = LakeResource(lake_root=lake_settings(tmp_path / "lake", landing).lake_root)
    assets, _ = lake_definitions(contracts, produced=set())
    result = dg.materialize(
        [assets[1]], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "8000000000.json" in failure.description and "30 of 30" in failure.description


def test_maintenance_compacts_small_files_without_changing_rows(simulated: Simulated, tmp_path: Path) -> None:
    topic = "crm.public.consents"
    contracts = {topic: load_contracts()[topic]}
    settings = lake_settings(tmp_path / "lake", simulated.landing)

    bronze.ingest(settings, contracts[topic], max_files_per_batch=3)
    uri = bronze.bronze_uri(settings, contracts[topic])
    before = pl.read_delta(uri).sort("_source_file", "_line")
    from deltalake import DeltaTable

    files_before = len(DeltaTable(uri).file_uris())
    job = maintenance_job(contracts)
    assert job.execute_in_process(resources={"lake": LakeResource(lake_root=settings.lake_root)}).success
    assert len(DeltaTable(uri).file_uris()) < files_before
    assert pl.read_delta(uri).sort("_source_file", "_line").equals(before)
    # raw records expire after the retention once silver has applied them; the ledger still knows their
    # files, so none comes back
    later = datetime.now(UTC) + maintenance.bronze_retention(settings, contracts[topic]) + timedelta(days=1)
    assert maintenance.expire_bronze(settings, contracts[topic], now=later) == 0  # not applied yet
    cdc.apply(settings, contracts[topic])
    assert maintenance.expire_bronze(settings, contracts[topic], now=later) == before.height
    assert pl.read_delta(uri).height == 0
    assert bronze.ingest(settings, contracts[topic]).files == 0


def test_a_new_cdc_source_needs_only_a_contract_and_a_landing_folder(tmp_path: Path) -> None:
    """An ERP invoices table the simulator does not know: a contract file and its files, no code."""
    contracts_dir = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts_dir)
    (contracts_dir / "erp.billing.invoices.odcs.yaml").write_text(INVOICES_CONTRACT)
    folder = tmp_path / "lake" / "landing" / "cdc" / "erp.billing.invoices"
    folder.mkdir(parents=True)
    events = [
        invoice_event(
            "r",
            10,
            {"invoice_id": 1, "customer_id": 7, "amount": "12.50", "issued_on": 20600, "status": "open"},
        ),
        invoice_event(
            "r",
            10,
            {"invoice_id": 2, "customer_id": 8, "amount": "99.99", "issued_on": 20601, "status": "open"},
        ),
        invoice_event(
            "u",
            20,
            {"invoice_id": 1, "customer_id": 7, "amount": "12.50", "issued_on": 20600, "status": "paid"},
        ),
        invoice_event("d", 30, None, {"invoice_id": 2}),
        "null",
        invoice_event(
            "c", 40, {"invoice_id": 3, "customer_id": 7, "amount": "not a number", "issued_on": 20602}
        ),
    ]
    (folder / "erp.billing.invoices+0+0000000000.json").write_text("\n".join(events) + "\n")
    env = {**os.environ, "LAKE_ROOT": str(tmp_path / "lake"), "DATA_CONTRACTS_DIR": str(contracts_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "lake.ingest", "--feed", "erp.billing.invoices"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    current = pl.read_delta(str(tmp_path / "lake" / "silver" / "erp" / "invoices"))
    assert current.select("invoice_id", "status").rows() == [(1, "paid")]
    assert str(current["amount"].dtype) == "Decimal(precision=10, scale=2)"
    quarantined = pl.read_delta(str(tmp_path / "lake" / "quarantine" / "records"))
    assert quarantined["line"].to_list() == [6]  # status is required: the create without it is quarantined
    # and Dagster shows the new feed from landing to silver, with the contract's checks
    code = (
        "from orchestration.definitions import defs; print(sorted(k.to_user_string() for k in "
        "defs.resolve_asset_graph().get_all_asset_keys()))"
    )
    listed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    keys = json.loads(listed.stdout.replace("'", '"'))
    assert {
        "landing/erp/invoices",
        "bronze/erp/invoices",
        "silver/erp/invoices",
        "silver/erp/invoices_history",
    } <= set(keys)


def invoice_event(op: str, lsn: int, after: dict | None, before: dict | None = None) -> str:
    source = {
        "connector": "postgresql",
        "name": "erp",
        "ts_ms": 1_788_000_000_000 + lsn,
        "db": "erp",
        "schema": "billing",
        "table": "invoices",
        "lsn": lsn,
    }
    return json.dumps(
        {"before": before, "after": after, "source": source, "op": op, "ts_ms": 1_788_000_000_000 + lsn}
    )


INVOICES_CONTRACT = """\
apiVersion: v3.1.0
kind: DataContract
id: erp.billing.invoices
name: invoices
version: 1.0.0
status: active
domain: erp
description:
  purpose: Invoices of the ERP, captured by Debezium from PostgreSQL.
team:
  name: finance-data
customProperties:
  - property: feed
    value: cdc
  - property: topic
    value: erp.billing.invoices
  - property: sourceSystem
    value: erp
  - property: connector
    value: postgresql
  - property: decimalHandlingMode
    value: string
  - property: owner
    value: team:finance-data
schema:
  - name: invoices
    physicalName: billing.invoices
    physicalType: table
    logicalType: object
    properties:
      - name: invoice_id
        logicalType: integer
        physicalType: bigint
        required: true
        primaryKey: true
        primaryKeyPosition: 1
        description: Key of the invoice.
      - name: customer_id
        logicalType: integer
        physicalType: bigint
        required: true
        description: The invoiced customer.
      - name: amount
        logicalType: number
        physicalType: numeric(10,2)
        required: true
        description: Amount due.
        customProperties:
          - property: debeziumType
            value: org.apache.kafka.connect.data.Decimal
      - name: issued_on
        logicalType: date
        physicalType: date
        required: true
        description: Day of issue.
        customProperties:
          - property: debeziumType
            value: io.debezium.time.Date
      - name: status
        logicalType: string
        physicalType: varchar
        required: true
        description: open, paid or void.
"""
