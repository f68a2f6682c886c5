"""The dbt sources generated from the data contracts: the committed files are what the contracts give, they
name the lake's tables and assets, and a new contract reaches dbt (a real dbt build over a real ingested
feed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml
from test_contract_feeds import INVOICES, contracts_copy, land_invoices
from test_orchestration_lake import invoice_event

from data_contracts import load_contracts
from lake.dbt_sources import DBT_PROJECT_DIR, HEADER, source_files, sync
from lake.settings import REPO_ROOT, get_settings
from lake.warehouse import silver_tables
from orchestration.lake_assets import silver_keys

LINES = "erp.billing.invoice_lines"
LINES_CONTRACT = """\
apiVersion: v3.1.0
kind: DataContract
id: erp.billing.invoice_lines
name: invoice_lines
version: 1.0.0
status: active
domain: erp
description:
  purpose: Lines of the ERP's invoices, captured by Debezium from PostgreSQL.
team:
  name: finance-data
slaProperties:
  - property: freshness
    value: 6
    unit: h
customProperties:
  - property: feed
    value: cdc
  - property: topic
    value: erp.billing.invoice_lines
  - property: sourceSystem
    value: erp
  - property: connector
    value: postgresql
  - property: decimalHandlingMode
    value: string
  - property: owner
    value: team:finance-data
schema:
  - name: invoice_lines
    physicalName: billing.invoice_lines
    physicalType: table
    logicalType: object
    description: A line of an invoice.
    properties:
      - name: invoice_id
        logicalType: integer
        physicalType: bigint
        required: true
        primaryKey: true
        primaryKeyPosition: 1
        description: The invoice.
      - name: line_no
        logicalType: integer
        physicalType: int
        required: true
        primaryKey: true
        primaryKeyPosition: 2
        description: Position of the line on the invoice.
      - name: billing_email
        logicalType: string
        physicalType: varchar
        classification: restricted
        description: Where the line's receipt was sent.
        customProperties:
          - property: pii
            value: email
