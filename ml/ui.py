"""The MLflow UI over the project's tracking store (``make mlflow``).

``python -m ml.ui [--port 5000]`` replaces itself with ``mlflow server`` bound to 127.0.0.1, with the backend
store of the ML settings (``MLFLOW_TRACKING_URI``, default the local SQLite store under ``var/mlflow/``), one
worker, no server-side job execution, and telemetry off. Artifacts are read from where each run logged them
(the runs' own artifact URIs); experiments created from the UI keep theirs where the project's do
(``MlSettings.experiment_artifact_location``: ``MLFLOW_ARTIFACT_ROOT``, else beside a local SQLite store).
"""

from __future__ import annotations

import argparse
import os
import shutil

from lake.settings import TELEMETRY_OFF, without_password
from ml.settings import MlSettings, get_ml_settings

SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""The UI runs no server-side jobs (GenAI evaluation and trace jobs): without them ``mlflow server`` starts no
job runner and no consumer process per job type, each of which imports MLflow while the server starts."""


def server_command(port: int, settings: MlSettings | None = None, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow server`` command line that serves the UI of the settings' tracking store on
    ``host:port``."""
    settings = settings or get_ml_settings()
    command = [
        "mlflow",
        "server",
        "--backend-store-uri",
        settings.tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-serve-artifacts",
    ]
    artifact_location = settings.experiment_artifact_location()
    if artifact_location is not None:
        command += ["--default-artifact-root", artifact_location]
    return command


def main(argv: list[str] | None = None) -> None:
    """Serve the MLflow UI: create the local store's folder if needed, then exec ``mlflow server``."""
    parser = argparse.ArgumentParser(prog="python -m ml.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT") or 5000))
    args = parser.parse_args(argv)
    settings = get_ml_settings()
    settings.create_store_folder()
    command = server_command(args.port, settings)
    store = without_password(settings.tracking_uri)
    print(f"MLflow UI of {store} on http://127.0.0.1:{args.port}", flush=True)
    executable = shutil.which(command[0])
    if executable is None:
        raise SystemExit("mlflow is not installed in this environment: run make install")
    os.execve(executable, command, {**os.environ, **TELEMETRY_OFF, **SERVER_ENV})


if __name__ == "__main__":
    main()
