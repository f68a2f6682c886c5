"""The hourly and nightly runs as operators run them: what each job holds, the nightly chain's training
condition, the run-failure sensor's table, and the pools that keep two runs from writing one table at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from dagster._record import copy

from lake.settings import REPO_ROOT
from orchestration.activation_assets import ACTIVATION_GROUP
from orchestration.resources import WAREHOUSE_POOL, LakeResource, MlflowResource
from orchestration.run_failures import RECORDED_TAG, failures_uri, record_run_failures, redact
from orchestration.sensors import RETRAIN_CAUSES_TAG, TRAINING_TAG

CANDIDATE = "ml/uplift_candidate"


@pytest.fixture(scope="module")
def defs():
    from orchestration.definitions import defs

    return defs


def job_keys(defs: dg.Definitions, name: str) -> set[str]:
    """The asset keys a job of the definitions materializes, as strings."""
    job = defs.resolve_job_def(name)
    return {key.to_user_string() for key in job.asset_layer.executable_asset_keys}


def test_the_hourly_ingests_refreshes_and_resyncs_and_the_nightly_does_the_rest(defs) -> None:
    hourly, snapshots, nightly = (
        job_keys(defs, n) for n in ("hourly_refresh", "nightly_snapshots", "nightly_refresh")
    )
    syncs = {k for k in hourly if k.startswith(f"{ACTIVATION_GROUP}/")}
    assert {"activation/crm_recommendations", "activation/outbox_recommendations"} <= syncs
    assert {"bronze/crm/consents", "silver/crm/consents", "staging/stg_crm__consents"} <= hourly
    assert not {k for k in hourly if k.startswith("ml/")} and "marts/training_decisions" not in hourly
    assert snapshots == {"marts/person_features_daily"}
    assert {CANDIDATE, "ml/model_registry", "ml/nba_decisions", "ml/policy_evaluation"} <= nightly
    assert {"marts/training_decisions", *syncs} <= nightly
    assert {"outcomes/decision_attribution", "outcomes/lift_guardrail"} <= nightly
    assert not {k for k in nightly if k.split("/")[0] in ("bronze", "silver", "staging")}
    # in the hourly run the syncs come after the consents they check again
    graph = defs.get_repository_def().asset_graph
    consents = dg.AssetKey(["silver", "crm", "consents"])
    assert all(consents in graph.get(dg.AssetKey.from_user_string(k)).parent_keys for k in syncs)
    # no job left that the hourly and nightly runs replaced
    names = {j.name for j in defs.get_repository_def().get_all_jobs() if not j.name.startswith("__")}
    assert {"weekly_training", "daily_decisions"}.isdisjoint(names)
    assert {
        "ingest_lake",
        "lake_maintenance",
        "hourly_refresh",
        "nightly_snapshots",
        "nightly_refresh",
    } <= names


def test_the_steps_both_runs_write_are_pooled_and_the_instance_limits_every_pool_to_one(defs) -> None:
    repository = defs.get_repository_def()
    pools = {}
    for name in ("hourly_refresh", "nightly_snapshots", "nightly_refresh", "lake_maintenance"):
        for node in repository.get_job(name).graph.node_defs:
            pools.setdefault(node.name, set()).add((name, node.pool))
    hourly = {n for n, uses in pools.items() if any(j == "hourly_refresh" for j, _ in uses)}
    nightly = {n for n, uses in pools.items() if any(j.startswith("nightly") for j, _ in uses)}
    shared = hourly & nightly
    assert "dbt_models" in shared and any(n.startswith("activation__") for n in shared)
    assert {pool for n in shared for _, pool in pools[n]} >= {WAREHOUSE_POOL}
    assert all(pool for n in shared for _, pool in pools[n])
    # every step writing the warehouse shares one pool: dbt, the snapshots, the maintenance
    assert {
        pool for n in ("dbt_models", "dbt_daily_snapshots", "care_for_lake_tables") for _, pool in pools[n]
    } == {WAREHOUSE_POOL}
    instance = yaml.safe_load((REPO_ROOT / "orchestration" / "dagster.yaml").read_text())
    assert instance["concurrency"]["pools"]["default_limit"] == 1


WRITER = """
import sys, time
from pathlib import Path
import dagster as dg
from orchestration.resources import WAREHOUSE_POOL

name, log = sys.argv[1], Path(sys.argv[2])

@dg.asset(name=name, pool=WAREHOUSE_POOL)
def write():
    with log.open("a") as out:
        out.write(f"start {name}\\n")
    time.sleep(1.5)  # long enough for the other run to reach its step
    with log.open("a") as out:
        out.write(f"end {name}\\n")

with dg.DagsterInstance.get() as instance:
    sys.exit(0 if dg.materialize([write], instance=instance).success else 1)
