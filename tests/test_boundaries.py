"""The dependency rules between the project's packages (``[tool.importlinter]`` in ``pyproject.toml``),
checked by ``lint-imports`` over the real import graph: the lake runs without the simulator, the models and
the orchestration; the data contracts import nothing of the project; the models do not import the
orchestration."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from lake.settings import REPO_ROOT

LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run from the repository root (no cache, so it reads the code as it is now)."""
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_project_keeps_its_import_boundaries() -> None:
    contracts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = {c["source_modules"][0]: set(c["forbidden_modules"]) for c in contracts}
    assert forbidden["lake"] >= {"simulator", "orchestration", "ml"}
    assert forbidden["data_contracts"] >= {"lake", "simulator", "orchestration", "ml"}
    assert "orchestration" in forbidden["ml"]
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


def test_a_broken_boundary_fails_with_the_import_that_breaks_it(tmp_path: Path) -> None:
    # the orchestration does import the lake: a contract that forbids it must fail and name an import
    config = tmp_path / "importlinter.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["lake", "orchestration"]\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "orchestration without the lake"\ntype = "forbidden"\n'
        'source_modules = ["orchestration"]\nforbidden_modules = ["lake"]\n'
    )
    result = lint_imports(str(config))
    assert result.returncode != 0
    assert "orchestration without the lake BROKEN" in result.stdout
    assert "orchestration.resources -> lake.settings" in result.stdout
