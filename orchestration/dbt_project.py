"""The dbt project as Dagster sees it (kept in its own module: the manifest is read when the assets load)."""

import os
import shutil
import sys
from functools import cached_property
from importlib import metadata
from pathlib import Path

from dagster_dbt import DagsterDbtProjectPreparer, DbtCliResource, DbtProject
from packaging.version import Version

from data_contracts import scan_contracts
from lake.dbt_sources import sync_valid as sync_dbt_sources
from lake.settings import REPO_ROOT, get_settings

DBT_EXECUTABLE = shutil.which("dbt") or str(Path(sys.executable).with_name("dbt"))
"""dbt on the PATH, else the one installed beside this Python (a virtualenv's ``bin`` not on the PATH)."""


class LocalDbtCliResource(DbtCliResource):
    """``DbtCliResource`` that knows the version of the dbt installed beside this Python without asking it.

    dagster-dbt (0.29) asks the dbt executable for its version (``dbt --version``) once per resource, that is
    once per run with dbt steps: a dbt start-up of seconds, and dbt then asks PyPI for its latest release.
    When ``dbt_executable`` is the ``dbt`` script of this Python's environment, it runs this environment's
    dbt-core, whose version is in the package metadata; any other executable is asked as dagster-dbt asks
    it."""

    @cached_property
    def _cli_version(self) -> Version:
        found = shutil.which(self.dbt_executable)
        beside = Path(sys.executable).with_name("dbt")
        if found and beside.exists() and Path(found).samefile(beside):
            try:
                return Version(metadata.version("dbt-core"))
            except metadata.PackageNotFoundError:
                pass
        return super()._cli_version


PARSE_STAGING = ".parsing"
"""The folder under the target path that ``dbt parse`` writes to before its artifacts replace the target's."""
PARTIAL_PARSE = "partial_parse.msgpack"
PARSE_ARTIFACTS = (PARTIAL_PARSE, "perf_info.json", "semantic_manifest.json", "manifest.json")


class ManifestPreparer(DagsterDbtProjectPreparer):
    """Parses the dbt project (``dbt parse``) under ``dagster dev``, so that edited models are picked up, and
    under any other command when the manifest is missing (a fresh clone loaded by ``dagster definitions
    validate``, ``dagster asset materialize`` or a code server), with the dbt installed beside this Python."""

    def prepare_if_dev(self, project: DbtProject) -> None:
        """Prepare the project under ``dagster dev`` or when its manifest does not exist yet."""
        if self.using_dagster_dev() or not project.manifest_path.exists():
            self.prepare(project)

    def _prepare_manifest(self, project: DbtProject) -> None:
        """Parse into a staging folder, then move the artifacts into the target path one rename each: a
        process that loads the code location meanwhile (a run's worker, ``dagster`` commands) reads the old
        manifest or the new one, never a half-written file (dbt writes its artifacts in place)."""
        # first the dbt sources of the contracts as they are now
        sync_dbt_sources(scan_contracts(get_settings().contracts_dir), project.project_dir)
        target = project.project_dir / project.target_path
        staging = target / PARSE_STAGING
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if (target / PARTIAL_PARSE).exists():  # dbt parses only what changed since
            shutil.copy2(target / PARTIAL_PARSE, staging / PARTIAL_PARSE)
        LocalDbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE).cli(
            ["parse", "--quiet"], target_path=project.target_path / PARSE_STAGING
        ).wait()
        for name in PARSE_ARTIFACTS:  # the manifest last
            if (staging / name).exists():
                os.replace(staging / name, target / name)
        shutil.rmtree(staging, ignore_errors=True)


DBT_TARGET = get_settings().dbt_target
"""The profile's target the dbt assets build on (``DBT_TARGET``); each target has its own manifest, parsed
into its own target path (``target/`` for DuckDB, ``target/spark/`` as ``make dbt-spark`` writes it): the
two differ in the models enabled per engine (the identity components)."""

dbt_project = DbtProject(
    project_dir=REPO_ROOT / "dbt_project",
    profiles_dir=REPO_ROOT / "dbt_project",
    target=DBT_TARGET,
    target_path=Path("target") if DBT_TARGET == "local" else Path("target") / DBT_TARGET,
)
ManifestPreparer().prepare_if_dev(dbt_project)
