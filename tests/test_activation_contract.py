"""The outbound data contracts (activation/contracts, ODCS v3 read by data_contracts): every shipped sync
names one that agrees with its fields and holds no personal data, the per-record rules (required, types,
accepted actions and channels) find exactly the rows that break them, a contract that disagrees with its
sync stops it, and a row that breaks the contract is not written to the destination but logged as a failure
and sent once fixed (files destination, real Delta tables)."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from activation import state
from activation.config import load_sync, load_syncs
from activation.contract import ContractMismatch, load_outbound, violations
from data_contracts import lint
from lake.settings import REPO_ROOT
from tests.test_activation_sync import GRANTED, decision, lake, write_consents, write_decisions  # noqa: F401

SHIPPED = REPO_ROOT / "activation" / "contracts"


def test_every_shipped_sync_names_an_outbound_contract_that_agrees_with_it():
    syncs = load_syncs(REPO_ROOT / "activation" / "syncs")
    assert {s.contract for s in syncs.values()} == {
        p.name.removesuffix(".odcs.yaml") for p in SHIPPED.iterdir()
    }
    for config in syncs.values():
        contract = load_outbound(config)
        assert contract.feed == "outbound" and not contract.pii_columns
        assert [c.name for c in contract.columns] == list(config.fields)
        assert contract.primary_key == (config.key_column,)
        assert lint(contract.path) == []
        accepted = {r.column: set(r.accepted_values) for r in contract.quality if r.accepted_values}
        action = next(c for c, s in config.fields.items() if s == "action")
        assert accepted[action] == {"discount_10", "free_shipping", "cart_reminder", "loyalty_offer"}


def test_the_per_record_rules_find_exactly_the_rows_that_break_them():
    config = load_sync(REPO_ROOT / "activation" / "syncs" / "crm_recommendations.yaml")
    contract = load_outbound(config)
    good = {
        "contact_id": 1,
        "decision_id": "d-1",
        "decision_date": date(2026, 11, 20),
        "action": "discount_10",
        "channel": "email",
        "expected_value": 2.5,
        "model_version": "3",
        "policy_version": "pv-1",
    }
    rows = [
        good,
        good | {"contact_id": 2, "action": "no_action"},  # not an action: never sent
        good | {"contact_id": 3, "channel": "fax"},
        good | {"contact_id": 4, "decision_id": None},
        good | {"contact_id": 5, "expected_value": None, "model_version": None},  # optional fields
        good | {"contact_id": 6, "policy_version": None},
    ]
    found = violations(contract, pl.DataFrame(rows), "contact_id")
    assert found == {
        "2": "field action has value 'no_action' not in accepted values",
        "3": "field channel has value 'fax' not in accepted values",
        "4": "required field decision_id is null",
        "6": "required field policy_version is null",
    }
    typed = pl.DataFrame([good]).with_columns(
        pl.lit("2.5").alias("expected_value")
    )  # text where a number is due
    assert violations(contract, typed, "contact_id") == {
        "1": "field expected_value has JSON type VARCHAR, expected DOUBLE|BIGINT|UBIGINT"
    }


def disagreeing(tmp_path: Path, old: str, new: str) -> str:
    """The shipped crm_recommendations contract with ``old`` replaced by ``new``, in a contracts folder of its
    own; the folder."""
    folder = tmp_path / "contracts"
    folder.mkdir(exist_ok=True)
    text = (SHIPPED / "crm_recommendations.odcs.yaml").read_text()
    assert old in text
    (folder / "crm_recommendations.odcs.yaml").write_text(text.replace(old, new, 1))
    return str(folder)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("value: outbound", "value: events", "customProperties.feed is 'events', not 'outbound'"),
        (
            "        classification: internal\n        description: The decision that chose",
            "        classification: restricted\n        customProperties:\n          - property: pii\n"
            "            value: email\n        description: The decision that chose",
            "personal data (decision_id) is never sent",
        ),
        (
            "- name: model_version",
            "- name: model_name",
            "only in the contract: ['model_name'], only in the sync",
        ),
        (
            "        primaryKey: true\n        primaryKeyPosition: 1\n        unique: true\n",
            "",
            "primary key []",
        ),
    ],
    ids=["not-outbound", "personal-data", "other-fields", "no-key"],
)
def test_a_contract_that_disagrees_with_its_sync_stops_it(tmp_path, monkeypatch, old, new, problem):
    monkeypatch.setenv("ACTIVATION_CONTRACTS_DIR", disagreeing(tmp_path, old, new))
    config = load_sync(REPO_ROOT / "activation" / "syncs" / "crm_recommendations.yaml")
    with pytest.raises(ContractMismatch, match=re.escape(problem)):
        load_outbound(config)


def test_a_row_that_breaks_the_contract_is_not_written_and_is_sent_once_fixed(lake):  # noqa: F811
    from activation.sync import outbox_dir, run_sync

    path = Path(os.environ["ACTIVATION_SYNCS_DIR"]) / "outbox_recommendations.yaml"
    path.write_text((REPO_ROOT / "activation" / "syncs" / "outbox_recommendations.yaml").read_text())
    config = load_sync(path)
    write_decisions(lake, [decision(1), decision(2, "free_shipping", "sms"), decision(3, "call_back")])
    write_consents(lake, GRANTED)

    first = run_sync(config, lake)
    assert (first["added"], first["sent"], first["failed"], first["refused_by_contract"]) == (3, 2, 1, 1)
    assert first["status"] == "partial"
    outbox = outbox_dir(lake) / "outbox" / "outbox_recommendations"
    written = pl.read_parquet(outbox / "diff-00000001.upserts.parquet")
    assert sorted(written["contact_id"]) == [1, 2]
    failed = state.failures(lake, "outbox_recommendations")
    assert failed.select("key", "op").rows() == [("3", "upsert")]
    assert failed["reason"][0] == (
        "outbound contract outbox_recommendations: field action has value 'call_back' not in accepted values"
    )
    assert sorted(
        state.read_state(lake, "outbox_recommendations", {"contact_id": pl.Int64})["contact_id"]
    ) == [1, 2]

    write_decisions(lake, [decision(1), decision(2, "free_shipping", "sms"), decision(3, "cart_reminder")])
    second = run_sync(config, lake)
    assert (second["added"], second["sent"], second["failed"], second["retried"]) == (1, 1, 0, 1)
    assert pl.read_parquet(outbox / "diff-00000002.upserts.parquet")["contact_id"].to_list() == [3]
