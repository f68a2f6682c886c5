"""The ground truth covers every identifier in the feeds, and the identity traps are present at their
rates."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

from simulator import SimulationConfig, generate
from simulator.catalog import ACTIONS, PLACEHOLDER_EMAILS
from tests.conftest import Simulated, read_lines


def _cdc_values(simulated: Simulated, topic: str) -> list[dict]:
    rows = []
    for path in sorted((simulated.landing / "cdc" / topic).iterdir()):
        for line in read_lines(path):
            value = json.loads(line)
            if value is not None:
                value = value.get("payload", value)
                rows.append(value["after"] or value["before"])
    return rows


def _click_ids(simulated: Simulated) -> dict[str, set[str]]:
    ids = defaultdict(set)
    for path in (simulated.landing / "clickstream").rglob("*.jsonl.gz"):
        for line in read_lines(path):
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            for field, kind in (
                ("anonymousId", "anonymous_id"),
                ("previousId", "anonymous_id"),
                ("userId", "app_user_id"),
            ):
                if m.get(field):
                    ids[kind].add(m[field])
    return ids


def test_truth_covers_every_identifier_in_the_files(simulated: Simulated) -> None:
    truth = simulated.identifiers()
    known = {k: set(g["identifier"]) for (k,), g in truth.group_by("identifier_type")}
    contacts = {str(r["contact_id"]) for r in _cdc_values(simulated, "crm.public.contacts")}
    customers = {str(r["customer_id"]) for r in _cdc_values(simulated, "shop.shop.customers")}
    order_customers = {
        str(r["customer_id"]) for r in _cdc_values(simulated, "shop.shop.orders") if r.get("customer_id")
    }
    assert contacts and contacts <= known["crm_contact_id"]
    assert customers and customers <= known["shop_customer_id"] and order_customers <= customers
    for kind, values in _click_ids(simulated).items():
        assert values and values <= known[kind], kind


def test_identified_users_and_emails_agree_with_the_truth(simulated: Simulated) -> None:
    truth = simulated.identifiers()
    person_of = {(r["identifier_type"], r["identifier"]): r["person_id"] for r in truth.iter_rows(named=True)}
    checked = 0
    for path in (simulated.landing / "clickstream").rglob("*.jsonl.gz"):
        for line in read_lines(path):
            if '"type":"identify"' not in line:
                continue
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue  # a deliberately truncated line
            if not m.get("userId"):
                continue  # a message deliberately missing its identities
            email = m["traits"]["email"].strip().lower()
            assert person_of[("app_user_id", m["userId"])] == person_of[("email", email)]
            checked += 1
    assert checked > 100


def test_duplicate_contacts_and_placeholder_emails(simulated: Simulated) -> None:
    contacts = {
        r["contact_id"]: r["email"] for r in _cdc_values(simulated, "crm.public.contacts") if r.get("email")
    }
    by_normalised = defaultdict(set)
    for contact_id, email in contacts.items():
        by_normalised[email.strip().lower()].add(contact_id)
    placeholder = sum(len(v) for k, v in by_normalised.items() if k in PLACEHOLDER_EMAILS)
    duplicated = [v for k, v in by_normalised.items() if len(v) == 2 and k not in PLACEHOLDER_EMAILS]
    variants = [v for v in duplicated if len({contacts[c] for c in v}) == 2]
    faults = simulated.config.faults
    n = len(contacts)
    assert (
        placeholder > 0
        and abs(placeholder - n * faults.placeholder_email) < 5 * math.sqrt(n * faults.placeholder_email) + 1
    )
    assert variants, "a second contact's e-mail differs only in case or white space"
    crm_persons = simulated.manifest["faults"]["crm_persons"]
    expected = crm_persons * faults.duplicate_contact
    assert abs(len(duplicated) - expected) < 5 * math.sqrt(expected) + 10


def test_response_model_has_realistic_heterogeneous_effects(simulated: Simulated) -> None:
    persons = pl.read_parquet(simulated.truth / "persons.parquet")
    responses = pl.read_parquet(simulated.truth / "responses.parquet")
    assert persons.height == simulated.config.persons
    assert set(responses["action"]) == set(ACTIONS) and responses.height == persons.height * len(ACTIONS)
    assert 0.01 < persons["base_weekly"].mean() < 0.06, "weekly purchase rates of a few percent"
    effects = responses.filter(pl.col("action") != "no_action")
    assert effects["weekly_purchase_uplift"].abs().max() < 0.06
    assert 0.001 < effects["weekly_purchase_uplift"].abs().mean() < 0.03
    for action in ("discount_10", "loyalty_offer", "cart_reminder"):
        uplift = effects.filter(pl.col("action") == action)["weekly_purchase_uplift"]
        assert (uplift > 0.002).sum() > 0 and (uplift < -0.002).sum() > 0, (
            f"{action} helps some and hurts others"
        )
    assert responses.filter(pl.col("action") == "no_action")["weekly_purchase_uplift"].abs().max() == 0


def test_exploration_campaign_logs_action_channel_and_probability(simulated: Simulated) -> None:
    touches = [
        r for r in _cdc_values(simulated, "crm.public.activities") if r["campaign_id"].startswith("explore-")
    ]
    assert len({t["action"] for t in touches}) == len(ACTIONS)
    for t in touches:
        assert 0 < t["propensity"] <= 1
        assert (t["channel"] is None) == (t["action"] == "no_action")


def test_same_seed_same_bytes_and_other_seed_other_bytes(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    config = SimulationConfig(persons=400, days=3, history_days=3, seed=5)
    generate(config, tmp_path / "a" / "landing", tmp_path / "a" / "truth", progress=False)
    generate(config, tmp_path / "b" / "landing", tmp_path / "b" / "truth", progress=False)
    first, second = files(tmp_path / "a"), files(tmp_path / "b")
    assert len(first) > 50 and first == second
    generate(
        SimulationConfig(persons=400, days=3, history_days=3, seed=6),
        tmp_path / "c" / "landing",
        progress=False,
    )
    other = files(tmp_path / "c")
    assert any(first[k] != other[k] for k in set(first) & set(other) if k.startswith("landing"))


def test_command_line_writes_and_refuses_to_overwrite_by_accident(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "simulator",
        "generate",
        "--out",
        str(tmp_path / "landing"),
        "--truth",
        str(tmp_path / "truth"),
        "--persons",
        "200",
        "--days",
        "2",
        "--seed",
        "3",
        "--no-progress",
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "events/s" in done.stdout and (tmp_path / "truth" / "manifest.json").exists()
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr
    subprocess.run([*args, "--overwrite"], capture_output=True, text=True, check=True)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="persons"):
        SimulationConfig(persons=1)
    with pytest.raises(ValueError, match="click_malformed"):
        from simulator import FaultRates

        FaultRates(click_malformed=1.5)
