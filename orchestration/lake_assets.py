"""The lake's assets, one set per data contract: landing feed -> bronze table -> silver table(s), with checks.

A new contract file (and its landing folder) adds a feed here without code. The work itself is done by
``lake.bronze`` (ingestion), the contract's feed (``lake.feeds``: its silver tables and how they are applied)
and ``lake.quality``.
"""

from pathlib import Path

import dagster as dg

from data_contracts import Contract, ContractProblem
from lake import bronze, quality
from lake.feeds import feed_of
from lake.landing import DATA_SUFFIXES
from orchestration.invalid_files import invalid_file_spec
from orchestration.metadata import contract_metadata, contract_schema, table_metadata
from orchestration.resources import LakeResource

BRONZE_GROUP = "bronze"
SILVER_GROUP = "silver"
QUARANTINE_CHECK = "quarantine_rate"
HISTORY_CHECK = "validity_intervals"


def feed_path(contract: Contract) -> list[str]:
    """The asset key path of a feed below its zone: ``[system, table]``, ``[clickstream, events]``."""
    return list(feed_of(contract).asset_path)


def _name(zone: str, contract: Contract) -> str:
    return "_".join([zone, *feed_path(contract)])


def feed_pool(contract: Contract) -> str:
    """The concurrency pool of a feed's steps: two runs never ingest or apply the same feed at once."""
    return _name("lake", contract)


def landing_key(contract: Contract) -> dg.AssetKey:
    """The landing feed (raw files) of a contract."""
    return dg.AssetKey(["landing", *feed_path(contract)])


def bronze_key(contract: Contract) -> dg.AssetKey:
    """The bronze table of a contract's feed."""
    return dg.AssetKey(["bronze", *feed_path(contract)])


def silver_keys(contract: Contract) -> list[dg.AssetKey]:
    """The silver tables of a feed: current state (+ history) for CDC, events for the clickstream."""
    return [dg.AssetKey(["silver", t.system, t.name]) for t in feed_of(contract).silver]


def landing_spec(contract: Contract) -> dg.AssetSpec:
    """The raw files of a feed as they land (written by a source's sink, or by the simulated company)."""
    return dg.AssetSpec(
        key=landing_key(contract),
        description=contract.description,
        group_name="landing",
        kinds={"json"},
        owners=[contract.owner],
        metadata={**contract_metadata(contract), "dagster/column_schema": contract_schema(contract)},
    )


def bronze_asset(contract: Contract) -> dg.AssetsDefinition:
    """Landing -> bronze for one feed, with a quarantine-rate check."""
    key = bronze_key(contract)

    @dg.asset(
        key=key,
        deps=[landing_key(contract)],
        pool=feed_pool(contract),
        group_name=BRONZE_GROUP,
        kinds={"delta", "duckdb"},
        owners=[contract.owner],
        metadata=contract_metadata(contract),
        check_specs=[
            dg.AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=key,
                description="Share of the feed's records sent to quarantine stays under "
                "INGEST_MAX_REJECT_RATE.",
            )
        ],
        description=f"Raw records of `{contract.feed_id}`, appended exactly once per landed file, with "
        "ingestion metadata (file, line, batch, time); records that break the contract go to "
        "`quarantine/records`.",
    )
    def ingest(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        settings = lake.settings()
        report = bronze.ingest(settings, contract)
        rate = quality.quarantine_rate(settings, contract)
        metadata = {
            **table_metadata(settings, bronze.bronze_uri(settings, contract)),  # raw records: no preview
            "files_ingested": report.files,
            "changed_files_not_taken_in": report.changed_files,
            "unrecognised_files_not_taken_in": report.unrecognised_files,
            "records_ingested": report.records,
            "rows_appended": report.bronze_rows,
            "records_quarantined": report.quarantined,
            "seconds": round(report.seconds, 2),
        }
        check = dg.AssetCheckResult(
            check_name=QUARANTINE_CHECK,
            passed=rate.rate <= settings.max_reject_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"records": rate.records, "quarantined": rate.quarantined, "rate": round(rate.rate, 5)},
        )
        if report.rejections:
            context.log_event(dg.AssetMaterialization(asset_key=key, metadata=metadata))
            raise dg.Failure(
                description=f"{len(report.rejections)} file(s) of {contract.feed_id} rejected: "
                + "; ".join(str(r) for r in report.rejections[:5]),
                metadata={"rejected_files": [r.relpath for r in report.rejections]},
            )
        context.log.info(
            f"{contract.feed_id}: {report.files} files, {report.bronze_rows} rows, {report.quarantined} "
            "quarantined"
        )
        for relpath in report.changed_files:
            context.log.warning(
                f"{relpath} was taken in before with another size or time: not taken in again"
            )
        for relpath in report.unrecognised_files:
            context.log.warning(f"{relpath} is not a data file ({' '.join(DATA_SUFFIXES)}): not taken in")
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return ingest


