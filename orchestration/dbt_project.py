"""The dbt project as Dagster sees it (kept in its own module: the manifest is read when the assets load)."""

import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from data_contracts import scan_contracts
from lake.dbt_sources import sync_valid as sync_dbt_sources
from lake.settings import REPO_ROOT, get_settings

DBT_EXECUTABLE = shutil.which("dbt") or str(Path(sys.executable).with_name("dbt"))
"""dbt on the PATH, else the one installed beside this Python (a virtualenv's ``bin`` not on the PATH)."""

dbt_project = DbtProject(project_dir=REPO_ROOT / "dbt_project", profiles_dir=REPO_ROOT / "dbt_project")
if shutil.which("dbt"):  # under `dagster dev`, re-parse edited models (`make install` parses them otherwise)
    if dbt_project.preparer.using_dagster_dev():  # first the dbt sources of the contracts as they are now
        sync_dbt_sources(scan_contracts(get_settings().contracts_dir), dbt_project.project_dir)
    dbt_project.prepare_if_dev()
