"""The batch scorer on real Delta tables and a real MLflow registry (SQLite under tmp_path): hand-made gold
features and identity map, silver CRM consents, contacts and activities, a suppression list, and pyfunc models
whose outputs the test sets."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import scoring_models
import yaml
from conftest import lake_settings
from deltalake import write_deltalake
from mlflow.models import infer_signature
from scoring_models import Uplift

from lake import suppression
from lake.gold import gold_uri
from lake.settings import REPO_ROOT
from ml.policy import NO_ACTION, ModelRef, load_policy
from ml.scoring import (
    ScoringError,
    _first_per_person,
    _identity,
    erased_among,
    main,
    score_and_decide,
    score_frame,
)
from ml.settings import DEFAULT_POLICY_FILE, MlSettings, get_ml_settings

D1, D2 = date(2026, 9, 9), date(2026, 9, 10)
MODEL = "nba_uplift"
FILLERS = [f"p{i:02d}" for i in range(12, 40)]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


ACTIONS = ("no_action", "discount_10", "free_shipping", "cart_reminder", "loyalty_offer")
CHAMPION_UPLIFT = dict(zip(ACTIONS, (0.0, 3.0, 2.0, 1.0, 0.5), strict=True))
CHALLENGER_UPLIFT = dict(zip(ACTIONS, (0.0, 0.5, 1.0, 1.5, 4.0), strict=True))


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict[str, str]:
    """A registry with four versions: 1 the champion kind, 2 the challenger kind, 3 failing, 4 needing a
    feature the table lacks; the tracking URI under ``uri``."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("scoring-test", artifact_location=(root / "artifacts").as_uri())
    example = pd.DataFrame(
        {"order_count": [1.0, 2.0], "monetary_value": [10.0, 20.5], "top_category": ["shoes", "toys"]}
    )
    models = [
        (Uplift(CHAMPION_UPLIFT), example),
        (Uplift(CHALLENGER_UPLIFT), example),
        (Uplift(CHAMPION_UPLIFT, fail=True), example),
        (Uplift(CHAMPION_UPLIFT), example.assign(tenure_days=[3.0, 4.0])),
    ]
    for model, frame in models:
        output = Uplift(CHAMPION_UPLIFT).predict(None, frame)
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                signature=infer_signature(frame, output),
                pip_requirements=["mlflow"],
                code_paths=[str(Path(scoring_models.__file__))],
                registered_model_name=MODEL,
            )
    return {"uri": uri}


def set_aliases(registry: dict[str, str], **aliases: int) -> None:
    """Point exactly the given aliases (champion=1, challenger=2, ...) at their versions."""
    client = mlflow.MlflowClient(tracking_uri=registry["uri"], registry_uri=registry["uri"])
    for alias in ("champion", "challenger"):
        if alias in aliases:
            client.set_registered_model_alias(MODEL, alias, str(aliases[alias]))
        else:
            client.delete_registered_model_alias(MODEL, alias)


def write(uri: str, rows: list[dict], schema: pa.Schema) -> None:
    write_deltalake(uri, pa.Table.from_pylist(rows, schema=schema), mode="overwrite")


FEATURE_SCHEMA = pa.schema(
    [
        ("snapshot_date", pa.date32()),
        ("person_id", pa.string()),
        ("days_since_last_order", pa.int64()),
        ("order_count", pa.int64()),
        ("monetary_value", pa.decimal128(18, 2)),
        ("days_since_cart_abandoned", pa.int64()),
        ("top_category", pa.string()),
        ("has_email_consent", pa.bool_()),
        ("has_sms_consent", pa.bool_()),
        ("has_push_consent", pa.bool_()),
        ("has_profiling_consent", pa.bool_()),
    ]
)


def person(
    pid: str, email=False, sms=False, push=False, profiling=True, last_order=None, abandoned=None
) -> dict:
    return {
        "person_id": pid,
        "days_since_last_order": last_order,
        "order_count": 2,
        "monetary_value": Decimal("40.50"),
        "days_since_cart_abandoned": abandoned,
        "top_category": "shoes",
        "has_email_consent": email,
        "has_sms_consent": sms,
        "has_push_consent": push,
        "has_profiling_consent": profiling,
    }


