"""The person marts on a real simulated company: sessions, point-in-time features and the training set.

The landing zone is delivered in two parts by arrival time: the lake is built on what arrived in the first
week, the marts are built and read, the rest lands and is ingested, the marts are built again (incrementally),
and a copy of the warehouse gets a full refresh of the features."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml
from conftest import Simulated, lake_settings, read_warehouse, run_dbt
from dagster_dbt import DbtCliResource

from data_contracts import load_contracts
from lake.ingest import ingest_all
from lake.settings import Settings
from lake.warehouse import publish_silver
from orchestration.dbt_assets import dbt_daily_snapshots
from orchestration.dbt_project import dbt_project
from orchestration.resources import LakeResource

pytestmark = pytest.mark.slow  # the marts fixture builds every snapshot date with dbt (about 2 to 3 minutes)

SELECT = ["+training_decisions", "+training_propensity", "+person_profile"]
FIRST_PART_UNTIL = datetime(2026, 9, 8, tzinfo=UTC)
FEATURE_KEYS = ["snapshot_date", "person_id"]


@dataclass
class MartsBuild:
    """The marts as built on the first part of the landing zone, the warehouse after the second part, and the
    features of a full refresh after it."""

    first_features: pl.DataFrame
    first_decisions: pl.DataFrame
    first_data_until: datetime
    first_person_map: pl.DataFrame
    settings: Settings
    restated_features: pl.DataFrame


def arrival(relpath: Path, path: Path) -> datetime:
    """When a landed file arrived: the hour of its folder for the clickstream
    (``clickstream/<source>/<day>/<hour>``, the hour Segment received its messages), its modification time for
    CDC files."""
    if relpath.parts[0] == "clickstream":
        day, hour = relpath.parts[2:4]
        return datetime.fromisoformat(f"{day}T{hour}:00:00+00:00")
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def land(source: Path, landing: Path, arrived_before: datetime | None) -> None:
    """Link the files of ``source`` that arrived before ``arrived_before`` (all when None) into
    ``landing``."""
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relpath = path.relative_to(source)
        target = landing / relpath
        if target.exists() or (arrived_before is not None and arrival(relpath, path) >= arrived_before):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)


def dbt_build(settings: Settings, scratch: Path) -> None:
    """Refresh the silver views, then ``dbt build`` of the marts and their parents."""
    publish_silver(settings, load_contracts(settings.contracts_dir))
    run_dbt(settings, scratch, "build", "--select", *SELECT)


@pytest.fixture(scope="module")
def marts(simulated: Simulated, tmp_path_factory: pytest.TempPathFactory) -> MartsBuild:
    """The three dbt runs of the module (first part, second part, full refresh of the features)."""
    scratch = tmp_path_factory.mktemp("marts")
    landing = scratch / "landing"
    land(simulated.landing, landing, FIRST_PART_UNTIL)
    settings = replace(lake_settings(scratch / "lake", landing), warehouse_path=scratch / "warehouse.duckdb")
    ingest_all(settings)
    dbt_build(settings, scratch)
    first_features = read_warehouse(settings, "select * from person_features_daily")
    first_decisions = read_warehouse(settings, "select * from training_decisions")
    first_data_until = read_warehouse(settings, "select data_until from int_marts__data_window").item()
    first_person_map = read_warehouse(
        settings, "select identifier_type, identifier, person_id, linked_at from identity_person_map"
    )
    land(simulated.landing, landing, None)
    ingest_all(settings)
    dbt_build(settings, scratch)
    # a full refresh on a copy: every date recomputed from all the data
    restated = replace(settings, warehouse_path=scratch / "restated.duckdb")
    shutil.copy(settings.warehouse_path, restated.warehouse_path)
    run_dbt(restated, scratch, "run", "--select", "person_features_daily", "--full-refresh")
    return MartsBuild(
        first_features,
        first_decisions,
        first_data_until,
        first_person_map,
        settings,
        read_warehouse(restated, "select * from person_features_daily"),
    )


def test_feature_rows_are_unchanged_by_later_data(marts: MartsBuild) -> None:
    first = marts.first_features.sort(FEATURE_KEYS)
    assert first["snapshot_date"].n_unique() >= 5 and first.height > 10_000
    features = read_warehouse(marts.settings, "select * from person_features_daily")
    assert features["snapshot_date"].max() > first["snapshot_date"].max()
    again = features.join(first.select(FEATURE_KEYS), on=FEATURE_KEYS).sort(FEATURE_KEYS)
    assert again.equals(first)


def test_a_full_refresh_restates_earlier_rows_identically(marts: MartsBuild) -> None:
    # the later data links new identifiers (devices, customers) to persons of the first build: their earlier
    # rows stay as they were. Only persons that merged or split between the builds are left out.
    current_map = read_warehouse(
        marts.settings, "select identifier_type, identifier, person_id, linked_at from identity_person_map"
    )
    moves = marts.first_person_map.join(
        current_map, on=["identifier_type", "identifier"], suffix="_now"
    ).filter(pl.col("person_id") != pl.col("person_id_now"))
    # an identifier whose link time the later data changed (the link now rests on other evidence) restates the
    # rows of its person from then on
    relinked = marts.first_person_map.join(
        current_map, on=["identifier_type", "identifier", "person_id"], suffix="_now"
    ).filter(pl.col("linked_at") != pl.col("linked_at_now"))
    # an identifier that left the map (the fan-out guard cut it once later data showed it shared) splits its
    # person as surely as one that moved
    dropped = marts.first_person_map.join(current_map, on=["identifier_type", "identifier"], how="anti")
    changed = pl.concat(
        [
            moves.select("person_id"),
            moves.select(person_id="person_id_now"),
            dropped.select("person_id"),
            relinked.select("person_id"),
        ]
    )
    persons = marts.first_person_map.select("person_id").unique()
    kept = persons.join(changed, on="person_id", how="anti")
    grown = current_map.join(marts.first_person_map, on=["identifier_type", "identifier"], how="anti").join(
        kept, on="person_id"
    )
    assert kept.height > 0.9 * persons.height  # the rest: mostly devices of their own that joined a person
    assert grown["person_id"].n_unique() > 100  # persons that gained identifiers in the second part
    first = marts.first_features.join(kept, on="person_id").sort(FEATURE_KEYS)
    restated = marts.restated_features.join(first.select(FEATURE_KEYS), on=FEATURE_KEYS).sort(FEATURE_KEYS)
    assert first.height > 10_000
    assert restated.equals(first)


def test_features_count_only_what_was_known_at_the_snapshot(marts: MartsBuild) -> None:
    # the 7-day event counts of the second build's dates, recomputed from the clicks received before the
    # snapshot instant and attributed by identifiers linked to their person before it
    first_dates_until = marts.first_features["snapshot_date"].max()
    recomputed = read_warehouse(
        marts.settings,
        f"""
        select features.snapshot_date, features.person_id, features.event_count_7d,
            count(events.message_id) as n
        from person_features_daily as features
        left join int_marts__person_events as events
            on events.person_id = features.person_id
            and events.event_at < timezone('UTC', cast(features.snapshot_date as timestamp))
            and events.received_at < timezone('UTC', cast(features.snapshot_date as timestamp))
            and events.linked_at < timezone('UTC', cast(features.snapshot_date as timestamp))
            and events.event_at >= timezone('UTC', cast(features.snapshot_date as timestamp)) - interval 7 day
        where features.snapshot_date > '{first_dates_until}'
        group by all
        """,
    )
    assert recomputed.filter(pl.col("n") > 0).height > 1000
    assert recomputed.filter(pl.col("event_count_7d") != pl.col("n")).is_empty()


POINT_IN_TIME_CASE = Path(__file__).parent / "person_features_point_in_time.yml"


def _fixture_relation(
    source: duckdb.DuckDBPyConnection, target: duckdb.DuckDBPyConnection, name: str, rows
) -> None:
    """Create table ``name`` in ``target`` with the columns and types of relation ``name`` of ``source``
    holding ``rows`` (dicts; a column a row leaves out is null), as dbt's unit tests type their fixtures."""
    columns = source.execute(f"describe {name}").fetchall()
    target.execute(f"create table {name} (" + ", ".join(f'"{c[0]}" {c[1]}' for c in columns) + ")")
    for row in rows:
        names = ", ".join(f'"{column}"' for column in row)
        target.execute(
            f"insert into {name} ({names}) values ({', '.join('?' for _ in row)})", list(row.values())
        )


