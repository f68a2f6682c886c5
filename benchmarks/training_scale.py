"""Training on 1,000,000 logged decisions: the default learner of ``ml.train`` as the pipeline runs it (the
training set read from gold ``training_decisions``, split out of time, every booster trained with early
stopping on the validation dates) against xgboost's bare ``xgb.train`` of the same boosters (the same rows,
weights and parameters, each with the number of rounds it kept) on matrices already built, in the same run.

A lake with 1,000,000 logged decisions takes hours to prepare, so they are made from a prepared gold lake
(``benchmarks/prepare_gold_lake.py``, 200,000 persons x 30 days, about 145,000 decisions): its
``training_decisions`` replicated under new person, contact and activity ids up to ``--decisions`` (the same
campaigns and dates), the continuous features of every copy but the first multiplied by ``1 + N(0, 0.01)`` so
that copies are not exact duplicates. The decisions are kept in the scratch folder (``READY``) and reused by
later runs.

    python benchmarks/training_scale.py [--source DIR] [--decisions 1000000] [--scratch DIR]
        [--validation-days 7]

The training runs as a child process: its wall time includes the read of the table, and its peak memory
(``wait4``) is its own. The bare effect boosters of the doubly robust learner are trained on their rows with
the observed revenue as the label (the pseudo-outcomes need the nuisance models): the same matrix, another
target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from prepare_gold_lake import lake_settings  # benchmarks/, the folder of this script
from scoring import COPY_OFFSET, SEED, add_source_arguments, copied_ids, source_lake

from lake.gold import gold_uri
from lake.settings import disable_telemetry
from ml.train import TrainingConfig

TABLE = "training_decisions"
TARGET_SECONDS = 300.0
NOISE = 0.01


def replicate(training: pl.DataFrame, decisions: int) -> tuple[pl.DataFrame, int]:
    """``decisions`` rows of whole copies of ``training`` (the last cut short) under new ids, the float
    features of every copy but the first perturbed; the rows and the number of copies."""
    from ml.train import training_feature_columns

    floats = [c for c in training_feature_columns(training.columns) if training.schema[c] == pl.Float64]
    rng = np.random.default_rng(SEED)
    parts, left, copy = [], decisions, 0
    while left > 0:
        part = training.head(left)
        if copy:
            noise = {c: 1 + NOISE * rng.standard_normal(part.height) for c in floats}
            part = part.with_columns(
                copied_ids(part["person_id"], copy),
                pl.col("activity_id") + copy * COPY_OFFSET,
                pl.col("contact_id") + copy * COPY_OFFSET,
                *[pl.col(c) * pl.Series(noise[c]) for c in floats],
            )
        parts.append(part)
        left -= part.height
        copy += 1
    return pl.concat(parts), copy


def prepare_scratch(root: Path, source_root: Path, decisions: int) -> dict:
    """The replicated training set under ``root``'s lake, made once (``READY`` holds what was made)."""
    ready = root / "READY"
    if ready.exists():
        made = json.loads(ready.read_text())
        if (made["decisions"], made["source"]) != (decisions, str(source_root)):
            raise SystemExit(f"{root} holds another benchmark's input: delete it or choose another --scratch")
        return made
    if root.exists():
        shutil.rmtree(root)
    source = source_lake(source_root)
    training = pl.read_delta(gold_uri(source, TABLE)).sort("activity_id")
    rows, copies = replicate(training, decisions)
    rows.write_delta(gold_uri(lake_settings(root), TABLE), mode="overwrite")
    made = {
        "decisions": decisions,
        "source": str(source_root),
        "source_rows": training.height,
        "copies": copies,
    }
    ready.write_text(json.dumps(made, indent=2) + "\n")
    return made


def child(root: Path, out: Path, config: TrainingConfig) -> None:
    """The measured path: read the training set from the scratch lake and train the default learner; the
    timings and the rounds each booster kept to ``out``."""
    from ml.data import load_training_set
    from ml.train import train_uplift

    started = time.perf_counter()
    training, _ = load_training_set(lake_settings(root))
    loaded = time.perf_counter()
    result = train_uplift(training, config)
    trained = time.perf_counter()
    out.write_text(
        json.dumps(
            {
                "load_seconds": loaded - started,
                "train_seconds": trained - loaded,
                "rows": training.height,
                "train_rows": result.train.height,
                "validation_rows": result.validation.height,
                "method": result.model.method,
                "rounds": result.rounds,
            }
        )
    )


