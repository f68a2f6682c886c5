"""Install uv into a private folder with nothing but a Python interpreter (``make`` runs it when no uv is
found).

A distribution's Python refuses ``pip install`` into itself or the user's site (PEP 668, "externally managed")
and may come without pip or ``venv``. So uv, a single binary, is installed with ``pip install --target`` into
the folder given (``<folder>/bin/uv``), which PEP 668 does not restrict: by the interpreter's own pip when it
has one, otherwise by pip's wheel fetched from the package index (pip runs from its wheel).

    python3 scripts/bootstrap_uv.py var/uv-bootstrap
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

PIP_JSON_URL = "https://pypi.org/pypi/pip/json"
"""PyPI's JSON description of pip's latest release (``PIP_BOOTSTRAP_JSON_URL`` overrides it, for a mirror)."""


def has_pip() -> bool:
    """True when this interpreter can run ``python -m pip``."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False)
    return probe.returncode == 0


def fetch_pip_wheel(folder: Path) -> Path:
    """Download pip's wheel from the package index into ``folder`` and return its path."""
    url = os.environ.get("PIP_BOOTSTRAP_JSON_URL") or PIP_JSON_URL
    with urllib.request.urlopen(url, timeout=60) as response:
        release = json.load(response)
    wheels = [f for f in release["urls"] if f["packagetype"] == "bdist_wheel"]
    if not wheels:
        raise SystemExit(f"no wheel of pip listed at {url}")
    wheel = folder / wheels[0]["filename"]
    with urllib.request.urlopen(urllib.parse.urljoin(url, wheels[0]["url"]), timeout=120) as response:
        wheel.write_bytes(response.read())
    return wheel


def bootstrap(target: Path) -> Path:
    """Install uv under ``target`` (unless it is there already) and return the path of its binary."""
    uv = target / "bin" / "uv"
    if uv.is_file() and os.access(uv, os.X_OK):
        return uv
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        staging = Path(scratch) / "target"
        pip = (
            [sys.executable, "-m", "pip"]
            if has_pip()
            else [sys.executable, str(fetch_pip_wheel(Path(scratch)) / "pip")]
        )
        subprocess.run(
            [
                *pip,
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--target",
                str(staging),
                "uv",
            ],
            check=True,
            env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # whole or not at all: an interrupted bootstrap leaves no half-installed uv
    return uv


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 scripts/bootstrap_uv.py <folder>")
    sys.stdout.write(f"uv installed at {bootstrap(Path(sys.argv[1]).resolve())}\n")
