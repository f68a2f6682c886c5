"""Which uplift learner to serve: each learner's greedy policy scored with the simulator's truth.

On a lake prepared by ``benchmarks/prepare_gold_lake.py`` (default 200,000 persons x 30 days), every learner
of ``ml.train`` is trained out of time on gold ``training_decisions``; on the validation decisions (the
persons and dates the logging policy decided on, features as of the decision day, persons mapped to their true
person through the CRM, shop and app ids), each policy's true expected incremental value per decision is
computed from the truth (``simulator.truth``): expected revenue of its action minus that of ``no_action``
minus the message cost.

Policies, all under the same eligibility (an action needs a channel the person consented to; the cheapest such
channel carries it): the learned greedy policy of each learner (argmax over actions of predicted revenue minus
no-action revenue minus message cost), every single action for everyone, random, the oracle (the truth's best
action per decision) and the logging policy (the logged action and channel). Headroom share: (learned - best
single action) / (oracle - best single action); the target is at least 0.5 and beating every single action.

    python benchmarks/uplift_learners.py --root /tmp/lake-200000x30 [--prepare] [--persons 200000] [--days 30]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from ml.train import ACTIONS, BASELINE, METHODS, TrainingConfig, train_uplift
from simulator.truth import lake_expected_revenue

CHANNEL_COST = {"push": 0.0, "email": 0.01, "sms": 0.05}
"""Message cost per channel (EUR); cheapest first."""
HEADROOM_TARGET = 0.5


def cheapest_channel(frame: pl.DataFrame) -> pl.Series:
    """The cheapest channel each person consented to (null: none)."""
    expression = pl.lit(None, dtype=pl.String)
    for channel in sorted(CHANNEL_COST, key=CHANNEL_COST.get, reverse=True):
        expression = pl.when(pl.col(f"has_{channel}_consent")).then(pl.lit(channel)).otherwise(expression)
    return frame.select(expression.alias("channel")).to_series()


def true_values(decisions: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """Per decision (row of ``decisions``, with ``person_id``) the true incremental revenue of every action
    (``value__<action>``, before message cost) and ``cost``: the message cost of the cheapest consented
    channel (null when none, and then only ``no_action`` is eligible)."""
    wide = truth.pivot(on="action", index="person_id", values="expected_revenue")
    out = decisions.select("person_id").join(wide, on="person_id", how="left", maintain_order="left")
    channel = cheapest_channel(decisions)
    return pl.DataFrame(
        {f"value__{a}": (out[a] - out[BASELINE]).to_numpy() for a in ACTIONS}
        | {"cost": channel.replace_strict(CHANNEL_COST, default=None, return_dtype=pl.Float64).to_numpy()}
    )


def policy_values(
    decisions: pl.DataFrame, values: pl.DataFrame, predictions: dict[str, pl.DataFrame]
) -> dict:
    """Mean true incremental net value per decision of every policy (EUR)."""
    gain = values.select([f"value__{a}" for a in ACTIONS]).to_numpy()
    cost = values["cost"].to_numpy()
    eligible = np.isfinite(cost)
    net = gain - np.where(eligible, cost, 0.0)[:, None]
    net[:, 1:] = np.where(eligible[:, None], net[:, 1:], -np.inf)
    net[:, 0] = 0.0
    table = {}
    for name, predicted in predictions.items():
        scores = predicted.select([f"expected_revenue__{a}" for a in ACTIONS]).to_numpy()
        scores = scores - scores[:, [0]] - np.where(eligible, cost, 0.0)[:, None]
        scores[:, 1:] = np.where(eligible[:, None], scores[:, 1:], -np.inf)
        scores[:, 0] = 0.0
        choice = scores.argmax(axis=1)
        table[f"learned: {name}"] = float(net[np.arange(len(net)), choice].mean())
    for index, action in enumerate(ACTIONS):
        table[f"everyone: {action}"] = float(np.where(np.isfinite(net[:, index]), net[:, index], 0.0).mean())
    finite = np.where(np.isfinite(net), net, np.nan)
    table["random"] = float(np.nanmean(finite, axis=1).mean())
    table["oracle"] = float(net.max(axis=1).mean())
    logged = decisions["action"].to_numpy()
    logged_cost = (
        decisions["channel"].replace_strict(CHANNEL_COST, default=0.0, return_dtype=pl.Float64).to_numpy()
    )
    logged_index = np.asarray([ACTIONS.index(a) for a in logged])
    table["logging"] = float((gain[np.arange(len(gain)), logged_index] - logged_cost).mean())
    return table


def measure(root: Path, validation_days: int = 7) -> dict:
    """Train every learner on the prepared lake under ``root`` and score its greedy policy with the truth."""
    gold = root / "lake" / "gold"
    training = pl.read_delta(str(gold / "training_decisions"))
    truth = lake_expected_revenue(pl.read_delta(str(gold / "identity_person_map")), root / "truth")
    predictions, details = {}, {}
    validation = None
    for method in METHODS:
        started = time.monotonic()
        result = train_uplift(
            training, replace(TrainingConfig(), method=method, validation_days=validation_days)
        )
        validation = result.validation
        predictions[method] = result.validation_predictions
        details[method] = {
            "seconds": round(time.monotonic() - started, 1),
            "trees": result.model.trees_and_depth["trees"],
            **{k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("qini", "auc"))},
        }
    mapped = validation.with_row_index("row").join(truth.select("person_id").unique(), on="person_id")
    rows = mapped["row"].to_numpy()
    decisions = validation[rows]
    values = true_values(decisions, truth)
    table = policy_values(decisions, values, {k: v[rows] for k, v in predictions.items()})
    best_single = max(v for k, v in table.items() if k.startswith("everyone:"))
    headroom = {
        k: (v - best_single) / (table["oracle"] - best_single)
        for k, v in table.items()
        if k.startswith("learned:")
    }
    return {
        "training_decisions": training.height,
        "validation_decisions": validation.height,
        "scored_decisions": decisions.height,
        "split": result.split,
        "learners": details,
        "policy_value_eur_per_decision": table,
        "best_single_action": best_single,
        "headroom_share": headroom,
    }


def print_report(report: dict) -> None:
    """The comparison table."""
    table = report["policy_value_eur_per_decision"]
    oracle = table["oracle"]
    print(
        f"training decisions {report['training_decisions']:,}, validation {report['validation_decisions']:,} "
        f"({report['split']['validation_from']} .. {report['split']['validation_until']}), "
        f"scored against the truth {report['scored_decisions']:,}"
    )
    print(f"{'policy':32} {'EUR / decision':>15} {'share of oracle':>16}")
    for name, value in sorted(table.items(), key=lambda kv: -kv[1]):
        print(f"{name:32} {value:15.4f} {value / oracle:16.1%}")
    for name, share in report["headroom_share"].items():
        beats = all(table[name] > v for k, v in table.items() if k.startswith("everyone:"))
        verdict = "target met" if share >= HEADROOM_TARGET and beats else "target missed"
        print(f"headroom share {name}: {share:.3f} (beats every single action: {beats}; {verdict})")
    print(json.dumps(report["learners"], indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, required=True, help="the prepared lake (benchmarks/prepare_gold_lake.py)"
    )
    parser.add_argument("--prepare", action="store_true", help="prepare the lake first when it is not READY")
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--validation-days", type=int, default=7)
    args = parser.parse_args()
    if args.prepare and not (args.root / "READY").exists():
        from prepare_gold_lake import prepare

        prepare(args.root, args.persons, args.days, seed=7)
    print_report(measure(args.root, args.validation_days))


if __name__ == "__main__":
    main()
