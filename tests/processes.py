"""Helpers of the tests that start servers in the background (``make dev``, ``make mlflow``) as a script or a
service manager would: a free port, the processes of a session, waiting for the Dagster webserver."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


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


def command_line(pid: int) -> str:
    """The command line of a process, its arguments joined by spaces ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def describe(pids: list[int]) -> str:
    """Each process's command line and ignored-signals mask, for a failure message."""
    lines = []
    for pid in pids:
        command = command_line(pid)[:160]
        try:
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
