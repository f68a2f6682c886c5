"""The tokenisation secret fails closed: outside local development a missing ``PII_SECRET`` stops the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lake.settings import DEVELOPMENT_PII_SECRET, REPO_ROOT, SettingsError, get_settings


@pytest.fixture
def no_secret(monkeypatch, tmp_path: Path) -> None:
    """An environment with a local lake root and neither a secret nor an environment name."""
    monkeypatch.delenv("PII_SECRET", raising=False)
    monkeypatch.delenv("LAKEHOUSE_ENV", raising=False)
    monkeypatch.setenv("LAKE_ROOT", str(tmp_path / "lake"))


def test_local_development_uses_the_development_secret(no_secret) -> None:
    assert get_settings().pii_secret == DEVELOPMENT_PII_SECRET


def test_a_lake_on_object_storage_needs_the_secret(no_secret, monkeypatch) -> None:
    monkeypatch.setenv("LAKE_ROOT", "s3://bucket/lake")
    with pytest.raises(SettingsError, match=r"PII_SECRET is not set.*s3://bucket/lake"):
        get_settings()
    monkeypatch.setenv("PII_SECRET", "a-real-secret")
    assert get_settings().pii_secret == "a-real-secret"


@pytest.mark.parametrize("secret", [None, "", DEVELOPMENT_PII_SECRET])
def test_production_needs_a_secret_of_its_own(no_secret, monkeypatch, secret: str | None) -> None:
    monkeypatch.setenv("LAKEHOUSE_ENV", "production")
    if secret is not None:
        monkeypatch.setenv("PII_SECRET", secret)
    with pytest.raises(SettingsError, match="LAKEHOUSE_ENV=production"):
        get_settings()
    monkeypatch.setenv("PII_SECRET", "a-real-secret")
    assert get_settings().pii_secret == "a-real-secret"


def test_an_unknown_environment_name_is_refused(no_secret, monkeypatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_ENV", "prod")
    with pytest.raises(SettingsError, match=r"LAKEHOUSE_ENV='prod'.*development.*production"):
        get_settings()


def test_the_ingestion_command_stops_before_writing(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "landing").mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "LAKE_ROOT": str(lake), "LAKEHOUSE_ENV": "production"}
    env["WAREHOUSE_PATH"] = str(tmp_path / "w.duckdb")
    done = subprocess.run(
        [sys.executable, "-m", "lake.ingest"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "PII_SECRET is not set" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in lake.iterdir()) == ["landing"]
    assert not (tmp_path / "w.duckdb").exists()


def test_the_dagster_code_location_refuses_to_load(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "LAKE_ROOT": "s3://bucket/lake", "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", "import orchestration.definitions"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "SettingsError: PII_SECRET is not set" in done.stderr and "s3://bucket/lake" in done.stderr
