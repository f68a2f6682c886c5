"""``make dev`` started in the background by a script (an end-to-end test, a service manager) stops on
SIGTERM: every process it started (uv, ``dg dev``, the webserver, the daemon, the code servers) exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_S = 600
"""The webserver answers after about 25 s on a quiet 2-core machine; a loaded one takes minutes."""
STOP_LIMIT_S = 120


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(session_id: int) -> list[int]:
    """The ids of the live (not zombie) processes of a session."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, session, ...
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def describe(pids: list[int]) -> str:
    """Each process's command line and ignored-signals mask, for a failure message."""
    lines = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
            ignored = next(
                line
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("SigIgn")
            )
        except OSError:
            continue
        lines.append(f"{pid} [{ignored}] {command}")
    return "\n".join(lines)


def wait_for_webserver(process: subprocess.Popen, port: int, log: Path, limit_s: float) -> None:
    """Wait until the Dagster webserver on ``port`` answers, failing with the end of ``log`` when ``process``
    ended first, or after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as answer:
                assert answer.status == 200
            return
        except OSError:
            assert time.monotonic() < deadline, "the Dagster webserver did not answer"
            time.sleep(1)


def as_a_background_job() -> None:
    """The signals of a command that a shell without job control starts with ``&``: SIGINT and SIGQUIT
    ignored, SIGTERM as usual (whatever this test process has done with its own)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_make_dev_in_the_background_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    log = (tmp_path / "make-dev.log").open("wb")
    make = subprocess.Popen(
        ["make", "dev", f"DEV_PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own session: every process it starts is found by the session id
        preexec_fn=as_a_background_job,
    )
    try:
        wait_for_webserver(make, port, tmp_path / "make-dev.log", STARTUP_LIMIT_S)
        started = session_processes(make.pid)
        assert len(started) >= 4  # make, uv, dg dev, the webserver, the daemon, code servers

        make.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_LIMIT_S
        while (left := session_processes(make.pid)) and time.monotonic() < deadline:
            time.sleep(1)
        assert left == [], f"still running after SIGTERM:\n{describe(left)}"
    finally:
        for pid in session_processes(make.pid):
            os.kill(pid, signal.SIGKILL)
        make.wait(timeout=30)
        log.close()
