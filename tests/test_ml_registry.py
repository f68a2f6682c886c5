"""The model registry on a real MLflow store (SQLite under the test's folder) with a real logged model: the
promotion gate, bootstrap, approval, rollback and the ``python -m ml.registry`` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from lake.settings import REPO_ROOT
from ml import registry
from ml.ope import PolicyValue, logging_policy_value, snips
from ml.settings import MlSettings, get_ml_settings

CARD = "# Model card\n\nA tiny test model: it doubles its input."
N = 1_000


def policy_value(
    value: float,
    low: float,
    high: float,
    *,
    support: float = 1.0,
    unsupported: bool = False,
    n: int = N,
    estimator: str = "snips",
) -> PolicyValue:
    """A policy value as the off-policy estimators return it."""
    return PolicyValue(
        estimator=estimator,
        value=value,
        ci_low=low,
        ci_high=high,
        confidence=0.95,
        effective_sample_size=n / 4,
        support=support,
        n=n,
        unsupported=unsupported,
    )


LOGGING = policy_value(9.0, 8.8, 9.2, estimator="logged")


@dataclass(frozen=True)
class Template:
    database: Path
    model_uri: str
    run_id: str
    delta_path: str


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """One migrated MLflow store holding a run that learned from a Delta table and logged a tiny pyfunc model
    (creating and migrating a store costs seconds: each test gets a copy of this one)."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    root = tmp_path_factory.mktemp("mlflow_template")
    database = root / "mlflow.db"
    uri = f"sqlite:///{database}"
    delta_path = str(root / "gold" / "training_decisions")

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            return model_input * 2.0

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("nba_uplift", artifact_location=str(root / "artifacts"))
    before = (
        mlflow.get_tracking_uri()
    )  # the process-wide URI wins over the environment: set it, then restore it
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
            source = DeltaDatasetSource(path=delta_path, delta_table_version=3)
            mlflow.log_input(mlflow.data.from_pandas(frame, source=source, name="training_decisions"))
            info = mlflow.pyfunc.log_model(
                name="model", python_model=Doubler(), pip_requirements=["pandas"], input_example=frame
            )
    finally:
        mlflow.set_tracking_uri(before)
    return Template(database, info.model_uri, run.info.run_id, delta_path)


@dataclass(frozen=True)
class Store:
    settings: MlSettings
    uri: str
    model_uri: str
    run_id: str
    delta_path: str

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register(self, value: PolicyValue, logging_value: PolicyValue = LOGGING) -> str:
        version = registry.register_candidate(
            self.model_uri, self.run_id, value, logging_value, CARD, self.settings
        ).version
        return str(version)

    def candidate(
        self,
        value: PolicyValue,
        champion_value: PolicyValue | None,
        *,
        quality: bool = True,
        approval: bool = False,
    ) -> tuple[str, str]:
        """Register a candidate, gate it against the champion's value and apply the decision."""
        version = self.register(value)
        decision = registry.gate(value, champion_value, LOGGING, self.settings.promotion_margin, quality)
        return version, registry.apply_gate(version, decision, approval, self.settings)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(self.settings.model_name, version).tags)

    def description(self, version: str) -> str:
        return self.client().get_model_version(self.settings.model_name, version).description

    def aliases(self) -> dict[str, str]:
        model = self.client().get_registered_model(self.settings.model_name)
        return {alias: str(version) for alias, version in model.aliases.items()}


