"""The ML benchmarks run through at a small size, on the test company's gold lake laid out as
``benchmarks/prepare_gold_lake.py`` leaves one: a change that breaks a benchmark fails here, not in the next
``make bench``. Their figures at full size are the README's; at this size the imports outweigh the work, so a
missed target (exit status 1) is expected and only a crash fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lake.settings import REPO_ROOT, Settings

MISSED_A_TARGET = 1
SMALL_LAKE = ("--validation-days", "2")
"""The test company has two weeks of decisions: two validation dates, as the training tests."""


@pytest.fixture(scope="module")
def source(gold_lake: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gold lake as a prepared benchmark source: ``lake``, ``warehouse/engagement.duckdb``, ``READY``."""
    root = tmp_path_factory.mktemp("benchmark-source")
    (root / "lake").symlink_to(gold_lake.lake_root, target_is_directory=True)
    (root / "warehouse").mkdir()
    (root / "warehouse" / "engagement.duckdb").symlink_to(gold_lake.warehouse_path)
    (root / "READY").write_text("{}\n")
    return root


def run_benchmark(script: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> <arguments>``, its output captured; a crash fails the test."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *arguments],
        cwd=REPO_ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode in (0, MISSED_A_TARGET), done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def test_the_scoring_benchmark_runs_through(source: Path, tmp_path: Path) -> None:
    arguments = [
        "--source",
        str(source),
        *SMALL_LAKE,
        "--persons",
        "2500",
        "--erased",
        "5",
        "--scratch",
        str(tmp_path),
    ]
    out = run_benchmark("scoring.py", *arguments).stdout
    assert "persons decided:" in out and "5 erased" in out
    for line in (
        "python -m ml.score, champion alone:",
        "bare inplace_predict, champion:",
        "ratio shadow / bare:",
    ):
        assert line in out
    # a second run reuses the prepared input and models
    again = run_benchmark("scoring.py", *arguments).stdout
    assert "(made once," in again and again.count("persons decided:") == 1


def test_the_training_benchmark_runs_through(source: Path, tmp_path: Path) -> None:
    arguments = ["--source", str(source), *SMALL_LAKE, "--decisions", "3000", "--scratch", str(tmp_path)]
    out = run_benchmark("training_scale.py", *arguments).stdout
    assert "decisions:                3,000 (" in out
    assert "ratio ml.train / bare:" in out and "OK     training" in out
