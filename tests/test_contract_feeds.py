"""Onboarding feeds by contract, when something is wrong: contracts that clash, invalid contracts (each
problem named by file and field, the other feeds going on), and landing files ingestion does not
understand."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from conftest import lake_settings
from test_orchestration_lake import INVOICES_CONTRACT, invoice_event

from data_contracts import CONTRACTS_DIR, ContractError, load_contract, load_contracts, scan_contracts
from data_contracts.__main__ import check
from lake import bronze
from lake.settings import REPO_ROOT
from orchestration.lake_assets import bronze_asset
from orchestration.resources import LakeResource

INVOICES = "erp.billing.invoices"


def contracts_copy(tmp_path: Path) -> Path:
    """A copy of the project's contracts, with the ERP invoices contract added."""
    folder = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, folder)
    (folder / f"{INVOICES}.odcs.yaml").write_text(INVOICES_CONTRACT)
    return folder


def variant(folder: Path, source: str, target: str, change) -> Path:
    """Write ``target`` as the contract ``source`` of ``folder`` changed in place by ``change(data)``."""
    data = yaml.safe_load((folder / source).read_text())
    change(data)
    path = folder / target
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def custom(data: dict, name: str, value) -> None:
    """Set (or with None remove) a contract-level custom property."""
    data["customProperties"] = [p for p in data["customProperties"] if p["property"] != name]
    if value is not None:
        data["customProperties"].append({"property": name, "value": value})


def prop(data: dict, name: str) -> dict:
    return next(p for p in data["schema"][0]["properties"] if p["name"] == name)


def retopic(topic: str, system: str | None = None, table: str | None = None):
    """A change that moves a contract to another topic (and optionally source system and table name)."""

    def change(data: dict) -> None:
        data["id"] = topic
        custom(data, "topic", topic)
        if system:
            custom(data, "sourceSystem", system)
        if table:
            data["schema"][0]["name"] = table

    return change


# -- clashes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "system", "table", "shared"),
    [
        ("shop.sales.orders", None, None, "shop/orders"),  # another topic, same system and table
        ("erp.shop.orders", "Shop", "Orders", "shop/orders"),  # case differs: one warehouse view name
        ("shop.shop.orders_history", None, "orders_history", "shop/orders_history"),  # the other's history
    ],
)
def test_two_contracts_of_one_silver_table_are_refused_naming_both_files(
    tmp_path: Path, topic: str, system: str | None, table: str | None, shared: str
) -> None:
    folder = contracts_copy(tmp_path)
    original = folder / "shop.shop.orders.odcs.yaml"
    second = variant(folder, original.name, f"{topic}.odcs.yaml", retopic(topic, system, table))
    assert load_contract(second).feed_id == topic  # valid on its own
    with pytest.raises(ContractError) as raised:
        load_contracts(folder)
    message = str(raised.value)
    assert str(original) in message and str(second) in message and f"silver table {shared}" in message
    scanned = scan_contracts(folder)
    assert "shop.shop.orders" not in scanned.contracts and topic not in scanned.contracts
    assert set(scanned.contracts) == {*load_contracts(), INVOICES} - {"shop.shop.orders"}
    assert scanned.invalid_files == sorted([original, second])


def test_two_contracts_of_one_feed_are_refused_naming_both_files(tmp_path: Path) -> None:
    folder = contracts_copy(tmp_path)
    copy = variant(folder, "crm.public.consents.odcs.yaml", "consents-copy.odcs.yaml", lambda d: None)
    scanned = scan_contracts(folder)
    assert "crm.public.consents" not in scanned.contracts
    (problem,) = scanned.problems
    assert problem.field == "customProperties.topic" and "describes feed crm.public.consents" in str(problem)
    assert {problem.path, problem.other} == {copy, folder / "crm.public.consents.odcs.yaml"}


# -- invalid contracts: every problem, file and field, no traceback ------------------------------------------


def break_contacts(data: dict) -> None:
    """Two problems in one contract: no connector, and an e-mail property not marked restricted."""
    custom(data, "connector", None)
    prop(data, "email")["classification"] = "internal"


def break_orders(data: dict) -> None:
    """Two problems: a logical type ODCS does not know, and a quality rule with an unknown severity."""
    prop(data, "status")["logicalType"] = "text"
    prop(data, "currency")["quality"][0]["severity"] = "fatal"


