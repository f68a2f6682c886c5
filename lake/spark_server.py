"""A Spark Connect server on this machine: Sail (the ``pysail`` wheel, a Spark Connect compatible engine in
Rust that reads, writes and merges Delta tables), for the tests, ``make dbt-spark`` and any command that
should run dbt on the Spark target.

The server binds 127.0.0.1 only; clients reach it at :attr:`SparkServer.remote` (``SPARK_REMOTE``). Each
Spark Connect session has its own catalog on Sail (a new session starts with no schema and no table), kept in
the server's memory: :attr:`SparkServer.remote` names one session that every client joins, so the silver
tables registered by :mod:`lake.spark_warehouse` and the tables dbt writes stay known from one command to the
next until the server stops. :func:`start` and :func:`stop` (or :func:`running`) are the whole interface.

``python -m lake.spark_server run [--port PORT] COMMAND [ARGS...]`` runs one command with ``SPARK_REMOTE`` set
and stops the server afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lake.s3_server import free_port_block
from lake.settings import get_settings

HOST = "127.0.0.1"


class SparkServerError(RuntimeError):
    """The server could not be started (the message ends with its log)."""


@dataclass(frozen=True)
class SparkServer:
    """A running Sail Spark Connect server: its port, process and log file."""

    port: int
    session_id: str
    """The Spark Connect session every client of :attr:`remote` joins: on Sail the catalog is per session."""
    process: subprocess.Popen
    log: Path
    started_in_s: float
    """Seconds from the process start until the port accepted connections."""

    @property
    def remote(self) -> str:
        """The Spark Connect URL of the server's shared session (``SPARK_REMOTE``)."""
        return f"sc://{HOST}:{self.port}/;session_id={self.session_id}"


def sail_executable() -> str:
    """The ``sail`` command of the ``pysail`` wheel: beside this Python, else on the PATH."""
    beside = Path(sys.executable).with_name("sail")
    found = str(beside) if beside.exists() else shutil.which("sail")
    if found is None:
        raise SparkServerError("no sail command: install the project's environment (pysail)")
    return found


SESSION_TIMEOUT_S = 10 * 365 * 24 * 3600
"""How long the shared session may stay idle: as long as the server runs. Sail removes a session idle for 15
minutes by default, with its catalog, and refuses its id afterwards, which every client of
:attr:`SparkServer.remote` names (an hourly job after a quiet hour would fail)."""


def start(
    port: int | None = None,
    log: Path | None = None,
    timeout_s: float = 60.0,
    session_timeout_s: int = SESSION_TIMEOUT_S,
    memory_limit: int | None = None,
    spill_directory: Path | None = None,
) -> SparkServer:
    """Start Sail's Spark Connect server on 127.0.0.1:``port`` (default: a free port chosen now), its output
    appended to ``log`` (default: a new temporary file), its sessions removed after ``session_timeout_s``
    idle seconds, its queries held to ``memory_limit`` bytes spilling to ``spill_directory`` (default: the
    settings' ``spark_memory_limit`` and ``spark_temp_directory``), and wait until the port accepts
    connections; SparkServerError when it does not within ``timeout_s``."""
    settings = get_settings()
    port = port or free_port_block(1)
    log = log or Path(tempfile.mkstemp(prefix="sail-", suffix=".log")[1])
    spill_directory = spill_directory or settings.spark_temp_directory
    spill_directory.mkdir(parents=True, exist_ok=True)
    command = [sail_executable(), "spark", "server", "--ip", HOST, "--port", str(port)]
    environment = {
        **os.environ,
        "SAIL_SPARK__SESSION_TIMEOUT_SECS": str(session_timeout_s),
        # Sail's pool is unbounded by default; the fair pool shares the limit between the spilling operators
        "SAIL_RUNTIME__MEMORY_POOL__TYPE": "fair",
        "SAIL_RUNTIME__MEMORY_POOL__FAIR__MAX_SIZE": str(memory_limit or settings.spark_memory_limit),
        "SAIL_RUNTIME__TEMPORARY_FILES__PATHS": json.dumps([str(spill_directory)]),
    }
    began = time.monotonic()
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=environment,
        )
    while True:
        if process.poll() is not None:
            raise SparkServerError(f"sail exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0):
            break
        if time.monotonic() > began + timeout_s:
            _terminate(process, 10.0)
            raise SparkServerError(f"port {port} did not answer within {timeout_s:g} s:\n{_tail(log)}")
        time.sleep(0.1)
    return SparkServer(port, str(uuid.uuid4()), process, log, time.monotonic() - began)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _terminate(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM to the process, SIGKILL when it is still there after ``timeout_s``; reaps it."""
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop(server: SparkServer, timeout_s: float = 30.0) -> None:
    """Stop the server and wait until its process has exited."""
    _terminate(server.process, timeout_s)


@contextlib.contextmanager
def running(port: int | None = None, log: Path | None = None) -> Iterator[SparkServer]:
    """A server while the block runs, stopped afterwards."""
    server = start(port, log)
    try:
        yield server
    finally:
        stop(server)


def main(argv: list[str] | None = None) -> int:
    """``run`` one command with ``SPARK_REMOTE`` pointing at a server started for it."""
    parser = argparse.ArgumentParser(prog="python -m lake.spark_server", description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run one command with SPARK_REMOTE set, then stop the server")
    run.add_argument("--port", type=int, default=None, help="the Spark Connect port (default: a free one)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    args = parser.parse_args(argv)
    if not args.command:
        run.error("run needs a command")
    # SIGTERM unwinds like Ctrl-C: the server is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with running(args.port) as server:
        print(f"Sail Spark Connect on {server.remote} (up in {server.started_in_s:.1f} s, log {server.log})")
        sys.stdout.flush()
        return subprocess.run(args.command, env={**os.environ, "SPARK_REMOTE": server.remote}).returncode


if __name__ == "__main__":
    sys.exit(main())
