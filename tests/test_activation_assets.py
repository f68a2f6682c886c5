"""The sync assets in Dagster (orchestration/activation_assets.py) against a real PostgreSQL server and real
Delta tables, with the shipped sync files: materialized through Dagster with their counts as metadata, a
second run sending nothing, a consent revoked since the decision cleared by the next run although the
decisions did not change, a sync without credentials skipped, an erasure clearing the person at the CRM, in
the outbox and in the activation zone with its Delta history, and both using the embedded CRM when no URL is
set."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import erasure_scan
import polars as pl
import psycopg
import pytest
from deltalake import write_deltalake

from activation import state
from activation.config import load_sync, load_syncs
from activation.crm_server import crm_database_url, stop
from lake.erasure import ErasureRequest, TableErasure, erase
from lake.settings import get_settings
from orchestration.activation_assets import ACTIVATION_GROUP, CrmResource, sync_assets, sync_key
from orchestration.demo import syncs_summary
from orchestration.resources import LakeResource
from tests.test_activation_sync import write_decisions

DAY = date(2026, 11, 20)
CRM = sync_key("crm_recommendations")
OUTBOX = sync_key("outbox_recommendations")


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings of an empty lake under tmp (its outbox too), with the shipped sync files."""
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("ACTIVATION_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.delenv("ACTIVATION_SYNCS_DIR", raising=False)
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)  # the HubSpot sync is skipped
    return replace(get_settings(), lake_root=str(tmp_path / "lake"))


def decision(
    contact: int, action: str = "discount_10", channel: str = "email", holdout: bool = False
) -> dict:
    """One nba_current row with every column the shipped syncs map."""
    return {
        "decision_id": f"d-{contact}-{action}",
        "decision_date": DAY,
        "person_id": f"p{contact}",
        "action": action,
        "channel": None if action == "no_action" else channel,
        "crm_contact_id": contact,
        "expected_value": 1.25,
        "model_version": "3",
        "policy_version": "policy-1",
        "is_holdout": holdout,
    }


def write_consents(settings, consents: dict[tuple[int, str], str], at: datetime) -> None:
    """Append consent rows (contact, channel) -> status updated at ``at`` to silver crm/consents."""
    frame = pl.DataFrame(
        [
            {"consent_id": c * 10 + len(ch), "contact_id": c, "channel": ch, "status": s, "updated_at": at}
            for (c, ch), s in sorted(consents.items())
        ],
        schema={
            "consent_id": pl.Int64,
            "contact_id": pl.Int64,
            "channel": pl.String,
            "status": pl.String,
            "updated_at": pl.Datetime("us", "UTC"),
        },
    )
    write_deltalake(f"{settings.lake_root}/silver/crm/consents", frame.to_arrow(), mode="append")


def write_identity(settings, contacts: list[int]) -> None:
    """gold identity_person_map: each contact its own person ``p<contact>``."""
    frame = pl.DataFrame(
        {
            "identifier_type": ["crm_contact_id"] * len(contacts),
            "identifier": [str(c) for c in contacts],
            "person_id": [f"p{c}" for c in contacts],
        }
    )
    write_deltalake(f"{settings.lake_root}/gold/identity_person_map", frame.to_arrow(), mode="overwrite")