"""


def test_two_runs_writing_in_one_pool_never_overlap(tmp_path: Path) -> None:
    """Two runs, each in its own process, started together on an instance with the repository's
    ``dagster.yaml``: the second run's step waits until the first one's ends. (Without the pool limit the two
    steps overlap: start, start, end, end.)"""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # its storage created once, before the runs
        assert instance.get_runs() == []
    (tmp_path / "writer.py").write_text(WRITER)
    log = tmp_path / "writes.log"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    runs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "writer.py"), name, str(log)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in ("hourly_write", "nightly_write")
    ]
    outputs = [run.communicate(timeout=300)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    events = [tuple(line.split()) for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end", "start", "end"]
    assert events[0][1] == events[1][1] != events[2][1] == events[3][1]
    assert any("blocked by limit for pool warehouse" in output for output in outputs)


def test_the_failure_sensor_records_the_failed_step_once_without_personal_data(tmp_path: Path) -> None:
    @dg.asset
    def crm_upload() -> None:
        raise ConnectionError("jane.doe@example.com (+44 20 7946 0958, 192.168.10.4) refused by the server")

    lake = LakeResource(lake_root=str(tmp_path / "lake"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([crm_upload], instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (failure,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        for _ in range(2):  # a tick evaluated twice records the run once
            with dg.build_run_status_sensor_context(
                sensor_name="record_run_failures",
                dagster_event=failure.dagster_event,
                dagster_instance=instance,
                dagster_run=run,
                resources={"lake": lake},
            ) as context:
                record_run_failures(context.for_run_failure())
        assert instance.get_run_by_id(result.run_id).tags[RECORDED_TAG] == failures_uri(lake.settings())
    table = pl.read_delta(failures_uri(lake.settings()))
    assert table.select("job_name", "run_id", "step", "error_class").rows() == [
        (run.job_name, result.run_id, "crm_upload", "ConnectionError")
    ]
    message = table["message"][0]
    assert message == "<email> (<number>, <ip>) refused by the server"
    assert table["failed_at"].dtype == pl.Datetime("us", "UTC")


def test_redact_masks_contact_details_and_keeps_ids_of_the_project() -> None:
    kept = "step ml__nba_decisions: no decisions for 2026-10-05 (run 30d36aab-1934-484f-9727-157898cef2b2)"
    assert redact(kept) == kept
    assert redact("call 0044207946095 or 020 7946 0958, card 4111 1111 1111 1111") == (
        "call <number> or <number>, card <number>"
    )
    assert redact("a\n  b  " + "x" * 600) == ("a b " + "x" * 600)[:500]


def snapshots_run_succeeded(
    instance: dg.DagsterInstance, partition: str
) -> tuple[dg.DagsterRun, dg.DagsterEvent]:
    """A successful run of ``nightly_snapshots`` for ``partition`` on ``instance`` (its step a stand-in for
    dbt), and its success event."""

    @dg.asset(name="snapshots_stand_in", partitions_def=dg.DailyPartitionsDefinition("2026-01-01"))
    def stand_in() -> None:
        """Stands for the daily snapshots."""

    result = dg.materialize([stand_in], instance=instance, partition_key=partition)
    run = instance.get_run_by_id(result.run_id)
    run = copy(run, job_name="nightly_snapshots")
    (success,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    return run, success.dagster_event


def test_after_the_snapshots_the_nightly_runs_the_same_date_and_trains_only_when_due(
    defs, tmp_path: Path
) -> None:
    sensor = defs.get_repository_def().get_sensor_def("after_nightly_snapshots")
    assert isinstance(sensor, dg.RunStatusSensorDefinition) and sensor.job_name == "nightly_refresh"
    mlflow = MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    with dg.instance_for_test() as instance:

        def tick(partition: str) -> dg.RunRequest:
            run, event = snapshots_run_succeeded(instance, partition)
            context = dg.build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=event,
                dagster_instance=instance,
                dagster_run=run,
                resources={"mlflow": mlflow},
                repository_def=defs.get_repository_def(),
            )
            return sensor(context)

        first = tick("2026-10-03")
        assert first.partition_key == "2026-10-03" and first.tags[TRAINING_TAG] == "yes"
        assert first.tags["retrain/reason"] == "weekly training: no training yet"
        keys = {k.to_user_string() for k in first.asset_selection}
        assert keys == job_keys(defs, "nightly_refresh")

        @dg.asset
        def nightly_marker() -> None:
            """Stands for the nightly run the first tick asked for."""

        dg.materialize(
            [nightly_marker], instance=instance, tags={TRAINING_TAG: "yes", RETRAIN_CAUSES_TAG: ""}
        )
        second = tick("2026-10-04")
        assert second.partition_key == "2026-10-04" and second.tags[TRAINING_TAG] == "no"
        assert "no champion yet" in second.tags["retrain/reason"]
        assert {k.to_user_string() for k in second.asset_selection} == keys - {CANDIDATE}