def test_features_use_only_facts_known_at_the_snapshot(marts: MartsBuild, tmp_path: Path) -> None:
    # a hand-made case (tests/person_features_point_in_time.yml): dbt builds person_features_daily, its
    # feature groups inlined, on a warehouse holding only the given relations, typed as in the real build
    case = yaml.safe_load(POINT_IN_TIME_CASE.read_text())
    settings = replace(marts.settings, warehouse_path=tmp_path / "warehouse.duckdb")
    with (
        duckdb.connect(str(marts.settings.warehouse_path), read_only=True) as source,
        duckdb.connect(str(settings.warehouse_path)) as target,
    ):
        for given in case["given"]:
            name = re.fullmatch(r"ref\('(\w+)'\)", given["input"]).group(1)
            _fixture_relation(source, target, name, given["rows"])
        expected = case["expect"]["rows"]
        columns = list(dict.fromkeys(column for row in expected for column in row))
        features = source.execute("describe person_features_daily").fetchall()
        types = {column[0]: column[1] for column in features}
        target.execute("create table expected (" + ", ".join(f'"{c}" {types[c]}' for c in columns) + ")")
        for row in expected:
            target.execute(
                f"insert into expected values ({', '.join('?' for _ in columns)})",
                [row.get(c) for c in columns],
            )
    run_dbt(settings, tmp_path, "run", "--select", "person_features_daily")
    listed = ", ".join(f'"{column}"' for column in columns)
    actual = f"select {listed} from person_features_daily"
    missing = read_warehouse(settings, f"select * from expected except all {actual}")
    unexpected = read_warehouse(settings, f"{actual} except all select * from expected")
    assert read_warehouse(settings, "select count(*) as n from person_features_daily").item() == len(expected)
    assert missing.is_empty(), missing
    assert unexpected.is_empty(), unexpected


