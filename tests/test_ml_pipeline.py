"""The training pipeline: the greedy policy valued off-policy, and train -> value -> log -> register -> gate
twice on the test company's gold tables in a real SQLite MLflow store, with no personal data anywhere in the
store."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from ml.pipeline import greedy_policy, ope_logs, supported_logs, train_candidate
from ml.settings import get_ml_settings

POLICY = SimpleNamespace(
    message_cost={"email": 0.01, "sms": 0.06},
    consent_column={"email": "has_email_consent", "sms": "has_sms_consent"},
    action_channels={"discount_10": ("email", "sms"), "cart_reminder": ("email",)},
    discount_actions=frozenset({"discount_10"}),
    recent_purchaser_days=7,
)
ACTIONS = ("no_action", "discount_10", "cart_reminder")


def test_greedy_policy_picks_the_best_allowed_action_net_of_message_cost():
    rows = pl.DataFrame(
        {
            "has_email_consent": [True, True, False, False, True],
            "has_sms_consent": [False, False, True, False, False],
            "days_since_last_order": [30, 3, None, 30, 30],
        }
    )
    predictions = pl.DataFrame(
        {
            "expected_revenue__no_action": [10.0, 10.0, 10.0, 10.0, 10.0],
            "expected_revenue__discount_10": [12.0, 12.0, 12.0, 12.0, 10.0],
            "expected_revenue__cart_reminder": [11.0, 11.0, 11.0, 11.0, 10.0],
        }
    )
    target, reward_model, channels = greedy_policy(predictions, rows, POLICY, ACTIONS)
    # row 0: discount 12 - 10 - 0.01 beats the reminder 11 - 10 - 0.01; row 1: a recent purchaser gets no
    # discount; row 2: SMS only, the discount through SMS (2 - 0.06) and no reminder (e-mail only); row 3: no
    # consent; row 4: nothing beats no_action once the message costs
    assert target.argmax(axis=1).tolist() == [1, 2, 1, 0, 0]
    assert (target.sum(axis=1) == 1).all() and set(np.unique(target)) == {0.0, 1.0}
    np.testing.assert_allclose(reward_model[0], [10.0, 11.99, 10.99])
    np.testing.assert_allclose(reward_model[2], [10.0, 11.94, 10.99])
    assert channels.tolist() == [
        [None, "email", "email"],
        [None, "email", "email"],
        [None, "sms", None],
        [None, None, None],
        [None, "email", "email"],
    ]


def test_ope_logs_reward_is_revenue_net_of_the_logged_message_cost():
    validation = pl.DataFrame(
        {
            "action": ["no_action", "discount_10", "cart_reminder"],
            "channel": [None, "sms", "email"],
            "propensity": [0.5, 0.25, 1.0],
            "campaign_id": ["explore", "explore", "bau"],
            "revenue_in_horizon": [0.0, 20.0, None],
        }
    )
    logs = ope_logs(validation, POLICY)
    assert logs["reward"].to_list() == pytest.approx([0.0, 19.94, -0.01])
    assert logs.columns == ["action", "channel", "propensity", "campaign_id", "reward"]


def test_the_gate_values_policies_on_the_randomised_campaigns_decisions():
    validation = pl.DataFrame(
        {
            "action": [
                "no_action",
                "discount_10",
                "cart_reminder",
                "no_action",
                "cart_reminder",
                "no_action",
            ],
            "propensity": [1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 0.5],
            # a randomised campaign (every action drawn), a person it could not reach (no choice: propensity
            # 1), a rule-based reminder (one action only) and a campaign that never drew cart_reminder
            "campaign_id": ["explore", "explore", "explore", "explore", "bau-reminder", "partial"],
        }
    ).with_row_index("row")
    predictions = pl.DataFrame({"expected_revenue__no_action": [float(i) for i in range(6)]})
    logs, kept = supported_logs(validation, predictions, ACTIONS)
    assert logs["row"].to_list() == [0, 1, 2]
    assert kept["expected_revenue__no_action"].to_list() == [0.0, 1.0, 2.0]
    # without a randomised campaign, every decision (and the support figure then says what holds)
    logs, kept = supported_logs(validation[4:], predictions[4:], ACTIONS)
    assert logs["row"].to_list() == [4, 5] and kept["expected_revenue__no_action"].to_list() == [4.0, 5.0]


EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+\d{7,15}")


def personal_values_in(folder: Path, emails: set[str], phones: set[str]) -> list[str]:
    """Raw e-mails and phone numbers found in any file under ``folder`` (parquet files read as values)."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            text = "\n".join(
                str(v)
                for c, t in frame.schema.items()
                if t == pl.String
                for v in frame[c].drop_nulls().unique()
            )
        else:
            text = path.read_bytes().decode("latin-1")
        found += [f"{path.name}: {m}" for m in EMAIL.findall(text) if m.lower() in emails]
        found += [f"{path.name}: {m}" for m in PHONE.findall(text) if m in phones]
    return found


