"""Dagster code location of the engagement lakehouse: assets, checks, jobs, schedules and sensors only.

The business logic lives in the other packages (``simulator``, ``lake``, ...); this package wires them.
"""

import os
import warnings
from importlib.util import find_spec

# Dagster runs each step in a process spawned by ``multiprocessing``, whose ``__main__`` has neither a file
# nor a spec. pyspark's Connect client (the Spark target's) takes such a process for a doctest run when it is
# imported and exits it unless it finds a SPARK_HOME; Great Expectations imports pyspark whenever it is
# installed. The client never reads SPARK_HOME otherwise, so its own package folder is given when none is set.
_pyspark = find_spec("pyspark")
if _pyspark is not None and _pyspark.origin is not None:
    os.environ.setdefault("SPARK_HOME", os.path.dirname(_pyspark.origin))
    # the client warns at every import (whatever the program does) that it is not fully tested with pandas 3
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