def test_labels_come_strictly_after_the_decision(marts: MartsBuild) -> None:
    decisions = read_warehouse(marts.settings, "select * from training_decisions")
    assert decisions["converted"].sum() > 0
    converted = decisions.filter(pl.col("converted"))
    assert (converted["first_order_at"] > converted["decision_at"]).all()
    assert (converted["first_order_at"] < converted["label_window_end_at"]).all()
    assert (decisions["feature_snapshot_date"] == decisions["decision_date"]).all()
    # the labels recomputed from the shop's orders: none at or before the decision counts
    recounted = read_warehouse(
        marts.settings,
        """
        select decisions.activity_id, decisions.order_count_in_horizon, count(orders.order_id) as n
        from training_decisions as decisions
        left join identity_person_map as customers
            on customers.person_id = decisions.person_id and customers.identifier_type = 'shop_customer_id'
        left join stg_shop__orders as orders
            on cast(orders.customer_id as varchar) = customers.identifier
            and orders.status not in ('cancelled', 'refunded')
            and orders.created_at > decisions.decision_at
            and orders.created_at < decisions.label_window_end_at
        group by all
        """,
    )
    assert recounted.filter(pl.col("order_count_in_horizon") != pl.col("n")).is_empty()


def test_no_decision_with_an_incomplete_label_window(marts: MartsBuild) -> None:
    data_until = read_warehouse(marts.settings, "select data_until from int_marts__data_window").item()
    decisions = read_warehouse(marts.settings, "select * from training_decisions")
    assert (decisions["label_window_end_at"] <= data_until).all()
    assert (marts.first_decisions["label_window_end_at"] <= marts.first_data_until).all()
    # decisions left out of the first build for their open window are in the second one
    late = decisions.join(marts.first_decisions.select("activity_id"), on="activity_id", how="anti")
    assert late.height > 0 and (late["label_window_end_at"] > marts.first_data_until).all()


def test_the_propensity_set_holds_untreated_people_with_complete_label_windows(marts: MartsBuild) -> None:
    touched = read_warehouse(
        marts.settings,
        """
        select count(*) as n
        from training_propensity as training
        inner join identity_person_map as contacts
            on contacts.person_id = training.person_id and contacts.identifier_type = 'crm_contact_id'
        inner join stg_crm__activities as activities
            on cast(activities.contact_id as varchar) = contacts.identifier
            and activities.activity_type = 'campaign_touch'
            and activities.sent_at < training.label_window_end_at
        """,
    ).item()
    assert touched == 0
    training = read_warehouse(marts.settings, "select * from training_propensity")
    data_until = read_warehouse(marts.settings, "select data_until from int_marts__data_window").item()
    assert training.height > 10_000 and training["converted"].sum() > 0
    assert (training["label_window_end_at"] <= data_until).all()


