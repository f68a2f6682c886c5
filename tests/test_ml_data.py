"""The gold readers: the rows of a real Delta table at its current or a pinned version, with their lineage."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import polars as pl
import pytest
from deltalake import write_deltalake

from lake.settings import get_settings
from ml.data import GoldTableMissing, load_features, load_training_set, read_gold


@pytest.fixture
def settings(tmp_path):
    return replace(get_settings(), lake_root=str(tmp_path / "lake"))


def write(settings, name: str, frame: pl.DataFrame) -> None:
    write_deltalake(
        f"{settings.zone('gold')}/{name}", frame.to_arrow(), mode="overwrite", schema_mode="overwrite"
    )


def test_read_gold_pins_versions(settings):
    write(settings, "person_features_daily", pl.DataFrame({"person_id": ["a", "b"], "order_count": [1, 2]}))
    write(settings, "person_features_daily", pl.DataFrame({"person_id": ["c"], "order_count": [5]}))

    current, ref = read_gold("person_features_daily", settings)
    assert ref.version == 1
    assert ref.uri == f"{settings.zone('gold')}/person_features_daily"
    assert ref.versioned_uri == f"{ref.uri}@v1"
    assert current["person_id"].to_list() == ["c"]

    first, first_ref = read_gold("person_features_daily", settings, version=0)
    assert first_ref.version == 0
    assert sorted(first["person_id"].to_list()) == ["a", "b"]

    some, _ = read_gold(
        "person_features_daily",
        settings,
        version=0,
        columns=["order_count"],
        filters=pl.col("person_id") == "b",
    )
    assert some.to_dicts() == [{"order_count": 2}]


def test_load_helpers(settings):
    write(
        settings,
        "person_features_daily",
        pl.DataFrame(
            {
                "person_id": ["b", "a", "a"],
                "snapshot_date": [date(2026, 9, 2), date(2026, 9, 2), date(2026, 9, 3)],
                "order_count": [1, 2, 3],
            }
        ),
    )
    frame, ref = load_features(date(2026, 9, 2), settings)
    assert ref.name == "person_features_daily" and ref.version == 0
    assert frame["person_id"].to_list() == ["a", "b"]
    assert frame["order_count"].to_list() == [2, 1]


def test_missing_table_names_it_and_how_to_build_it(settings):
    with pytest.raises(GoldTableMissing) as raised:
        load_training_set(settings)
    message = str(raised.value)
    assert "training_decisions" in message
    assert settings.zone("gold") in message
    assert "make demo" in message
