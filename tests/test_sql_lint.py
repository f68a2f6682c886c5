"""The dbt models pass the SQL lint of ``make lint`` (sqlfluff with ``dbt_project/.sqlfluff``), so CI runs
it."""

import json
import subprocess
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "dbt_project" / "models"


def test_every_sql_model_passes_the_sql_lint() -> None:
    done = subprocess.run(
        ["sqlfluff", "lint", str(MODELS), "--format", "json", "--nofail"],
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(done.stdout)
    linted = {Path(result["filepath"]).resolve() for result in results}
    assert linted == {path.resolve() for path in MODELS.rglob("*.sql")}
    violations = [
        f"{Path(result['filepath']).name}:{violation['start_line_no']} {violation['code']} "
        f"{violation['description']}"
        for result in results
        for violation in result["violations"]
    ]
    assert violations == []
