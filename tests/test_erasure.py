"""Erasure on a real small lake: generated, ingested, built by dbt, published to gold, then one person erased.

After the erasure no file of the lake's zones (Delta logs and checkpoints included, gzip and parquet decoded)
and nothing in the warehouse holds the person's raw values, tokens or ids, while every other row is
unchanged."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from erasure_scan import PersonValues, scan_lake, scan_warehouse
from polars.testing import assert_frame_equal

from data_contracts import load_contracts
from lake import bronze, delta, erasure, suppression
from lake.erasure import ErasureRefused, ErasureRequest, erase
from lake.gold import publish_gold
from lake.ingest import ingest_all
from lake.ledger import COMMITTED, Ledger
from lake.privacy import normalise_email, token
from lake.settings import Settings
from lake.warehouse import publish_silver
from simulator import FaultRates, SimulationConfig, generate
from tests.conftest import lake_settings, run_dbt

pytestmark = pytest.mark.slow  # the erased fixture builds and erases a whole lake and warehouse (about 70 s)

CONFIG = SimulationConfig(
    persons=600,
    days=5,
    seed=3,
    faults=FaultRates(placeholder_email=0.03, shared_device=0.05, click_malformed=0.01),
)


@dataclass
class Erased:
    """The lake after erasing one person, and what it held before."""

    settings: Settings
    person: PersonValues
    contact_id: str
    person_id: str
    identifiers: pl.DataFrame
    truth: Path
    lines: list[tuple[str, str]]
    """(landing path, line) of the person's records before the erasure."""
    before: dict[str, pl.DataFrame]
    found_before: dict[str, list[str]]
    request_id: str
    report: erasure.ErasureReport


def _tables(settings: Settings) -> dict[str, pl.DataFrame]:
    """Every silver and gold table, sorted."""
    tables = {}
    for zone in ("silver", "gold"):
        for log in sorted(Path(settings.zone(zone)).rglob("_delta_log")):
            frame = pl.read_delta(str(log.parent))
            tables[str(log.parent.relative_to(settings.lake_root))] = frame.sort(
                [c for c, t in frame.schema.items() if not t.is_nested()]
            )
    return tables


def _landing_lines(landing: Path) -> list[tuple[str, str]]:
    lines = []
    for path in sorted(landing.rglob("*.json*")):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines += [(str(path.relative_to(landing)), line) for line in data.decode().splitlines()]
    return lines


def _namesakes(lake_root: Path, identifiers: pl.DataFrame) -> set[str]:
    """Truth persons whose first and last name (their silver tokens) another truth person also has: an erasure
    of one leaves the other's name tokens, so the scan could not tell them apart."""
    named = []
    for table, key, identifier_type in (
        ("crm/contacts", "contact_id", "crm_contact_id"),
        ("shop/customers", "customer_id", "shop_customer_id"),
    ):
        rows = pl.read_delta(str(lake_root / "silver" / table)).select(
            pl.col(key).cast(pl.String).alias("identifier"), "first_name_token", "last_name_token"
        )
        owners = identifiers.filter(pl.col("identifier_type") == identifier_type).select(
            "identifier", "person_id"
        )
        named.append(rows.join(owners, on="identifier").drop("identifier"))
    names = pl.concat(named).unique()
    shared = names.group_by("first_name_token", "last_name_token").agg(
        pl.col("person_id").n_unique().alias("n")
    )
    return set(
        names.join(shared.filter(pl.col("n") > 1), on=["first_name_token", "last_name_token"])["person_id"]
    )


