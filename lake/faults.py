"""Named crash points, so that tests can kill a real run at a precise step and prove that re-running repairs
it.

Set ``LAKE_CRASH_AT=<name>`` and the process kills itself with SIGKILL when it reaches that point: no
exception handler, ``finally`` block or atexit hook runs, exactly as when a machine or a worker dies.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    """Die here, at once, when ``LAKE_CRASH_AT`` names this point."""
    if os.environ.get("LAKE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
