"""The notebooks: stored without outputs, and each runs top to bottom on the test lake with a real MLflow
store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nbformat
import polars as pl
import pytest

from lake.gold import gold_uri
from lake.settings import Settings
from ml.settings import get_ml_settings

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = {"explore_training_data.ipynb", "train_and_compare.ipynb"}
CELL_TIMEOUT_S = 900
"""A cell trains at most one small model; a loaded 2-core machine is slow."""


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_the_notebooks_are_stored_without_outputs():
    assert {path.name for path in NOTEBOOKS.glob("*.ipynb")} == EXPECTED
    for name in sorted(EXPECTED):
        notebook = read(name)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        for number, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name}, cell {number}: stored with outputs"
                assert cell.execution_count is None, f"{name}, cell {number}: stored with an execution count"


@pytest.fixture
def notebook_env(gold_lake: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment the notebook kernels inherit: the test lake, an MLflow store under ``tmp_path``, and
    the Jupyter and IPython folders under ``tmp_path`` (nothing written to the home folder). Returns the
    lake's settings with that store."""
    store = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    values = {
        "LAKE_ROOT": gold_lake.lake_root,
        "WAREHOUSE_PATH": str(gold_lake.warehouse_path),
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter" / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter" / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter" / "data"),
        "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return replace(gold_lake, mlflow_tracking_uri=store)


def execute(name: str, parameters: str | None = None) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel of this environment, from the notebooks folder (as
    JupyterLab does); a cell that raises fails the test with the cell's traceback. ``parameters``: code run
    right after the cell tagged ``parameters`` (as papermill injects them)."""
    from nbclient import NotebookClient

    notebook = read(name)
    if parameters is not None:
        tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: expected one cell tagged parameters"
        notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(parameters))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return notebook


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed (stdout)."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


def images(notebook: nbformat.NotebookNode) -> int:
    """How many PNG images the notebook's cells displayed."""
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.slow
def test_explore_training_data_runs_on_the_test_lake(notebook_env: Settings):
    notebook = execute("explore_training_data.ipynb")
    text = printed(notebook)
    training = pl.read_delta(gold_uri(notebook_env, "training_decisions"))
    assert f"{training.height:,} decisions" in text
    latest = training["decision_date"].max()
    features = pl.read_delta(gold_uri(notebook_env, "person_features_daily")).filter(
        pl.col("snapshot_date") == latest
    )
    assert f"{features.height:,} persons" in text
    assert "drift from " in text
    assert images(notebook) >= 3  # label rates, feature distributions, drift


SMALL_LAKE = "validation_days = 2\nmax_rounds = 60\nmax_depth = 3\n"
"""The test company has two weeks of decisions: two validation dates and fewer rounds (as the training tests),
and the champion's depth: the notebook's candidate is then the champion's model again, which passed its
quality checks and cannot beat itself by the margin, so the gate's outcome does not depend on how well a model
learns from a small lake."""


@pytest.mark.slow
def test_train_and_compare_registers_a_challenger_beside_the_champion(notebook_env: Settings):
    from mlflow.tracking import MlflowClient

    from ml.pipeline import train_candidate
    from ml.train import TrainingConfig

    settings = get_ml_settings()  # the store of notebook_env
    assert settings.tracking_uri == notebook_env.mlflow_tracking_uri
    first = train_candidate(
        settings, TrainingConfig(validation_days=2, max_rounds=60, max_depth=3), lake_settings=notebook_env
    )
    assert first.outcome == "champion", first.describe()

    notebook = execute("train_and_compare.ipynb", parameters=SMALL_LAKE)
    text = printed(notebook)
    assert "champion: valued on the same logs" in text
    assert images(notebook) >= 1

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{settings.model_name}'")}
    assert sorted(versions) == ["1", "2"]
    candidate = client.get_model_version(settings.model_name, "2")
    model = client.get_registered_model(settings.model_name)
    # the candidate is the challenger, gated against the champion on the same logs, its figures on the
    # version; the champion did not move
    assert str(model.aliases["champion"]) == first.model_version == "1"
    assert str(model.aliases["challenger"]) == "2"
    assert candidate.tags["gate.outcome"] == "challenger"
    assert candidate.tags["gate.champion"] == "1"
    assert f"version 2: {candidate.tags['gate.outcome']}" in text
    run = client.get_run(candidate.run_id)
    assert run.data.params["config.validation_days"] == "2"  # the notebook's parameters reached the run
    assert run.data.params["config.max_depth"] == "3"
    # valued on the out-of-time logs: every decision of the two latest decision dates
    training = pl.read_delta(gold_uri(notebook_env, "training_decisions"))
    latest = training["decision_date"].unique().sort()[-2:]
    assert int(candidate.tags["ope.n"]) == training.filter(pl.col("decision_date").is_in(latest)).height
    assert candidate.tags["ope.estimator"] == "dr"
    assert run.data.metrics["ope.dr.value"] == pytest.approx(float(candidate.tags["ope.value"]))
    assert run.info.experiment_id == client.get_experiment_by_name(settings.experiment_name).experiment_id
    assert f"run: {candidate.run_id}" in text
