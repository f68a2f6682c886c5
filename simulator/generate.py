"""Run the simulated company over its history and observed window, and write its files and ground truth."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from simulator import catalog as cat
from simulator.clickstream import ClickstreamWriter
from simulator.company import Company
from simulator.config import SimulationConfig
from simulator.debezium import Connector
from simulator.files import FileWriter
from simulator.state import SimulatorState, empty_recommendations, rng_state, save_state
from simulator.tables import crm_server, shop_server
from simulator.world import World, build_world

FEEDS = ("cdc", "clickstream")


@dataclass
class GenerationReport:
    """What one run wrote, and how fast."""

    landing: Path
    truth: Path | None
    lines_by_feed: dict[str, int] = field(default_factory=dict)
    files: int = 0
    seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        return sum(self.lines_by_feed.values())

    @property
    def events_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def generate(
    config: SimulationConfig,
    landing: Path,
    truth: Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> GenerationReport:
    """Simulate ``config`` and write its raw files under ``landing`` (``cdc/``, ``clickstream/``) and, when
    ``truth`` is given, its ground truth there with the state that :func:`simulator.advance.advance`
    continues from (:mod:`simulator.state`). The same config always writes the same bytes."""
    landing = Path(landing)
    _prepare(landing, overwrite)
    started = time.perf_counter()
    world_rng, company_rng, crm_rng, shop_rng, click_rng = (
        np.random.default_rng(s) for s in rng_seeds(config)
    )
    world = build_world(config, world_rng)
    writer = FileWriter()
    try:
        crm = Connector(crm_server(config.days), landing, config, crm_rng, writer)
        shop = Connector(shop_server(config.days), landing, config, shop_rng, writer)
        clicks = ClickstreamWriter(
            landing, config, click_rng, writer, world.devices, world.persons, world.products
        )
        company = Company(config, world, company_rng, crm, shop, clicks)
        show = sys.stderr.isatty() if progress is None else progress
        for day in tqdm(
            range(-config.history_days, config.days), desc="simulating days", unit="day", disable=not show
        ):
            if day == 0:
                crm.snapshot(config.start_us)
                shop.snapshot(config.start_us)
            company.run_day(day)
        for feed in (crm, shop, clicks):
            feed.finish()
    finally:
        writer.close()
    report = GenerationReport(landing=landing, truth=Path(truth) if truth else None)
    report.lines_by_feed = {
        "cdc": sum(
            c.stats["events"] + c.stats["tombstones"] + c.stats["duplicate_events"] for c in (crm, shop)
        ),
        "clickstream": clicks.stats["lines"],
    }
    report.files = crm.stats["files"] + shop.stats["files"] + clicks.stats["files"]
    report.faults = _fault_counts(world, crm, shop, clicks)
    report.seconds = time.perf_counter() - started
    if truth:
        write_truth(Path(truth), config, world, company, report)
        save_state(
            Path(truth),
            SimulatorState(
                config=config,
                next_day=config.days,
                company=company.state,
                rngs={
                    "company": rng_state(company_rng),
                    "crm": rng_state(crm_rng),
                    "shop": rng_state(shop_rng),
                    "clicks": rng_state(click_rng),
                },
                connectors={"crm": crm.export_state(), "shop": shop.export_state()},
                clicks=clicks.export_state(),
                recommendations=empty_recommendations(),
            ),
        )
    return report


def rng_seeds(config: SimulationConfig) -> list[np.random.SeedSequence]:
    """The seeds of the world's, the company's, the CRM connector's, the shop connector's and the
    clickstream's random generators."""
    return np.random.SeedSequence(config.seed).spawn(5)


def _prepare(landing: Path, overwrite: bool) -> None:
    existing = [landing / f for f in FEEDS if (landing / f).exists() and any((landing / f).iterdir())]
    if existing and not overwrite:
        raise FileExistsError(
            f"{landing} already holds simulated feeds ({', '.join(p.name for p in existing)}); "
            "pass overwrite=True (--overwrite) to replace them"
        )
    for path in existing:
        shutil.rmtree(path)
    landing.mkdir(parents=True, exist_ok=True)


