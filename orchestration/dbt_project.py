"""The dbt project as Dagster sees it (kept in its own module: the manifest is read when the assets load)."""

from dagster_dbt import DbtProject

from lake.settings import REPO_ROOT

dbt_project = DbtProject(project_dir=REPO_ROOT / "dbt_project", profiles_dir=REPO_ROOT / "dbt_project")
dbt_project.prepare_if_dev()
