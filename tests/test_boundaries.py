"""The dependency rules between the project's packages (``[tool.importlinter]`` in ``pyproject.toml``),
checked by ``lint-imports`` over the real import graph: the lake runs without the simulator, the models and
the orchestration; the data contracts import nothing of the project; the models do not import the
orchestration. And every third-party package the project imports is a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def undeclared_imports(package_dirs: list[Path], declared: set[str]) -> dict[str, str]:
    """The third-party modules the code under ``package_dirs`` imports whose distribution is not in
    ``declared`` (canonical names), each with a file that imports it."""
    local = {p.name for p in package_dirs}
    distributions = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for path in sorted(f for p in package_dirs for f in p.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - local - set(sys.stdlib_module_names):
                names = {canonicalize_name(d) for d in distributions.get(top, [top])}
                if not names & declared:
                    found.setdefault(top, str(path))
    return found


def test_every_package_the_project_imports_is_a_declared_dependency(tmp_path: Path) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    declared = {canonicalize_name(Requirement(d).name) for d in project["project"]["dependencies"]}
    packages = [REPO_ROOT / p for p in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]]
    assert len(packages) >= 6
    assert undeclared_imports(packages, declared) == {}
    # a test-only package imported by the project would be found
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "probe.py").write_text("import hypothesis.strategies\nfrom lake import settings\n")
    assert set(undeclared_imports([tmp_path / "lake"], declared)) == {"hypothesis"}
