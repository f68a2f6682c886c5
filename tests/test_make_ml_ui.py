"""``make mlflow`` and ``make notebooks`` started in the background: they serve on 127.0.0.1 only, over the
project's stores and environment, and every process they started exits on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from processes import as_a_background_job, describe, free_port, session_processes

REPO = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_S = 600
"""The MLflow server answered after 150-200 s on this 2-core machine under a load average of 8 to 14."""
STOP_LIMIT_S = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc"),
]


def listening_addresses(port: int) -> set[str]:
    """The local addresses (IPv4 and IPv6, hex as in /proc/net) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        return answer.read()


def serve_until_answering(target: list[str], env: dict, log: Path, probe: str) -> subprocess.Popen:
    """Start ``make <target>`` as a background job in its own session and wait until ``probe`` answers."""
    make = subprocess.Popen(
        ["make", *target],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=as_a_background_job,
    )
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while True:
        assert make.poll() is None, log.read_text()[-3000:]
        try:
            get(probe)
            return make
        except OSError:
            assert time.monotonic() < deadline, f"{probe} did not answer:\n{log.read_text()[-3000:]}"
            time.sleep(2)


def stop_and_check(make: subprocess.Popen) -> None:
    """SIGTERM to make: every process of its session must be gone within the limit."""
    make.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_LIMIT_S
    while (left := session_processes(make.pid)) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == [], f"still running after SIGTERM:\n{describe(left)}"


def kill_what_is_left(make: subprocess.Popen) -> None:
    for pid in session_processes(make.pid):
        os.kill(pid, signal.SIGKILL)
    make.wait(timeout=30)


def descendants(pid: int) -> list[int]:
    """The live processes started, directly or not, by ``pid`` (a kernel runs in a session of its own)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        children = parents.get(pending.pop(), [])
        found += children
        pending += children
    return found


def wait_for_kernel(make_pid: int) -> int:
    """The process id of the first IPython kernel started under ``make``, once it is running."""
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        for pid in descendants(make_pid):
            try:
                if b"ipykernel_launcher" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
        time.sleep(1)
    raise AssertionError("no kernel started")


def test_make_mlflow_serves_the_tracking_store_and_its_artifacts_on_loopback(tmp_path):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("drift_check", artifact_location=str(tmp_path / "runs"))
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "population stability index", "notes/drift.txt")
    client.set_terminated(run.info.run_id)

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    env.pop("MLFLOW_DISABLE_TELEMETRY", None)  # the target turns it off by itself
    make = serve_until_answering(
        ["mlflow", f"MLFLOW_PORT={port}"],
        env,
        tmp_path / "make-mlflow.log",
        f"http://127.0.0.1:{port}/health",
    )
    try:
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
        base = f"http://127.0.0.1:{port}"
        found = json.loads(
            get(f"{base}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=drift_check")
        )
        assert found["experiment"]["experiment_id"] == experiment
        # the artifact is read from where the run logged it
        artifact = get(f"{base}/get-artifact?path=notes/drift.txt&run_uuid={run.info.run_id}")
        assert artifact == b"population stability index"
        server = next(
            pid
            for pid in session_processes(make.pid)
            if b"server\0--backend-store-uri" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        assert b"MLFLOW_DISABLE_TELEMETRY=true" in Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
        # no server-side job runner nor its consumers (the UI needs none)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in session_processes(make.pid)]
        assert not [c for c in commands if b"mlflow.server.jobs" in c], commands
        stop_and_check(make)
    finally:
        kill_what_is_left(make)


def test_make_notebooks_serves_jupyterlab_with_the_project_kernel_on_loopback(tmp_path):
    port = free_port()
    jupyter = {
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter" / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter" / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter" / "runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTER_TOKEN": "notebooks-test-token",
    }
    make = serve_until_answering(
        ["notebooks", f"NOTEBOOK_PORT={port}"],
        {**os.environ, **jupyter},
        tmp_path / "make-notebooks.log",
        f"http://127.0.0.1:{port}/api",
    )
    kernel = None
    try:
        assert listening_addresses(port) <= {"0100007F"}, listening_addresses(port)
        base = f"http://127.0.0.1:{port}"
        token = f"token={jupyter['JUPYTER_TOKEN']}"
        # opening a notebook starts a kernel of the project's environment (the repository's .venv) in
        # notebooks/
        session = {"path": "explore_training_data.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
        request = urllib.request.Request(
            f"{base}/api/sessions",
            data=json.dumps(session).encode(),
            headers={
                "Authorization": f"token {jupyter['JUPYTER_TOKEN']}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 201
        kernel = wait_for_kernel(make.pid)
        interpreter = Path(Path(f"/proc/{kernel}/cmdline").read_bytes().split(b"\0")[0].decode())
        assert interpreter.parent.resolve() == (REPO / ".venv" / "bin").resolve(), interpreter
        assert Path(f"/proc/{kernel}/cwd").resolve() == REPO / "notebooks"
        listing = json.loads(get(f"{base}/api/contents?{token}"))
        names = {entry["name"] for entry in listing["content"]}
        assert {"explore_training_data.ipynb", "train_and_compare.ipynb"} <= names
        stop_and_check(make)
        deadline = time.monotonic() + STOP_LIMIT_S  # the server shuts its kernels down as it stops
        while Path(f"/proc/{kernel}").exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert not Path(f"/proc/{kernel}").exists(), "the kernel outlived the server"
    finally:
        if kernel is not None and Path(f"/proc/{kernel}").exists():
            os.kill(kernel, signal.SIGKILL)
        kill_what_is_left(make)
