"""``python -m data_contracts check [--against GIT_REF] [--contracts-dir DIR]``: lint every contract and fail
on a breaking change that does not bump the major version, comparing each contract with its version at
``GIT_REF`` (HEAD by default; a contract new since then is compared with nothing, and one removed since then
must have been retired first)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from data_contracts.compat import check_versions, lint
from data_contracts.model import CONTRACT_SUFFIX, CONTRACTS_DIR, scan_contracts


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, check=False)


def check(against: str, directory: Path = CONTRACTS_DIR) -> list[str]:
    """Every problem of every contract in ``directory``, file by file: invalid fields, clashes with another
    contract, failing lint, and breaking changes without a major version bump since git revision
    ``against``."""
    root = _git(directory, "rev-parse", "--show-toplevel")
    if (
        root.returncode
        or _git(directory, "rev-parse", "--verify", "--quiet", f"{against}^{{commit}}").returncode
    ):
        return [f"cannot compare with git revision {against!r}: {root.stderr.strip() or 'unknown revision'}"]
    folder = directory.resolve().relative_to(Path(root.stdout.strip()).resolve()).as_posix()
    listed = _git(directory, "ls-tree", "--full-tree", "--name-only", f"{against}:{folder}")
    old_names = set(listed.stdout.split()) if listed.returncode == 0 else set()
    current = sorted(directory.glob(f"*{CONTRACT_SUFFIX}"))
    scanned = scan_contracts(directory)
    invalid = {p.path for p in scanned.problems if p.other is None}  # a clash leaves each file valid alone
    unreadable = {p.path for p in scanned.problems if p.field is None and p.other is None}  # nothing to lint
    by_file: dict[str, list[str]] = {path.name: [] for path in current}
    for problem in scanned.problems:
        field = f"{problem.field}: " if problem.field else ""
        by_file[problem.path.name].append(f"{problem.path.name}: {field}{problem.message}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in current:
            if path not in unreadable:
                by_file[path.name] += [f"{path.name}: lint: {message}" for message in lint(path)]
            if path not in invalid and path.name in old_names:
                old = Path(tmp) / path.name
                old.write_text(
                    _git(directory, "show", f"{against}:{folder}/{path.name}").stdout, encoding="utf-8"
                )
                by_file[path.name] += check_versions(old, path)
        problems = [problem for messages in by_file.values() for problem in messages]
        for name in sorted(n for n in old_names - {p.name for p in current} if n.endswith(CONTRACT_SUFFIX)):
            old = yaml.safe_load(_git(directory, "show", f"{against}:{folder}/{name}").stdout) or {}
            if old.get("status") != "retired":
                problems.append(f"{name}: contract removed without being retired first (status: retired)")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 when every contract passes, 1 otherwise)."""
    parser = argparse.ArgumentParser(prog="python -m data_contracts", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="lint the contracts and check their versions")
    check_parser.add_argument("--against", default="HEAD", help="git revision to compare with (default HEAD)")
    check_parser.add_argument(
        "--contracts-dir", type=Path, default=CONTRACTS_DIR, help="folder of the contracts to check"
    )
    args = parser.parse_args(argv)
    problems = check(args.against, args.contracts_dir)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if problems:
        return 1
    count = len(list(args.contracts_dir.glob(f"*{CONTRACT_SUFFIX}")))
    print(
        f"ok: {count} contracts valid, no breaking change without a major version bump since {args.against}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
