"""Settings: every default held once (by its dataclass), every variable parsed into its field."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from data_contracts import CONTRACTS_DIR
from lake.settings import REPO_ROOT, VARIABLES, Settings, get_settings
from ml.settings import VARIABLES as ML_VARIABLES
from ml.settings import MlSettings, get_ml_settings
from simulator import SimulationConfig


@pytest.mark.parametrize(("settings", "variables"), [(Settings, VARIABLES), (MlSettings, ML_VARIABLES)])
def test_every_setting_with_a_default_has_one_variable(settings: type, variables: dict) -> None:
    defaulted = {f.name for f in dataclasses.fields(settings) if f.default is not dataclasses.MISSING}
    assert set(variables) == defaulted
    names = [name for name, _ in variables.values()]
    assert len(set(names)) == len(names)


def test_unset_or_blank_variables_keep_the_defaults(monkeypatch) -> None:
    for name, _ in [*VARIABLES.values(), *ML_VARIABLES.values()]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTOMATION", " ")
    monkeypatch.setenv("LAKE_APPLY_STEP_ROWS", "")
    lake, ml = get_settings(), get_ml_settings()
    assert lake.automation is True and lake.apply_step_rows == 250_000 and lake.duckdb_threads is None
    assert lake.schedule_timezone == "UTC" and lake.contracts_dir == CONTRACTS_DIR
    assert lake.first_snapshot_date == SimulationConfig().start  # the demo company's first day
    assert ml.tracking_uri == lake.mlflow_tracking_uri and ml.promotion_requires_approval is False
    assert ml.policy_file.is_file() and ml.scoring_chunk_rows == 100_000


def test_variables_set_their_fields(monkeypatch, tmp_path: Path) -> None:
    values = {
        "AUTOMATION": "Off",
        "BRONZE_RETENTION_DAYS": "30",
        "FIRST_SNAPSHOT_DATE": "2026-10-02",
        "DATA_CONTRACTS_DIR": str(tmp_path),
        "LAKE_DUCKDB_THREADS": "3",
        "INGEST_MAX_REJECT_RATE": "0.5",
        "PROMOTION_REQUIRES_APPROVAL": "YES",
        "NBA_POLICY_FILE": str(tmp_path / "policy.yaml"),
        "DRIFT_ERROR_PSI": "0.3",
        "SPARK_MEMORY_LIMIT": "512MiB",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    lake, ml = get_settings(), get_ml_settings()
    assert lake.automation is False and lake.bronze_retention_days == 30
    assert lake.first_snapshot_date == date(2026, 10, 2) and lake.contracts_dir == tmp_path
    assert lake.duckdb_threads == 3 and lake.max_reject_rate == 0.5
    assert ml.promotion_requires_approval is True and ml.policy_file == tmp_path / "policy.yaml"
    assert ml.drift_error_psi == 0.3
    assert lake.spark_memory_limit == 512 * 1024**2
    monkeypatch.setenv("SPARK_MEMORY_LIMIT", "8GB")  # DuckDB's reading of GB: powers of 1000
    assert get_settings().spark_memory_limit == 8 * 1000**3


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUTOMATION", "maybe", "AUTOMATION='maybe': expected on or off"),
        ("PROMOTION_REQUIRES_APPROVAL", "later", "PROMOTION_REQUIRES_APPROVAL='later': expected on or off"),
        ("LAKE_BATCH_BYTES", "lots", "LAKE_BATCH_BYTES='lots': invalid literal"),
        ("SPARK_MEMORY_LIMIT", "lots", "SPARK_MEMORY_LIMIT='lots': expected a size such as 8GB"),
    ],
)
def test_a_value_that_does_not_parse_names_its_variable(
    monkeypatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        get_ml_settings()


def test_each_lake_keeps_its_local_state_in_a_folder_of_its_own(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PII_SECRET", "a-secret-of-this-test")
    folders = {}
    for lake in (
        "s3://bucket/lake",
        "s3://bucket/other-lake",
        "s3://other-bucket/lake",
        str(tmp_path / "lake"),
    ):
        monkeypatch.setenv("LAKE_ROOT", lake)
        settings = get_settings()
        folders[lake] = {settings.beside_lake("crm-postgres").parent, Path(settings.simulator_truth).parent}
    # a local lake: its state beside it, the simulator's truth inside it
    assert folders[str(tmp_path / "lake")] == {tmp_path, tmp_path / "lake"}
    remote = [folders[lake] for lake in folders if lake.startswith("s3://")]
    # a lake on object storage keeps its local state (embedded CRM, simulator truth) in one folder per lake
    assert all(len(f) == 1 and next(iter(f)).is_relative_to(REPO_ROOT / "var") for f in remote)
    assert len({next(iter(f)) for f in remote}) == 3
