"""The simulated company as a Dagster asset: regenerate the demo landing zone from the UI."""

from datetime import date
from pathlib import Path

import dagster as dg

from data_contracts import Contract
from lake import object_store
from lake.feeds.clickstream import ClickstreamFeed
from lake.settings import get_settings
from orchestration.lake_assets import landing_spec
from orchestration.resources import LakeResource
from simulator.tables import crm_server, shop_server


def simulated_feeds() -> set[str]:
    """The feed ids (CDC topics and ``clickstream``) the simulated company writes."""
    topics = {server.topic(t) for server in (crm_server(1), shop_server(1)) for t in server.tables}
    return topics | {ClickstreamFeed.kind}


class SimulationRunConfig(dg.Config):
    """Scale and seed of the simulated company; the same values always write the same bytes."""

    persons: int = 10_000
    days: int = 30
    seed: int = 7
    start: str = get_settings().first_snapshot_date.isoformat()


def simulated_company_asset(contracts: dict[str, Contract]) -> dg.AssetsDefinition:
    """The simulator writing every landing feed it knows that has a contract."""
    specs = [landing_spec(c) for c in contracts.values() if c.feed_id in simulated_feeds()]

    @dg.multi_asset(name="simulated_company", specs=specs, description=__doc__)
    def simulated_company(context: dg.AssetExecutionContext, config: SimulationRunConfig, lake: LakeResource):
        """Raw feeds of the simulated retailer in the landing zone: Debezium change events of the CRM and the
        shop (``landing/cdc/<topic>/``) and Segment messages per received hour (``landing/clickstream/``),
        with its ground truth beside them (``simulator_truth/``). Replaces the feeds a previous run wrote."""
        from simulator import SimulationConfig, generate
        from simulator.generate import FEEDS

        settings = lake.settings()
        sim = SimulationConfig(
            persons=config.persons, days=config.days, seed=config.seed, start=date.fromisoformat(config.start)
        )
        # with the lake on object storage the simulator writes a local folder, delivered as a sink would
        written = Path(settings.landing) if settings.is_local else settings.beside_lake("simulated_landing")
        report = generate(sim, written, Path(settings.simulator_truth), overwrite=True, progress=False)
        context.log.info(f"wrote {report.lines:,} lines in {report.files:,} files in {report.seconds:.1f} s")
        if not settings.is_local:
            for feed in FEEDS:
                object_store.delete_folder(object_store.join(settings.landing, feed))
            uploaded = object_store.upload_folder(written, settings.landing)
            context.log.info(f"uploaded {uploaded:,} files to the landing zone on object storage")
        summary = {
            "landing": dg.MetadataValue.path(settings.landing),
            "truth": dg.MetadataValue.path(str(report.truth)),
            "files": report.files,
            "cdc_lines": report.lines_by_feed["cdc"],
            "clickstream_lines": report.lines_by_feed["clickstream"],
            "events_per_second": round(report.events_per_second),
            "faults": dg.MetadataValue.json(report.faults),
        }
        for spec in specs:
            yield dg.MaterializeResult(asset_key=spec.key, metadata=summary)

    return simulated_company