def _pick_person(truth: Path, people: pl.DataFrame, buyers: set[str], lake_root: Path) -> pl.DataFrame:
    """A person with orders (customer ids ``buyers``) whom the identity graph knows exactly as the truth does
    (contact, customer, app user, e-mail, phone), sharing nothing with anyone, not even their name: their
    evidenced identifiers."""
    identifiers = pl.read_parquet(truth / "identifiers.parquet")
    namesakes = _namesakes(lake_root, identifiers)
    shared = identifiers.group_by("identifier_type", "identifier").agg(
        pl.col("person_id").n_unique().alias("n")
    )
    shared = shared.filter(pl.col("n") > 1)
    candidates = (
        identifiers.join(shared, on=["identifier_type", "identifier"], how="anti")
        .filter(pl.col("evidenced"))
        .group_by("person_id")
        .agg(pl.col("identifier_type").n_unique().alias("types"), pl.len().alias("ids"))
        .filter(pl.col("types") == 6)
        .sort("ids", "person_id", descending=[True, False])
    )
    for truth_person in candidates["person_id"]:
        if truth_person in namesakes:
            continue
        own = identifiers.filter((pl.col("person_id") == truth_person) & pl.col("evidenced"))
        if (
            identifiers.filter(pl.col("person_id") == truth_person)
            .join(shared, on=["identifier_type", "identifier"])
            .height
        ):
            continue
        customer = own.filter(pl.col("identifier_type") == "shop_customer_id")["identifier"][0]
        if customer not in buyers:
            continue
        contact = own.filter(pl.col("identifier_type") == "crm_contact_id")["identifier"][0]
        mapped = people.filter(
            (pl.col("identifier_type") == "crm_contact_id") & (pl.col("identifier") == contact)
        )
        component = people.filter(pl.col("person_id").is_in(mapped["person_id"].implode()))
        raw_types = {"email": "email_token", "phone": "phone_token"}
        expected = {raw_types.get(t, t) for t in own["identifier_type"]}
        if (
            mapped.height == 1
            and set(component["identifier_type"]) == expected
            and component.height == own.height
        ):
            return own
    raise AssertionError("no person of the simulated company fits")


@pytest.fixture(scope="module")
def erased(tmp_path_factory: pytest.TempPathFactory) -> Erased:
    root = tmp_path_factory.mktemp("erasure")
    generate(CONFIG, root / "landing", root / "truth", progress=False)
    settings = lake_settings(root / "lake", warehouse_path=root / "warehouse" / "engagement.duckdb")
    shutil.copytree(root / "landing", root / "lake" / "landing")  # the erasure rewrites landing files
    ingest_all(settings)
    publish_silver(settings, load_contracts(settings.contracts_dir))
    run_dbt(settings, root / "dbt", "build")
    manifest = json.loads((root / "dbt" / "target" / "manifest.json").read_text())
    gold = [n["name"] for n in manifest["nodes"].values() if n.get("config", {}).get("meta", {}).get("gold")]
    publish_gold(settings, sorted(gold))

    people = pl.read_delta(str(Path(settings.lake_root) / "gold" / "identity_person_map"))
    orders = pl.read_delta(str(Path(settings.lake_root) / "silver" / "shop" / "orders"))
    own = _pick_person(
        root / "truth", people, set(orders["customer_id"].cast(pl.String)), Path(settings.lake_root)
    )
    contact_id = own.filter(pl.col("identifier_type") == "crm_contact_id")["identifier"][0]
    person_id = people.filter(
        (pl.col("identifier_type") == "crm_contact_id") & (pl.col("identifier") == contact_id)
    )["person_id"][0]
    component = people.filter(pl.col("person_id") == person_id).select("identifier_type", "identifier")
    identifiers = pl.concat(
        [
            own.select("identifier_type", "identifier"),
            component,
            pl.DataFrame({"identifier_type": ["person_id"], "identifier": [person_id]}),
        ]
    ).unique()
    email = own.filter(pl.col("identifier_type") == "email")["identifier"][0]
    customer_id = own.filter(pl.col("identifier_type") == "shop_customer_id")["identifier"][0]
    app_user = own.filter(pl.col("identifier_type") == "app_user_id")["identifier"][0]
    lines = [
        (path, line)
        for path, line in _landing_lines(root / "lake" / "landing")
        if email.lower() in line.lower()
        or app_user in line
        or re.search(rf'"contact_id"\s*:\s*{contact_id}(?!\d)', line)
        or re.search(rf'"customer_id"\s*:\s*{customer_id}(?!\d)', line)
    ]
    person = PersonValues.of(identifiers, [line for _, line in lines], settings.pii_secret)
    found_before = scan_lake(Path(settings.lake_root), person) | scan_warehouse(
        settings.warehouse_path, person
    )
    before = _tables(settings)
    report = erase(settings, [ErasureRequest("crm_contact_id", contact_id, "ticket-1")])[0]
    return Erased(
        settings,
        person,
        contact_id,
        person_id,
        identifiers,
        root / "truth",
        lines,
        before,
        found_before,
        "ticket-1",
        report,
    )


