"""Identity quality against the simulated company's ground truth, as a check on the person map."""

from pathlib import Path

import dagster as dg

from orchestration.resources import WAREHOUSE_POOL, LakeResource
from simulator.scoring import warehouse_identity_quality

PRECISION_TARGET = 0.99
RECALL_TARGET = 0.95


@dg.asset_check(
    asset=dg.AssetKey(["identity", "identity_person_map"]),
    name="quality_against_simulator_truth",
    pool=WAREHOUSE_POOL,
    description=f"Pairwise precision >= {PRECISION_TARGET} and recall >= {RECALL_TARGET} on the non-personal "
    "identifiers, against the simulator's truth; recall over the identifiers some message ties to their person "
    "(passes with a note when the lake has no simulator truth).",
)
def identity_quality_check(lake: LakeResource) -> dg.AssetCheckResult:
    """Score the person map against ``simulator_truth/identifiers.parquet``."""
    settings = lake.settings()
    quality = warehouse_identity_quality(settings.warehouse_path, Path(settings.simulator_truth))
    if quality is None:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no simulator truth in this lake"})
    return dg.AssetCheckResult(
        passed=quality.precision >= PRECISION_TARGET and quality.evidenced_recall >= RECALL_TARGET,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "precision": round(quality.precision, 4),
            "recall": round(quality.evidenced_recall, 4),
            "recall_all_pairs": round(quality.recall, 4),
            "identifiers": quality.identifiers,
            "predicted_persons": quality.predicted_persons,
            "true_persons": quality.true_persons,
            "shared_identifiers_left_out": quality.ambiguous,
        },
    )