def test_sessions_split_after_30_minutes_without_an_event(marts: MartsBuild) -> None:
    gaps = read_warehouse(
        marts.settings,
        """
        with events as (
            select
                person_id,
                event_at,
                event_at - lag(event_at) over (partition by person_id order by event_at, message_id) as gap
            from int_marts__person_events
        )
        select
            sessions.session_id,
            count(*) filter (where events.gap >= interval 30 minute and events.event_at > sessions.started_at)
                as long_gaps_inside,
            any_value(sessions.event_count) as event_count,
            count(*) as events
        from person_sessions as sessions
        inner join events
            on events.person_id = sessions.person_id
            and events.event_at between sessions.started_at and sessions.ended_at
        group by sessions.session_id
        """,
    )
    assert gaps.height > 1000
    assert gaps.filter(pl.col("long_gaps_inside") > 0).is_empty()
    assert gaps.filter(pl.col("events") != pl.col("event_count")).is_empty()
    between = read_warehouse(
        marts.settings,
        """
        select
            epoch(started_at) - epoch(lag(ended_at) over (partition by person_id order by session_number))
                as gap_seconds
        from person_sessions
        """,
    ).drop_nulls()
    assert between.height > 100
    assert between.filter(pl.col("gap_seconds") < 30 * 60).is_empty()


def test_a_daily_partition_replaces_the_rows_of_its_dates_only(
    marts: MartsBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replace(marts.settings, warehouse_path=tmp_path / "warehouse.duckdb")
    shutil.copy(marts.settings.warehouse_path, settings.warehouse_path)
    monkeypatch.setenv("WAREHOUSE_PATH", str(settings.warehouse_path))
    before = read_warehouse(settings, "select * from person_features_daily").sort(FEATURE_KEYS)
    dates = before["snapshot_date"].unique().sort()
    day, next_day = dates[len(dates) // 2], dates[len(dates) // 2 + 1]
    with duckdb.connect(str(settings.warehouse_path)) as con:  # two dates lost, one of them altered
        con.execute("delete from person_features_daily where snapshot_date = ?", [day])
        con.execute("update person_features_daily set order_count = -1 where snapshot_date = ?", [next_day])
    resources = {
        "lake": LakeResource(lake_root=settings.lake_root),
        "dbt": DbtCliResource(project_dir=dbt_project),
    }
    instance = dg.DagsterInstance.ephemeral()
    one = dg.materialize(
        [dbt_daily_snapshots], partition_key=day.isoformat(), resources=resources, instance=instance
    )
    assert one.success
    after_one = read_warehouse(settings, "select * from person_features_daily")
    assert (
        after_one.filter(pl.col("snapshot_date") == day)
        .sort(FEATURE_KEYS)
        .equals(before.filter(pl.col("snapshot_date") == day))
    )
    assert (
        after_one.filter(pl.col("snapshot_date") == next_day)["order_count"] == -1
    ).all()  # not its window
    monkeypatch.setenv("SNAPSHOT_PERSON_DATES_PER_DBT_RUN", "1")  # the range goes to dbt a date at a time
    backfill = dg.materialize(  # a single-run backfill of a range: the window ends after its last date
        [dbt_daily_snapshots],
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": day.isoformat(),
            "dagster/asset_partition_range_end": next_day.isoformat(),
        },
    )
    assert backfill.success
    assert read_warehouse(settings, "select * from person_features_daily").sort(FEATURE_KEYS).equals(before)
    materialized = backfill.asset_materializations_for_node("dbt_daily_snapshots")
    assert {m.partition for m in materialized} == {day.isoformat(), next_day.isoformat()}
    windows = [
        entry.user_message
        for entry in instance.all_logs(backfill.run_id)
        if entry.user_message.startswith("snapshot dates in")
    ]
    after_next = next_day + timedelta(days=1)
    assert windows == [
        f"snapshot dates in [{day}, {next_day})",
        f"snapshot dates in [{next_day}, {after_next})",
    ]
