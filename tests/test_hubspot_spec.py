"""The HubSpot client against answers written by hand from HubSpot's documentation
(``tests/fixtures/hubspot``), replayed by a plain HTTP server on 127.0.0.1: what the client sends must have
the documented shape, and what HubSpot documents it may answer (a 207 that names its refused inputs or does
not, a 429 of the daily or of the rolling limit) must be read as HubSpot means it. The emulator
(``tests/hubspot_emulator.py``) is not used: it was written by the same team as the client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from activation.hubspot import HubSpotDestination, HubSpotError

FIXTURES = Path(__file__).parent / "fixtures" / "hubspot"
TOKEN = "pat-eu1-hand-written"
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
RATE_HEADERS = {  # what the usage guidelines list on answers; no Retry-After
    "X-HubSpot-RateLimit-Daily": "250000",
    "X-HubSpot-RateLimit-Daily-Remaining": "0",
    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    "X-HubSpot-RateLimit-Max": "100",
    "X-HubSpot-RateLimit-Remaining": "0",
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class Replay:
    """An HTTP server that answers each request with the next canned (status, headers, body) and records
    the requests (method, path, headers, JSON body)."""

    def __init__(self, answers: list[tuple[int, dict, dict]]):
        self.answers, self.requests = list(answers), []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length)) if length else None
                replay.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, answer = replay.answers.pop(0)
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def replay() -> Iterator[callable]:
    servers = []

    def start(*answers: tuple[int, dict, dict]) -> Replay:
        servers.append(Replay(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def destination(server: Replay, tmp_path: Path) -> HubSpotDestination:
    """The client of the shipped HubSpot sync's properties, with retries that wait milliseconds."""
    columns = {"nba_contact_id": pl.Int64, "nba_action": pl.String, "nba_expected_value": pl.Float64}
    return HubSpotDestination(
        "hubspot",
        "hubspot_contacts",
        base_url=server.url,
        token=TOKEN,
        columns=columns,
        key="nba_contact_id",
        group="next_best_action",
        progress_path=tmp_path / "progress.json",
        per_window=1_000,
        backoff_s=0.001,
        max_backoff_s=0.01,
    )


ROWS = [
    {"nba_contact_id": "101", "nba_action": "discount_10", "nba_expected_value": "1.25"},
    {"nba_contact_id": "102", "nba_action": "loyalty_offer", "nba_expected_value": "999999999999"},
    {"nba_contact_id": "103", "nba_action": "cart_reminder", "nba_expected_value": "0.5"},
]


def test_the_upsert_request_has_the_documented_shape_and_a_207_names_its_refused_input(replay, tmp_path):
    server = replay((207, {}, fixture("batch_upsert_207_context_ids.json")))
    refused = destination(server, tmp_path).upsert(ROWS)
    assert refused == {"102": "VALIDATION_ERROR: Property values were not valid: nba_action"}

    [(method, path, headers, body)] = server.requests
    assert (method, path) == ("POST", UPSERT)
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    # BatchInputSimplePublicObjectBatchInputUpsert: the unique property named by idProperty, its value as id,
    # every value a string
    assert body == {
        "inputs": [
            {"idProperty": "nba_contact_id", "id": row["nba_contact_id"], "properties": row} for row in ROWS
        ]
    }


def test_a_207_that_names_no_input_refuses_what_the_results_lack_with_hubspots_message(replay, tmp_path):
    server = replay((207, {}, fixture("batch_upsert_207_without_ids.json")))
    refused = destination(server, tmp_path).upsert(ROWS[:2])
    # the answer's results hold 101 only: 102 was refused, and the reason is HubSpot's, not a generic one
    assert refused == {"102": "VALIDATION_ERROR: Property values were not valid"}


def test_the_rolling_limit_is_waited_out_and_the_daily_limit_stops_the_run_at_once(replay, tmp_path):
    done = fixture("batch_upsert_207_context_ids.json")
    done = {k: v for k, v in done.items() if k not in {"errors", "numErrors"}}  # the 200 answer's schema
    server = replay((429, RATE_HEADERS, fixture("rate_limit_rolling_429.json")), (200, RATE_HEADERS, done))
    assert destination(server, tmp_path).upsert([ROWS[0], ROWS[2]]) == {}
    assert len(server.requests) == 2  # waited and sent again, though no Retry-After was given

    server = replay(*[(429, RATE_HEADERS, fixture("rate_limit_daily_429.json"))] * 3)
    with pytest.raises(HubSpotError, match="daily limit") as refused:
        destination(server, tmp_path).upsert(ROWS)
    assert (refused.value.status, refused.value.policy) == (429, "DAILY")
    assert len(server.requests) == 1  # retrying before midnight cannot help: not retried
