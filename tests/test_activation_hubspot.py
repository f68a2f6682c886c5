"""The HubSpot destination against the emulator (a real HTTP server on 127.0.0.1, tests/hubspot_emulator.py)
and real Delta tables: the first sync creates the custom properties and upserts every record, a second one
sends nothing, 429 and 5xx storms are survived, 207 per-record refusals are recorded and retried next run,
batches never exceed 100 inputs nor repeat an id, a real process killed with SIGKILL mid-sync then run
again changes every record exactly once, the client keeps to the quota in advance, and the plan of a large
sync."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake
from hubspot_emulator import UPSERT, HubSpotEmulator

from activation import state
from activation.config import load_sync
from activation.hubspot import HubSpotError, RollingWindow, plan_seconds
from activation.sync import SyncSkipped, main, run_sync
from lake.settings import REPO_ROOT
from tests.test_activation_sync import lake  # noqa: F401 (the fixture)

TOKEN = "pat-test-0000"
DAY = date(2026, 11, 20)
SHIPPED = REPO_ROOT / "activation" / "syncs" / "hubspot_contacts.yaml"
PROPERTIES = [
    "nba_contact_id",
    "nba_decision_id",
    "nba_decision_date",
    "nba_action",
    "nba_channel",
    "nba_expected_value",
    "nba_model_version",
    "nba_policy_version",
]


@pytest.fixture
def emulator():
    """A HubSpot emulator with a small quota window (10 requests per 0.5 s)."""
    server = HubSpotEmulator(token=TOKEN, max_requests=10, interval_s=0.5).start()
    yield server
    server.stop()


@pytest.fixture
def hubspot(lake, emulator, monkeypatch):  # noqa: F811 (the imported fixture)
    """The environment of a HubSpot sync pointed at the emulator."""
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("HUBSPOT_BASE_URL", emulator.url)
    return lake


def hubspot_sync(batch_size: int = 100, requests: int = 10, per_seconds: float = 0.5):
    """The shipped HubSpot sync file with a test quota and batch size, written into the syncs folder."""
    text = SHIPPED.read_text()
    text = text.replace("batch_size: 100", f"batch_size: {batch_size}")
    text = text.replace(
        "quota: {requests: 100, per_seconds: 10, daily: 250000}",
        f"quota: {{requests: {requests}, per_seconds: {per_seconds}, daily: 250000}}",
    )
    path = Path(os.environ["ACTIVATION_SYNCS_DIR"]) / "hubspot_contacts.yaml"
    path.write_text(text)
    return load_sync(path)


def write_gold(settings, count: int, action: str = "discount_10", **changes: dict) -> dict[int, dict]:
    """Gold nba_current with contacts 1..count (every one an email action; ``changes`` by contact), granted
    email consent for all; the rows by contact."""
    rows = {
        c: {
            "decision_id": f"d-{c}-{DAY}",
            "decision_date": DAY,
            "person_id": f"p{c}",
            "action": action,
            "channel": "email",
            "crm_contact_id": c,
            "expected_value": 1.25,
            "is_holdout": False,
            "model_version": "3",
            "policy_version": "pv-1",
        }
        for c in range(1, count + 1)
    }
    for contact, change in changes.items():
        rows[int(contact.removeprefix("c"))] |= change
    frame = pl.DataFrame(list(rows.values())).with_columns(pl.col("decision_date").cast(pl.Date))
    write_deltalake(f"{settings.lake_root}/gold/nba_current", frame.to_arrow(), mode="overwrite")
    consents = pl.DataFrame(
        {
            "consent_id": list(range(1, count + 1)),
            "contact_id": list(range(1, count + 1)),
            "channel": ["email"] * count,
            "status": ["granted"] * count,
            "updated_at": [datetime(2026, 11, 19, tzinfo=UTC)] * count,
        }
    )
    write_deltalake(f"{settings.lake_root}/silver/crm/consents", consents.to_arrow(), mode="overwrite")
    return rows


def expected_properties(row: dict) -> dict[str, str]:
    """What HubSpot should hold for a gold row: every property as text (worked out by hand)."""
    return {
        "nba_contact_id": str(row["crm_contact_id"]),
        "nba_decision_id": row["decision_id"],
        "nba_decision_date": row["decision_date"].isoformat(),
        "nba_action": row["action"],
        "nba_channel": row["channel"],
        "nba_expected_value": str(row["expected_value"]),
        "nba_model_version": row["model_version"],
        "nba_policy_version": row["policy_version"],
    }


def upsert_batches(emulator: HubSpotEmulator) -> list[dict]:
    """The upsert requests the emulator answered (not throttled, not failed)."""
    return [r for r in emulator.requests(UPSERT) if r["status"] in (200, 207)]


def test_first_sync_creates_properties_and_upserts_all_then_nothing_changed_sends_nothing(hubspot, emulator):
    rows = write_gold(hubspot, 250)
    config = hubspot_sync()

    first = run_sync(config, hubspot)
    assert (first["added"], first["sent"], first["failed"], first["status"]) == (250, 250, 0, "succeeded")
    assert set(emulator.properties) == set(PROPERTIES)
    assert emulator.properties["nba_contact_id"]["hasUniqueValue"] is True
    assert emulator.properties["nba_expected_value"]["type"] == "number"
    assert {p["groupName"] for p in emulator.properties.values()} == {"next_best_action"}
    # 250 records: batches of 100, 100 and 50; every contact created once
    assert [r["inputs"] for r in upsert_batches(emulator)] == [100, 100, 50]
    assert emulator.state_changes == 250
    assert emulator.record("17") == expected_properties(rows[17])
    # the plan: 3 upserts + 4 setup requests, 7 <= 10 per window, so no wait beyond the first window
    assert first["planned_s"] == 0.0

    before = len(emulator.requests())
    again = run_sync(config, hubspot)
    assert (again["added"], again["changed"], again["sent"]) == (0, 0, 0)
    assert len(emulator.requests()) == before  # nothing changed: not one request

    write_gold(hubspot, 249, c3={"action": "free_shipping"})  # contact 250 gone, contact 3 changed
    third = run_sync(config, hubspot)
    assert (third["changed"], third["removed"], third["sent"]) == (1, 1, 2)
    assert emulator.record("3")["nba_action"] == "free_shipping"
    cleared = emulator.record("250")
    assert cleared["nba_contact_id"] == "250" and {
        v for k, v in cleared.items() if k != "nba_contact_id"
    } == {""}
    assert emulator.state_changes == 252
    assert [r["path"] for r in emulator.requests()[before:]].count(
        "/crm/v3/properties/contacts/batch/create"
    ) == 0


def test_storms_of_429_and_5xx_are_survived_and_no_record_is_lost(hubspot, emulator):
    rows = write_gold(hubspot, 60)
    emulator.throttle_next(3)  # other apps of the account used the quota
    emulator.fail_next(2, status=503)
    emulator.fail_next(2, status=502, after_apply=True, path=UPSERT)  # applied, the answer lost
    config = hubspot_sync(batch_size=5, requests=10, per_seconds=0.5)

    result = run_sync(config, hubspot)
    assert (result["sent"], result["failed"], result["status"]) == (60, 0, "succeeded")
    assert len(emulator.requests(status=429)) == 3
    assert len(emulator.requests(status=503)) == 2
    assert len(emulator.requests(UPSERT, status=502)) == 2
    assert {emulator.record(str(c))["nba_decision_id"] for c in rows} == {
        r["decision_id"] for r in rows.values()
    }
    # 12 batches, the two whose answer was lost sent again: 14 applied, 60 records changed once each
    assert len([r for r in emulator.requests(UPSERT) if r["status"] in (200, 502)]) == 14
    assert emulator.state_changes == 60
    # Retry-After honoured: after each 429 the next request came at least a second later
    log = emulator.requests()
    for i, entry in enumerate(log[:-1]):
        if entry["status"] == 429:
            assert log[i + 1]["at"] - entry["at"] >= 1.0


def test_the_client_adopts_a_stricter_limit_the_account_states(hubspot, emulator):
    write_gold(hubspot, 60)
    emulator.max_requests = 3  # the sync file says 10 per 0.5 s; the account's answers say 3
    result = run_sync(hubspot_sync(batch_size=5, requests=10, per_seconds=0.5), hubspot)
    assert result["sent"] == 60
    assert not emulator.requests(status=429)
    assert emulator.max_in_window(0.5) <= 3


def test_a_wrong_token_fails_the_run_clearly_and_sends_nothing(hubspot, emulator, monkeypatch):
    write_gold(hubspot, 5)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-revoked")
    with pytest.raises(HubSpotError, match="HubSpot answered 401: Authentication credentials not found"):
        run_sync(hubspot_sync(), hubspot)
    assert len(emulator.requests(status=401)) == 1  # not retried
    assert not emulator.contacts and state.state_version(hubspot, "hubspot_contacts") == 0
    assert state.runs(hubspot, "hubspot_contacts")["status"].to_list() == ["failed"]


def test_207_refusals_are_recorded_with_hubspots_reason_and_retried_next_run(hubspot, emulator):
    write_gold(hubspot, 30, c4={"action": "loyalty_offer"}, c9={"action": "loyalty_offer"})
    emulator.refused = {"nba_action": {"loyalty_offer"}}
    config = hubspot_sync(batch_size=10)

    first = run_sync(config, hubspot)
    assert (first["sent"], first["failed"], first["status"]) == (28, 2, "partial")
    refused = state.failures(hubspot, "hubspot_contacts")
    assert sorted(refused["key"].to_list()) == ["4", "9"]
    assert set(refused["op"]) == {"upsert"}
    assert all("INVALID_OPTION" in r and "VALIDATION_ERROR" in r for r in refused["reason"])
    assert emulator.record("4") is None and emulator.record("5") is not None
    assert len(emulator.requests(UPSERT, status=207)) == 1

    emulator.refused = {}  # the property now accepts the option
    second = run_sync(config, hubspot)
    assert (second["added"], second["sent"], second["failed"], second["retried"]) == (2, 2, 0, 2)
    assert emulator.record("9")["nba_action"] == "loyalty_offer"
    assert emulator.state_changes == 30


def test_batches_never_exceed_100_nor_repeat_an_id(hubspot, emulator):
    write_gold(hubspot, 1001)
    result = run_sync(hubspot_sync(), hubspot)
    assert result["sent"] == 1001
    batches = upsert_batches(emulator)
    assert [b["inputs"] for b in batches] == [100] * 10 + [1]
    assert not emulator.requests(status=400)
    assert emulator.state_changes == 1001 == len(emulator.contacts)


def test_emulator_enforces_the_documented_contract(emulator):
    """The emulator's rules, with request bodies written from HubSpot's reference examples."""
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=emulator.url) as client:
        assert client.get("/crm/v3/properties/contacts").status_code == 401
        group = {"name": "next_best_action", "label": "Next best action"}
        assert (
            client.post("/crm/v3/properties/contacts/groups", json=group, headers=headers).status_code == 201
        )
        unique = {
            "name": "nba_contact_id",
            "label": "Contact id",
            "type": "number",
            "fieldType": "number",
            "groupName": "next_best_action",
            "hasUniqueValue": True,
        }
        text = unique | {"name": "nba_action", "type": "string", "fieldType": "text", "hasUniqueValue": False}
        created = client.post(
            "/crm/v3/properties/contacts/batch/create", json={"inputs": [unique, text]}, headers=headers
        )
        assert created.status_code == 201 and created.json()["status"] == "COMPLETE"
        again = client.post(
            "/crm/v3/properties/contacts/batch/create", json={"inputs": [text]}, headers=headers
        )
        assert again.status_code == 409

        def upsert(inputs):
            return client.post(
                "/crm/v3/objects/contacts/batch/upsert", json={"inputs": inputs}, headers=headers
            )

        one = {"idProperty": "nba_contact_id", "id": "1", "properties": {"nba_action": "discount_10"}}
        assert upsert([one | {"id": str(i)} for i in range(101)]).status_code == 400
        duplicated = upsert([one, one])
        assert duplicated.status_code == 400 and "Duplicate" in duplicated.json()["message"]
        by_text = upsert([one | {"idProperty": "nba_action", "id": "x"}])
        assert by_text.status_code == 400  # upsert needs a property with unique values
        unknown = upsert([one | {"properties": {"firstname": "x"}}])
        assert unknown.status_code == 400
        bad = {"idProperty": "nba_contact_id", "id": "two", "properties": {}}  # not a number
        mixed = upsert([one, bad])
        body = mixed.json()
        assert mixed.status_code == 207 and body["numErrors"] == 1
        assert body["errors"][0]["context"] == {"ids": ["two"]}
        assert body["errors"][0]["category"] == "VALIDATION_ERROR"
        assert [r["new"] for r in body["results"]] == [True]
        assert upsert([one]).json()["results"][0]["new"] is False
        assert emulator.state_changes == 1  # the repeat changed nothing
        assert mixed.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "500"
        for _ in range(12):
            last = upsert([one])
        assert last.status_code == 429
        assert int(last.headers["Retry-After"]) >= 1 and last.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert last.json()["policyName"] == "TEN_SECONDLY_ROLLING"


def test_killed_mid_sync_then_run_again_changes_every_record_exactly_once(hubspot, emulator):
    rows = write_gold(hubspot, 450)
    hubspot_sync(requests=10, per_seconds=0.5)
    env = {**os.environ, "LAKE_CRASH_AT": "activation.hubspot.batch_sent.3"}
    killed = subprocess.run(
        [sys.executable, "-m", "activation.sync", "--sync", "hubspot_contacts"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    assert [b["inputs"] for b in upsert_batches(emulator)] == [
        100,
        100,
        100,
    ]  # the third answered, not recorded
    assert emulator.state_changes == 300 and state.state_version(hubspot, "hubspot_contacts") == 0

    env.pop("LAKE_CRASH_AT")
    rerun = subprocess.run(
        [sys.executable, "-m", "activation.sync", "--sync", "hubspot_contacts"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "sent 450" in rerun.stdout
    # only the batch in flight at the kill went again: 3 + (1 again + 2) upserts, 450 state changes
    assert [b["inputs"] for b in upsert_batches(emulator)] == [100, 100, 100, 100, 100, 50]
    assert emulator.state_changes == 450
    assert {k: emulator.record(k) for k in emulator.contacts} == {
        str(c): expected_properties(r) for c, r in rows.items()
    }
    assert state.state_version(hubspot, "hubspot_contacts") == 1
    assert main(["--sync", "hubspot_contacts"]) == 0 and emulator.state_changes == 450


def test_the_client_keeps_to_the_quota_in_advance(hubspot, emulator):
    write_gold(hubspot, 240)
    config = hubspot_sync(batch_size=10, requests=10, per_seconds=0.5)
    result = run_sync(config, hubspot)
    assert result["sent"] == 240
    # 24 upserts + 4 setup requests at 10 per 0.5 s: two full windows of waiting at least, planned up front
    assert result["planned_s"] == 1.0
    assert len(emulator.requests()) == 28
    assert not emulator.requests(status=429)  # never learnt from a 429
    assert emulator.max_in_window(0.5) <= 10


def test_contract_violations_are_not_sent_and_a_disagreeing_contract_stops_the_sync(
    hubspot, emulator, tmp_path
):
    write_gold(hubspot, 12, c5={"action": "call_me"}, c6={"policy_version": None})
    config = hubspot_sync()
    result = run_sync(config, hubspot)
    assert (result["sent"], result["failed"], result["refused_by_contract"]) == (10, 2, 2)
    assert emulator.record("5") is None and emulator.record("6") is None
    reasons = dict(state.failures(hubspot, "hubspot_contacts").select("key", "reason").iter_rows())
    assert "field nba_action has value 'call_me' not in accepted values" in reasons["5"]
    assert "required field nba_policy_version is null" in reasons["6"]

    contracts = tmp_path / "contracts"
    contracts.mkdir()
    shipped = REPO_ROOT / "activation" / "contracts" / "hubspot_contacts.odcs.yaml"
    (contracts / "hubspot_contacts.odcs.yaml").write_text(
        shipped.read_text().replace("nba_channel", "nba_medium")
    )
    os.environ["ACTIVATION_CONTRACTS_DIR"] = str(contracts)
    try:
        with pytest.raises(ValueError, match=r"only in the contract: \['nba_medium'\]"):
            run_sync(config, hubspot)
    finally:
        del os.environ["ACTIVATION_CONTRACTS_DIR"]


def test_without_a_token_the_sync_is_skipped_not_failed(lake, monkeypatch, capsys):  # noqa: F811
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    write_gold(lake, 3)
    config = hubspot_sync()
    with pytest.raises(SyncSkipped, match="HUBSPOT_ACCESS_TOKEN is not set"):
        run_sync(config, lake)
    assert main(["--sync", "hubspot_contacts"]) == 0
    assert "skipped: HUBSPOT_ACCESS_TOKEN is not set" in capsys.readouterr().out
    assert state.runs(lake).is_empty()


def test_the_plan_of_a_large_sync_and_the_rolling_window():
    """1,000,000 records: 10,000 batches of 100 (plus 4 setup requests) at 100 per 10 s take 1,000 s; at 190
    per 10 s, 526 windows; over the daily limit a sync waits for the next day."""
    assert plan_seconds(10_004, 100, 10.0, 250_000) == 1_000.0
    assert plan_seconds(10_004, 190, 10.0, 1_000_000) == 52 * 10.0
    assert plan_seconds(100, 100, 10.0, 250_000) == 0.0
    assert plan_seconds(250_001, 250, 10.0, 250_000) == 86_400.0
    now = [0.0]
    slept = []
    window = RollingWindow(
        3, 10.0, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s))
    )
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        assert window.wait() == 0.0
        window.record()
    now[0] = 4.0
    assert window.wait() == 6.0  # the fourth waits until the first leaves the window (t = 10)
    assert now[0] == 10.0