def freshness_policy(contract: Contract) -> dg.FreshnessPolicy | None:
    """Dagster's freshness of a feed's silver tables: they fail it when not refreshed within the contract's
    ``freshness`` SLA (none when the contract has no such SLA)."""
    window = contract.sla_duration("freshness")
    return dg.FreshnessPolicy.time_window(fail_window=window) if window else None


def silver_asset(contract: Contract) -> dg.AssetsDefinition:
    """Bronze -> silver for one feed: its feed's apply (CDC: current + history; the clickstream clean-up;
    ...)."""
    feed = feed_of(contract)
    keys = silver_keys(contract)
    specs = [
        dg.AssetSpec(
            key=key,
            deps=[bronze_key(contract)],
            description=table.description,
            group_name=SILVER_GROUP,
            kinds={"delta", "polars"},
            owners=[contract.owner],
            metadata=contract_metadata(contract),
            freshness_policy=freshness_policy(contract),
        )
        for key, table in zip(keys, feed.silver, strict=True)
    ]

    @dg.multi_asset(name=_name("silver", contract), specs=specs, pool=feed_pool(contract))
    def apply(context: dg.AssetExecutionContext, lake: LakeResource):
        settings = lake.settings()
        report = feed.apply(settings)
        context.log.info(f"{contract.feed_id}: {report}")
        for key, uri, figures in zip(
            keys, feed.silver_uris(settings), feed.apply_metadata(report), strict=True
        ):
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    **table_metadata(settings, uri, contract=contract, preview_of=contract),
                    **figures,
                },
            )

    return apply


def contract_checks(contract: Contract) -> dg.AssetChecksDefinition:
    """The contract's quality rules on the feed's silver table: blocking for errors, warnings otherwise."""
    key = silver_keys(contract)[0]
    specs = [
        dg.AssetCheckSpec(
            rule.name, asset=key, blocking=rule.severity == "error", description=rule.description
        )
        for rule in contract.rules
    ]

    @dg.multi_asset_check(name=f"{_name('contract', contract)}_rules", specs=specs)
    def rules(lake: LakeResource):
        for result in quality.contract_rules(lake.settings(), contract):
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=result.name,
                passed=result.passed is not False,
                severity=dg.AssetCheckSeverity.ERROR
                if result.severity == "error"
                else dg.AssetCheckSeverity.WARN,
                metadata={"observed": str(result.observed), "skipped": result.passed is None},
                description=result.description,
            )

    return rules


def history_check(contract: Contract) -> dg.AssetChecksDefinition:
    """Validity intervals of a CDC history table are well formed (blocking)."""

    (history,) = [
        k for k, t in zip(silver_keys(contract), feed_of(contract).silver, strict=True) if t.history
    ]

    @dg.asset_check(
        asset=history,
        name=HISTORY_CHECK,
        blocking=True,
        description="No interval ends before it starts; one open version per live key.",
    )
    def intervals(lake: LakeResource) -> dg.AssetCheckResult:
        problems = quality.history_problems(lake.settings(), contract)
        return dg.AssetCheckResult(passed=not any(problems.values()), metadata=problems)

    return intervals


INVALID_CONTRACTS_GROUP = "invalid_contracts"


def invalid_contract_specs(problems: list[ContractProblem]) -> list[dg.AssetSpec]:
    """One asset per contract file that did not load (its feed is left out of the code location), described by
    its problems, in the group ``invalid_contracts``."""
    files: dict[Path, list[str]] = {}
    for problem in problems:
        for path in filter(None, (problem.path, problem.other)):
            files.setdefault(path, []).append(str(problem))
    return [
        invalid_file_spec(
            INVALID_CONTRACTS_GROUP,
            path,
            path.name.removesuffix(".odcs.yaml"),
            "its feed is not loaded (invalid data contract, feed skipped)",
            messages,
        )
        for path, messages in sorted(files.items())
    ]


def lake_definitions(contracts: dict[str, Contract], produced: set[str]) -> tuple[list, list]:
    """(assets, checks) of every feed; landing feeds whose id is in ``produced`` are materialized elsewhere
    (by the simulated company) and get no external spec here."""
    assets: list = []
    checks: list = []
    for contract in contracts.values():
        if contract.feed_id not in produced:
            assets.append(landing_spec(contract))
        assets.extend([bronze_asset(contract), silver_asset(contract)])
        checks.append(contract_checks(contract))
        if any(t.history for t in feed_of(contract).silver):
            checks.append(history_check(contract))
    return assets, checks
