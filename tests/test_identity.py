"""The identity graph on a real simulated company: dbt builds it from silver, the ground truth scores it, and
every over-merging trap of the simulator is checked."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import Simulated, read_warehouse, run_dbt

from data_contracts import load_contracts
from lake.privacy import normalise_email, token
from lake.settings import Settings
from lake.warehouse import publish_silver
from orchestration.evaluation import identity_quality_check, truth_summary, warehouse_identity_quality
from orchestration.resources import LakeResource
from simulator import catalog
from simulator.scoring import identity_quality

SELECT = ["+identity_person_map", "identity_person_changes", "int_identity__guarded_out"]
KEYS = ["identifier_type", "identifier"]


@dataclass
class IdentityBuild:
    """A warehouse with the identity models built, its settings, and the tables the tests read."""

    settings: Settings
    person_map: pl.DataFrame
    guarded_out: pl.DataFrame
    contacts: pl.DataFrame


def dbt_build(settings: Settings, scratch: Path) -> None:
    """``dbt build`` of the identity models into the settings' warehouse, in a subprocess."""
    run_dbt(settings, scratch, "build", "--select", *SELECT)


@pytest.fixture(scope="session")
def identity(ingested, tmp_path_factory: pytest.TempPathFactory) -> IdentityBuild:
    """The identity models built once from the session's ingested lake."""
    scratch = tmp_path_factory.mktemp("identity")
    settings = replace(ingested[0], warehouse_path=scratch / "warehouse.duckdb")
    publish_silver(settings, load_contracts(settings.contracts_dir))
    dbt_build(settings, scratch)
    return IdentityBuild(
        settings,
        read_warehouse(settings, "select * from identity_person_map"),
        read_warehouse(settings, "select * from int_identity__guarded_out"),
        read_warehouse(settings, "select contact_id, email_token from silver.crm__contacts_history"),
    )


def truth_persons(simulated: Simulated, identity: IdentityBuild) -> pl.DataFrame:
    """Identifiers of the map with their true person (one row per true owner) and predicted person."""
    truth = simulated.identifiers().rename({"person_id": "true_person"})
    return identity.person_map.join(truth, on=KEYS)


def test_identity_quality_against_the_ground_truth(simulated: Simulated, identity: IdentityBuild) -> None:
    quality = identity_quality(identity.person_map, simulated.identifiers())
    assert quality.precision >= 0.99 and quality.evidenced_recall >= 0.95, quality
    # devices that no message ties to their person (never signed in, no e-mail click-through, no checkout)
    # are the pairs nobody can find: they are what separates the recall over all pairs from the one above
    assert quality.evidenced_recall > quality.recall >= 0.8, quality
    unlinkable = simulated.identifiers().filter(~pl.col("evidenced"))
    assert unlinkable["identifier_type"].unique().to_list() == ["anonymous_id"]
    # and the map leaves them alone (but for shared devices, which the other person's sign-in evidences)
    sizes = identity.person_map.with_columns(pl.len().over("person_id").alias("identifiers_of_person"))
    found = sizes.join(unlinkable.select(KEYS).unique(), on=KEYS)
    assert found.height and (found["identifiers_of_person"] == 1).mean() >= 0.9


