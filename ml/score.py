"""``python -m ml.score [--date YYYY-MM-DD]``: the daily next-best-action batch (see :mod:`ml.scoring`)."""

import logging
import os
import sys

from ml.scoring import main

if __name__ == "__main__":
    code = main()
    # Everything is written and committed. The interpreter's teardown of what the batch imported (some 3,400
    # modules of mlflow, xgboost, pandas, ...) spends about a second collecting garbage: the process ends
    # without it, its output flushed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