"""


def tables_of(files: dict[Path, str]) -> dict[tuple[str, str], dict]:
    """Every source table of the generated files, by (source, table)."""
    return {
        (source["name"], table["name"]): table
        for text in files.values()
        for source in yaml.safe_load(text)["sources"]
        for table in source["tables"]
    }


def test_the_committed_source_files_are_what_the_contracts_generate() -> None:
    assert sync(load_contracts(), DBT_PROJECT_DIR, write=False) == [], "run: python -m lake.dbt_sources"


def test_generated_sources_name_the_lake_views_and_the_silver_assets(tmp_path: Path) -> None:
    folder = contracts_copy(tmp_path)
    (folder / f"{LINES}.odcs.yaml").write_text(LINES_CONTRACT)
    contracts = load_contracts(folder)
    tables = tables_of(source_files(contracts))
    views = {t.view for t in silver_tables(get_settings(), contracts)}
    assert {t["identifier"] for t in tables.values()} == views
    assets = {tuple(t["meta"]["dagster"]["asset_key"]) for t in tables.values()}
    assert assets == {tuple(k.path) for c in contracts.values() for k in silver_keys(c)}
    # the key tests of today's hand-written sources, now from the contracts (and the contract's unique sku)
    tested = {
        (source, table, c["name"]): c["data_tests"]
        for (source, table), t in tables.items()
        for c in t["columns"]
        if "data_tests" in c
    }
    assert (
        tested[("crm", "contacts", "contact_id")]
        == tested[("clickstream", "events", "message_id")]
        == [
            "unique",
            "not_null",
        ]
    )
    assert tested[("shop", "products", "sku")] == ["unique"]
    assert not any(table.endswith("_history") for _, table, _ in tested)
    assert tables[("erp", "invoice_lines")]["data_tests"] == [
        {"unique_combination": {"arguments": {"columns": ["invoice_id", "line_no"]}}}
    ]
    assert tested[("erp", "invoice_lines", "line_no")] == ["not_null"]
    # freshness and its column from the contract's SLA; personal columns under their protected names
    config = tables[("crm", "activities")]["config"]
    assert config == {
        "freshness": {"warn_after": {"count": 7, "period": "day"}},
        "loaded_at_field": "_changed_at",
    }
    assert tables[("erp", "invoice_lines_history")]["config"]["freshness"]["warn_after"] == {
        "count": 6,
        "period": "hour",
    }
    assert "config" not in tables[("erp", "invoices")]  # no freshness SLA, no freshness check
    columns = {c["name"]: c["description"] for c in tables[("crm", "contacts")]["columns"]}
    assert "email" not in columns and "keyed hash" in columns["email_token"]
    assert "birth_year" in columns and "birth_date" not in columns
    events = {c["name"] for c in tables[("clickstream", "events")]["columns"]}
    assert {"message_id", "anonymous_id", "received_at", "traits"} <= events and "context" not in events


def test_the_command_rewrites_what_differs_and_check_names_it(tmp_path: Path) -> None:
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    generated = project / "models" / "staging" / "crm" / "_crm__sources.yml"
    generated.write_text(generated.read_text().replace("count: 7", "count: 70"))
    stale = project / "models" / "staging" / "legacy" / "_legacy__sources.yml"
    stale.parent.mkdir()
    stale.write_text(HEADER + "version: 2\n")
    by_hand = project / "models" / "staging" / "legacy" / "_manual__sources.yml"
    by_hand.write_text("version: 2\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "lake.dbt_sources", "--project-dir", str(project), *args]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)

    checked = run("--check")
    assert checked.returncode == 1
    assert checked.stdout.split() == [
        "differs:",
        "models/staging/crm/_crm__sources.yml",
        "differs:",
        "models/staging/legacy/_legacy__sources.yml",
    ]
    assert "count: 70" in generated.read_text() and stale.exists()
    assert run().returncode == 0
    assert run("--check").returncode == 0 and not stale.exists() and by_hand.exists()
    assert generated.read_text() == (DBT_PROJECT_DIR / generated.relative_to(project)).read_text()


@pytest.mark.slow  # a dbt build of a copied project (about 30 s)
def test_a_new_contract_reaches_dbt_staging(tmp_path: Path) -> None:
    """A contract file and a landing folder: ingested, published, and a dbt model selects from its source."""
    folder = contracts_copy(tmp_path)
    (folder / f"{LINES}.odcs.yaml").write_text(LINES_CONTRACT)
    land_invoices(tmp_path / "lake" / "landing")
    lines = tmp_path / "lake" / "landing" / "cdc" / LINES
    lines.mkdir(parents=True)
    events = [
        invoice_event("c", 11, {"invoice_id": 1, "line_no": 1, "billing_email": "Ann@Example.com"}),
        invoice_event("c", 12, {"invoice_id": 1, "line_no": 2, "billing_email": None}),
        invoice_event("d", 13, None, {"invoice_id": 1, "line_no": 2}),
    ]
    (lines / f"{LINES}+0+0000000000.json").write_text("\n".join(events) + "\n")
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,
        "LAKE_ROOT": str(tmp_path / "lake"),
        "DATA_CONTRACTS_DIR": str(folder),
        "WAREHOUSE_PATH": str(warehouse),
    }
    ingest = [sys.executable, "-m", "lake.ingest", "--feed", INVOICES, "--feed", LINES]
    done = subprocess.run(ingest, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    generate = [sys.executable, "-m", "lake.dbt_sources", "--project-dir", str(project)]
    done = subprocess.run(generate, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["written:", "models/staging/erp/_erp__sources.yml"]
    models = project / "models" / "staging" / "erp"
    (models / "stg_erp__invoices.sql").write_text("select * from {{ source('erp', 'invoices') }}\n")
    (models / "stg_erp__invoice_lines.sql").write_text("select * from {{ source('erp', 'invoice_lines') }}\n")
    build = ["dbt", "build", "--select", "source:erp+", "--profiles-dir", str(project)]
    build += ["--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")]
    done = subprocess.run(build, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    ran = {r["unique_id"].split(".")[2]: r["status"] for r in results}
    assert ran["stg_erp__invoices"] == ran["stg_erp__invoice_lines"] == "success"
    assert ran["source_unique_erp_invoices_invoice_id"] == "pass"
    assert ran["source_unique_combination_erp_invoice_lines_invoice_id__line_no"] == "pass"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("select invoice_id, status from stg_erp__invoices").fetchall() == [(1, "paid")]
        row = con.sql("select * from stg_erp__invoice_lines").pl().row(0, named=True)
        assert (row["invoice_id"], row["line_no"]) == (1, 1) and "billing_email" not in row
        assert len(row["billing_email_token"]) > 20
        # every column the generated sources describe is a column of the warehouse view
        for (source, table), spec in tables_of(source_files(load_contracts(folder))).items():
            if source == "erp":
                view = con.sql(f"select * from silver.{spec['identifier']} limit 0").columns
                assert {c["name"] for c in spec["columns"]} == set(view), table
