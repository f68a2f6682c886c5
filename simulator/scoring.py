"""Scores of the pipeline's output against the simulated company's ground truth, from frames: the caller reads
the output where it is (``orchestration.evaluation`` reads the warehouse)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SCORED_TYPES = ("app_user_id", "anonymous_id", "crm_contact_id", "shop_customer_id")
"""Identifier types scored: those that are no personal data, so truth and lake hold the same values."""


@dataclass(frozen=True)
class IdentityQuality:
    """Pairwise precision and recall of an identity map: of the pairs of identifiers it puts in one person,
    the share truly of one person, and of the pairs truly of one person, the share it puts together."""

    precision: float
    recall: float
    evidenced_recall: float
    """Recall over the pairs of identifiers that messages tie to their person (the truth's ``evidenced``): a
    device never signed in, never used for an e-mail click-through or a checkout, cannot be found by
    anyone."""
    identifiers: int
    """Identifiers scored: in the map and in the truth, with one true person."""
    predicted_persons: int
    true_persons: int
    predicted_pairs: int
    true_pairs: int
    correct_pairs: int
    ambiguous: int
    """Identifiers of several true persons (shared devices), left out of the score."""
    unmatched: int
    """Identifiers of the map that the truth does not know."""


def _pairs(sizes: pl.Expr) -> pl.Expr:
    return (sizes * (sizes - 1) // 2).sum()


def _correct_and_true_pairs(scored: pl.DataFrame) -> tuple[int, int]:
    """Pairs of ``scored`` identifiers put together by the map and truly together, and pairs truly
    together."""
    correct = scored.group_by("predicted", "true").len().select(_pairs(pl.col("len").cast(pl.Int64))).item()
    true_pairs = scored.group_by("true").len().select(_pairs(pl.col("len").cast(pl.Int64))).item()
    return correct, true_pairs


def identity_quality(person_map: pl.DataFrame, truth_identifiers: pl.DataFrame) -> IdentityQuality:
    """Score ``person_map`` (identifier_type, identifier, person_id) against ``truth_identifiers``
    (identifier_type, identifier, person_id) on the non-personal identifier types, from the contingency
    counts of predicted and true persons (no pair is enumerated)."""
    keys = ["identifier_type", "identifier"]
    predicted = person_map.filter(pl.col("identifier_type").is_in(SCORED_TYPES)).select(
        *keys, pl.col("person_id").alias("predicted")
    )
    truth = truth_identifiers.filter(pl.col("identifier_type").is_in(SCORED_TYPES))
    evidenced = pl.col("evidenced").all() if "evidenced" in truth.columns else pl.lit(True)
    owners = truth.group_by(keys).agg(
        pl.col("person_id").first().alias("true"), pl.len().alias("owners"), evidenced.alias("evidenced")
    )
    scored = predicted.join(owners, on=keys, how="left")
    known = scored.filter(pl.col("owners") == 1)
    counts = known.select(
        pl.len().alias("identifiers"),
        pl.col("predicted").n_unique().alias("predicted_persons"),
        pl.col("true").n_unique().alias("true_persons"),
    ).row(0, named=True)
    correct, true_pairs = _correct_and_true_pairs(known)
    evidenced_correct, evidenced_pairs = _correct_and_true_pairs(known.filter(pl.col("evidenced")))
    predicted_pairs = known.group_by("predicted").len().select(_pairs(pl.col("len").cast(pl.Int64))).item()
    return IdentityQuality(
        precision=correct / predicted_pairs if predicted_pairs else 1.0,
        recall=correct / true_pairs if true_pairs else 1.0,
        evidenced_recall=evidenced_correct / evidenced_pairs if evidenced_pairs else 1.0,
        identifiers=counts["identifiers"],
        predicted_persons=counts["predicted_persons"],
        true_persons=counts["true_persons"],
        predicted_pairs=predicted_pairs,
        true_pairs=true_pairs,
        correct_pairs=correct,
        ambiguous=scored.filter(pl.col("owners") > 1).height,
        unmatched=scored.filter(pl.col("owners").is_null()).height,
    )