def materialize(
    settings, url: str | None = None, selection=None, instance=None, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    """One Dagster run of the sync assets (or ``selection``) on ``instance`` (an ephemeral one by default)."""
    return dg.materialize(
        sync_assets(),
        selection=selection,
        resources={"lake": LakeResource(lake_root=settings.lake_root), "crm": CrmResource(database_url=url)},
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}


def crm_rows(url: str) -> dict[int, tuple]:
    """contact_id -> (action, channel, decision_id) in the CRM's recommendations table."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select contact_id, action, channel, decision_id from nba_recommendations"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


GRANTED = {(c, ch): "granted" for c in range(1, 8) for ch in ("email", "sms")}
T0 = datetime(2026, 11, 19, tzinfo=UTC)


def test_the_assets_are_one_per_sync_file_downstream_of_the_decisions_and_consents():
    assets = sync_assets()
    keys = {key for a in assets for key in a.keys}
    syncs = load_syncs()
    assert keys == {sync_key(name) for name in syncs} and {CRM, OUTBOX} <= keys
    for a in assets:
        (key,) = a.keys
        assert a.group_names_by_key[key] == ACTIVATION_GROUP
        assert a.asset_deps[key] == {
            dg.AssetKey(["ml", "nba_decisions"]),
            dg.AssetKey(["silver", "crm", "consents"]),
        }
        assert a.op.retry_policy.backoff == dg.Backoff.EXPONENTIAL and a.op.retry_policy.jitter is not None
        target = syncs[key.path[-1]].destination
        assert a.op.pool == f"activation_{target.kind}_{target.name}"
    assert len({a.op.pool for a in assets}) == len(
        {(s.destination.kind, s.destination.name) for s in syncs.values()}
    )


def test_sync_materializes_with_counts_then_sends_nothing_then_clears_a_revoked_consent(lake, crm_url):
    rows = [
        decision(1),
        decision(2, "free_shipping", "sms"),
        decision(3),
        decision(4, holdout=True),  # holdout: never a target
        decision(5, "no_action"),
        decision(6),  # e-mail consent revoked before the decision
    ]
    write_decisions(lake, rows)
    write_consents(lake, GRANTED | {(6, "email"): "revoked"}, T0)

    first = materialize(lake, crm_url)
    assert first.success
    crm = metadata(first, CRM)
    assert (crm["added"], crm["changed"], crm["removed"], crm["sent"], crm["failed"]) == (3, 0, 0, 3, 0)
    assert (crm["skipped_by_consent"], crm["not_actions"], crm["source_rows"]) == (1, 2, 6)
    assert crm["status"] == "succeeded" and crm["state_diff_id"] == 1 and crm["duration_s"] > 0
    assert crm["destination"] == "postgres:crm" and crm["state_table_version"] == 0
    assert not {"decision_id", "person_id", "contact_id", "crm_contact_id"} & set(crm)
    assert crm_rows(crm_url) == {
        1: ("discount_10", "email", "d-1-discount_10"),
        2: ("free_shipping", "sms", "d-2-free_shipping"),
        3: ("discount_10", "email", "d-3-discount_10"),
    }
    outbox = metadata(first, OUTBOX)
    assert (outbox["added"], outbox["sent"], outbox["destination"]) == (3, 3, "files:outbox")
    materialized = {e.asset_key for e in first.get_asset_materialization_events()}
    assert materialized == {CRM, OUTBOX}  # the other syncs lack their credentials here: skipped
    assert set(state.runs(lake)["sync"]) == {"crm_recommendations", "outbox_recommendations"}

    second = materialize(lake, crm_url, selection=[CRM])
    crm = metadata(second, CRM)
    assert (crm["added"], crm["changed"], crm["removed"], crm["sent"]) == (0, 0, 0, 0)
    assert crm["state_diff_id"] == 1
    # what make demo prints of these two runs: counts only
    printed = syncs_summary(first, second, crm_url)
    assert printed[0] == (
        "the CRM's public.nba_recommendations holds 3 recommendations for 3 eligible persons of nba_current "
        "(6 decisions: 2 holdout or no_action or without a CRM contact, 1 held back by consent)"
    )
    assert printed[1].split() == ["sync", "run", "added", "changed", "removed", "sent", "failed"]
    assert printed[2].split()[:7] == ["crm_recommendations", "first", "3", "0", "0", "3", "0"]
    assert printed[4].split()[:7] == ["crm_recommendations", "again", "0", "0", "0", "0", "0"]
    assert not [line for line in printed if "d-" in line or "p1" in line]

    # the decisions are unchanged; contact 2 revokes the SMS consent after the decision: the next run clears
    # it
    write_consents(lake, {(2, "sms"): "revoked"}, datetime(2026, 11, 21, tzinfo=UTC))
    third = materialize(lake, crm_url, selection=[CRM])
    crm = metadata(third, CRM)
    assert (crm["added"], crm["changed"], crm["removed"], crm["cleared_by_consent"]) == (0, 0, 1, 1)
    assert crm["state_diff_id"] == 2 and crm["skipped_by_consent"] == 2
    assert set(crm_rows(crm_url)) == {1, 3}
    synced = pl.read_delta(state.uri(lake, "state", "crm_recommendations"))
    assert sorted(synced["contact_id"].to_list()) == [1, 3]


def test_a_sync_without_its_credentials_is_skipped_not_failed(lake, tmp_path, monkeypatch):
    syncs = tmp_path / "syncs"
    syncs.mkdir()
    shipped = load_syncs()["crm_recommendations"].path.read_text()
    (syncs / "partner_crm.yaml").write_text(
        shipped.replace("url_env: CRM_DATABASE_URL", "url_env: PARTNER_URL")
    )
    monkeypatch.setenv("ACTIVATION_SYNCS_DIR", str(syncs))
    monkeypatch.delenv("PARTNER_URL", raising=False)
    write_decisions(lake, [decision(1)])
    write_consents(lake, GRANTED, T0)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(lake, instance=instance)
    assert result.success
    assert result.get_asset_materialization_events() == []
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("partner_crm: skipped: ") and "PARTNER_URL is not set" in m for m in messages)
    assert state.runs(lake).is_empty()  # nothing ran, nothing was logged as failed
    assert load_sync(syncs / "partner_crm.yaml").destination.url_env == "PARTNER_URL"


def test_an_invalid_sync_file_leaves_out_its_own_sync_and_shows_why(tmp_path, monkeypatch, caplog):
    syncs = tmp_path / "syncs"
    syncs.mkdir()
    shutil.copy(load_syncs()["outbox_recommendations"].path, syncs)
    (syncs / "partner_crm.yaml").write_text(
        load_syncs()["crm_recommendations"].path.read_text().replace("mode: upsert", "mode: sometimes")
    )
    monkeypatch.setenv("ACTIVATION_SYNCS_DIR", str(syncs))
    resources = {"lake": LakeResource(), "crm": CrmResource()}
    graph = dg.Definitions(assets=sync_assets(), resources=resources).resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()} - {
        "ml/nba_decisions",
        "silver/crm/consents",
    }
    assert keys == {
        "activation/outbox_recommendations",
        "invalid_syncs/partner_crm",
    }  # beside the syncs' parents
    shown = graph.get(dg.AssetKey(["invalid_syncs", "partner_crm"])).description
    assert "partner_crm.yaml" in shown and "mode" in shown and "its sync is not loaded" in caplog.text


def test_a_sync_that_cannot_run_fails_at_once_without_the_retries(lake, tmp_path, monkeypatch):
    # an outbox shared by two lakes: the second lake's sync finds a checkpoint it has no record of
    syncs = tmp_path / "syncs"
    syncs.mkdir()
    shutil.copy(load_syncs()["outbox_recommendations"].path, syncs)
    monkeypatch.setenv("ACTIVATION_SYNCS_DIR", str(syncs))
    other = replace(lake, lake_root=str(tmp_path / "other-lake"))
    results = []
    for settings in (lake, other):
        write_decisions(settings, [decision(1)])
        write_consents(settings, GRANTED, T0)
        instance = dg.DagsterInstance.ephemeral()
        result = materialize(settings, instance=instance, raise_on_error=False)
        results.append((result, [e.dagster_event_type for e in instance.all_logs(result.run_id)]))
    assert results[0][0].success
    failed, events = results[1]
    assert not failed.success
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events  # SYNC_RETRY would have waited 15 s
    [failure] = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "keeps no record of it" in failure.event_specific_data.error.message


def test_erasure_clears_a_synced_person_at_the_crm_the_outbox_and_in_the_activation_zone(
    lake, crm_url, tmp_path
):
    write_decisions(lake, [decision(1), decision(2), decision(3, "free_shipping", "sms")])
    write_consents(lake, GRANTED, T0)
    write_identity(lake, [1, 2, 3])
    assert materialize(lake, crm_url).success
    assert set(crm_rows(crm_url)) == {1, 2, 3}
    assert scan_activation(lake)  # the scan finds the person before the erasure

    (report,) = erase(lake, [ErasureRequest("crm_contact_id", "2", "ticket-1")])

    assert set(crm_rows(crm_url)) == {1, 3}
    erased = {t.table: (t.action, t.rows) for t in report.tables}
    assert erased["postgres:crm/crm_recommendations"] == ("cleared", 1)
    assert erased["files:outbox/outbox_recommendations"] == ("cleared", 1)
    outbox_files = [t for t in report.tables if t.table == "outbox/outbox/outbox_recommendations"]
    assert outbox_files == [  # diff 1's upserts, as Parquet and as CSV: one row
        TableErasure("outbox/outbox/outbox_recommendations", "rewritten", 2),
        TableErasure("outbox/outbox/outbox_recommendations", "deleted", 1),
    ]
    assert erased["activation/state/crm_recommendations"] == ("deleted", 1)
    crm_state = pl.read_delta(state.uri(lake, "state", "crm_recommendations"))
    assert sorted(crm_state["contact_id"].to_list()) == [1, 3]
    assert state.runs(lake, "crm_recommendations")["status"].to_list() == ["succeeded", "erased"]
    # the outbox's earlier files no longer hold the person; the erasure's removals file tells the importer
    outbox = tmp_path / "outbox" / "outbox" / "outbox_recommendations"
    first = pl.read_parquet(outbox / "diff-00000001.upserts.parquet")
    assert sorted(first["contact_id"].to_list()) == [1, 3]
    assert pl.read_csv(outbox / "diff-00000001.upserts.csv")["contact_id"].sort().to_list() == [1, 3]
    assert pl.read_parquet(outbox / "diff-00000002.removals.parquet")["contact_id"].to_list() == [2]
    # no file of the activation zone (any table version, log or checkpoint) holds the person any more
    assert scan_activation(lake) == {}


def scan_activation(settings) -> dict[str, list[str]]:
    """Where contact 2 or its decision id appears in the files of the activation zone."""
    person = erasure_scan.PersonValues(strings={"d-2-discount_10"}, contact_ids={2})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(erasure_scan, "ZONES", ("activation",))
        return erasure_scan.scan_lake(Path(settings.lake_root), person)


def test_erasure_redacts_the_keys_a_failed_run_quotes_in_the_run_log(lake, crm_url):
    from activation.sync import SyncError, run_sync

    write_decisions(lake, [decision(1), decision(2), decision(2, "free_shipping"), decision(12)])
    write_consents(lake, GRANTED | {(12, "email"): "granted"}, T0)
    write_identity(lake, [1, 2, 12])
    with pytest.raises(SyncError, match=r"share a crm_contact_id \(e\.g\. \[2\]\)"):
        run_sync(load_syncs()["crm_recommendations"], lake)
    assert "[2]" in state.runs(lake)["error"][0]

    (report,) = erase(lake, [ErasureRequest("crm_contact_id", "2", "ticket-2")])

    (error,) = state.runs(lake)["error"].to_list()
    assert "[<erased>]" in error and not re.search(r"\b2\b", error)
    assert TableErasure("activation/sync_runs", "deidentified", 1) in report.tables


@pytest.fixture
def embedded_crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No ``CRM_DATABASE_URL``: the embedded CRM server, its data folder outside pytest's temporary root
    (``CRM_POSTGRES_DIR``), stopped and deleted after the test."""
    folder = Path(tempfile.mkdtemp(prefix="crm-embedded-test-"))
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    monkeypatch.setenv("CRM_POSTGRES_DIR", str(folder / "pgdata"))
    yield folder / "pgdata"
    stop(folder / "pgdata")
    shutil.rmtree(folder, ignore_errors=True)


def test_without_a_url_the_syncs_and_the_erasure_use_the_embedded_crm(lake, embedded_crm):
    write_decisions(lake, [decision(1), decision(2)])
    write_consents(lake, GRANTED, T0)
    write_identity(lake, [1, 2])
    assert materialize(lake, None, selection=[CRM]).success  # CrmResource() without a URL
    url = crm_database_url(lake)
    assert f"host={embedded_crm}" in url and set(crm_rows(url)) == {1, 2}

    erase(lake, [ErasureRequest("crm_contact_id", "1", "ticket-3")])
    assert set(crm_rows(url)) == {2}