def _is_person(frame: pl.DataFrame, erased: Erased) -> pl.Expr:
    """Rows of the erased person, by the columns that name them."""
    ids = erased.identifiers
    values = {
        t: ids.filter(pl.col("identifier_type") == t)["identifier"].to_list()
        for t in ids["identifier_type"].unique()
    }
    conditions = [pl.lit(False)]
    columns = {
        "contact_id": "crm_contact_id",
        "customer_id": "shop_customer_id",
        "anonymous_id": "anonymous_id",
        "user_id": "app_user_id",
        "person_id": "person_id",
    }
    for column, kind in columns.items():
        if column in frame.columns:
            conditions.append(pl.col(column).cast(pl.String).is_in(values.get(kind, [])))
    if "identifier" in frame.columns:
        pairs = (ids["identifier_type"] + ":" + ids["identifier"]).to_list()
        conditions.append((pl.col("identifier_type") + ":" + pl.col("identifier")).is_in(pairs))
    return pl.any_horizontal(conditions).fill_null(False)


def test_the_person_was_everywhere_before(erased: Erased):
    zones = {path.split("/")[0] for path in erased.found_before}
    assert {"landing", "bronze", "silver", "gold"} <= zones, zones
    assert any("." in path and "/" not in path for path in erased.found_before)  # warehouse tables
    assert erased.report.rows("deleted") > 0 and erased.report.rows("deidentified") > 0


def test_no_file_of_the_lake_or_warehouse_holds_the_person(erased: Erased):
    assert scan_lake(Path(erased.settings.lake_root), erased.person) == {}
    assert scan_warehouse(erased.settings.warehouse_path, erased.person) == {}


def test_every_other_row_is_unchanged(erased: Erased):
    after = _tables(erased.settings)
    assert set(after) == set(erased.before)
    customers = erased.identifiers.filter(pl.col("identifier_type") == "shop_customer_id")["identifier"]
    for name, before in erased.before.items():
        table = after[name]
        if name.startswith("silver/shop/orders"):  # kept for accounting: the customer id becomes a marker
            mine = pl.col("customer_id").cast(pl.String).is_in(customers.implode())
            assert before.filter(mine).height
            marked = table.filter(pl.col("customer_id") < 0)
            assert marked.height == before.filter(mine).height and marked["customer_id"].n_unique() == 1
            assert_frame_equal(table.drop("customer_id"), before.drop("customer_id"), check_row_order=False)
            assert_frame_equal(
                table.filter(pl.col("customer_id") >= 0), before.filter(~mine), check_row_order=False
            )
            continue
        assert_frame_equal(table, before.filter(~_is_person(before, erased)), check_row_order=False)


def test_the_ledger_accounts_for_erased_records(erased: Erased):
    settings = erased.settings
    ledger = Ledger(bronze.ledger_uri(settings), settings.storage_options)
    committed = ledger.committed_files().group_by("feed_id").agg(pl.sum("records"))
    removed = {row["feed_id"]: row for row in ledger.erased_counts().iter_rows(named=True)}
    assert removed, "no erased rows in the ledger"
    quarantine = delta.read(bronze.quarantine_uri(settings)).group_by("feed_id").len()
    quarantined = dict(quarantine.iter_rows())
    contracts = load_contracts(settings.contracts_dir)
    for feed_id, records in committed.iter_rows():
        in_bronze = delta.row_count(bronze.bronze_uri(settings, contracts[feed_id]))
        erased_records = removed.get(feed_id, {}).get("records") or 0
        assert records == in_bronze + quarantined.get(feed_id, 0) + erased_records, feed_id
    # a rewritten landing file is neither changed nor new to the next ingestion
    again = ingest_all(settings)
    assert [r.changed_files for r in again.ingested] == [[] for _ in again.ingested]
    assert sum(r.files for r in again.ingested) == 0


def test_the_audit_says_what_was_done_without_personal_data(erased: Erased):
    audit = delta.read(erasure.audit_uri(erased.settings))
    mine = audit.filter(pl.col("request_id") == erased.request_id)
    tables = set(mine["table"])
    assert {"landing/crm.public.contacts", "bronze/cdc/crm.public.contacts", "silver/crm/contacts"} <= tables
    assert {"silver/shop/orders", "gold/identity_person_map", "warehouse/main.identity_person_map"} <= tables
    assert mine.filter(pl.col("table") == "silver/shop/orders")["action"].to_list() == ["deidentified"]
    assert (mine["rows"] > 0).all()
    # the scan of the whole lake (privacy zone included) found nothing: the audit and the suppression list
    # hold no value or token of the person


