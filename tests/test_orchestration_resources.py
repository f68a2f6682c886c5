"""The resources' settings: each field left unset comes from the environment (so no configuration changes
nothing), a field set in the Definitions or in a run's config wins for that run."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import get_args

import dagster as dg
import pytest

from lake.settings import Settings, get_settings
from ml.settings import MlSettings, get_ml_settings
from orchestration.resources import LakeResource, MlflowResource


def test_without_configuration_the_resources_give_the_environments_settings() -> None:
    assert LakeResource().settings() == get_settings()
    assert MlflowResource().settings() == get_ml_settings()


def test_the_environment_is_the_default_and_a_field_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPSHOT_PERSON_DATES_PER_DBT_RUN", "1234")
    monkeypatch.setenv("DRIFT_ERROR_PSI", "0.4")
    assert LakeResource().settings().snapshot_person_dates_per_dbt_run == 1234
    assert (
        LakeResource(snapshot_person_dates_per_dbt_run=99).settings().snapshot_person_dates_per_dbt_run == 99
    )
    assert MlflowResource().settings().drift_error_psi == 0.4
    assert MlflowResource(drift_error_psi=0.5).settings().drift_error_psi == 0.5


def test_paths_are_resolved_as_the_environment_resolves_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = LakeResource(warehouse_path="warehouse/w.duckdb").settings()
    assert settings.warehouse_path == tmp_path / "warehouse" / "w.duckdb"
    monkeypatch.setenv("WAREHOUSE_PATH", "warehouse/w.duckdb")
    assert get_settings().warehouse_path == settings.warehouse_path


@pytest.mark.parametrize(
    ("resource", "settings_type"), [(LakeResource, Settings), (MlflowResource, MlSettings)]
)
def test_every_field_of_a_resource_reaches_its_setting_and_only_it(resource, settings_type) -> None:
    defaults = asdict(resource().settings())
    for name, field in resource.model_fields.items():
        assert name in {f.name for f in fields(settings_type)}, f"{resource.__name__}.{name} is not a setting"
        kind = get_args(field.annotation)[0]  # X of ``X | None``
        value = {bool: not defaults[name], int: 7, float: 0.75, str: f"/elsewhere/{name}"}[kind]
        changed = asdict(resource(**{name: value}).settings())
        got = changed.pop(name)
        assert (str(got) if isinstance(got, Path) else got) == value, name
        assert changed == {k: v for k, v in defaults.items() if k != name}, name


def test_a_runs_config_sets_the_resources_for_that_run(tmp_path: Path) -> None:
    seen = {}

    @dg.asset
    def reads_settings(lake: LakeResource, mlflow: MlflowResource) -> None:
        seen["warehouse"] = lake.settings().warehouse_path
        seen["model"] = mlflow.settings().model_name

    resources = {"lake": LakeResource(), "mlflow": MlflowResource()}
    assert dg.materialize([reads_settings], resources=resources).success
    assert seen == {"warehouse": get_settings().warehouse_path, "model": get_ml_settings().model_name}

    run_config = {
        "resources": {
            "lake": {"config": {"warehouse_path": str(tmp_path / "other.duckdb")}},
            "mlflow": {"config": {"model_name": "another_model"}},
        }
    }
    assert dg.materialize([reads_settings], resources=resources, run_config=run_config).success
    assert seen == {"warehouse": tmp_path / "other.duckdb", "model": "another_model"}