def broken_contracts(folder: Path) -> dict[str, list[str]]:
    """Break three contracts of ``folder`` in place; the expected (field, words of the message) per file."""
    variant(folder, "crm.public.contacts.odcs.yaml", "crm.public.contacts.odcs.yaml", break_contacts)
    variant(folder, "shop.shop.orders.odcs.yaml", "shop.shop.orders.odcs.yaml", break_orders)
    (folder / "crm.public.consents.odcs.yaml").write_text("id: [unclosed\n")
    return {
        "crm.public.contacts.odcs.yaml": [
            "customProperties.connector: missing",
            "schema[contacts].properties[email].classification: email holds personal data",
        ],
        "shop.shop.orders.odcs.yaml": [
            "schema[orders].properties[status].logicalType:",
            "schema[orders].properties[currency].quality[orders_currency_iso_code].severity: 'fatal'",
        ],
        "crm.public.consents.odcs.yaml": ["not valid YAML at line 2"],
    }


def test_load_reports_every_problem_of_every_file_by_field(tmp_path: Path) -> None:
    folder = contracts_copy(tmp_path)
    expected = broken_contracts(folder)
    scanned = scan_contracts(folder)
    assert sorted(p.name for p in scanned.invalid_files) == sorted(expected)
    assert set(scanned.contracts) == {*load_contracts(), INVOICES} - {
        n.removesuffix(".odcs.yaml") for n in expected
    }
    lines = [str(p) for p in scanned.problems]
    for name, parts in expected.items():
        for part in parts:
            assert any(line.startswith(f"{folder / name}: {part}") for line in lines), (part, lines)


def committed_contracts(tmp_path: Path) -> Path:
    """A copy of the repository's contracts in ``contracts/`` of a new git repository, committed."""
    repo = tmp_path / "repo"
    folder = repo / "contracts"
    shutil.copytree(CONTRACTS_DIR, folder)
    config = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "contracts"]):
        subprocess.run(["git", *config, *args], cwd=repo, check=True, capture_output=True)
    return folder


