"""``python -m lake.ingest``: take everything in the landing zone into bronze and silver, refresh the silver
views of the warehouse, and say what it did.

The same steps the Dagster assets run (landing -> bronze per feed, then CDC apply and clickstream clean-up),
without the orchestrator: handy in a shell, a notebook or a test. Exits 1 when a file was rejected (its
share of quarantined records passed ``INGEST_MAX_REJECT_RATE``) or a contract is invalid (its feed is
skipped), after everything else was ingested. Files in a feed's folder that ingestion does not understand are
listed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from data_contracts import Contract, ContractProblem, scan_contracts
from lake import bronze, delta
from lake.feeds import feed_of
from lake.landing import DATA_SUFFIXES, cdc_topics
from lake.ledger import Ledger
from lake.settings import Settings, SettingsError, disable_telemetry, get_settings
from lake.warehouse import publish_silver


@dataclass
class LakeRun:
    """The reports of one run over every feed."""

    ingested: list[bronze.IngestReport] = field(default_factory=list)
    applied: list[Any] = field(default_factory=list)
    """The apply report of each feed, of its kind (:meth:`lake.feeds.Feed.apply`)."""
    topics_without_contract: list[str] = field(default_factory=list)
    contract_problems: list[ContractProblem] = field(default_factory=list)
    """Problems of the contract files that did not load: their feeds were skipped."""

    @property
    def rejections(self) -> list[bronze.FileRejection]:
        """Every file rejected in this run."""
        return [r for report in self.ingested for r in report.rejections]


def refresh(settings: Settings, contract: Contract) -> Any:
    """Bring a feed's silver tables up to date with its bronze table."""
    return feed_of(contract).apply(settings)


def silver_watermark(settings: Settings, contract: Contract) -> int:
    """The last bronze batch of the feed that its silver tables have applied."""
    return feed_of(contract).watermark(settings)


def backlog(settings: Settings, contracts: dict[str, Contract]) -> list[str]:
    """What is waiting: landed files the ledger has not taken in (by path), and ``silver:<feed>`` for every
    feed whose silver tables are behind its bronze table (a failed or skipped apply)."""
    waiting = []
    done = Ledger(bronze.ledger_uri(settings), settings.storage_options).committed_files()
    for feed_id, contract in contracts.items():
        taken = set(done.filter(pl.col("feed_id") == feed_id)["relpath"].to_list())
        landed = feed_of(contract).discover(settings.landing)
        waiting += [f.relpath for f in landed if f.relpath not in taken]
        table = delta.scan(bronze.bronze_uri(settings, contract), settings.storage_options)
        latest = table.select(pl.col("_batch_seq").max()).collect().item() if table is not None else None
        if latest is not None and latest > silver_watermark(settings, contract):
            waiting.append(f"silver:{feed_id}")
    return waiting


def ingest_all(settings: Settings, feeds: list[str] | None = None) -> LakeRun:
    """Ingest and apply every feed that has a valid contract (or only ``feeds``); the problems of the invalid
    contracts are in the run's report."""
    scanned = scan_contracts(settings.contracts_dir)
    contracts = scanned.contracts
    run = LakeRun(
        topics_without_contract=[t for t in cdc_topics(settings.landing) if t not in contracts],
        contract_problems=scanned.problems,
    )
    for feed_id, contract in contracts.items():
        if feeds and feed_id not in feeds:
            continue
        run.ingested.append(bronze.ingest(settings, contract))
        run.applied.append(refresh(settings, contract))
    return run


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ingest, apply, print a line per feed."""
    parser = argparse.ArgumentParser(prog="python -m lake.ingest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--feed", action="append", help="only this feed (a CDC topic or 'clickstream'); repeatable"
    )
    args = parser.parse_args(argv)
    disable_telemetry()
    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run = ingest_all(settings, args.feed)
    contracts = scan_contracts(settings.contracts_dir).contracts
    views = publish_silver(settings, contracts)
    print(
        f"lake root: {settings.lake_root} ({len(views)} silver views refreshed in {settings.warehouse_path})"
    )
    print(f"  {'feed':<24} {'files':>6} {'records':>10} {'bronze':>10} {'quarantine':>10}   silver")
    for ingested, applied in zip(run.ingested, run.applied, strict=True):
        silver = feed_of(contracts[ingested.feed_id]).summary(applied)
        print(
            f"  {ingested.feed_id:<24} {ingested.files:>6,} {ingested.records:>10,} "
            f"{ingested.bronze_rows:>10,} {ingested.quarantined:>10,}   {silver}"
        )
    for topic in run.topics_without_contract:
        print(
            f"  cdc/{topic}: no valid data contract, not ingested "
            f"(add or fix {settings.contracts_dir}/{topic}.odcs.yaml)"
        )
    for report in run.ingested:
        for relpath in report.unrecognised_files:
            print(
                f"UNRECOGNISED {relpath}: not a data file ({' '.join(DATA_SUFFIXES)}); not taken in",
                file=sys.stderr,
            )
    for problem in run.contract_problems:
        print(f"INVALID CONTRACT {problem}; its feed is skipped", file=sys.stderr)
    for report in run.ingested:
        for relpath in report.changed_files:
            print(
                f"CHANGED {relpath}: taken in before with another size or time; not taken in again",
                file=sys.stderr,
            )
    for rejection in run.rejections:
        print(f"REJECTED {rejection}", file=sys.stderr)
    return 1 if run.rejections or run.contract_problems else 0


if __name__ == "__main__":
    sys.exit(main())
