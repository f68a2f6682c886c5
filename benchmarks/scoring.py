"""Scoring and deciding for 1,000,000 persons: the daily batch as ``python -m ml.score`` runs it (the features
read in chunks, the champion's pyfunc scoring each chunk, the policy deciding, gold ``nba_decisions`` and
``nba_current`` written) against xgboost's bare ``inplace_predict`` of the same boosters on the same persons'
features already in memory, in the same run. The challenger's shadow scoring (the same persons, into
``nba_shadow_decisions``) is measured apart: the batch once with the champion alone, once with the champion
and the challenger.

A lake of 1,000,000 persons takes hours to prepare, so the scoring input is made from a prepared gold lake
(``benchmarks/prepare_gold_lake.py``, 200,000 persons x 30 days): its latest ``person_features_daily``
snapshot replicated under new person ids up to ``--persons``, with what the batch reads for them replicated
too (the identity map, the CRM contacts, consents and campaign touches, under new contact and app user ids)
and a suppression list holding ``--erased`` persons. The champion and the challenger are trained on the source
lake's training set with the project's pipeline (``ml.pipeline.train_candidate``: the default learner, then
the T-learner) into a scratch MLflow store. The scratch folder is kept (``READY``) and reused by later runs.

    python benchmarks/scoring.py [--source DIR] [--persons 1000000] [--scratch DIR] [--erased 100]
        [--validation-days 7]

The batch runs as a child process, so its wall time includes the interpreter's start and the imports, and its
peak memory (``wait4``) is the batch's own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
from prepare_gold_lake import lake_settings, prepare  # benchmarks/, the folder of this script

from lake import suppression
from lake.gold import gold_uri
from lake.settings import REPO_ROOT, Settings, disable_telemetry
from ml.settings import MlSettings, get_ml_settings
from ml.train import TrainingConfig

SEED = 7
COPY_OFFSET = 10_000_000
"""Added to the CRM contact and shop customer ids of each copy (the source's ids stay below it)."""
TARGET_SECONDS = 60.0
TARGET_RATIO = 2.0
TARGET_PEAK_GB = 4.0
IDENTITY_TYPES_NUMERIC = ("crm_contact_id", "shop_customer_id")
CRM_TABLES = ("contacts_history", "consents_history", "activities")


# -- the scoring input ---------------------------------------------------------------------------------------


def copied_ids(person_ids: pl.Series, copy: int) -> pl.Series:
    """The person ids of copy ``copy``: the source's own for copy 0, else ``p_`` and 20 hex digits of
    sha256(``<id>|<copy>``), the length and form of the source's ids."""
    if copy == 0:
        return person_ids
    return pl.Series(
        person_ids.name,
        [f"p_{hashlib.sha256(f'{p}|{copy}'.encode()).hexdigest()[:20]}" for p in person_ids.to_list()],
        dtype=pl.String,
    )


def person_copies(person_ids: pl.Series, persons: int) -> pl.DataFrame:
    """``source_person_id``, ``copy`` and ``person_id`` of ``persons`` persons: whole copies of
    ``person_ids``, the last one cut short."""
    person_ids = person_ids.sort()
    parts, left, copy = [], persons, 0
    while left > 0:
        taken = person_ids.head(left)
        parts.append(
            pl.DataFrame(
                {
                    "source_person_id": taken,
                    "copy": pl.Series([copy] * len(taken), dtype=pl.Int64),
                    "person_id": copied_ids(taken, copy),
                }
            )
        )
        left -= len(taken)
        copy += 1
    out = pl.concat(parts)
    if out["person_id"].is_duplicated().any():
        raise SystemExit("copied person ids collide: choose fewer persons")
    return out


def _offset_identifier() -> pl.Expr:
    """The identifier of each identity row in its copy: numeric ids offset, the others suffixed."""
    numeric = pl.col("identifier_type").is_in(list(IDENTITY_TYPES_NUMERIC))
    return (
        pl.when(pl.col("copy") == 0)
        .then(pl.col("identifier"))
        .when(numeric)
        .then((pl.col("identifier").cast(pl.Int64) + pl.col("copy") * COPY_OFFSET).cast(pl.String))
        .otherwise(pl.col("identifier") + "-" + pl.col("copy").cast(pl.String))
        .alias("identifier")
    )


def build_input(source: Settings, target: Settings, persons: int, erased: int) -> dict:
    """Write the scoring input of ``persons`` persons under ``target``'s lake from the lake of ``source``;
    what was written, for the report."""
    scan = pl.scan_delta(gold_uri(source, "person_features_daily"))
    latest = scan.select(pl.col("snapshot_date").max()).collect().item()
    features = scan.filter(pl.col("snapshot_date") == latest).collect()
    copies = person_copies(features["person_id"], persons)
    features = (
        copies.join(features.rename({"person_id": "source_person_id"}), on="source_person_id")
        .select(features.columns)
        .sort("person_id")
    )
    features.write_delta(gold_uri(target, "person_features_daily"), mode="overwrite")

    identity = (
        pl.scan_delta(gold_uri(source, "identity_person_map"))
        .rename({"person_id": "source_person_id"})
        .join(copies.lazy(), on="source_person_id")
        .with_columns(_offset_identifier())
        .collect()
    )
    identity.select(
        "identifier_type", "identifier", "person_id", "first_seen", "last_seen", "linked_at"
    ).write_delta(gold_uri(target, "identity_person_map"), mode="overwrite")

    contacts = identity.filter(pl.col("identifier_type") == "crm_contact_id").select(
        pl.col("identifier").cast(pl.Int64).alias("contact_id"),
        (pl.col("identifier").cast(pl.Int64) - pl.col("copy") * COPY_OFFSET).alias("source_contact_id"),
        "copy",
    )
    rows = {"person_features_daily": features.height, "identity_person_map": identity.height}
    for table in CRM_TABLES:
        source_uri = f"{source.lake_root}/silver/crm/{table}"
        frame = (
            pl.scan_delta(source_uri)
            .rename({"contact_id": "source_contact_id"})
            .join(contacts.lazy(), on="source_contact_id")
            .collect()
        )
        if "activity_id" in frame.columns:
            frame = frame.with_columns(pl.col("activity_id") + pl.col("copy") * COPY_OFFSET)
        if "consent_id" in frame.columns:
            frame = frame.with_columns(pl.col("consent_id") + pl.col("copy") * COPY_OFFSET)
        columns = pl.scan_delta(source_uri).collect_schema().names()
        frame.select(columns).write_delta(f"{target.lake_root}/silver/crm/{table}", mode="overwrite")
        rows[f"silver crm {table}"] = frame.height

    # erased persons: on the suppression list by person id and CRM contact, as an erasure leaves them
    chosen = copies.sample(n=min(erased, copies.height), seed=SEED)["person_id"]
    identifiers = [(suppression.PERSON_ID, p) for p in chosen.to_list()]
    identifiers += [
        ("crm_contact_id", i)
        for i in identity.filter(
            pl.col("person_id").is_in(chosen.implode()) & (pl.col("identifier_type") == "crm_contact_id")
        )["identifier"].to_list()
    ]
    if identifiers:
        suppression.add(target, identifiers, "benchmark-erasure")
    return {
        "snapshot_date": latest.isoformat(),
        "source_persons": int(copies.filter(pl.col("copy") == 0).height),
        "copies": int(copies["copy"].max()) + 1,
        "erased_persons": len(chosen),
        "rows": rows,
    }


# -- the models ----------------------------------------------------------------------------------------------


def train_models(source: Settings, ml: MlSettings, config: TrainingConfig) -> dict:
    """Train the champion (``config``: the default learner) and the challenger (the T-learner) on the source
    lake's training set with the project's pipeline into the store of ``ml``; the registered versions and the
    seconds taken."""
    from mlflow import MlflowClient

    from ml.pipeline import train_candidate

    started = time.perf_counter()
    first = train_candidate(ml, config, source)
    second = train_candidate(ml, replace(config, method="t_learner"), source)
    client = MlflowClient(tracking_uri=ml.tracking_uri, registry_uri=ml.tracking_uri)
    aliases = client.get_registered_model(ml.model_name).aliases
    if "challenger" not in aliases:  # the gate promoted the second: the first serves as its challenger
        client.set_registered_model_alias(ml.model_name, "challenger", first.model_version)
    aliases = client.get_registered_model(ml.model_name).aliases
    return {
        "seconds": time.perf_counter() - started,
        "champion": str(aliases["champion"]),
        "challenger": str(aliases["challenger"]),
        "gate": [first.outcome, second.outcome],
    }


def champion_only_store(database: Path, copy: Path, model_name: str) -> None:
    """A copy of the SQLite store ``database`` without the ``challenger`` alias (the batch with no shadow)."""
    from mlflow import MlflowClient

    shutil.copyfile(database, copy)
    uri = f"sqlite:///{copy}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).delete_registered_model_alias(model_name, "challenger")


def prepare_scratch(root: Path, source_root: Path, persons: int, erased: int, config: TrainingConfig) -> dict:
    """The scratch folder's scoring input and models, made once (``READY`` holds what was made)."""
    ready = root / "READY"
    if ready.exists():
        made = json.loads(ready.read_text())
        if (made["persons"], made["source"], made["erased"]) != (persons, str(source_root), erased):
            raise SystemExit(f"{root} holds another benchmark's input: delete it or choose another --scratch")
        return made
    if (root / "lake").exists():
        shutil.rmtree(root / "lake")
    (root / "mlflow").mkdir(parents=True, exist_ok=True)
    source = source_lake(source_root)
    target = scratch_settings(root)
    started = time.perf_counter()
    made = build_input(source, target, persons, erased)
    made["input_seconds"] = time.perf_counter() - started
    ml = scratch_ml(root, "mlflow.db")
    if not (root / "mlflow" / "TRAINED").exists():
        shutil.rmtree(root / "mlflow")
        (root / "mlflow").mkdir(parents=True)
        (root / "mlflow" / "TRAINED").write_text(json.dumps(train_models(source, ml, config)) + "\n")
    made["models"] = json.loads((root / "mlflow" / "TRAINED").read_text())
    champion_only_store(root / "mlflow" / "mlflow.db", root / "mlflow" / "champion-only.db", ml.model_name)
    made |= {"persons": persons, "source": str(source_root), "erased": erased}
    ready.write_text(json.dumps(made, indent=2) + "\n")
    return made


def source_lake(root: Path) -> Settings:
    """The settings of the source gold lake under ``root``, prepared first when it is not (``READY``)."""
    if (root / "READY").exists():
        return lake_settings(root)
    print(f"  preparing the source lake under {root} (benchmarks/prepare_gold_lake.py)", flush=True)
    return prepare(root, 200_000, 30, SEED)


def scratch_settings(root: Path) -> Settings:
    """The settings of the scratch lake (the scoring input and the decisions)."""
    return replace(lake_settings(root), mlflow_tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")


def scratch_ml(root: Path, database: str) -> MlSettings:
    """The ML settings over the scratch MLflow store ``database``."""
    return replace(get_ml_settings(), tracking_uri=f"sqlite:///{root / 'mlflow' / database}")


# -- the measurements ----------------------------------------------------------------------------------------


def batch_environment(root: Path, database: str) -> dict[str, str]:
    """The environment of the batch: the scratch lake, the MLflow store ``database``, no progress bars."""
    settings = scratch_settings(root)
    return {
        **os.environ,
        "LAKE_ROOT": settings.lake_root,
        "WAREHOUSE_PATH": str(settings.warehouse_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / database}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def run_batch(root: Path, database: str) -> tuple[float, float, float, dict]:
    """``python -m ml.score --json`` over the scratch lake and the MLflow store ``database``: wall seconds,
    CPU seconds (user + system), peak RSS in GB (``wait4``: the child's own) and its report."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ml.score", "--json"],
        cwd=REPO_ROOT,
        env=batch_environment(root, database),
        stdout=subprocess.PIPE,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"python -m ml.score failed (exit {process.returncode})")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss * 1024 / 1e9, json.loads(output)


def served(model, features: pl.DataFrame) -> list[str]:
    """The boosters ``model.predict`` calls (recorded on a few rows), in call order."""
    calls: list[str] = []
    predict = model._predict

    def recording(name, frame):
        calls.append(name)
        return predict(name, frame)

    model._predict = recording
    try:
        model.predict(features.head(5))
    finally:
        del model._predict
    return calls


def tree_depth(booster) -> int:
    """The depth of the deepest tree of ``booster`` (a leaf's depth is its indentation in the text dump)."""
    return max(
        (len(line) - len(line.lstrip("\t")) for tree in booster.get_dump() for line in tree.splitlines()),
        default=0,
    )


def bare_predict(model, names: list[str], frame) -> tuple[float, float]:
    """Wall and CPU seconds of xgboost's ``inplace_predict`` of the booster calls ``names`` of ``model`` on
    ``frame`` (the pandas frame xgboost takes, already built). The ``s_learner`` calls its boosters once per
    action, on the frame with that action as a column: those frames are built before too."""
    if model.method == "s_learner":
        from ml.train import action_frame

        frames = {a: action_frame(frame, a, model.actions) for a in model.actions}
        calls = [(name, frames[action]) for action in model.actions for name in dict.fromkeys(names)]
        if len(calls) != len(names):
            raise SystemExit(f"the s_learner called {names}, not each booster once per action")
    else:
        calls = [(name, frame) for name in names]
    started, cpu = time.perf_counter(), time.process_time()
    for name, features in calls:
        model.boosters[name].inplace_predict(features)
    return time.perf_counter() - started, time.process_time() - cpu


def load_uplift(ml: MlSettings, alias: str):
    """The :class:`ml.train.UpliftModel` behind ``models:/<name>@<alias>`` of the store of ``ml``."""
    import mlflow

    mlflow.set_tracking_uri(ml.tracking_uri)
    mlflow.set_registry_uri(ml.tracking_uri)
    return mlflow.pyfunc.load_model(f"models:/{ml.model_name}@{alias}").unwrap_python_model().model


def scored_features(root: Path, made: dict) -> pl.DataFrame:
    """The features of the persons the batch scores: the snapshot less the erased and the persons who objected
    to profiling."""
    settings = scratch_settings(root)
    erased = set(suppression.suppressed(settings))
    features = pl.read_delta(gold_uri(settings, "person_features_daily"))
    hashed = suppression.hashes(suppression.PERSON_ID, features["person_id"], settings.pii_secret)
    return features.filter(~hashed.is_in(list(erased)) & pl.col("has_profiling_consent").fill_null(True))


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--source``: the prepared gold lake the ML benchmarks copy from (the decision quality benchmark's);
    ``--validation-days``: how many of its latest decision dates the training validates on."""
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(tempfile.gettempdir()) / "decision-quality-200000x30",
        help="a gold lake of benchmarks/prepare_gold_lake.py (prepared when missing; default: the decision "
        "quality benchmark's)",
    )
    parser.add_argument(
        "--validation-days",
        type=int,
        default=TrainingConfig.validation_days,
        help="the source's latest decision dates the training validates on (default: the training's, "
        f"{TrainingConfig.validation_days}; fewer for a lake of a few weeks)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--erased", type=int, default=100, help="persons on the suppression list")
    parser.add_argument("--scratch", type=Path, help="kept between runs (default: a folder in the temp dir)")
    args = parser.parse_args()
    disable_telemetry()
    root = (args.scratch or Path(tempfile.gettempdir()) / f"scoring-bench-{args.persons}").resolve()
    print(f"scoring and deciding, {args.persons:,} persons (scratch {root})", flush=True)
    made = prepare_scratch(
        root,
        args.source.resolve(),
        args.persons,
        args.erased,
        TrainingConfig(validation_days=args.validation_days),
    )
    rows = ", ".join(f"{name} {n:,}" for name, n in made["rows"].items())
    print(
        f"  input: the {made['snapshot_date']} snapshot of {made['source_persons']:,} persons of "
        f"{made['source']} replicated {made['copies']} times under new person, contact and app user ids "
        f"({rows}); {made['erased_persons']} persons erased (made once, in {made['input_seconds']:.0f} s)",
        flush=True,
    )
    models = made["models"]
    print(
        f"  models: champion v{models['champion']} (default learner), challenger v{models['challenger']} "
        "(T-learner), trained on the source's training set with ml.pipeline (gate: "
        f"{', '.join(models['gate'])})",
        flush=True,
    )
    print(f"  load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)

    solo_seconds, solo_cpu, solo_peak, solo = run_batch(root, "champion-only.db")
    both_seconds, both_cpu, both_peak, both = run_batch(root, "mlflow.db")
    if solo["decided_by"] != "champion" or both["shadow_rows"] != both["persons"]:
        raise SystemExit(f"the batch did not score as expected: {solo['decided_by']}, {both['shadow_error']}")

    ml = scratch_ml(root, "mlflow.db")
    champion, challenger = load_uplift(ml, "champion"), load_uplift(ml, "challenger")
    features = scored_features(root, made)
    if features.height != solo["persons"]:
        raise SystemExit(
            f"the batch decided for {solo['persons']} persons, the bare path has {features.height}"
        )
    from ml.features import model_frame

    figures = {}
    for role, model in (("champion", champion), ("challenger", challenger)):
        names = served(model, features)
        frame = model_frame(features, model.feature_columns)
        boosters = [model.boosters[n] for n in dict.fromkeys(names)]
        bare, bare_cpu = bare_predict(model, names, frame)
        figures[role] = {
            "bare": bare,
            "bare_cpu": bare_cpu,
            "boosters": len(boosters),
            "calls": len(names),
            "trees": sum(b.num_boosted_rounds() for b in boosters),
            "depth": max(tree_depth(b) for b in boosters),
            "method": model.method,
        }
        del frame

    load = os.getloadavg()
    shadow_seconds, shadow_cpu = both_seconds - solo_seconds, both_cpu - solo_cpu
    c, s = figures["champion"], figures["challenger"]
    print(
        f"persons decided:          {solo['persons']:,} ({solo['excluded_erased']} erased and "
        f"{solo['excluded_profiling_objection']:,} objecting to profiling left out)"
    )
    for role, f in (("champion", c), ("challenger", s)):
        print(
            f"{role} v{models[role]} ({f['method']}): {f['boosters']} boosters, {f['calls']} calls, "
            f"{f['trees']:,} trees, depth <= {f['depth']}"
        )
    print("                                    wall          CPU (user + system)")
    print(
        f"python -m ml.score, champion alone: {solo_seconds:6.1f} s      {solo_cpu:6.1f} s   peak RSS "
        f"{solo_peak:.2f} GB"
    )
    print(
        f"bare inplace_predict, champion:     {c['bare']:6.1f} s      {c['bare_cpu']:6.1f} s   "
        "(features in memory)"
    )
    print(
        f"ratio batch / bare:                 {solo_seconds / c['bare']:6.2f}        "
        f"{solo_cpu / c['bare_cpu']:6.2f}     (target <= {TARGET_RATIO})"
    )
    print(
        f"python -m ml.score, with shadow:    {both_seconds:6.1f} s      {both_cpu:6.1f} s   peak RSS "
        f"{both_peak:.2f} GB"
    )
    print(f"shadow scoring (the difference):    {shadow_seconds:6.1f} s      {shadow_cpu:6.1f} s")
    print(f"bare inplace_predict, challenger:   {s['bare']:6.1f} s      {s['bare_cpu']:6.1f} s")
    print(
        "ratio shadow / "
        f"bare:                {shadow_seconds / s['bare']:6.2f}        {shadow_cpu / s['bare_cpu']:6.2f}"
    )
    print(f"load average:                       {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    checks = [
        (f"champion batch {solo_seconds:.1f} s < {TARGET_SECONDS:.0f} s", solo_seconds < TARGET_SECONDS),
        (f"ratio {solo_seconds / c['bare']:.2f} <= {TARGET_RATIO}", solo_seconds / c["bare"] <= TARGET_RATIO),
        (f"peak RSS {max(solo_peak, both_peak):.2f} GB < {TARGET_PEAK_GB} GB",
         max(solo_peak, both_peak) < TARGET_PEAK_GB),
    ]  # fmt: skip
    for what, held in checks:
        print(f"  {'OK    ' if held else 'MISSED'} {what}")
    return 0 if all(held for _, held in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
