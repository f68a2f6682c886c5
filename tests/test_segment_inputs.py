"""Segment messages written from the spec, through real ingestion into real Delta tables: placeholder ids are
absent ids, the reserved traits (camelCase, snake_case, in context.traits) never reach silver in clear, and a
lake that holds them from before is repaired."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import lake_settings
from deltalake import DeltaTable
from segment_messages import (
    CLEAR_VALUES,
    GRACE_TRAITS_CAMEL,
    GRACE_TRAITS_SNAKE,
    files_holding,
    land_segment,
    segment,
)

from data_contracts import load_contracts
from lake import bronze, clickstream
from lake.ingest import ingest_all
from lake.settings import REPO_ROOT, Settings

T = "2026-09-03T10:{:02d}:00.000Z"
PLACEHOLDERS = ["null", "undefined", "None", "", "  "]


def first_file() -> list[dict]:
    """Identify calls with the reserved traits, a track with context.traits, messages without traits."""
    return [
        segment(
            "identify-camel",
            "identify",
            T.format(1),
            anonymousId="anon-web-1",
            userId="user-old",
            traits=GRACE_TRAITS_CAMEL,
        ),
        segment(
            "identify-snake",
            "identify",
            T.format(2),
            anonymousId="anon-web-1",
            userId="user-old",
            traits=GRACE_TRAITS_SNAKE,
        ),
        segment(
            "track-context-traits",
            "track",
            T.format(3),
            event="Product Viewed",
            anonymousId="anon-app-1",
            userId="user-old",
            properties={"product_id": "SKU-1"},
            context={"ip": "198.51.100.23", "traits": GRACE_TRAITS_CAMEL},
        ),
        segment("page-no-traits", "page", T.format(4), name="Home", anonymousId="anon-web-1"),
    ]


def placeholder_file() -> list[dict]:
    """Placeholder ids beside a real one (kept, the placeholder becomes null), alone (quarantined), in
    alias."""
    kept = [
        segment(
            f"user-{i}",
            "track",
            T.format(10 + i),
            event="Product Viewed",
            anonymousId="anon-web-1",
            userId=value,
        )
        for i, value in enumerate(PLACEHOLDERS)
    ] + [
        segment(f"anon-{i}", "page", T.format(20 + i), name="Home", anonymousId=value, userId="user-old")
        for i, value in enumerate(PLACEHOLDERS)
    ]
    quarantined = [
        segment(
            "only-placeholders",
            "track",
            T.format(30),
            event="Product Viewed",
            anonymousId="undefined",
            userId="null",
        ),
        segment("blank-user", "page", T.format(31), name="Home", userId="  "),
        segment(
            "alias-placeholder-previous", "alias", T.format(32), userId="user-new", previousId="undefined"
        ),
        segment("alias-placeholder-user", "alias", T.format(33), userId="None", previousId="anon-web-1"),
    ]
    return kept + quarantined


def ingest(settings: Settings):
    run = ingest_all(settings, ["clickstream"])
    return next(r for r in run.ingested if r.feed_id == "clickstream")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("segment")
    settings = lake_settings(tmp / "lake")
    landing = Path(settings.landing)
    land_segment(landing, "web", "10", first_file(), 1_800_000_000)
    assert ingest(settings).quarantined == 0
    land_segment(landing, "web", "11", placeholder_file(), 1_800_000_100)
    report = ingest(settings)
    assert (report.records, report.bronze_rows, report.quarantined) == (14, 10, 4)
    return settings


def silver(settings: Settings) -> dict[str, dict]:
    rows = pl.read_delta(clickstream.silver_uri(settings)).iter_rows(named=True)
    return {r["message_id"]: r for r in rows}


def test_placeholder_ids_are_absent_and_link_nothing(lake: Settings) -> None:
    rows = silver(lake)
    for i in range(len(PLACEHOLDERS)):
        assert (rows[f"user-{i}"]["user_id"], rows[f"user-{i}"]["anonymous_id"]) == (None, "anon-web-1")
        assert (rows[f"anon-{i}"]["user_id"], rows[f"anon-{i}"]["anonymous_id"]) == ("user-old", None)
    quarantine = pl.read_delta(bronze.quarantine_uri(lake))
    reasons = {json.loads(r["raw"])["messageId"]: r["reason"] for r in quarantine.iter_rows(named=True)}
    assert reasons == {
        "only-placeholders": "message has neither anonymousId nor userId (placeholders are absent ids: "
        'anonymousId "undefined", userId "null")',
        "blank-user": 'message has neither anonymousId nor userId (placeholders are absent ids: userId "  ")',
        "alias-placeholder-previous": "alias message without previousId (placeholders are absent ids: "
        'previousId "undefined")',
        "alias-placeholder-user": 'alias message without userId (placeholders are absent ids: userId "None")',
    }
    # bronze keeps the message as it came
    raw = pl.read_delta(bronze.bronze_uri(lake, load_contracts()["clickstream"]))
    assert json.loads(raw.filter(pl.col("message_id") == "user-0")["raw"].item())["userId"] == "null"


def test_reserved_traits_are_tokenised_or_removed(lake: Settings) -> None:
    rows = silver(lake)
    camel, snake, context = rows["identify-camel"], rows["identify-snake"], rows["track-context-traits"]
    assert json.loads(camel["traits"]) == {"plan": "premium", "logins": 5}
    assert json.loads(snake["traits"]) == {}
    # a message without traits keeps null traits
    assert context["traits"] is None and rows["page-no-traits"]["traits"] is None
    # the camelCase and the snake_case forms of a trait give one token, as do traits and context.traits
    for kind in ("email", "phone", "first_name", "last_name"):
        token = camel[f"traits_{kind}_token"]
        assert token is not None and len(token) == 64, kind
        assert snake[f"traits_{kind}_token"] == token == context[f"context_traits_{kind}_token"], kind
    for kind in ("name", "username"):
        assert camel[f"traits_{kind}_token"] == context[f"context_traits_{kind}_token"] is not None, kind
    assert camel["traits_birthday_year"] == snake["traits_birthday_year"] == 1906
    assert not [c for c in camel if "address" in c]
    assert files_holding(Path(lake.zone("silver")), CLEAR_VALUES) == {}


OLD_TRAITS = {"email", "phone", "name", "first_name", "last_name", "birthday"}
"""The reserved traits the clickstream contract protected before (snake_case only; email and phone in
context.traits)."""


def old_contracts(folder: Path) -> Path:
    """The clickstream contract as it was before the camelCase reserved traits were declared."""
    source = REPO_ROOT / "data_contracts" / "contracts" / "clickstream.segment.odcs.yaml"
    document = yaml.safe_load(source.read_text())
    for prop in document["schema"][0]["properties"]:
        if prop["name"] == "traits":
            prop["properties"] = [p for p in prop["properties"] if p["name"] in OLD_TRAITS]
        if prop["name"] == "context":
            for nested in prop["properties"]:
                if nested["name"] == "traits":
                    nested["properties"] = [
                        p for p in nested["properties"] if p["name"] in {"email", "phone"}
                    ]
    folder.mkdir(parents=True)
    (folder / source.name).write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def test_a_lake_holding_clear_traits_and_placeholder_ids_is_repaired(tmp_path: Path) -> None:
    old = lake_settings(tmp_path / "lake", contracts_dir=old_contracts(tmp_path / "old_contracts"))
    landing = Path(old.landing)
    land_segment(landing, "web", "10", first_file(), 1_800_000_000)
    ingest(old)
    land_segment(landing, "web", "11", placeholder_file(), 1_800_000_100)
    ingest(old)
    # what the earlier clean-up left: placeholder ids as identifiers, an object of nulls for absent traits
    table = DeltaTable(clickstream.silver_uri(old))
    table.update({"user_id": "'null'"}, predicate="message_id = 'user-0'")
    table.update({"anonymous_id": "'undefined'"}, predicate="message_id = 'anon-1'")
    table.update({"traits": """'{"email":null,"phone":null}'"""}, predicate="message_id = 'page-no-traits'")
    table.create_checkpoint()  # a checkpoint holds the statistics of the files live at its version
    silver_zone = Path(old.zone("silver"))
    assert {"ghopper", "navy way", "arlington"} <= {
        v for hits in files_holding(silver_zone, CLEAR_VALUES).values() for v in hits
    }
    watermark = clickstream.watermark(old)

    env = {
        **os.environ,
        "LAKE_ROOT": old.lake_root,
        "DATA_CONTRACTS_DIR": str(REPO_ROOT / "data_contracts" / "contracts"),
        "WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    outputs = []
    for _ in range(2):  # safe to re-run
        done = subprocess.run(
            [sys.executable, "-m", "lake.repair_clickstream"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "1 dates rewritten" in outputs[0] and "0 dates rewritten" in outputs[1]
    assert not any(v in "".join(outputs).lower() for v in CLEAR_VALUES)
    assert files_holding(silver_zone, CLEAR_VALUES) == {}

    # the repaired rows are those a fresh ingestion with today's clean-up gives (but for the context.traits
    # names, which the earlier silver never kept), and the lake goes on from where it was
    new = lake_settings(tmp_path / "lake")
    assert clickstream.watermark(new) == watermark
    assert ingest(new).bronze_rows == 0
    fresh = lake_settings(tmp_path / "fresh", landing)
    ingest(fresh)
    expected = pl.read_delta(clickstream.silver_uri(fresh))
    repaired = pl.read_delta(clickstream.silver_uri(new))
    assert sorted(repaired.columns) == sorted(expected.columns)
    lost = [
        c
        for c in expected.columns
        if c.startswith("context_traits_")
        and c not in ("context_traits_email_token", "context_traits_phone_token")
    ]
    assert repaired.select(lost).null_count().row(0) == (repaired.height,) * len(lost)
    order = sorted(c for c in expected.columns if c not in lost)
    assert repaired.select(order).sort("message_id").equals(expected.select(order).sort("message_id"))
    # bronze, the restricted zone, still holds the messages as they came
    assert files_holding(Path(old.zone("bronze")), ("ghopper",))