def test_the_quality_check_scores_the_warehouse_map(
    simulated: Simulated, identity: IdentityBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quality = warehouse_identity_quality(identity.settings.warehouse_path, simulated.truth)
    assert quality == identity_quality(identity.person_map, simulated.identifiers())
    lake_root = tmp_path / "lake"
    lake_root.mkdir()
    monkeypatch.setenv("WAREHOUSE_PATH", str(identity.settings.warehouse_path))
    without_truth = identity_quality_check(lake=LakeResource(lake_root=str(lake_root)))
    assert without_truth.passed and "note" in without_truth.metadata
    (lake_root / "simulator_truth").symlink_to(simulated.truth, target_is_directory=True)
    checked = identity_quality_check(lake=LakeResource(lake_root=str(lake_root)))
    assert checked.passed
    assert checked.metadata["recall"].value == round(quality.evidenced_recall, 4)
    assert checked.metadata["recall_all_pairs"].value == round(quality.recall, 4)


def test_the_summary_names_the_truth_and_the_maps_quality_against_it(
    simulated: Simulated, identity: IdentityBuild, tmp_path: Path
) -> None:
    lake_root = tmp_path / "lake"
    lake_root.mkdir()
    settings = replace(identity.settings, lake_root=str(lake_root))
    assert truth_summary(settings) == []  # a lake without the simulator's truth
    (lake_root / "simulator_truth").symlink_to(simulated.truth, target_is_directory=True)
    quality = identity_quality(identity.person_map, simulated.identifiers())
    where, scores = truth_summary(settings)
    assert where == f"simulator ground truth: {lake_root / 'simulator_truth'}"
    assert f"({quality.identifiers:,} non-personal identifiers)" in scores
    assert f"pairwise precision {quality.precision:.4f}, recall {quality.evidenced_recall:.4f}" in scores
    assert f"({quality.recall:.4f} over all true pairs)" in scores


def test_a_shared_device_does_not_merge_its_two_people(simulated: Simulated, identity: IdentityBuild) -> None:
    known = truth_persons(simulated, identity)
    shared = known.filter((pl.col("identifier_type") == "anonymous_id") & (pl.len().over(KEYS) == 2)).select(
        "identifier", "true_person"
    )
    assert shared.height > 0
    people = known.filter(pl.col("identifier_type") != "anonymous_id").select("true_person", "person_id")
    # the persons of each shared device's two owners (their non-device identifiers) never overlap
    owners = shared.join(people, on="true_person").unique()
    overlap = owners.group_by("identifier", "person_id").agg(pl.col("true_person").n_unique().alias("n"))
    assert overlap.filter(pl.col("n") > 1).is_empty()
    assert identity.guarded_out.filter(pl.col("guard") == "shared_device").height > 0


def test_a_placeholder_email_does_not_glue_contacts(simulated: Simulated, identity: IdentityBuild) -> None:
    secret = identity.settings.pii_secret
    placeholders = token(normalise_email(pl.Series(catalog.PLACEHOLDER_EMAILS)), secret).to_list()
    cut = identity.guarded_out.filter(pl.col("identifier").is_in(placeholders))
    assert cut.height > 0 and set(cut["guard"]) == {"fanout"}
    contacts = (
        identity.contacts.filter(pl.col("email_token").is_in(placeholders))
        .select(pl.col("contact_id").cast(pl.String).alias("identifier"))
        .unique()
        .join(
            truth_persons(simulated, identity).filter(pl.col("identifier_type") == "crm_contact_id"),
            on="identifier",
        )
    )
    assert contacts["true_person"].n_unique() > 3
    # no predicted person holds placeholder contacts of two true persons
    assert (
        contacts.group_by("person_id")
        .agg(pl.col("true_person").n_unique())
        .filter(pl.col("true_person") > 1)
        .is_empty()
    )


def test_duplicate_crm_contacts_of_one_person_are_merged(
    simulated: Simulated, identity: IdentityBuild
) -> None:
    placeholder_contacts = identity.contacts.join(
        identity.guarded_out.select(pl.col("identifier").alias("email_token")), on="email_token"
    )["contact_id"].cast(pl.String)
    contacts = truth_persons(simulated, identity).filter(
        (pl.col("identifier_type") == "crm_contact_id")
        & ~pl.col("identifier").is_in(placeholder_contacts.implode())
    )
    duplicated = contacts.filter(pl.len().over("true_person") == 2)
    assert duplicated.height > 20
    assert duplicated.group_by("true_person").agg(pl.col("person_id").n_unique())["person_id"].max() == 1


@pytest.fixture(scope="module")
def rerun(identity: IdentityBuild, tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, dict]:
    """A second build on a copy of the warehouse whose previous map split one person in two: one of its
    identifiers held an id of its own ('p_absorbed'). Returns the new map and the split person."""
    scratch = tmp_path_factory.mktemp("identity_rerun")
    settings = replace(identity.settings, warehouse_path=scratch / "warehouse.duckdb")
    shutil.copy(identity.settings.warehouse_path, settings.warehouse_path)
    sizes = identity.person_map.group_by("person_id").len().filter(pl.col("len") >= 3).sort("person_id")
    person = sizes["person_id"][0]
    moved = identity.person_map.filter(pl.col("person_id") == person).sort(KEYS).row(0, named=True)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "update identity_person_map set person_id = 'p_absorbed' where identifier_type = ? and "
            "identifier = ?",
            [moved["identifier_type"], moved["identifier"]],
        )
    dbt_build(settings, scratch)
    changes = read_warehouse(settings, "select * from identity_person_changes")
    return read_warehouse(settings, "select * from identity_person_map"), {
        "person": person,
        "changes": changes,
    }


