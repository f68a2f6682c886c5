"""Any small simulated company generates well-formed feeds: a property test over (persons, days, seed)."""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from simulator import SimulationConfig, generate
from simulator.tables import crm_server, shop_server
from tests.conftest import read_lines
from tests.test_simulator_clickstream import segment_problem

CDC_FILE = re.compile(r"^(?P<topic>[a-z_.]+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.json(\.gz)?$")
OPS = {"c", "u", "d", "r"}


def _check_cdc(landing: Path, config: SimulationConfig, manifest: dict) -> None:
    """Every CDC line is a Debezium envelope or a tombstone right after a delete, and the counts of lines,
    snapshot events and tombstones are those of the manifest."""
    servers = (crm_server(config.days), shop_server(config.days))
    schemas = {s.topic(t): s.schemas_enabled for s in servers for t in s.tables}
    lines, ops = 0, Counter()
    for path in sorted((landing / "cdc").rglob("*.json*")):
        name = CDC_FILE.match(path.name)
        assert name and name["topic"] == path.parent.name in schemas, path.name
        previous = None
        for number, line in enumerate(read_lines(path)):
            lines += 1
            value = json.loads(line)
            if value is None:
                assert previous == "d", f"{path.name}:{number} tombstone without a delete"
                ops["tombstone"] += 1
                previous = None
                continue
            if schemas[name["topic"]]:
                assert set(value) == {"schema", "payload"}
                value = value["payload"]
            assert value["op"] in OPS and value["source"]["table"] == name["topic"].split(".")[-1]
            assert (value["after"] is None) == (value["op"] == "d"), f"{path.name}:{number}"
            ops[value["op"]] += 1
            previous = value["op"]
    assert lines == manifest["lines_by_feed"]["cdc"]
    assert ops["r"] == manifest["faults"]["cdc_snapshot_events"]
    assert ops["tombstone"] == manifest["faults"]["cdc_tombstones"]


def _check_clickstream(landing: Path, manifest: dict) -> None:
    """Every clickstream line is a Segment message except the truncated lines and the messages missing a
    required field that the manifest counts."""
    lines = malformed = invalid = 0
    for path in sorted((landing / "clickstream").rglob("*.jsonl.gz")):
        for line in read_lines(path):
            lines += 1
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                malformed += 1
                continue
            invalid += segment_problem(message) is not None
    assert lines == manifest["lines_by_feed"]["clickstream"]
    assert malformed == manifest["faults"]["click_malformed_lines"]
    assert invalid == manifest["faults"]["click_missing_field_messages"]


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    persons=st.integers(min_value=10, max_value=300),
    days=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    history_days=st.integers(min_value=0, max_value=8),
)
@example(persons=200, days=3, seed=1, history_days=28)  # a day whose only contact changes are deletes
@example(persons=10, days=1, seed=0, history_days=0)  # a clickstream batch without any product event
def test_any_small_company_generates_well_formed_feeds(
    persons: int, days: int, seed: int, history_days: int
) -> None:
    config = SimulationConfig(persons=persons, days=days, seed=seed, history_days=history_days)
    with tempfile.TemporaryDirectory() as scratch:
        landing, truth = Path(scratch) / "landing", Path(scratch) / "truth"
        report = generate(config, landing, truth, progress=False)
        manifest = json.loads((truth / "manifest.json").read_text())
        assert manifest["lines_by_feed"] == report.lines_by_feed
        assert manifest["faults"]["persons"] == persons
        assert pl.read_parquet(truth / "persons.parquet").height == persons
        _check_cdc(landing, config, manifest)
        _check_clickstream(landing, manifest)