def _fault_counts(world: World, crm: Connector, shop: Connector, clicks: ClickstreamWriter) -> dict[str, int]:
    contacts = world.contacts
    return {
        "cdc_events": crm.stats["events"] + shop.stats["events"],
        "cdc_snapshot_events": crm.stats["snapshot_events"] + shop.stats["snapshot_events"],
        "cdc_duplicate_events": crm.stats["duplicate_events"] + shop.stats["duplicate_events"],
        "cdc_tombstones": crm.stats["tombstones"] + shop.stats["tombstones"],
        "cdc_files": crm.stats["files"] + shop.stats["files"],
        "cdc_out_of_order_files": crm.stats["out_of_order_files"] + shop.stats["out_of_order_files"],
        "click_messages": clicks.stats["messages"],
        "click_duplicate_deliveries": clicks.stats["duplicate_deliveries"],
        "click_late_messages": clicks.stats["late_messages"],
        "click_malformed_lines": clicks.stats["malformed_lines"],
        "click_missing_field_messages": clicks.stats["missing_field_messages"],
        "devices": world.devices.height,
        "skewed_devices": int(world.devices["skewed"].sum()),
        "shared_devices": int(world.devices["shared"].sum()),
        "persons": world.persons.height,
        "crm_persons": contacts["person"].n_unique(),
        "duplicate_contacts": int(contacts["is_duplicate"].sum()),
        "contacts": contacts.height,
        "placeholder_contacts": int(contacts["placeholder"].sum()),
    }


def write_truth(
    folder: Path, config: SimulationConfig, world: World, company: Company, report: GenerationReport
) -> None:
    """The ground truth: every identifier's true person (``evidenced``: whether any message ties it to the
    person's other identifiers, false only for devices never signed in), each person's response model, the
    product catalogue at the start (the basket rules draw from it), and a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    persons = world.persons
    pid = persons.select("person", "person_id")
    customer_id = company.shop.state.customer_id
    with_account = customer_id >= 0
    normalise = pl.col("identifier").str.strip_chars().str.to_lowercase()
    identifiers = (
        pl.concat(
            [
                world.contacts.select(
                    pl.lit("crm_contact_id").alias("identifier_type"),
                    pl.col("contact_id").cast(pl.String).alias("identifier"),
                    "person",
                ),
                pl.DataFrame(
                    {
                        "identifier_type": "shop_customer_id",
                        "identifier": customer_id[with_account].astype(str),
                        "person": np.flatnonzero(with_account),
                    }
                ),
                pl.DataFrame(
                    {
                        "identifier_type": "app_user_id",
                        "identifier": company.people.user_ids.filter(with_account),
                        "person": np.flatnonzero(with_account),
                    }
                ),
                world.person_devices.with_columns(evidenced=company.browsing.state.evidenced)
                .join(world.devices.select("device", "anonymous_id"), on="device")
                .select(
                    pl.lit("anonymous_id").alias("identifier_type"),
                    pl.col("anonymous_id").alias("identifier"),
                    "person",
                    "evidenced",
                ),
                world.contacts.select(
                    pl.lit("email").alias("identifier_type"), pl.col("email").alias("identifier"), "person"
                ).with_columns(normalise),
                persons.select(
                    pl.lit("email").alias("identifier_type"), pl.col("email").alias("identifier"), "person"
                ),
                persons.filter(pl.col("phone_e164").is_not_null()).select(
                    pl.lit("phone").alias("identifier_type"),
                    pl.col("phone_e164").alias("identifier"),
                    "person",
                ),
            ],
            how="diagonal_relaxed",
        )
        .with_columns(pl.col("evidenced").fill_null(True))
        .unique(maintain_order=True)
        .join(pid, on="person")
        .drop("person")
    )
    identifiers.sort(["identifier_type", "identifier", "person_id"]).write_parquet(
        folder / "identifiers.parquet"
    )
    persons.select(
        "person_id",
        pl.col("created_us").alias("created_at_us"),
        pl.col("country").replace_strict(
            list(range(len(cat.COUNTRIES))), list(cat.COUNTRIES), return_dtype=pl.String
        ),
        "engagement",
        "price_sensitivity",
        "loyalty",
        "abandonment",
        "base_weekly",
        (pl.col("basket_mean") / 100).alias("basket_mean_eur"),
        pl.col("preferred_category").replace_strict(
            list(range(len(cat.CATEGORIES))), list(cat.CATEGORIES), return_dtype=pl.String
        ),
    ).write_parquet(folder / "persons.parquet")
    n = persons.height
    pl.DataFrame(
        {
            "person_id": np.repeat(persons["person_id"].to_numpy(), len(cat.ACTIONS)),
            "action": np.tile(np.asarray(cat.ACTIONS), n),
            "weekly_purchase_uplift": world.uplift.ravel(),
            "basket_multiplier": world.basket_multiplier.ravel(),
        }
    ).write_parquet(folder / "responses.parquet")
    world.products.select(
        "product_id", pl.col("category_name").alias("category"), "price_cents"
    ).write_parquet(folder / "products.parquet")
    manifest = {
        "config": config.to_dict(),
        "lines_by_feed": report.lines_by_feed,
        "files": report.files,
        "faults": report.faults,
        "response_model": {
            "effect_days": 7,
            "actions": list(cat.ACTIONS),
            "meaning": "a person's daily purchase probability is (base_weekly + weekly_purchase_uplift "
            "of the action sent in the last 7 days) / 7; basket value is scaled by basket_multiplier",
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
