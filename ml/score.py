"""``python -m ml.score [--date YYYY-MM-DD]``: the daily next-best-action batch (see :mod:`ml.scoring`)."""

from ml.scoring import main

if __name__ == "__main__":
    raise SystemExit(main())