def test_no_statistics_of_raw_or_personal_columns(erased: Erased):
    settings = erased.settings
    contracts = load_contracts(settings.contracts_dir)
    uris = [bronze.bronze_uri(settings, c) for c in contracts.values()] + [bronze.quarantine_uri(settings)]
    uris += [str(p.parent) for p in Path(settings.zone("silver")).rglob("_delta_log")]
    # a feed nothing landed for has no table (the CRM's recommendations before the loop)
    tables = {uri: delta.open_table(uri) for uri in uris}
    assert {uri for uri, table in tables.items() if table is None} == {
        bronze.bronze_uri(settings, contracts["crm.public.nba_recommendations"])
    }
    for uri, table in tables.items():
        if table is None:
            continue
        assert delta.STATS_COLUMNS in table.metadata().configuration, uri
        adds = [
            action["add"]
            for log in Path(uri, "_delta_log").glob("*.json")
            for action in map(json.loads, log.read_text().splitlines())
            if "add" in action
        ]
        for checkpoint in Path(uri, "_delta_log").glob("*.checkpoint.parquet"):
            adds += [a for a in pq.read_table(checkpoint, columns=["add"])["add"].to_pylist() if a]
        assert adds, uri
        columns = {c for a in adds if a.get("stats") for c in json.loads(a["stats"]).get("minValues", {})}
        personal = {"raw", "before", "after", "traits", "properties", "anonymous_id", "user_id"}
        assert not columns & personal, (uri, columns)
        assert not {c for c in columns if c.endswith(("_token", "_prefix"))}, (uri, columns)


def test_running_the_erasure_again_changes_nothing(erased: Erased):
    before = _tables(erased.settings)
    again = erase(erased.settings, [ErasureRequest("crm_contact_id", erased.contact_id, erased.request_id)])[
        0
    ]
    assert again.tables == []
    after = _tables(erased.settings)
    assert set(after) == set(before)
    for name in before:
        assert_frame_equal(after[name], before[name], check_row_order=False)


def test_a_new_delivery_does_not_bring_the_person_back(erased: Erased):
    settings = erased.settings
    landing = Path(settings.landing)
    contact_lines = [line for path, line in erased.lines if path.startswith("cdc/crm.public.contacts/")]
    click_lines = [line for path, line in erased.lines if path.startswith("clickstream/")]
    assert contact_lines and click_lines
    # a later snapshot of the CRM, and the app sending the person's messages again under new message ids
    topic = landing / "cdc" / "crm.public.contacts"
    (topic / "crm.public.contacts+0+0000900000.json").write_text("\n".join(contact_lines) + "\n")
    resent = [
        re.sub(r'"messageId"\s*:\s*"([^"]+)"', r'"messageId":"resent-\1"', line) for line in click_lines
    ]
    folder = landing / "clickstream" / "web" / "2026-09-30" / "00"
    folder.mkdir(parents=True)
    (folder / "part-resent.jsonl.gz").write_bytes(gzip.compress(("\n".join(resent) + "\n").encode()))

    run = ingest_all(settings)
    assert sum(r.files for r in run.ingested) == 2
    assert sum(a.suppressed for a in run.applied) >= len(contact_lines)
    silver = scan_lake(Path(settings.lake_root), erased.person)
    assert silver and not [path for path in silver if not path.startswith(("landing/", "bronze/"))], silver

    rerun = erase(settings, [ErasureRequest("crm_contact_id", erased.contact_id, erased.request_id)])[0]
    assert rerun.rows("deleted") >= len(contact_lines) + len(click_lines)
    assert scan_lake(Path(settings.lake_root), erased.person) == {}
    assert scan_warehouse(settings.warehouse_path, erased.person) == {}
    ledger = Ledger(bronze.ledger_uri(settings), settings.storage_options)
    assert sum(r.files for r in ingest_all(settings).ingested) == 0  # the rewritten files are not new
    assert ledger.committed_files().filter(pl.col("status") == COMMITTED).height


def test_a_request_by_a_shared_identifier_is_refused(erased: Erased):
    settings = erased.settings
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        guarded = {
            t
            for (t,) in con.sql(
                "select identifier from int_identity__guarded_out where identifier_type = 'email_token'"
            ).fetchall()
        }
    emails = pl.read_parquet(erased.truth / "identifiers.parquet").filter(
        pl.col("identifier_type") == "email"
    )
    placeholders = [
        e
        for e in emails["identifier"].unique().sort()
        if token(normalise_email(pl.Series([e])), settings.pii_secret)[0] in guarded
    ]
    assert placeholders, "the simulated company has no placeholder e-mail over the fan-out limit"
    hashes_before = suppression.suppressed(settings)
    with pytest.raises(ErasureRefused, match="shared by several persons"):
        erase(settings, [ErasureRequest("email", placeholders[0], "ticket-shared")])
    assert suppression.suppressed(settings) == hashes_before