@pytest.fixture(scope="module")
def two_candidates(gold_lake, tmp_path_factory):
    """Two candidates trained on the test company, in a fresh MLflow store: the reports and the store's
    folder."""
    from ml.train import TrainingConfig

    store = tmp_path_factory.mktemp("pipeline_mlflow")
    settings = replace(get_ml_settings(), tracking_uri=f"sqlite:///{store}/mlflow.db")
    first = train_candidate(
        settings, TrainingConfig(validation_days=2, max_rounds=60), lake_settings=gold_lake
    )
    second = train_candidate(
        settings, TrainingConfig(validation_days=2, max_rounds=60, seed=8), lake_settings=gold_lake
    )
    return settings, store, first, second


def test_first_candidate_bootstraps_the_champion_with_its_model_card(two_candidates):
    settings, _store, first, _second = two_candidates
    assert first.bootstrap and first.promote and first.outcome == "champion"
    assert first.champion_value is None
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version(settings.model_name, first.model_version)
    assert (
        str(client.get_model_version_by_alias(settings.model_name, "champion").version) == first.model_version
    )
    assert version.run_id == first.run_id
    assert "# Model card" in version.description
    assert f"`{first.data.uri}`, version {first.data.version}" in version.description
    assert "Known limits" in version.description


def test_second_candidate_is_gated_against_the_champion_on_the_same_logs(two_candidates):
    settings, _store, first, second = two_candidates
    assert not second.bootstrap
    assert second.model_version != first.model_version
    assert second.champion_value is not None
    assert second.champion_value.n == second.candidate_value.n == second.logging_value.n
    # valued on the randomised campaign's decisions only, where the logs support every choice
    assert not second.candidate_value.unsupported, second.candidate_value.support
    # the champion (the first candidate, served through the registry) valued on the same logs as in its own
    # run
    assert second.champion_value.value == pytest.approx(first.candidate_value.value)
    assert second.outcome in ("champion", "pending", "challenger")
    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version(settings.model_name, second.model_version)
    assert version.tags["gate.reason"] == second.reason
    run = client.get_run(second.run_id)
    assert run.data.metrics["ope.champion.dr.value"] == pytest.approx(second.champion_value.value)
    described = second.describe()
    assert second.run_id in described and f"registered version {second.model_version}" in described


def test_no_personal_data_in_the_mlflow_store(two_candidates, simulated):
    settings, store, first, _second = two_candidates
    identifiers = simulated.identifiers()
    emails = {e.lower() for e in identifiers.filter(pl.col("identifier_type") == "email")["identifier"]}
    phones = set(identifiers.filter(pl.col("identifier_type") == "phone")["identifier"])
    assert len(emails) > 1000 and len(phones) > 100
    # the scan finds what it looks for
    control = store / "control"
    control.mkdir()
    (control / "x.txt").write_text(f"{next(iter(emails))} {next(iter(phones))}")
    assert len(personal_values_in(control, emails, phones)) == 2
    (control / "x.txt").unlink()

    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "mlflow.db" for p in files)
    assert personal_values_in(store, emails, phones) == []
    # nor in what the runs expose through the API
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(first.run_id)
    text = " ".join([*run.data.params.values(), *run.data.tags.values()])
    assert not [m for m in EMAIL.findall(text) if m.lower() in emails]
    assert mlflow.get_tracking_uri() == settings.tracking_uri


def test_train_command_registers_a_third_version(two_candidates, gold_lake, monkeypatch, capsys):
    from ml.pipeline import main

    settings, _store, _first, second = two_candidates
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("LAKE_ROOT", gold_lake.lake_root)
    assert main(["train", "--validation-days", "2"]) == 0
    out = capsys.readouterr().out
    assert f"registered version {int(second.model_version) + 1}: " in out
    assert "gate: " in out and "logging policy: " in out
