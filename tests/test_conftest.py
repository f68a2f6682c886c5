"""The shared fixtures leave the environment as they found it."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import isolated_environment

from lake.settings import REPO_ROOT, TELEMETRY_OFF, disable_telemetry, get_settings


def test_the_tests_run_on_a_temporary_warehouse(isolated_warehouse: Path) -> None:
    assert os.environ["WAREHOUSE_PATH"] == str(isolated_warehouse)
    assert get_settings().warehouse_path == isolated_warehouse
    assert not isolated_warehouse.is_relative_to(REPO_ROOT)
    assert all(name in os.environ for name in TELEMETRY_OFF)


def test_the_test_environment_is_restored_on_exit(monkeypatch, tmp_path: Path) -> None:
    for name in TELEMETRY_OFF:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "1")  # set before: kept as it is
    before = dict(os.environ)
    with isolated_environment(tmp_path / "w.duckdb"):
        assert os.environ["WAREHOUSE_PATH"] == str(tmp_path / "w.duckdb")
        assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["DO_NOT_TRACK"] == "1"
        disable_telemetry()  # what the project's commands call on the way in changes nothing more
    assert dict(os.environ) == before
