"""The closed loop with a deliberately harmful champion, as ``make loop`` runs it: each day the simulated
company lives a day (it executes what the CRM received, its customers respond according to the simulator's
truth), then Dagster ingests, builds the dbt models and the day's features, the serving champion decides, the
sync writes the actions to the CRM (a real PostgreSQL), and the outcomes are attributed and the guardrail
checks the champion on a real MLflow registry.

The simulated catalogue's offers all pay for themselves on average, and its messages cost cents, so no model
can lose enough in a few days of a small company for any measurement to tell. The test's policy therefore
prices an e-mail at 4 EUR (a cost the business pays per contact, as a printed mailing or a call would) and
sends the loyalty offer by e-mail only: a model that promises every person 12 EUR from that offer contacts
everyone it can reach and loses far more than the offer returns. The harmless model reminds persons of their
carts by SMS (6 cents), which pays."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from lake.settings import REPO_ROOT
from ml import guardrail, registry, tracking
from ml.settings import DEFAULT_POLICY_FILE, get_ml_settings
from tests.test_guardrail import policy_value, promoted

pytestmark = pytest.mark.slow

PERSONS, DAYS, SEED = 2_000, 4, 3
MAIL_EUR = 4.0
HARMLESS = {"cart_reminder": 1.0}
HARMFUL = {"loyalty_offer": 12.0}
MAX_DAYS = 5


def costly_mail_policy(path: Path) -> Path:
    """The project's policy with e-mail at :data:`MAIL_EUR` a message, the loyalty offer sent by e-mail only,
    cart reminders by SMS only, a quarter of persons held out, no exploration (every treated decision is the
    model's own) and a frequency cap of one contact a day."""
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["version"] = "test-costly-mail"
    policy["channels"]["email"]["message_cost"] = MAIL_EUR
    channels = {"loyalty_offer": ["email"], "cart_reminder": ["sms"]}
    for action in policy["actions"]:
        if action["name"] in channels:
            action["channels"] = channels[action["name"]]
    policy["holdout"]["share"] = 0.25
    policy["exploration"]["share"] = 0.0
    policy["eligibility"]["frequency_cap"]["touches"] = 7
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def log_models(actions: tuple[str, ...]) -> tuple[str, str, str]:
    """Log the harmless and the harmful model (pyfuncs promising the same expected revenue of each action to
    every person) in one run of the tracking store: their URIs and the run id."""
    import mlflow
    import pandas as pd

    class PromisedRevenue(mlflow.pyfunc.PythonModel):
        """Expected revenue per action: the promised EUR for the named actions, 0 for the others."""

        def __init__(self, promised: dict[str, float]):
            self.promised = promised

        def predict(self, context, model_input, params=None):
            rows = len(model_input)
            return pd.DataFrame(
                {f"expected_revenue__{a}": [self.promised.get(a, 0.0)] * rows for a in actions}
            )

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()  # process-wide, over the environment
    ml = tracking.configure()
    uris = []
    try:
        with mlflow.start_run(experiment_id=tracking.experiment_id(ml)) as run:
            for name, promised in (("harmless", HARMLESS), ("harmful", HARMFUL)):
                info = mlflow.pyfunc.log_model(
                    name=name, python_model=PromisedRevenue(promised), pip_requirements=["pandas"]
                )
                uris.append(info.model_uri)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    return uris[0], uris[1], run.info.run_id


def test_the_loop_rolls_a_harmful_champion_back_and_keeps_the_harmless_one(
    tmp_path: Path, crm_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    import psycopg

    from lake.gold import gold_uri
    from lake.settings import get_settings
    from ml.attribution import ATTRIBUTION_TABLE
    from ml.policy import load_policy
    from orchestration import demo
    from orchestration.loop import DECIDE, run_day
    from orchestration.snapshot_dates import supported_snapshot_dates

    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    for name, value in {
        "DAGSTER_HOME": str(home),
        "LAKE_ROOT": str(tmp_path / "lake"),
        "WAREHOUSE_PATH": str(tmp_path / "warehouse" / "engagement.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "ACTIVATION_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NBA_POLICY_FILE": str(costly_mail_policy(tmp_path / "policy.yaml")),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO_ROOT)
    company = ["--persons", str(PERSONS), "--days", str(DAYS), "--seed", str(SEED)]
    assert demo.main([*company, "--without-models"]) == 0

    # The harmless champion decides the demo's last date and the CRM receives its actions (as make demo
    # ends); then the harmful model passes the gate and serves, day by day, until the guardrail rolls it
    # back.
    ml = get_ml_settings()
    harmless_uri, harmful_uri, run_id = log_models(load_policy().actions)
    harmless = promoted(harmless_uri, run_id, ml)
    instance = dg.DagsterInstance.get()
    demo.materialize(instance, DECIDE, partition_key=supported_snapshot_dates()[1])
    demo.materialize(instance, demo.SYNCS)
    harmful = promoted(harmful_uri, run_id, ml, policy_value("snips", 1.0))
    reports = []
    for day in range(1, MAX_DAYS + 1):
        reports.append(run_day(instance, day, crm_url, str(REPO_ROOT)))
        if reports[-1].verdict == guardrail.VERDICT_ROLLBACK:
            break
    assert [r.model_version for r in reports] == [harmful] * len(reports)
    assert [r.verdict for r in reports[:-1]] == [guardrail.VERDICT_TOO_FEW] * (len(reports) - 1)
    rolled = reports[-1]
    assert rolled.verdict == guardrail.VERDICT_ROLLBACK and rolled.rolled_back_to == harmless
    # rolled back on the first day the harmful decisions' outcomes are final (the third)
    assert rolled.upper < 0 and len(reports) <= 3
    assert str(registry.champion(ml).version) == harmless
    tags = registry._client(ml).get_model_version(ml.model_name, harmful).tags
    assert tags["rollback.reason"].startswith("guardrail: net revenue lift")

    # The restored champion decides the latest date again, the sync carries that to the CRM, and the guardrail
    # judges it on its own final outcomes (of the demo date): kept.
    demo.materialize(instance, DECIDE, partition_key=supported_snapshot_dates()[1])
    demo.materialize(instance, demo.SYNCS)
    demo.materialize(instance, demo.OUTCOMES)
    checks = guardrail.read_checks(get_settings()).sort("checked_at")
    assert checks.row(-1, named=True)["model_version"] == harmless
    verdicts = checks["verdict"].to_list()
    assert verdicts[-1] == guardrail.VERDICT_OK and verdicts.count(guardrail.VERDICT_ROLLBACK) == 1
    current = pl.read_delta(gold_uri(get_settings(), "nba_current"))
    assert set(current["model_version"]) == {harmless}

    # The harm went through the loop: the CRM received the loyalty offers by e-mail, the company sent them
    # (its activities carry the decision ids) and each costs its 4 EUR in the attributed outcomes.
    attribution = pl.read_delta(gold_uri(get_settings(), ATTRIBUTION_TABLE))
    sent = attribution.filter((pl.col("model_version") == harmful) & pl.col("executed"))
    assert sent.height > 0 and set(sent["action"]) == {"loyalty_offer"} and set(sent["channel"]) == {"email"}
    assert sent["message_cost"].to_list() == [MAIL_EUR] * sent.height
    reminded = attribution.filter((pl.col("model_version") == harmless) & pl.col("executed"))
    assert reminded.height > 0 and set(reminded["action"]) == {"cart_reminder"}
    # and the rollback reached the CRM: the next sync replaced every loyalty offer with the harmless reminders
    with psycopg.connect(crm_url) as conn:
        actions = dict(conn.execute("select action, count(*) from public.nba_recommendations group by 1"))
    assert "loyalty_offer" not in actions and actions.get("cart_reminder", 0) > 0, actions
