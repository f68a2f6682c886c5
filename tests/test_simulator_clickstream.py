"""The simulated clickstream is Segment-spec messages in hourly files, with the faults of real feeds."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import datetime

import polars as pl
import pytest

from tests.conftest import Simulated, read_lines

TYPES = {"track", "page", "screen", "identify", "alias"}


def _time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def segment_problem(message: dict) -> str | None:
    """Why a message breaks the Segment spec, or None when it is valid."""
    for field in ("messageId", "type", "originalTimestamp", "sentAt", "receivedAt", "context"):
        if field not in message:
            return f"missing {field}"
    if message["type"] not in TYPES:
        return "unknown type"
    if not (message.get("userId") or message.get("anonymousId")):
        return "neither userId nor anonymousId"
    if message["type"] == "track" and not message.get("event"):
        return "track without event"
    if message["type"] == "alias" and not (message.get("previousId") and message.get("userId")):
        return "alias without previousId and userId"
    if message["type"] == "identify" and not isinstance(message.get("traits"), dict):
        return "identify without traits"
    return None


@pytest.fixture(scope="module")
def clicks(simulated: Simulated) -> dict:
    """Every clickstream line: parsed messages with their file, and the counts of faulty lines."""
    messages, malformed, invalid = [], 0, Counter()
    files = sorted((simulated.landing / "clickstream").rglob("*.jsonl.gz"))
    for path in files:
        source, day, hour = path.parts[-4:-1]
        for line in read_lines(path):
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                malformed += 1
                continue
            problem = segment_problem(message)
            if problem:
                invalid[problem] += 1
                continue
            messages.append((source, day, hour, message))
    return {"messages": messages, "malformed": malformed, "invalid": invalid, "files": files}


def _within(observed: int, trials: int, rate: float, sigmas: float = 5.0) -> bool:
    expected = trials * rate
    return abs(observed - expected) <= sigmas * math.sqrt(max(expected, 1.0)) + 1


def test_every_line_is_a_segment_message_or_a_counted_fault(clicks: dict, simulated: Simulated) -> None:
    faults = simulated.manifest["faults"]
    lines = len(clicks["messages"]) + clicks["malformed"] + sum(clicks["invalid"].values())
    assert lines == simulated.manifest["lines_by_feed"]["clickstream"]
    assert clicks["malformed"] == faults["click_malformed_lines"]
    assert sum(clicks["invalid"].values()) == faults["click_missing_field_messages"]
    assert set(clicks["invalid"]) == {"missing messageId", "missing type", "neither userId nor anonymousId"}
    assert _within(clicks["malformed"], lines, simulated.config.faults.click_malformed)
    assert _within(sum(clicks["invalid"].values()), lines, simulated.config.faults.click_missing_field)


def test_files_group_messages_by_received_hour(clicks: dict) -> None:
    for source, day, hour, message in clicks["messages"]:
        received = _time(message["receivedAt"])
        assert (received.strftime("%Y-%m-%d"), received.strftime("%H")) == (day, hour)
        assert source == {"analytics.js": "web", "analytics-python": "server"}.get(
            message["context"]["library"]["name"], "app"
        )
    assert {"web", "app", "server"} == {m[0] for m in clicks["messages"]}


def test_all_event_kinds_of_a_shop_are_present(clicks: dict) -> None:
    kinds = Counter((m["type"], m.get("event")) for *_, m in clicks["messages"])
    for kind in [
        ("page", None),
        ("screen", None),
        ("identify", None),
        ("alias", None),
        ("track", "Product Viewed"),
        ("track", "Product Added"),
        ("track", "Checkout Started"),
        ("track", "Order Completed"),
        ("track", "Email Link Clicked"),
    ]:
        assert kinds[kind] > 0, kind
    hours = Counter(_time(m["originalTimestamp"]).hour for *_, m in clicks["messages"] if m["type"] == "page")
    assert hours[20] > 3 * hours[4], "traffic follows a daily rhythm"


def test_duplicate_deliveries_and_late_arrivals(clicks: dict, simulated: Simulated) -> None:
    ids = Counter(m["messageId"] for *_, m in clicks["messages"])
    duplicates = sum(n - 1 for n in ids.values())
    sent = len(ids)
    assert _within(duplicates, sent, simulated.config.faults.click_duplicate)
    late = {
        m["messageId"]
        for *_, m in clicks["messages"]
        if (_time(m["sentAt"]) - _time(m["originalTimestamp"])).total_seconds() > 3000
        and m["channel"] == "client"
    }
    # a skewed clock shifts sentAt and originalTimestamp alike, so their gap is the true batching delay
    assert _within(len(late), sent, simulated.config.faults.click_late * 0.98, sigmas=6)


def test_skewed_clocks_at_the_configured_rate(clicks: dict, simulated: Simulated) -> None:
    offsets = defaultdict(list)
    for *_, m in clicks["messages"]:
        if m.get("anonymousId"):
            offsets[m["anonymousId"]].append((_time(m["sentAt"]) - _time(m["receivedAt"])).total_seconds())
    skewed = sum(abs(sorted(v)[len(v) // 2]) > 90 for v in offsets.values())
    assert skewed > 0
    assert _within(skewed, len(offsets), simulated.config.faults.skewed_device, sigmas=6)
    # Segment's correction removes the skew: receivedAt - (sentAt - originalTimestamp) is near the true time
    for *_, m in clicks["messages"][:2000]:
        corrected = _time(m["receivedAt"]) - (_time(m["sentAt"]) - _time(m["originalTimestamp"]))
        assert abs((corrected - _time(m["receivedAt"])).total_seconds()) < 4 * 86_400


def test_shared_devices_carry_two_users(clicks: dict, simulated: Simulated) -> None:
    users = defaultdict(set)
    for *_, m in clicks["messages"]:
        if m["type"] == "identify":
            users[m["anonymousId"]].add(m["userId"])
    shared = [a for a, u in users.items() if len(u) > 1]
    truth = simulated.identifiers().filter(pl.col("identifier_type") == "anonymous_id")
    people = truth.group_by("identifier").agg(pl.col("person_id").n_unique().alias("n"))
    truly_shared = set(people.filter(pl.col("n") > 1)["identifier"])
    assert shared and set(shared) <= truly_shared
    pairs = simulated.manifest["faults"]["shared_devices"]
    assert _within(2 * pairs, simulated.config.persons, simulated.config.faults.shared_device, sigmas=3)