PERSONS = [
    person("p01", email=True),  # two contacts hold e-mail consent: the latest granted (102) is the address
    person("p02", sms=True),
    person("p03", push=True),
    person("p04", push=True),  # no app user
    person("p05"),  # no consent at all
    person("p06", email=True),  # erased (person id on the suppression list)
    person("p07", email=True, profiling=False),  # objected to profiling
    person("p08", email=True),  # two CRM touches in the window, and the policy's own decision of D1
    person("p09", email=True, last_order=2),  # a recent purchaser
    person("p10", email=True),  # its only contact was deleted
    person("p11", email=True),  # erased through its CRM contact
    *[person(pid, email=True, abandoned=1) for pid in FILLERS],
]


@pytest.fixture
def lake(tmp_path: Path):
    """A lake with features for D1 and D2, the identity map, CRM silver tables and a suppression list."""
    settings = lake_settings(tmp_path / "lake")
    rows = [{**p, "snapshot_date": day} for day in (D1, D2) for p in PERSONS]
    write(gold_uri(settings, "person_features_daily"), rows, FEATURE_SCHEMA)
    linked = utc(2026, 8, 1)
    contacts = {"p01": [101, 102], "p02": [201], "p06": [601], "p07": [701], "p08": [801], "p09": [901]}
    contacts |= {"p10": [1001], "p11": [1101], **{pid: [int(pid[1:]) * 100 + 1] for pid in FILLERS}}
    identity = [
        {"identifier_type": "crm_contact_id", "identifier": str(c), "person_id": p, "linked_at": linked}
        for p, cs in contacts.items()
        for c in cs
    ]
    identity += [
        {"identifier_type": "app_user_id", "identifier": "usr_3", "person_id": "p03", "linked_at": linked},
        # linked after the decision instant: not the person's app user yet
        {
            "identifier_type": "app_user_id",
            "identifier": "usr_late",
            "person_id": "p04",
            "linked_at": utc(2026, 9, 10, 8),
        },
    ]
    write(
        gold_uri(settings, "identity_person_map"),
        identity,
        pa.schema(
            [
                ("identifier_type", pa.string()),
                ("identifier", pa.string()),
                ("person_id", pa.string()),
                ("linked_at", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    silver = f"{settings.zone('silver')}/crm"
    history = [
        ("_op", pa.string()),
        ("_valid_from", pa.timestamp("us", tz="UTC")),
        ("_valid_to", pa.timestamp("us", tz="UTC")),
    ]
    consent = []
    for p, cs in contacts.items():
        for c in cs:
            channel = "sms" if p == "p02" else "email"
            updated = utc(2026, 9, 5) if c == 102 else utc(2026, 9, 1)
            consent.append(
                {
                    "contact_id": c,
                    "channel": channel,
                    "status": "granted",
                    "updated_at": updated,
                    "_op": "r",
                    "_valid_from": updated,
                    "_valid_to": None,
                }
            )
    # contact 101 revoked its e-mail consent once, then granted it again before 102 did
    consent.append(
        {
            "contact_id": 101,
            "channel": "email",
            "status": "revoked",
            "updated_at": utc(2026, 8, 20),
            "_op": "r",
            "_valid_from": utc(2026, 8, 20),
            "_valid_to": utc(2026, 9, 1),
        }
    )
    write(
        f"{silver}/consents_history",
        consent,
        pa.schema(
            [
                ("contact_id", pa.int64()),
                ("channel", pa.string()),
                ("status", pa.string()),
                ("updated_at", pa.timestamp("us", tz="UTC")),
                *history,
            ]
        ),
    )
    alive = [
        {
            "contact_id": c,
            "_op": "r",
            "_valid_from": utc(2026, 8, 1),
            "_valid_to": utc(2026, 9, 5) if c == 1001 else None,
        }
        for cs in contacts.values()
        for c in cs
    ]
    alive.append({"contact_id": 1001, "_op": "d", "_valid_from": utc(2026, 9, 5), "_valid_to": None})
    write(f"{silver}/contacts_history", alive, pa.schema([("contact_id", pa.int64()), *history]))
    touches = [
        (801, "campaign_touch", "email", utc(2026, 9, 7, 10)),
        (801, "campaign_touch", "sms", utc(2026, 9, 6, 10)),
        (801, "campaign_touch", "sms", utc(2026, 9, 6, 11)),  # the same day and channel: one touch
        (801, "control", None, utc(2026, 9, 8, 10)),  # a control assignment is no touch
        (801, "campaign_touch", "email", utc(2026, 8, 20, 10)),  # before the window
        (1201, "campaign_touch", "email", utc(2026, 9, 10, 1)),  # after the decision instant of D2
    ]
    write(
        f"{silver}/activities",
        [{"contact_id": c, "activity_type": t, "channel": ch, "sent_at": at} for c, t, ch, at in touches],
        pa.schema(
            [
                ("contact_id", pa.int64()),
                ("activity_type", pa.string()),
                ("channel", pa.string()),
                ("sent_at", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    suppression.add(settings, [("person_id", "p06"), ("crm_contact_id", "1101")], "erasure-test")
    return settings


def ml_settings(
    registry: dict[str, str], tmp_path: Path, chunk_rows: int = 10, **policy_changes
) -> MlSettings:
    """Settings over the test registry; a policy without holdout and exploration unless ``policy_changes``."""
    raw = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    raw["holdout"]["share"] = raw["exploration"]["share"] = raw["canary"]["share"] = 0.0
    for key, value in policy_changes.items():
        section, name = key.split("__")
        raw[section][name] = value
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return MlSettings(
        tracking_uri=registry["uri"], model_name=MODEL, policy_file=path, scoring_chunk_rows=chunk_rows
    )


def read(settings, table: str) -> pl.DataFrame:
    return pl.read_delta(gold_uri(settings, table))


def rows_by_person(frame: pl.DataFrame) -> dict[str, dict]:
    return {r["person_id"]: r for r in frame.iter_rows(named=True)}


def test_champion_decisions_honour_consent_caps_and_suppression(lake, registry, tmp_path):
    set_aliases(registry, champion=1)
    ml = ml_settings(registry, tmp_path)
    first = score_and_decide(D1, lake, ml)
    report = score_and_decide(D2, lake, ml)
    assert (report.decided_by, report.model_version, report.fallback_reason) == ("champion", "1", None)
    assert (report.excluded_erased, report.excluded_profiling_objection) == (2, 1)
    decisions = read(lake, "nba_decisions")
    today = rows_by_person(decisions.filter(pl.col("decision_date") == D2))
    # erased and objecting persons are not scored at all; everyone else once
    assert set(today) == {p["person_id"] for p in PERSONS} - {"p06", "p07", "p11"}
    assert report.persons == first.persons == len(today)
    assert decisions.group_by("decision_date", "person_id").len()["len"].max() == 1
    # no action on a channel without consent as of the decision date
    consents = {p["person_id"]: p for p in PERSONS}
    for pid, row in today.items():
        if row["channel"] is not None:
            assert consents[pid][f"has_{row['channel']}_consent"], pid
    assert (today["p01"]["action"], today["p01"]["channel"], today["p01"]["crm_contact_id"]) == (
        "discount_10",
        "email",
        102,
    )
    assert (today["p02"]["channel"], today["p02"]["crm_contact_id"]) == ("sms", 201)
    assert (today["p03"]["channel"], today["p03"]["app_user_id"], today["p03"]["crm_contact_id"]) == (
        "push",
        "usr_3",
        None,
    )
    for pid in ("p04", "p05", "p10"):
        assert today[pid]["action"] == NO_ACTION, pid
    assert {s["reason"] for s in today["p04"]["action_scores"][1:]} == {"no_address"}
    assert {s["reason"] for s in today["p05"]["action_scores"][1:]} == {"no_consent"}
    assert {s["reason"] for s in today["p10"]["action_scores"][1:]} == {"no_address"}
    # p08: an e-mail and an SMS day from the CRM, then the policy's own e-mail of D1: the cap (3) is reached
    # on D2
    assert rows_by_person(decisions.filter(pl.col("decision_date") == D1))["p08"]["action"] == "discount_10"
    assert today["p08"]["action"] == NO_ACTION
    assert {s["reason"] for s in today["p08"]["action_scores"][1:]} == {"frequency_cap"}
    # a recent purchaser gets no discount, but the next-best action
    assert today["p09"]["action"] == "free_shipping"
    assert today["p09"]["action_scores"][1]["reason"] == "recent_purchaser"
    value = CHAMPION_UPLIFT["discount_10"] - load_policy(ml.policy_file).message_cost["email"]
    assert today["p01"]["expected_value"] == pytest.approx(value)
    assert {r["decided_by"] for r in today.values()} == {"champion"}
    assert {r["model_version"] for r in today.values()} == {"1"}
    assert today["p01"]["as_of"] == utc(2026, 9, 10)
    assert report.decisions["discount_10/email"] == sum(
        1 for r in today.values() if (r["action"], r["channel"]) == ("discount_10", "email")
    )
    assert report.expected_value_total == pytest.approx(sum(r["expected_value"] for r in today.values()))


def test_erased_among_finds_persons_by_person_id_crm_contact_and_app_user(lake):
    persons = pl.Series("person_id", [p["person_id"] for p in PERSONS])
    identity = _identity(lake, utc(2026, 9, 10))
    secret = lake.pii_secret

    def erased(suppressed: set[str]) -> list[str]:
        return sorted(erased_among(persons, identity, suppressed, secret).to_list())

    assert erased(suppression.suppressed(lake)) == ["p06", "p11"]
    suppression.add(lake, [("app_user_id", "usr_3")], "erasure-of-an-app-user")
    assert erased(suppression.suppressed(lake)) == ["p03", "p06", "p11"]
    assert erased(set()) == []
    # a person not among ``person_ids`` is not returned, even when erased
    assert erased_among(
        persons.filter(persons != "p06"), identity, suppression.suppressed(lake), secret
    ).sort().to_list() == ["p03", "p11"]


def test_the_address_is_the_latest_then_the_lowest_per_person():
    rows = pl.DataFrame(
        {
            "person_id": ["p1", "p1", "p1", "p2", "p3", "p3"],
            "contact_id": [5, 3, 9, 7, 4, 8],
            "updated_at": [
                utc(2026, 9, 2),
                utc(2026, 9, 2),
                utc(2026, 9, 1),
                utc(2026, 8, 1),
                None,
                utc(2026, 9, 1),
            ],
        }
    )
    chosen = _first_per_person(rows, "contact_id", "updated_at").sort("person_id")
    assert chosen.rows() == [("p1", 3), ("p2", 7), ("p3", 8)]


def test_a_rerun_replaces_the_date_with_the_same_decisions(lake, registry, tmp_path):
    set_aliases(registry, champion=1)
    ml = ml_settings(registry, tmp_path, holdout__share=0.3, exploration__share=0.3)
    score_and_decide(D1, lake, ml)
    score_and_decide(D2, lake, ml)
    before = read(lake, "nba_decisions").sort("decision_date", "person_id")
    score_and_decide(D2, lake, ml)
    score_and_decide(D1, lake, ml)
    after = read(lake, "nba_decisions").sort("decision_date", "person_id")
    assert after.height == before.height
    assert after.drop("decided_at").equals(before.drop("decided_at"))
    assert after["is_holdout"].any() and after["is_exploration"].any()
    # the current decision of every person is the latest date's, whatever date ran last
    current = read(lake, "nba_current").sort("person_id")
    assert set(current["decision_date"]) == {D2}
    assert current.drop("decided_at").equals(after.filter(pl.col("decision_date") == D2).drop("decided_at"))


def test_chunks_do_not_change_the_decisions(lake, registry, tmp_path):
    set_aliases(registry, champion=1)
    score_and_decide(D2, lake, ml_settings(registry, tmp_path, chunk_rows=3, exploration__share=0.5))
    small = read(lake, "nba_decisions").sort("person_id").drop("decided_at")
    score_and_decide(D2, lake, ml_settings(registry, tmp_path, chunk_rows=1000, exploration__share=0.5))
    assert read(lake, "nba_decisions").sort("person_id").drop("decided_at").equals(small)


def test_without_a_champion_the_fallback_policy_decides(lake, registry, tmp_path):
    set_aliases(registry)
    report = score_and_decide(D2, lake, ml_settings(registry, tmp_path))
    assert (report.decided_by, report.fallback_reason, report.model_version) == (
        "fallback",
        "no_champion",
        None,
    )
    today = rows_by_person(read(lake, "nba_decisions"))
    assert {r["decided_by"] for r in today.values()} == {"fallback"}
    assert {r["model_version"] for r in today.values()} == {None}
    assert all(r["reason"].startswith("fallback:no_champion;") for r in today.values())
    # the rule: a cart abandoned within 3 days gets a cart reminder, through the consented channel
    assert {today[p]["action"] for p in FILLERS} == {"cart_reminder"}
    assert today["p05"]["action"] == NO_ACTION
    assert "p06" not in today and "p07" not in today


@pytest.mark.parametrize(("version", "reason"), [(3, "champion_scoring_failed"), (4, "features_missing")])
def test_an_unusable_champion_hands_over_to_the_fallback(lake, registry, tmp_path, version, reason):
    set_aliases(registry, champion=version)
    report = score_and_decide(D2, lake, ml_settings(registry, tmp_path))
    assert (report.decided_by, report.fallback_reason) == ("fallback", reason)
    decisions = read(lake, "nba_decisions")
    assert set(decisions["decided_by"]) == {"fallback"}
    assert decisions["reason"].str.starts_with(f"fallback:{reason};").all()


def test_the_challenger_scores_into_the_shadow_table_and_serves_the_canary(lake, registry, tmp_path):
    set_aliases(registry, champion=1, challenger=2)
    ml = ml_settings(registry, tmp_path, canary__share=0.3)
    report = score_and_decide(D2, lake, ml)
    assert (report.model_version, report.challenger_version) == ("1", "2")
    decisions = read(lake, "nba_decisions")
    shadow = read(lake, "nba_shadow_decisions")
    assert report.shadow_rows == shadow.height == decisions.height
    assert set(shadow["person_id"]) == set(decisions["person_id"])
    assert set(shadow["decided_by"]) == {"challenger"} and set(shadow["model_version"]) == {"2"}
    assert not shadow["is_canary"].any()
    acting = shadow.filter(pl.col("action") != NO_ACTION)
    assert set(acting["action"]) == {"loyalty_offer"}
    # the decisions sent are the champion's, but for the canary share that the challenger serves
    canary = decisions.filter("is_canary")
    assert 0 < canary.height < decisions.height
    assert set(canary["decided_by"]) == {"challenger"}
    assert set(decisions.filter(~pl.col("is_canary"))["decided_by"]) == {"champion"}
    assert set(decisions.filter(~pl.col("is_canary") & (pl.col("action") != NO_ACTION))["action"]) <= {
        "discount_10",
        "free_shipping",
    }
    # without a challenger, a re-run of the date leaves no shadow decisions for it
    set_aliases(registry, champion=1)
    assert score_and_decide(D2, lake, ml).shadow_rows == 0
    assert read(lake, "nba_shadow_decisions").height == 0
    assert not read(lake, "nba_decisions")["is_canary"].any()


def test_scoring_refuses_without_features_or_the_profiling_consent(lake, registry, tmp_path):
    set_aliases(registry, champion=1)
    ml = ml_settings(registry, tmp_path)
    with pytest.raises(ScoringError, match="no rows for 2026-09-20"):
        score_and_decide(date(2026, 9, 20), lake, ml)
    features = pl.read_delta(gold_uri(lake, "person_features_daily")).drop("has_profiling_consent")
    features.write_delta(
        gold_uri(lake, "person_features_daily"),
        mode="overwrite",
        delta_write_options={"schema_mode": "overwrite"},
    )
    with pytest.raises(ScoringError, match="has_profiling_consent"):
        score_and_decide(D2, lake, ml)


def test_the_cli_decides_for_the_latest_snapshot_date(lake, registry, tmp_path, monkeypatch, capsys):
    set_aliases(registry, champion=1)
    ml = ml_settings(registry, tmp_path)
    monkeypatch.setenv("LAKE_ROOT", lake.lake_root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    monkeypatch.setenv("NBA_POLICY_FILE", str(ml.policy_file))
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "2026-09-10" in out and "champion nba_uplift v1" in out
    assert set(read(lake, "nba_decisions")["decision_date"]) == {D2}
    assert "p0" not in out  # no person ids in the report


def test_the_command_flushes_its_report_and_exits_with_the_batchs_status(lake, registry, tmp_path):
    """``python -m ml.score`` ends without the interpreter's teardown: its piped output must still be whole,
    and its exit status the batch's."""
    set_aliases(registry, champion=1)
    env = {
        **os.environ,
        "LAKE_ROOT": lake.lake_root,
        "MLFLOW_TRACKING_URI": registry["uri"],
        "NBA_POLICY_FILE": str(ml_settings(registry, tmp_path).policy_file),
    }
    env.pop("PYTHONUNBUFFERED", None)  # piped output block-buffered, as it is by default
    command = [sys.executable, "-m", "ml.score", "--json"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["decision_date"] == D2.isoformat() and report["persons"] == read(lake, "nba_current").height
    refused = subprocess.run(
        [*command, "--date", "2026-09-20"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and refused.stdout == ""
    assert "no rows for 2026-09-20" in refused.stderr


class CountingModel:
    """A loaded pyfunc that counts its calls."""

    def __init__(self, model):
        self.model, self.metadata, self.calls = model, model.metadata, 0

    def predict(self, frame):
        self.calls += 1
        return self.model.predict(frame)


def test_score_frame_scores_an_in_memory_frame_one_call_per_chunk(registry, tmp_path):
    model = CountingModel(mlflow.pyfunc.load_model(f"models:/{MODEL}/1"))
    policy = load_policy(ml_settings(registry, tmp_path).policy_file)
    n = 2500
    features = pl.DataFrame(
        {
            "person_id": [f"q{i:05d}" for i in range(n)],
            "order_count": [i % 7 for i in range(n)],
            "monetary_value": [float(i) for i in range(n)],
            "top_category": ["shoes"] * n,
            "has_email_consent": [True] * n,
            "has_sms_consent": [False] * n,
            "has_push_consent": [False] * n,
            "address__email": list(range(n)),
            "address__sms": pl.Series([None] * n, dtype=pl.Int64),
            "address__push": pl.Series([None] * n, dtype=pl.String),
            "days_since_last_order": pl.Series([None] * n, dtype=pl.Int64),
        }
    )
    decided = score_frame(features, model, policy, D2, ModelRef(MODEL, "1"), chunk_rows=1000)
    assert model.calls == math.ceil(n / 1000)
    assert decided["person_id"].n_unique() == n
    assert set(decided["action"]) == {"discount_10"}
    revenue = decided.row(6, named=True)["action_scores"][0]["expected_revenue"]
    assert revenue == pytest.approx(10.0 + 6 / 10)


def test_report_holds_no_personal_data(lake, registry, tmp_path):
    set_aliases(registry, champion=1)
    report = score_and_decide(D2, lake, ml_settings(registry, tmp_path))
    text = repr(report) + report.summary()
    assert not any(pid in text for pid in ("p01", "p02", "usr_3", "102"))


@pytest.mark.slow
def test_scoring_the_test_company(gold_lake, registry, tmp_path):
    """The whole path on the lake the project builds (ingestion, dbt, gold): the champion decides for the
    latest snapshot date, then a re-run of that date by the fallback replaces it."""
    settings = replace(gold_lake, lake_root=str(tmp_path / "lake"))
    shutil.copytree(gold_lake.lake_root, settings.lake_root, symlinks=True)
    set_aliases(registry, champion=1)
    ml = replace(ml_settings(registry, tmp_path), policy_file=DEFAULT_POLICY_FILE, scoring_chunk_rows=500)
    report = score_and_decide(None, settings, ml)
    features = read(settings, "person_features_daily").filter(
        pl.col("snapshot_date") == date.fromisoformat(report.decision_date)
    )
    decisions = read(settings, "nba_decisions")
    assert report.decided_by == "champion"
    assert decisions.height == report.persons == features.filter("has_profiling_consent").height
    assert decisions["person_id"].n_unique() == decisions.height
    assert ((decisions["probability"] > 0) & (decisions["probability"] <= 1)).all()
    assert abs(report.holdout_share - 0.10) < 3 * math.sqrt(0.09 / report.persons)
    sent = decisions.filter(pl.col("action") != NO_ACTION).join(features, on="person_id")
    assert sent.height > 0
    for channel in ("email", "sms", "push"):
        through = sent.filter(pl.col("channel") == channel)
        assert through[f"has_{channel}_consent"].all()
        address = "app_user_id" if channel == "push" else "crm_contact_id"
        assert through[address].is_not_null().all()
    set_aliases(registry)
    fallback = score_and_decide(None, settings, ml)
    assert fallback.decided_by == "fallback"
    again = read(settings, "nba_decisions")
    assert again.height == decisions.height
    assert set(again["decided_by"]) == {"fallback"}


FLOAT_RELATIVE_TOLERANCE = 1e-9


def decision_differences(local: pl.DataFrame, other: pl.DataFrame) -> list[str]:
    """The columns of two engines' decisions of a date that differ (``decided_at`` left out), person by
    person: every action score's fields as columns of their own (``score_<field>``), the floating ones to a
    relative 1e-9, the others exactly; ``persons`` when they decide for other persons."""

    def flat(frame: pl.DataFrame) -> pl.DataFrame:
        return (
            frame.drop("decided_at")
            .sort("person_id")
            .explode("action_scores")
            .with_columns(pl.col("action_scores").struct.unnest().name.prefix("score_"))
            .drop("action_scores")
        )

    if sorted(local["person_id"]) != sorted(other["person_id"]):
        return ["persons"]
    left, right = flat(local), flat(other)
    found = []
    for column in left.columns:
        a, b = left[column], right[column]
        if a.dtype.is_float():
            same = (a.is_null() == b.is_null()).all() and np.allclose(
                a.fill_null(0).to_numpy(), b.fill_null(0).to_numpy(), rtol=FLOAT_RELATIVE_TOLERANCE, atol=0.0
            )
        else:
            same = not a.ne_missing(b).any()
        if not same:
            found.append(column)
    return found


def test_decision_differences_see_a_changed_score_and_forgive_float_noise(lake, registry, tmp_path):
    """The comparison itself, on real decisions: float noise of 1e-12 passes; a score off by 1e-6, another
    action or a missing person fails."""
    set_aliases(registry, champion=1)
    score_and_decide(D2, lake, ml_settings(registry, tmp_path))
    decisions = read(lake, "nba_decisions")

    def scaled(factor: float) -> pl.DataFrame:
        return decisions.with_columns(
            pl.col("action_scores").list.eval(
                pl.element().struct.with_fields(pl.field("expected_revenue") * factor)
            )
        )

    assert decision_differences(decisions, scaled(1 + 1e-12)) == []
    assert decision_differences(decisions, scaled(1 + 1e-6)) == ["score_expected_revenue"]
    other = decisions.with_columns(pl.lit("loyalty_offer").alias("action"))
    assert decision_differences(decisions, other) == ["action"]
    assert decision_differences(decisions, decisions.slice(1)) == ["persons"]


@pytest.mark.slow
def test_spark_engine_decides_as_the_local_engine(lake, registry, tmp_path, spark_server):
    """The same date scored in this process and on Spark (Sail, each model an MLflow Spark UDF) gives the same
    decisions, shadow decisions and report, holdout, exploration and canary included; scored on Spark with
    another champion version, the decisions differ (the comparison does not compare one engine to itself)."""
    set_aliases(registry, champion=1, challenger=2)
    local_ml = ml_settings(
        registry, tmp_path, chunk_rows=7, holdout__share=0.2, exploration__share=0.2, canary__share=0.3
    )
    spark_ml = replace(local_ml, scoring_engine="spark")
    spark_lake = replace(lake, spark_remote=spark_server.remote)
    local_report = score_and_decide(D2, lake, local_ml)
    local = read(lake, "nba_decisions"), read(lake, "nba_shadow_decisions")
    spark_report = score_and_decide(D2, spark_lake, spark_ml)
    spark = read(lake, "nba_decisions"), read(lake, "nba_shadow_decisions")

    assert (spark_report.decided_by, spark_report.model_version, spark_report.challenger_version) == (
        "champion",
        "1",
        "2",
    )
    assert asdict(spark_report) == asdict(local_report)
    assert decision_differences(local[0], spark[0]) == []
    assert decision_differences(local[1], spark[1]) == []
    assert local[0]["is_canary"].any() and local[0]["is_holdout"].any()
    assert "p06" not in set(spark[0]["person_id"]) and "p07" not in set(spark[0]["person_id"])

    set_aliases(registry, champion=2)
    score_and_decide(D2, spark_lake, spark_ml)
    assert {"action", "score_expected_revenue", "model_version"} <= set(
        decision_differences(local[0], read(lake, "nba_decisions"))
    )


def test_the_spark_engine_is_chosen_by_one_setting_and_needs_its_server(
    lake, registry, tmp_path, monkeypatch
):
    """``SCORING_ENGINE`` takes ``local`` or ``spark`` (any case), nothing else; the Spark engine without
    ``SPARK_REMOTE`` refuses to score, as a scoring error the command reports."""
    monkeypatch.setenv("SCORING_ENGINE", "Spark")
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    assert get_ml_settings().scoring_engine == "spark"
    monkeypatch.setenv("SCORING_ENGINE", "duckdb")
    with pytest.raises(ValueError, match="SCORING_ENGINE"):
        get_ml_settings()
    set_aliases(registry, champion=1)
    spark_ml = replace(ml_settings(registry, tmp_path), scoring_engine="spark")
    with pytest.raises(ScoringError, match="SPARK_REMOTE"):
        score_and_decide(D2, replace(lake, spark_remote=None), spark_ml)
