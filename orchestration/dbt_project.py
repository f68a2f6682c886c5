"""The dbt project as Dagster sees it (kept in its own module: the manifest is read when the assets load)."""

import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from lake.settings import REPO_ROOT

DBT_EXECUTABLE = shutil.which("dbt") or str(Path(sys.executable).with_name("dbt"))
"""dbt on the PATH, else the one installed beside this Python (a virtualenv's ``bin`` not on the PATH)."""

dbt_project = DbtProject(project_dir=REPO_ROOT / "dbt_project", profiles_dir=REPO_ROOT / "dbt_project")
if shutil.which("dbt"):  # under `dagster dev`, re-parse edited models (`make install` parses them otherwise)
    dbt_project.prepare_if_dev()