def bare_train(root: Path, rounds: dict[str, int], config: TrainingConfig) -> tuple[float, float, float]:
    """Seconds to build the matrices of every booster, and the wall and CPU seconds of the bare ``xgb.train``
    of each with the rounds it kept (no evaluation set, no early stopping)."""
    import xgboost as xgb

    from ml.data import load_training_set
    from ml.train import (
        booster_rows,
        effect_rows,
        min_child_weight,
        out_of_time_split,
        training_feature_columns,
    )

    training, _ = load_training_set(lake_settings(root))
    training = training.filter(pl.col("action").is_in(list(config.actions)))
    train, validation = out_of_time_split(training, config.validation_days)
    features = training_feature_columns(training.columns)
    del training

    def matrices(rows: dict) -> dict:
        return {
            name: (
                config.xgboost_params(objective, min_child_weight(objective, y, w, config.min_child_share)),
                xgb.DMatrix(x, label=y, weight=w, enable_categorical=True),
            )
            for name, (objective, (x, y, w), _validation) in rows.items()
        }

    def trained(built: dict) -> tuple[dict, float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        boosters = {name: xgb.train(p, m, num_boost_round=rounds[name]) for name, (p, m) in built.items()}
        return boosters, time.perf_counter() - started, time.process_time() - cpu

    started = time.perf_counter()
    first = matrices(booster_rows(train, validation, features, config))
    built = time.perf_counter() - started
    boosters, bare, bare_cpu = trained(first)
    if config.method == "dr_learner":
        # the effect boosters learn from pseudo-outcomes of the revenue boosters
        started = time.perf_counter()
        second = matrices(effect_rows(train, validation, features, boosters, config))
        built += time.perf_counter() - started
        more, seconds, cpu = trained(second)
        boosters, bare, bare_cpu = boosters | more, bare + seconds, bare_cpu + cpu
    if set(boosters) != set(rounds):
        raise SystemExit(f"the learner trained {sorted(rounds)}, the bare path {sorted(boosters)}")
    return built, bare, bare_cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--scratch", type=Path, help="kept between runs (default: a folder in the temp dir)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    disable_telemetry()
    root = (args.scratch or Path(tempfile.gettempdir()) / f"training-scale-{args.decisions}").resolve()
    config = TrainingConfig(validation_days=args.validation_days)
    if args.child:
        child(root, args.child, config)
        return 0
    print(f"training on {args.decisions:,} logged decisions (scratch {root})", flush=True)
    made = prepare_scratch(root, args.source.resolve(), args.decisions)
    print(
        f"  input: training_decisions of {made['source']} ({made['source_rows']:,} decisions) replicated "
        f"{made['copies']} times under new person, contact and activity ids, float features of the copies "
        f"perturbed by {NOISE:.0%}",
        flush=True,
    )
    load = os.getloadavg()
    print(f"  load: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    out = root / "child.json"
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--scratch",
            str(root),
            "--validation-days",
            str(config.validation_days),
            "--child",
            str(out),
        ],
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"the training failed (exit {os.waitstatus_to_exitcode(status)})")
    peak = usage.ru_maxrss * 1024 / 1e9
    cpu = usage.ru_utime + usage.ru_stime
    report = json.loads(out.read_text())
    built, bare, bare_cpu = bare_train(root, report["rounds"], config)
    load = os.getloadavg()
    rounds = report["rounds"]
    # early stopping trains until early_stopping_rounds rounds without improvement, then keeps the best rounds
    trained_rounds = sum(min(config.max_rounds, n + config.early_stopping_rounds) for n in rounds.values())
    print(
        f"decisions:                {report['rows']:,} ({report['train_rows']:,} train, "
        f"{report['validation_rows']:,} validation)"
    )
    print(
        f"boosters:                 {len(rounds)} ({report['method']}), {sum(rounds.values()):,} trees kept "
        f"(rounds {min(rounds.values())}-{max(rounds.values())}); {trained_rounds:,} rounds trained before "
        "early stopping ended them (the validation set evaluated every round)"
    )
    print(
        f"ml.train, default learner: {seconds:.1f} s wall (read {report['load_seconds']:.1f} s, train "
        f"{report['train_seconds']:.1f} s), {cpu:.1f} s CPU (user + system), peak RSS {peak:.2f} GB"
    )
    print(
        f"bare xgb.train:           {bare:.1f} s wall, {bare_cpu:.1f} s CPU (the same boosters and rounds; "
        f"matrices built before, {built:.1f} s)"
    )
    print(f"ratio ml.train / bare:    {seconds / bare:.2f} wall, {cpu / bare_cpu:.2f} CPU")
    print(f"load average:             {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    held = seconds < TARGET_SECONDS
    print(f"  {'OK    ' if held else 'MISSED'} training {seconds:.0f} s < {TARGET_SECONDS:.0f} s")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
