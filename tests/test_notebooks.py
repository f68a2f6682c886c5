"""The notebooks: stored without outputs, and each runs top to bottom on the test lake with a real MLflow store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nbformat
import polars as pl
import pytest

from lake.gold import gold_uri
from lake.settings import Settings

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
    """The environment the notebook kernels inherit: the test lake, an MLflow store under ``tmp_path``, and the
    Jupyter and IPython folders under ``tmp_path`` (nothing written to the home folder). Returns the lake's
    settings with that store."""
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


def execute(name: str) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel of this environment, from the notebooks folder (as
    JupyterLab does); a cell that raises fails the test with the cell's traceback."""
    from nbclient import NotebookClient

    notebook = read(name)
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
    assert "drift: " in text
    assert images(notebook) >= 3  # label rates, feature distributions, drift