def test_the_dagster_job_erases_the_requested_persons(erased: Erased, monkeypatch: pytest.MonkeyPatch):
    from orchestration.definitions import defs
    from orchestration.resources import LakeResource

    settings = erased.settings
    monkeypatch.setenv("WAREHOUSE_PATH", str(settings.warehouse_path))
    contacts = pl.read_delta(str(Path(settings.lake_root) / "silver" / "crm" / "contacts"))
    other = str(contacts.sort("contact_id")["contact_id"][0])
    result = defs.get_job_def("erase_persons").execute_in_process(
        run_config={
            "ops": {
                "erase_requested_persons": {
                    "config": {
                        "requests": [{"kind": "crm_contact_id", "value": other, "request_id": "ticket-2"}]
                    }
                }
            }
        },
        resources={"lake": LakeResource(lake_root=settings.lake_root)},
    )
    assert result.success
    contacts = pl.read_delta(str(Path(settings.lake_root) / "silver" / "crm" / "contacts"))
    assert other not in contacts["contact_id"].cast(pl.String).to_list()
    audit = delta.read(erasure.audit_uri(settings)).filter(pl.col("request_id") == "ticket-2")
    assert "silver/crm/contacts" in audit["table"].to_list()


def test_a_shared_device_keeps_the_messages_of_others(erased: Erased):
    """The rule for what a person shares: a device the identity graph detached from everyone (it reaches
    several persons) is nobody's, so it is not erased; the person's own messages sent from it (signed in as
    them) are."""
    settings = erased.settings
    events_uri = str(Path(settings.lake_root) / "silver" / "clickstream" / "events")
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        shared = [
            d
            for (d,) in con.sql(
                "select identifier from int_identity__guarded_out where guard = 'shared_device' order by 1"
            ).fetchall()
        ]
    events = pl.read_delta(events_uri).filter(pl.col("anonymous_id").is_in(shared))
    users = events.drop_nulls("user_id").group_by("anonymous_id").agg(pl.col("user_id").unique(), pl.len())
    candidates = [
        (device, user)
        for device, device_users, _ in users.sort("anonymous_id").iter_rows()
        for user in sorted(device_users)
        if events.filter((pl.col("anonymous_id") == device) & pl.col("user_id").ne_missing(user)).height
    ]
    assert candidates, "no shared device with messages of more than one user in the simulated company"
    device, user = candidates[0]
    before = events.filter(pl.col("anonymous_id") == device)

    erase(settings, [ErasureRequest("app_user_id", user, "ticket-3")])

    after = pl.read_delta(events_uri).filter(pl.col("anonymous_id") == device)
    assert not after.filter(pl.col("user_id") == user).height
    others = before.filter(pl.col("user_id").ne_missing(user))
    assert_frame_equal(after, others, check_row_order=False)
    people = pl.read_delta(str(Path(settings.lake_root) / "gold" / "identity_person_map"))
    assert people.filter(pl.col("identifier") == device).height == 1


def test_the_command_erases_by_email_and_prints_no_personal_data(
    erased: Erased, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    settings = erased.settings
    contacts = pl.read_delta(str(Path(settings.lake_root) / "silver" / "crm" / "contacts"))
    emails = pl.read_parquet(erased.truth / "identifiers.parquet").filter(
        pl.col("identifier_type") == "email"
    )
    tokens = token(normalise_email(emails["identifier"]), settings.pii_secret)
    emails = emails.with_columns(tokens.alias("email_token")).join(contacts, on="email_token")
    shared = emails.group_by("email_token").len().filter(pl.col("len") > 1)
    email, contact_id = (
        emails.join(shared, on="email_token", how="anti")
        .sort("contact_id")
        .select("identifier", "contact_id")
        .row(0)
    )
    monkeypatch.setenv("LAKE_ROOT", settings.lake_root)
    monkeypatch.setenv("WAREHOUSE_PATH", str(settings.warehouse_path))

    assert erasure.main(["--email", email.upper()]) == 0

    printed = capsys.readouterr()
    assert email.lower() not in (printed.out + printed.err).lower() and "silver/crm/contacts" in printed.out
    contacts = pl.read_delta(str(Path(settings.lake_root) / "silver" / "crm" / "contacts"))
    assert contact_id not in contacts["contact_id"].to_list()
    assert (
        erasure.main(["--email", "", "--request-id", "a@b"]) == 1
    )  # refused: a request id with personal data
