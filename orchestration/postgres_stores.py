"""Dagster and MLflow on PostgreSQL on this machine: the production profile of both stores, served by the
embedded PostgreSQL server that already holds the CRM (:mod:`activation.crm_server`, ``crm-postgres/`` beside
the lake), one database each (``dagster``, ``mlflow``, beside ``crm``).

``python -m orchestration.postgres_stores COMMAND [ARGS...]`` starts the server when needed, creates the two
databases when missing, installs the production profile of the Dagster instance
(``orchestration/dagster-postgres.yaml``) in a ``DAGSTER_HOME`` of its own (``dagster-postgres/`` beside the
lake, ``var/dagster-postgres``: the SQLite history of ``var/dagster`` is never mixed in), and replaces itself
with ``COMMAND`` in the environment that selects PostgreSQL: ``DAGSTER_POSTGRES_URL``,
``MLFLOW_TRACKING_URI``, ``DAGSTER_HOME``. MLflow's artifacts stay in a local folder
(``MLFLOW_ARTIFACT_ROOT``, default ``var/mlflow/artifacts``). ``make dev-postgres`` serves the Dagster UI so.

With a PostgreSQL server of your own, set the same variables instead and run ``make install`` (which installs
the profile when ``DAGSTER_POSTGRES_URL`` is set).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from activation.crm_server import embedded_database_url
from lake.settings import REPO_ROOT, TELEMETRY_OFF, Settings, get_settings

DAGSTER_URL_ENV = "DAGSTER_POSTGRES_URL"
"""The variable the production profile of the Dagster instance reads its database URL from."""
PROFILE = REPO_ROOT / "orchestration" / "dagster-postgres.yaml"
"""The production profile of the Dagster instance: run, event-log and schedule storage in PostgreSQL."""
DAGSTER_DATABASE = "dagster"
MLFLOW_DATABASE = "mlflow"
DAGSTER_DRIVER = "psycopg2"
"""dagster-postgres's driver: it sends ``NOTIFY`` with a bound parameter, which psycopg 3 (SQLAlchemy 2.1's
default for ``postgresql://``) refuses."""
MLFLOW_DRIVER = "psycopg"
"""MLflow's driver (psycopg 3): its migrations and registry run on it."""


def with_driver(url: str, driver: str) -> str:
    """The SQLAlchemy URL of the ``postgresql://`` URL ``url`` with the driver ``driver``
    (``postgresql+<driver>://``)."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {scheme}://...")
    return f"postgresql+{driver}://{rest}"


def install_profile(home: Path) -> Path:
    """Copy the production profile into ``home`` as its ``dagster.yaml`` (the file Dagster reads there)."""
    home.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(PROFILE, home / "dagster.yaml"))


def dagster_home(settings: Settings) -> Path:
    """The Dagster instance's folder on the embedded server: ``dagster-postgres/`` beside the lake
    (``var/dagster-postgres`` for the default lake, :meth:`Settings.beside_lake`)."""
    return settings.beside_lake("dagster-postgres")


def embedded_stores_environment(settings: Settings) -> dict[str, str]:
    """The variables that put Dagster and MLflow on the embedded server's databases (started and created when
    needed), with the Dagster instance of :func:`dagster_home`."""
    return {
        "DAGSTER_HOME": str(dagster_home(settings)),
        DAGSTER_URL_ENV: with_driver(embedded_database_url(settings, DAGSTER_DATABASE), DAGSTER_DRIVER),
        "MLFLOW_TRACKING_URI": with_driver(embedded_database_url(settings, MLFLOW_DATABASE), MLFLOW_DRIVER),
    }


def main(argv: list[str] | None = None) -> None:
    """Run a command with Dagster and MLflow on the embedded PostgreSQL server (it replaces this process)."""
    command = sys.argv[1:] if argv is None else argv
    if not command:
        raise SystemExit(f"usage: python -m orchestration.postgres_stores COMMAND [ARGS...]\n\n{__doc__}")
    environment = embedded_stores_environment(get_settings())
    install_profile(Path(environment["DAGSTER_HOME"]))
    print(f"Dagster home {environment['DAGSTER_HOME']}; Dagster and MLflow on the embedded PostgreSQL server")
    sys.stdout.flush()
    os.execvpe(command[0], command, {**os.environ, **TELEMETRY_OFF, **environment})


if __name__ == "__main__":
    main()