def test_person_ids_survive_a_rerun(identity: IdentityBuild, rerun) -> None:
    before = identity.person_map.sort(KEYS)
    after = rerun[0].sort(KEYS)
    assert before.equals(after)


def test_a_merge_between_runs_keeps_the_id_of_most_identifiers(rerun) -> None:
    changes = rerun[1]["changes"]
    assert changes.select("change_type", "person_id", "previous_person_id", "identifiers").rows() == [
        ("merge", rerun[1]["person"], "p_absorbed", 1)
    ]


def components_model():
    """The components model's module (a dbt Python model is a plain module with a ``model`` function)."""
    path = Path(__file__).parents[1] / "dbt_project/models/intermediate/identity/int_identity__components.py"
    spec = importlib.util.spec_from_file_location("int_identity__components", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def day(n: int) -> datetime:
    """Day ``n`` of September 2026, midnight UTC."""
    return datetime(2026, 9, n, tzinfo=UTC)


def link_times(seen: dict[str, int], edges: list[tuple[str, str, int]]) -> dict[str, datetime]:
    """``linked_at`` per identifier of the components model, given the day each identifier was first seen and
    the day each edge was first known; the name's first letter gives the type (``d``: a device)."""
    types = {"c": "crm_contact_id", "e": "email_token", "u": "app_user_id", "s": "shop_customer_id"}

    def node(name: str) -> tuple[str, str]:
        return types.get(name[0], "anonymous_id"), name

    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute(
            "create table identifiers (identifier_type varchar, identifier varchar, first_seen timestamptz)"
        )
        con.execute("""
            create table edges (left_type varchar, left_identifier varchar, right_type varchar,
                right_identifier varchar, first_known_at timestamptz)
        """)
        con.execute("create table cuts (identifier_type varchar, identifier varchar)")
        if seen:
            con.executemany(
                "insert into identifiers values (?, ?, ?)", [(*node(n), day(d)) for n, d in seen.items()]
            )
        if edges:
            con.executemany(
                "insert into edges values (?, ?, ?, ?, ?)",
                [(*node(a), *node(b), day(d)) for a, b, d in edges],
            )
        result = components_model().components(con, "identifiers", "edges", "cuts")
    return {row["identifier"]: row["linked_at"] for row in result.to_pylist()}


def test_identifiers_join_their_person_when_known_evidence_first_connects_them() -> None:
    # person: contact c1 (the anchor: first seen, with e1, and first by name), e-mail e1, shop customer s1,
    # app user u1; devices d1-d3 attach to it, d4 is shared with another person (u9)
    seen = {"c1": 1, "e1": 1, "u1": 5, "s1": 3, "u9": 1, "d1": 1, "d2": 2, "d3": 2, "d4": 2}
    edges = [
        ("c1", "e1", 1),
        ("u1", "e1", 10),  # u1 reaches the anchor earlier through s1: on day 6
        ("s1", "e1", 4),
        ("u1", "s1", 6),
        ("u1", "d1", 5),  # before u1 is linked: d1 waits for it
        ("u1", "d1", 8),
        ("d2", "c1", 2),
        ("d2", "u1", 3),  # d2 reached c1 and u1, two people until day 6
        ("d3", "c1", 2),
        ("d4", "c1", 3),
        ("d4", "u9", 4),
    ]
    expected = {"c1": 1, "e1": 1, "s1": 4, "u1": 6, "d1": 6, "d2": 6, "d3": 2, "d4": 2, "u9": 1}
    assert link_times(seen, edges) == {name: day(d) for name, d in expected.items()}


def test_an_empty_identity_graph_gives_an_empty_map() -> None:
    assert link_times({}, []) == {}
