"""What an operator sees and runs in Dagster: the code location loads from a fresh clone, descriptions of jobs,
schedules and sensors, what runs by default, metadata of dbt and lake assets, freshness and retention from the
contracts, maintenance of every zone."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lake.settings import REPO_ROOT

CLONE_PARTS = ("data_contracts", "dbt_project", "lake", "orchestration", "simulator")
CLONE_FILES = ("workspace.yaml", "pyproject.toml", "dagster.yaml")


def fresh_clone(root: Path) -> Path:
    """The repository's tracked parts copied under ``root``, without a dbt manifest or logs."""
    clone = root / "clone"
    for part in CLONE_PARTS:
        shutil.copytree(
            REPO_ROOT / part, clone / part, ignore=shutil.ignore_patterns("target", "logs", "__pycache__")
        )
    for name in CLONE_FILES:
        shutil.copy(REPO_ROOT / name, clone / name)
    return clone


@pytest.mark.slow
def test_a_fresh_clone_validates_without_a_dbt_manifest(tmp_path: Path) -> None:
    """`dagster definitions validate` parses the dbt project itself when the manifest is missing, with the dbt
    beside the Python even when the environment's bin folder is not on the PATH."""
    clone = fresh_clone(tmp_path)
    assert not (clone / "dbt_project" / "target").exists()
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent
        ),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (clone / "dbt_project" / "target" / "manifest.json").exists()