@pytest.fixture
def store(template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A fresh copy of the template store, named by ``MLFLOW_TRACKING_URI`` for this test."""
    database = tmp_path / "mlflow.db"
    shutil.copyfile(template.database, database)
    uri = f"sqlite:///{database}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_MODEL_NAME", "PROMOTION_REQUIRES_APPROVAL", "PROMOTION_MARGIN"):
        monkeypatch.delenv(name, raising=False)
    return Store(get_ml_settings(), uri, template.model_uri, template.run_id, template.delta_path)


# The gate alone (pure): champion 10.0 and logging 9.0 on the same logs, margin 2% of max(|10|, |9|) = 0.2,
# so a challenger needs a value above 10.2 and an interval whose lower bound is above 9.0.
CHAMPION_VALUE = policy_value(10.0, 9.6, 10.4)


def test_gate_promotes_only_past_the_margin_with_the_lower_bound_above_logging():
    better = registry.gate(policy_value(10.3, 9.5, 11.1), CHAMPION_VALUE, LOGGING, 0.02, True)
    assert better.promote and not better.bootstrap and not better.rejected
    assert "needs more than 10.2000" in better.reason

    within_margin = registry.gate(policy_value(10.15, 9.5, 10.8), CHAMPION_VALUE, LOGGING, 0.02, True)
    assert not within_margin.promote and not within_margin.rejected
    assert "does not beat the champion's 10.0000 by the margin" in within_margin.reason

    low_bound = registry.gate(policy_value(10.5, 8.9, 12.1), CHAMPION_VALUE, LOGGING, 0.02, True)
    assert not low_bound.promote
    assert "lower bound 8.9000 does not beat the logging policy's 9.0000" in low_bound.reason
    assert "margin" not in low_bound.reason

    unsupported = registry.gate(
        policy_value(11.0, 10.0, 12.0, support=0.4, unsupported=True), CHAMPION_VALUE, LOGGING, 0.02, True
    )
    assert not unsupported.promote
    assert "outside the logging policy's support (support 0.400)" in unsupported.reason

    failed = registry.gate(policy_value(11.0, 10.0, 12.0), CHAMPION_VALUE, LOGGING, 0.02, False)
    assert not failed.promote and failed.rejected
    assert "failed its quality checks" in failed.reason

    no_margin = registry.gate(policy_value(10.15, 9.5, 10.8), CHAMPION_VALUE, LOGGING, 0.0, True)
    assert no_margin.promote


def test_gate_margin_does_not_vanish_with_a_champion_worth_nothing():
    # Champion worth 0.0, logging policy -2.0 on the same logs: the margin's scale is max(|0|, |-2|) = 2, so a
    # challenger needs more than 0 + 0.02 x 2 = 0.04 (relative to the champion alone, any gain would do).
    champion_value = policy_value(0.0, -0.5, 0.5)
    logging_value = policy_value(-2.0, -2.3, -1.7, estimator="logged")
    small = registry.gate(policy_value(0.03, -1.0, 1.0), champion_value, logging_value, 0.02, True)
    assert not small.promote
    assert "needs more than 0.0400" in small.reason
    enough = registry.gate(policy_value(0.05, -1.0, 1.1), champion_value, logging_value, 0.02, True)
    assert enough.promote


def test_gate_bootstrap_and_invalid_comparisons():
    first = registry.gate(policy_value(8.0, 7.0, 9.0), None, LOGGING, 0.02, True)
    assert first.promote and first.bootstrap
    assert "bootstrap promotion" in first.reason and "does not beat the logging policy" in first.reason
    broken = registry.gate(policy_value(12.0, 11.0, 13.0), None, LOGGING, 0.02, False)
    assert not broken.promote and broken.bootstrap and broken.rejected

    with pytest.raises(ValueError, match="same latest logs"):
        registry.gate(policy_value(11.0, 10.0, 12.0, n=N + 1), CHAMPION_VALUE, LOGGING, 0.02, True)
    with pytest.raises(ValueError, match="same estimator"):
        registry.gate(policy_value(11.0, 10.0, 12.0, estimator="dr"), CHAMPION_VALUE, LOGGING, 0.02, True)
    with pytest.raises(ValueError, match="non-negative"):
        registry.gate(policy_value(11.0, 10.0, 12.0), CHAMPION_VALUE, LOGGING, -0.01, True)


def test_gate_on_the_estimators_output_for_logged_bandit_data():
    # Uniformly logged decisions between two actions: action 1 earns 10 on average, action 0 earns 8, so the
    # logs are worth about 9. A policy always taking action 1 beats both the logs and a champion always taking
    # action 0; the reverse comparison is refused.
    rng = np.random.default_rng(5)
    n = 2_000
    action = rng.integers(0, 2, n)
    reward = np.where(action == 1, 10.0, 8.0) + rng.normal(0.0, 1.0, n)
    propensity = np.full(n, 0.5)
    logs = pl.DataFrame({"action": action, "propensity": propensity, "reward": reward})
    logged = logging_policy_value(logs)
    always_one = snips(reward, propensity, (action == 1).astype(float), np.ones(n))
    always_zero = snips(reward, propensity, (action == 0).astype(float), np.ones(n))
    assert always_one.ci_low > logged.value > always_zero.ci_high

    promoted = registry.gate(always_one, always_zero, logged, 0.02, True)
    assert promoted.promote and not promoted.bootstrap
    refused = registry.gate(always_zero, always_one, logged, 0.02, True)
    assert not refused.promote
    assert "does not beat the champion's" in refused.reason and "logging policy's" in refused.reason


def test_register_candidate_tags_the_version_with_its_figures_run_and_data(store: Store):
    import mlflow

    value = policy_value(10.25, 9.75, 10.75, support=0.93)
    version = registry.register_candidate(store.model_uri, store.run_id, value, LOGGING, CARD, store.settings)
    assert str(version.version) == "1" and version.run_id == store.run_id
    tags = store.tags("1")
    assert float(tags["ope.value"]) == 10.25 and float(tags["ope.ci_low"]) == 9.75
    assert float(tags["ope.ci_high"]) == 10.75 and float(tags["ope.support"]) == 0.93
    assert float(tags["ope.effective_sample_size"]) == N / 4 and tags["ope.n"] == str(N)
    assert tags["ope.unsupported"] == "false" and tags["ope.estimator"] == "snips"
    assert float(tags["logging.value"]) == 9.0 and float(tags["logging.ci_low"]) == 8.8
    assert tags["run_id"] == store.run_id
    (data,) = json.loads(tags["training_data"])
    assert data["name"] == "training_decisions"
    assert data["source"] == {"path": store.delta_path, "delta_table_version": 3}
    assert store.description("1") == CARD
    assert store.aliases() == {}
    # The registered version is the logged model itself.
    model = mlflow.pyfunc.load_model(f"models:/{store.settings.model_name}/1")
    assert model.predict(pd.DataFrame({"x": [1.5]}))["x"].tolist() == [3.0]


def test_bootstrap_then_the_gate_promotes_a_better_candidate_and_refuses_worse_ones(store: Store):
    import mlflow

    first, outcome = store.candidate(policy_value(8.0, 7.0, 9.0), None)
    assert outcome == "champion" and store.aliases() == {"champion": first}
    tags = store.tags(first)
    assert tags["gate.outcome"] == "champion" and tags["gate.bootstrap"] == "true"
    assert tags["promotion.how"] == "bootstrap"
    assert "gate at " in store.description(first) and "bootstrap promotion" in store.description(first)
    assert store.description(first).startswith(CARD)

    # A bootstrap decision cannot overrule an existing champion.
    late_bootstrap = registry.gate(policy_value(8.0, 7.0, 9.0), None, LOGGING, 0.02, True)
    with pytest.raises(registry.RegistryError, match="only when there is no champion"):
        registry.apply_gate(
            store.register(policy_value(8.0, 7.0, 9.0)), late_bootstrap, False, store.settings
        )

    better, outcome = store.candidate(policy_value(10.3, 9.5, 11.1), CHAMPION_VALUE)
    assert outcome == "champion" and store.aliases() == {"champion": better}
    assert store.tags(better)["promotion.how"] == "gate"
    assert store.tags(first)["replaced_by"] == better

    worse, outcome = store.candidate(policy_value(9.8, 9.3, 10.3), CHAMPION_VALUE)
    assert outcome == "challenger" and store.aliases() == {"champion": better, "challenger": worse}
    assert "does not beat the champion's" in store.tags(worse)["gate.reason"]
    assert "gate at " in store.description(worse) and "does not beat the champion's" in store.description(
        worse
    )

    below_logging, outcome = store.candidate(policy_value(10.6, 8.95, 12.25), CHAMPION_VALUE)
    assert outcome == "challenger" and store.aliases()["challenger"] == below_logging
    assert "does not beat the logging policy's" in store.tags(below_logging)["gate.reason"]

    unsupported, outcome = store.candidate(
        policy_value(11.0, 10.0, 12.0, support=0.4, unsupported=True), CHAMPION_VALUE
    )
    assert outcome == "challenger" and store.aliases()["challenger"] == unsupported
    assert "outside the logging policy's support" in store.tags(unsupported)["gate.reason"]
    assert store.tags(unsupported)["ope.unsupported"] == "true"

    broken, outcome = store.candidate(policy_value(11.0, 10.0, 12.0), CHAMPION_VALUE, quality=False)
    assert outcome == "rejected" and store.tags(broken)["gate.outcome"] == "rejected"
    assert store.aliases() == {"champion": better, "challenger": unsupported}

    assert str(registry.champion(store.settings).version) == better
    assert str(registry.challenger(store.settings).version) == unsupported
    state = registry.registry_state(store.settings)
    assert state.history == (first, better)
    model = mlflow.pyfunc.load_model(f"models:/{store.settings.model_name}@champion")
    assert model.predict(pd.DataFrame({"x": [2.0]}))["x"].tolist() == [4.0]


def test_approval_marks_pending_and_approve_promotes_recording_who_and_when(store: Store):
    with pytest.raises(registry.RegistryError, match="nothing to approve"):
        registry.approve(by="ops", settings=store.settings)

    first, outcome = store.candidate(policy_value(8.0, 7.0, 9.0), None, approval=True)
    assert outcome == "pending"
    assert store.aliases() == {"pending": first, "challenger": first}
    assert registry.champion(store.settings) is None
    assert str(registry.pending_promotion(store.settings).version) == first
    assert store.tags(first)["promotion.status"] == "pending"

    change = registry.approve(by="ops-oncall", settings=store.settings)
    assert (change.previous, change.current) == (None, first)
    assert store.aliases() == {"champion": first}
    assert registry.pending_promotion(store.settings) is None
    tags = store.tags(first)
    assert tags["promotion.status"] == "approved" and tags["promotion.approved_by"] == "ops-oncall"
    assert datetime.fromisoformat(tags["promotion.approved_at"]).tzinfo is not None
    assert tags["promotion.how"] == "bootstrap, approved"
    assert "promotion approved by ops-oncall" in store.description(first)
    with pytest.raises(registry.RegistryError, match="nothing to approve"):
        registry.approve(by="ops", settings=store.settings)

    refused, outcome = store.candidate(policy_value(9.9, 9.4, 10.4), CHAMPION_VALUE, approval=True)
    assert outcome == "challenger" and registry.pending_promotion(store.settings) is None
    assert store.aliases() == {"champion": first, "challenger": refused}
    second, outcome = store.candidate(policy_value(10.5, 9.6, 11.4), CHAMPION_VALUE, approval=True)
    third, outcome = store.candidate(policy_value(10.6, 9.7, 11.5), CHAMPION_VALUE, approval=True)
    assert outcome == "pending" and store.aliases() == {
        "champion": first,
        "pending": third,
        "challenger": third,
    }
    assert store.tags(second)["promotion.status"] == f"superseded by version {third}"
    with pytest.raises(registry.RegistryError, match=f"version {second} is not pending"):
        registry.approve(second, by="ops", settings=store.settings)
    registry.approve(third, by="ops", settings=store.settings)
    assert store.aliases() == {"champion": third}
    assert store.tags(first)["replaced_by"] == third
    assert registry.registry_state(store.settings).history == (first, third)

    # A pending version gated against a champion that was rolled back since is not approved on stale figures.
    fourth, outcome = store.candidate(policy_value(10.7, 9.8, 11.6), CHAMPION_VALUE, approval=True)
    assert outcome == "pending" and store.tags(fourth)["gate.champion"] == third
    registry.rollback("pending check", store.settings)
    with pytest.raises(
        registry.RegistryError, match=f"gated against champion {third} but the champion is now"
    ):
        registry.approve(by="ops", settings=store.settings)
    assert store.aliases() == {"champion": first, "pending": fourth, "challenger": fourth}


def test_rollback_twice_goes_two_champions_back_and_records_why(store: Store):
    with pytest.raises(registry.RegistryError, match="has no champion"):
        registry.rollback("nothing there", store.settings)
    first, _ = store.candidate(policy_value(8.0, 7.0, 9.0), None)
    second, _ = store.candidate(policy_value(10.3, 9.5, 11.1), CHAMPION_VALUE)
    third, _ = store.candidate(policy_value(10.5, 9.6, 11.4), CHAMPION_VALUE)
    assert store.aliases() == {"champion": third}

    change = registry.rollback("conversion dropped after the release", store.settings)
    assert (change.previous, change.current) == (third, second)
    assert store.aliases() == {"champion": second}
    assert store.tags(third)["rollback.reason"] == "conversion dropped after the release"
    assert store.tags(third)["rollback.to"] == second
    assert store.tags(second)["restored.from"] == third
    assert "rolled back at" in store.description(third)
    assert "conversion dropped after the release" in store.description(second)

    registry.rollback("still wrong", store.settings)
    assert store.aliases() == {"champion": first}
    assert store.tags(second)["rollback.reason"] == "still wrong"
    assert store.tags(first)["restored.reason"] == "still wrong"
    assert datetime.fromisoformat(store.tags(first)["restored.at"]).tzinfo is not None
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback("once more", store.settings)

    # The gate goes on from the restored champion, and a rollback then returns to it.
    fourth, outcome = store.candidate(policy_value(10.4, 9.5, 11.3), CHAMPION_VALUE)
    assert outcome == "champion"
    assert registry.registry_state(store.settings).history == (first, fourth)
    registry.rollback("again", store.settings)
    assert store.aliases() == {"champion": first}


def run_cli(store: Store, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    return subprocess.run(
        [sys.executable, "-m", "ml.registry", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_status_approve_and_rollback(store: Store, capsys: pytest.CaptureFixture[str]):
    first, _ = store.candidate(policy_value(8.0, 7.0, 9.0), None)
    second, outcome = store.candidate(policy_value(10.5, 9.6, 11.4), CHAMPION_VALUE, approval=True)
    assert outcome == "pending"

    # In this process (importing mlflow costs seconds per process): status, and an approval of a version that
    # is not pending.
    assert registry.main(["status"]) == 0
    status = capsys.readouterr().out
    assert f"champion: version {first}" in status
    assert f"pending: version {second}" in status
    assert "snips 10.5000 [9.6000, 11.4000]" in status
    assert registry.main(["approve", "--version", first]) == 1
    assert f"version {first} is not pending" in capsys.readouterr().err

    # The documented commands, end to end.
    approved = run_cli(store, "approve", "--version", second, "--by", "ops-oncall")
    assert approved.returncode == 0, approved.stderr
    assert f"version {second} is champion (was {first})" in approved.stdout
    assert "ops-oncall" not in approved.stdout
    assert store.aliases() == {"champion": second}
    assert store.tags(second)["promotion.approved_by"] == "ops-oncall"

    assert registry.main(["approve"]) == 1
    assert "nothing to approve" in capsys.readouterr().err
    assert registry.main(["rollback", "--reason", "complaints about the discount e-mails"]) == 0
    assert f"from version {second} to version {first}" in capsys.readouterr().out
    assert store.aliases() == {"champion": first}
    assert store.tags(second)["rollback.reason"] == "complaints about the discount e-mails"

    no_previous = run_cli(store, "rollback", "--reason", "again")
    assert no_previous.returncode == 1
    assert "nothing to roll back to" in no_previous.stderr and not no_previous.stdout
    assert store.aliases() == {"champion": first}