def test_the_check_command_lists_every_problem_of_every_file(tmp_path: Path) -> None:
    folder = committed_contracts(tmp_path)
    expected = broken_contracts(folder)
    problems = check("HEAD", folder)
    for name, parts in expected.items():
        for part in parts:
            assert any(p.startswith(f"{name}: {part}") for p in problems), (part, problems)
    done = subprocess.run(
        [sys.executable, "-m", "data_contracts", "check", "--contracts-dir", str(folder)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAIL ")]
    assert len(failed) == len(problems) >= 5


def test_make_contracts_checks_the_folder_of_data_contracts_dir(tmp_path: Path) -> None:
    folder = committed_contracts(tmp_path)
    (folder / "crm.public.consents.odcs.yaml").write_text("id: [unclosed\n")
    done = subprocess.run(
        ["make", "--no-print-directory", "contracts"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATA_CONTRACTS_DIR": str(folder)},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0, done.stdout[-2000:]
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAIL ")]
    assert len(failed) == 1, done.stderr[-2000:]  # the repository's own contracts pass (test_data_contracts)
    assert failed[0].startswith("FAIL crm.public.consents.odcs.yaml: not valid YAML at line 2")


def land_invoices(landing: Path, name: str = f"{INVOICES}+0+0000000000.json") -> Path:
    folder = landing / "cdc" / INVOICES
    folder.mkdir(parents=True, exist_ok=True)
    events = [
        invoice_event(
            "r",
            10,
            {"invoice_id": 1, "customer_id": 7, "amount": "12.50", "issued_on": 20600, "status": "open"},
        ),
        invoice_event(
            "u",
            20,
            {"invoice_id": 1, "customer_id": 7, "amount": "12.50", "issued_on": 20600, "status": "paid"},
        ),
    ]
    path = folder / name
    path.write_text("\n".join(events) + "\n")
    return path


def test_an_invalid_contract_skips_its_feed_and_the_others_are_ingested(tmp_path: Path) -> None:
    folder = contracts_copy(tmp_path)
    expected = broken_contracts(folder)
    land_invoices(tmp_path / "lake" / "landing")
    env = {**os.environ, "LAKE_ROOT": str(tmp_path / "lake"), "DATA_CONTRACTS_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-m", "lake.ingest", "--feed", INVOICES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    invalid = [line for line in done.stderr.splitlines() if line.startswith("INVALID CONTRACT ")]
    for name, parts in expected.items():
        for part in parts:
            assert any(f"{folder / name}: {part}" in line for line in invalid), (part, invalid)
    current = pl.read_delta(str(tmp_path / "lake" / "silver" / "erp" / "invoices"))
    assert current.select("invoice_id", "status").rows() == [(1, "paid")]


def test_the_code_location_loads_the_valid_feeds_and_shows_the_invalid_contracts(tmp_path: Path) -> None:
    folder = contracts_copy(tmp_path)
    broken_contracts(folder)
    env = {**os.environ, "LAKE_ROOT": str(tmp_path / "lake"), "DATA_CONTRACTS_DIR": str(folder)}
    code = (
        "import json; from orchestration.definitions import defs; graph = defs.resolve_asset_graph(); "
        "print(json.dumps({k.to_user_string(): graph.get(k).description for k in "
        "graph.get_all_asset_keys()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assets = json.loads(done.stdout.splitlines()[-1])
    assert {"landing/erp/invoices", "bronze/erp/invoices", "silver/shop/customers"} <= set(assets)
    assert not {"bronze/crm/contacts", "bronze/crm/consents", "bronze/shop/orders"} & set(assets)
    contacts = assets["invalid_contracts/crm_public_contacts"]
    assert "customProperties.connector: missing" in contacts and "classification" in contacts
    assert "not valid YAML" in assets["invalid_contracts/crm_public_consents"]
    assert "invalid_contracts/shop_shop_orders" in assets
    assert "invalid data contract, feed skipped" in done.stderr and "Traceback" not in done.stderr


# -- landing file names --------------------------------------------------------------------------------------


def test_the_file_names_sinks_write_are_taken_in_and_others_are_reported(tmp_path: Path) -> None:
    folder = contracts_copy(tmp_path)
    contract = load_contract(folder / f"{INVOICES}.odcs.yaml")
    landing = tmp_path / "lake" / "landing"
    plain = land_invoices(landing, f"{INVOICES}+0+0000000000.ndjson")
    with gzip.open(plain.with_name(f"{INVOICES}+1+0000000040.ndjson.gz"), "wt") as f:
        f.write(
            invoice_event(
                "c",
                30,
                {"invoice_id": 2, "customer_id": 8, "amount": "1.00", "issued_on": 20601, "status": "open"},
            )
            + "\n"
        )
    (plain.parent / f"{INVOICES}+0+0000000002.jsonl").write_text(
        invoice_event(
            "c",
            40,
            {"invoice_id": 3, "customer_id": 8, "amount": "2.00", "issued_on": 20601, "status": "open"},
        )
        + "\n"
    )
    (plain.parent / "invoices-2026-09-01.json.gz").write_bytes(
        gzip.compress(
            (
                invoice_event(
                    "c",
                    50,
                    {
                        "invoice_id": 4,
                        "customer_id": 9,
                        "amount": "3.00",
                        "issued_on": 20602,
                        "status": "open",
                    },
                )
                + "\n"
            ).encode()
        )
    )
    strangers = [
        f"cdc/{INVOICES}/{INVOICES}+0+0000000003.json.tmp",  # a sink's file still being written
        f"cdc/{INVOICES}/{INVOICES}+0+0000000004.csv",
        f"cdc/{INVOICES}/nested/README.txt",
    ]
    for relpath in strangers:
        (landing / relpath).parent.mkdir(parents=True, exist_ok=True)
        (landing / relpath).write_text("invoice_id\n5\n")
    settings = lake_settings(tmp_path / "lake")
    report = bronze.ingest(settings, contract)
    assert (report.files, report.records, report.bronze_rows) == (4, 5, 5)
    assert report.unrecognised_files == sorted(strangers)
    table = pl.read_delta(bronze.bronze_uri(settings, contract)).sort("_source_file", "_line")
    positions = {
        f: (p, o) for f, p, o in table.select("_source_file", "_kafka_partition", "_kafka_offset").rows()
    }
    assert positions[f"cdc/{INVOICES}/{INVOICES}+1+0000000040.ndjson.gz"] == (1, 40)
    assert positions[f"cdc/{INVOICES}/{INVOICES}+0+0000000002.jsonl"] == (0, 2)
    assert positions[f"cdc/{INVOICES}/invoices-2026-09-01.json.gz"] == (None, None)  # not a Kafka sink name
    # the command line names them (and ingests nothing twice)
    env = {**os.environ, "LAKE_ROOT": str(tmp_path / "lake"), "DATA_CONTRACTS_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-m", "lake.ingest", "--feed", INVOICES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    reported = [line for line in done.stderr.splitlines() if line.startswith("UNRECOGNISED ")]
    assert [line.split()[1].rstrip(":") for line in reported] == sorted(strangers)


def test_the_bronze_materialization_reports_files_it_does_not_understand(tmp_path: Path) -> None:
    folder = contracts_copy(tmp_path)
    contract = load_contract(folder / f"{INVOICES}.odcs.yaml")
    data = land_invoices(tmp_path / "lake" / "landing")
    stranger = data.with_name(f"{INVOICES}+0+0000000002.avro")
    stranger.write_bytes(b"Obj\x01")
    lake = LakeResource(lake_root=str(tmp_path / "lake"))
    result = dg.materialize(
        [bronze_asset(contract)], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node(bronze_asset(contract).node_def.name)
    metadata = materialization.metadata
    assert metadata["unrecognised_files_not_taken_in"].value == [f"cdc/{INVOICES}/{stranger.name}"]
    assert metadata["files_ingested"].value == 1
