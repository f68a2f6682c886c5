"""The embedded CRM database (activation/crm_server.py): started on first use beside the lake, reused by later
processes and by processes asking at once, ``CRM_DATABASE_URL`` winning when set, stopped by its command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from activation.crm_server import crm_data_dir, crm_database_url, running_pid, stop
from lake.settings import REPO_ROOT, get_settings


def command(lake: Path, *args: str) -> str:
    """``python -m activation.crm_server ARGS`` for the lake ``lake``, in its own process; what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "activation.crm_server", *args],
        cwd=REPO_ROOT,
        env={**_environment(), "LAKE_ROOT": str(lake)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("CRM_DATABASE_URL", "CRM_POSTGRES_DIR")}


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside pytest's temporary root: a concurrent pytest run resets that root's permissions, which
    the server (running as another user when started by root) needs to reach its data folder."""
    folder = Path(tempfile.mkdtemp(prefix="crm-server-test-"))
    yield folder
    stop(folder / "crm-postgres")
    shutil.rmtree(folder, ignore_errors=True)


def test_started_once_beside_the_lake_reused_by_every_process_and_stopped(outside, monkeypatch):
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    monkeypatch.delenv("CRM_POSTGRES_DIR", raising=False)
    lake = outside / "lake"
    settings = replace(get_settings(), lake_root=str(lake))
    assert crm_data_dir(settings) == outside / "crm-postgres"
    # three processes ask at once: one server, one crm database, the same URL for all
    with ThreadPoolExecutor(3) as pool:
        urls = set(pool.map(lambda _: command(lake, "url"), range(3)))
    (url,) = urls
    pid = running_pid(outside / "crm-postgres")
    assert pid is not None
    with psycopg.connect(url) as conn:
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (42)")
    # a later process (this one) gets the same running server and its data
    assert crm_database_url(settings) == url and running_pid(outside / "crm-postgres") == pid
    with psycopg.connect(url) as conn:
        assert conn.execute("select x from t").fetchall() == [(42,)]
    assert command(lake, "status") == f"embedded CRM server {outside / 'crm-postgres'}: running (pid {pid})"
    assert command(lake, "stop").endswith(": stopped")
    assert running_pid(outside / "crm-postgres") is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    # started again on the same folder, the data is still there
    assert crm_database_url(settings) == url
    with psycopg.connect(url) as conn:
        assert conn.execute("select x from t").fetchall() == [(42,)]
    assert command(lake, "stop").endswith(": stopped") and command(lake, "stop").endswith("was not running")


def test_crm_database_url_wins_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql://crm@db.example:5432/crm")
    settings = replace(get_settings(), lake_root=str(tmp_path / "lake"))
    assert crm_database_url(settings) == "postgresql://crm@db.example:5432/crm"
    assert not (tmp_path / "crm-postgres").exists()


def test_the_data_folder_is_beside_the_lake_unless_placed_elsewhere(tmp_path, monkeypatch):
    settings = replace(get_settings(), lake_root=str(tmp_path / "lake"))
    monkeypatch.delenv("CRM_POSTGRES_DIR", raising=False)
    assert crm_data_dir(settings) == tmp_path / "crm-postgres"
    monkeypatch.setenv("CRM_POSTGRES_DIR", str(tmp_path / "elsewhere"))
    assert crm_data_dir(settings) == tmp_path / "elsewhere"
