"""End to end through the Dagster UI's GraphQL API: ``make dev`` started in the background as a script or a
service manager starts it, over a tiny landed company, lists the assets, the schedules and the sensors, runs
the hourly job then the nightly chain (the day's snapshots, then the nightly refresh with its decisions, syncs
and outcomes), and stops on SIGTERM to make with every process it started (uv, ``dg dev``, the webserver, the
daemon, the code servers)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from processes import as_a_background_job, describe, free_port, session_processes, wait_for_webserver

from lake.settings import REPO_ROOT, TELEMETRY_OFF
from simulator import SimulationConfig, generate

STARTUP_LIMIT_S = 300
RUN_LIMIT_S = 300
STOP_LIMIT_S = 120
LOCATION = "orchestration.definitions"
REPOSITORY = "__repository__"
CANDIDATE = ["ml", "uplift_candidate"]
EVALUATION = ["ml", "policy_evaluation"]

DEFINITIONS = """
{
  assetNodes { assetKey { path } jobNames }
  repositoriesOrError {
    ... on RepositoryConnection { nodes { name schedules { name } sensors { name } } }
  }
}
"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      status
      eventConnection(afterCursor: null) {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey error { message cause { message } } }
        }
      }
    }
  }
}
"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """The ``data`` of one GraphQL request to the webserver (errors raise)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        reply = json.load(answer)
    assert "errors" not in reply, reply["errors"]
    return reply["data"]


def launch(port: int, job: str, partition: str | None = None, assets: list[list[str]] | None = None) -> str:
    """Launch a run of ``job`` (of ``partition``, of the ``assets`` only); its run id."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job}
    if assets is not None:
        selector["assetSelection"] = [{"path": path} for path in assets]
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {"selector": selector, "runConfigData": {}, "executionMetadata": {"tags": tags}}
    launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for(port: int, run_id: str) -> None:
    """Poll the run until it ends; assert that it succeeded (the failed steps' errors otherwise)."""
    deadline = time.monotonic() + RUN_LIMIT_S
    while True:
        run = graphql(port, RUN, {"runId": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(2)
    failures = [e for e in run["eventConnection"]["events"] if e["__typename"] == "ExecutionStepFailureEvent"]
    errors = [(e["stepKey"], (e["error"]["cause"] or e["error"])["message"][-1500:]) for e in failures]
    assert run["status"] == "SUCCESS", errors


def last_snapshot_date(warehouse: Path) -> str:
    """The newest snapshot date the warehouse's data supports."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ((last,),) = con.sql("select last_snapshot_date from int_marts__data_window").fetchall()
    return last.isoformat()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_dagster_dev_lists_runs_the_hourly_and_nightly_jobs_and_stops_on_sigterm(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    config = SimulationConfig(persons=300, days=8, seed=5, start=date(2026, 9, 1), history_days=7)
    generate(config, lake / "landing", lake / "simulator_truth", progress=False)
    syncs = tmp_path / "syncs"  # the files destination only: no CRM server in this test
    syncs.mkdir()
    shutil.copy(REPO_ROOT / "activation" / "syncs" / "outbox_recommendations.yaml", syncs)
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        **TELEMETRY_OFF,
        "DAGSTER_HOME": str(home),
        "LAKE_ROOT": str(lake),
        "WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "ACTIVATION_SYNCS_DIR": str(syncs),
        "ACTIVATION_OUTBOX_DIR": str(tmp_path / "outbox"),
        "AUTOMATION": "off",
    }
    port = free_port()
    log = (tmp_path / "make-dev.log").open("wb")
    server = subprocess.Popen(
        ["make", "dev", f"DEV_PORT={port}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own session: every process it starts is found by the session id
        preexec_fn=as_a_background_job,
    )
    try:
        wait_for_webserver(server, port, tmp_path / "make-dev.log", STARTUP_LIMIT_S)

        listed = graphql(port, DEFINITIONS)
        nodes = {tuple(n["assetKey"]["path"]): n["jobNames"] for n in listed["assetNodes"]}
        assert {
            ("silver", "crm", "consents"),
            ("ml", "nba_decisions"),
            ("activation", "outbox_recommendations"),
        } <= set(nodes)
        assert ("activation", "crm_recommendations") not in nodes  # the syncs of ACTIVATION_SYNCS_DIR only
        (repository,) = listed["repositoriesOrError"]["nodes"]
        assert {s["name"] for s in repository["schedules"]} >= {"hourly_refresh", "nightly_snapshots"}
        assert {s["name"] for s in repository["sensors"]} >= {
            "after_nightly_snapshots",
            "record_run_failures",
        }

        wait_for(port, launch(port, "hourly_refresh"))
        day = last_snapshot_date(tmp_path / "warehouse.duckdb")
        wait_for(port, launch(port, "nightly_snapshots", day))
        # the nightly as the chain's sensor launches it on a night without training: a tiny company holds too
        # little to train on, so no model is registered, the fallback rules decide, and the evaluation against
        # the truth (which compares with a champion) notes that there is none
        nightly = [list(k) for k, jobs in nodes.items() if "nightly_refresh" in jobs and list(k) != CANDIDATE]
        assert EVALUATION in nightly
        wait_for(port, launch(port, "nightly_refresh", day, nightly))

        decisions = pl.read_delta(str(lake / "gold" / "nba_decisions"))
        assert decisions["decision_date"].cast(pl.Utf8).unique().to_list() == [day]
        assert decisions.height >= 300
        assert list((tmp_path / "outbox").rglob("*.parquet"))  # the nightly sync wrote its diff
        assert not (lake / "gold" / "policy_evaluation").exists()  # the run succeeded without a champion

        started = session_processes(server.pid)
        assert len(started) >= 4  # make, uv, dg dev, the webserver, the daemon, code servers
        server.send_signal(signal.SIGTERM)  # to make alone, as a service manager stops it
        deadline = time.monotonic() + STOP_LIMIT_S
        while (left := session_processes(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == [], f"still running after SIGTERM:\n{describe(left)}"
    finally:
        for pid in session_processes(server.pid):
            os.kill(pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()
