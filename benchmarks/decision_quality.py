"""Decision quality benchmark: train the uplift model on a simulated company, decide for every person of the
latest snapshot date, and score every decision rule against the simulator's truth (the table of
``python -m ml.evaluate``), with the targets:

- the learned policy beats the logging policy and every single action given to everyone, in true value;
- it captures at least half of the personalisation headroom,
  ``(learned - best single action) / (oracle - best single action) >= 0.5``.

The lake (simulated, ingested, dbt marts built, gold published, with the simulator's truth) is prepared by
``benchmarks/prepare_gold_lake.py`` under the scratch folder and reused by later runs (``READY`` marks it
done).

    python benchmarks/decision_quality.py [--persons 200000] [--days 30] [--scratch DIR] [--validation-days 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from prepare_gold_lake import lake_settings, prepare  # benchmarks/, the folder of this script

from lake.settings import disable_telemetry
from ml.train import TrainingConfig, train_uplift

SEED = 7
HEADROOM_TARGET = 0.5


def checks(table: pl.DataFrame) -> list[tuple[str, bool]]:
    """The targets on the table of the fair comparison: (what, held)."""
    value = dict(
        table.filter(pl.col("comparison") == "same eligibility").select("policy", "total_value").rows()
    )
    singles = {name: v for name, v in value.items() if name.startswith("always_")}
    best_single = max(singles, key=singles.get)
    headroom = table.filter(pl.col("policy") == "learned")["headroom_share"].item()
    return [
        (f"learned beats logging ({value['learned']:,.0f} vs {value['logging']:,.0f} EUR)",
         value["learned"] > value["logging"]),
        (f"learned beats every single action (best: {best_single}, {singles[best_single]:,.0f} EUR)",
         all(value["learned"] > v for v in singles.values())),
        (f"headroom share {headroom:.2f} >= {HEADROOM_TARGET}",
         headroom is not None and headroom >= HEADROOM_TARGET),
        ("no policy beats the oracle", all(v <= value["oracle"] + 1e-6 for v in value.values())),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--scratch", type=Path, help="kept between runs (default: a folder in the temp dir)")
    parser.add_argument("--validation-days", type=int, default=TrainingConfig.validation_days)
    args = parser.parse_args()
    disable_telemetry()
    root = (
        args.scratch or Path(tempfile.gettempdir()) / f"decision-quality-{args.persons}x{args.days}"
    ).resolve()
    print(f"decision quality, {args.persons:,} persons x {args.days} days (scratch {root})", flush=True)
    ready = root / "READY"
    if ready.exists():
        made = json.loads(ready.read_text())
        if (made["persons"], made["days"]) != (args.persons, args.days):
            raise SystemExit(f"{root} holds a lake of {made['persons']} persons x {made['days']} days")
        settings = lake_settings(root)
        print("  lake: reused", flush=True)
    else:
        started = time.perf_counter()
        settings = prepare(root, args.persons, args.days, SEED)
        print(f"  lake: prepared in {time.perf_counter() - started:.0f} s", flush=True)
    os.environ["LAKE_ROOT"] = settings.lake_root
    os.environ["WAREHOUSE_PATH"] = str(settings.warehouse_path)

    from ml.data import load_training_set
    from ml.evaluate import evaluate_decisions, format_table

    training, ref = load_training_set(settings)
    started = time.perf_counter()
    result = train_uplift(training, TrainingConfig(validation_days=args.validation_days))
    trained = time.perf_counter() - started
    print(
        f"  trained on {training.height:,} logged decisions ({ref.name} v{ref.version}) in {trained:.0f} s: "
        f"{result.model.method}, {result.model.trees_and_depth}",
        flush=True,
    )
    started = time.perf_counter()
    report = evaluate_decisions(settings, model=result.model, truth_dir=root / "truth")
    evaluated = time.perf_counter() - started
    print(
        f"  decided and evaluated {report.persons:,} persons on {report.evaluation_date} in {evaluated:.0f} "
        f"s ({report.persons_with_truth:,} known to the truth); peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB"
    )
    print(format_table(report.table))
    failed = 0
    for what, held in checks(report.table):
        print(f"  {'OK    ' if held else 'MISSED'} {what}")
        failed += not held
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
