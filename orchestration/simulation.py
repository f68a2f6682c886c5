"""The simulated company as a Dagster asset: regenerate the demo landing zone from the UI."""

from datetime import date
from pathlib import Path

import dagster as dg

from lake.settings import get_settings


class SimulationRunConfig(dg.Config):
    """Scale and seed of the simulated company; the same values always write the same bytes."""

    persons: int = 10_000
    days: int = 30
    seed: int = 7
    start: str = "2026-09-01"


@dg.asset(
    key=["landing", "simulated_company"],
    group_name="simulation",
    kinds={"python", "json"},
    owners=["team:data-platform"],
)
def simulated_company(context: dg.AssetExecutionContext, config: SimulationRunConfig) -> dg.MaterializeResult:
    """Raw feeds of the simulated retailer in the landing zone: Debezium change events of the CRM and the
    shop (``landing/cdc/<topic>/``) and Segment messages per received hour (``landing/clickstream/``), with
    its ground truth beside them (``simulator_truth/``). Replaces the feeds a previous run wrote."""
    from simulator import SimulationConfig, generate

    settings = get_settings()
    if not settings.is_local:
        raise dg.Failure(f"the simulator writes local folders; LAKE_ROOT is {settings.lake_root}")
    sim = SimulationConfig(
        persons=config.persons, days=config.days, seed=config.seed, start=date.fromisoformat(config.start)
    )
    report = generate(
        sim, Path(settings.landing), Path(settings.simulator_truth), overwrite=True, progress=False
    )
    context.log.info(f"wrote {report.lines:,} lines in {report.files:,} files in {report.seconds:.1f} s")
    return dg.MaterializeResult(
        metadata={
            "landing": dg.MetadataValue.path(str(report.landing)),
            "truth": dg.MetadataValue.path(str(report.truth)),
            "files": report.files,
            "cdc_lines": report.lines_by_feed["cdc"],
            "clickstream_lines": report.lines_by_feed["clickstream"],
            "events_per_second": round(report.events_per_second),
            "faults": dg.MetadataValue.json(report.faults),
        }
    )
