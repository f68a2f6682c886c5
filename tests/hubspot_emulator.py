"""A local emulator of the HubSpot CRM v3 endpoints the HubSpot destination uses, as a real HTTP server on
127.0.0.1 (stdlib ``http.server`` in a thread), enforcing the documented contract:

- every request needs ``Authorization: Bearer <token>`` (401 otherwise);
- ``POST /crm/v3/objects/contacts/batch/upsert``: at most 100 inputs (400 otherwise), no id twice in one
  batch (400), ``idProperty`` a property with unique values (400), only defined properties (400); a record
  whose property value is refused is reported in a 207 multi-status response, the others applied;
- ``GET``/``POST /crm/v3/properties/contacts`` (``/batch/create``) and ``.../groups``: the custom properties
  and their group (409 when one exists already);
- a rolling request quota (``max_requests`` per ``interval_s``): a request over it gets 429 with
  ``Retry-After`` and every response carries ``X-HubSpot-RateLimit-Max``, ``-Remaining`` and
  ``-Interval-Milliseconds``;
- injectable 5xx storms (:meth:`HubSpotEmulator.fail_next`).

It counts requests and resulting state changes: an upsert that leaves a record's properties as they were
changes nothing. The bodies follow the examples of HubSpot's reference pages and public OpenAPI specification
(``PublicApiSpecs/CRM/Contacts/Rollouts/424/v3/contacts.json``:
``BatchInputSimplePublicObjectBatchInputUpsert``, ``BatchResponseSimplePublicUpsertObject``,
``StandardError``), and the 429 body of the API usage guidelines.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BATCH_LIMIT = 100
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
PROPERTIES = "/crm/v3/properties/contacts"
GROUPS = "/crm/v3/properties/contacts/groups"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, category: str, message: str, **extra) -> dict:
    """A ``StandardError`` body (status, category, message, correlationId, context, errors, links)."""
    return {
        "status": "error",
        "message": message,
        "correlationId": f"emulator-{status}-{time.monotonic_ns()}",
        "category": category,
        "context": {},
        "errors": [],
        "links": {},
    } | extra


class HubSpotEmulator:
    """The emulator's state and rules; :meth:`start` serves it, :attr:`url` is its base URL."""

    def __init__(self, token: str = "test-token", max_requests: int = 100, interval_s: float = 10.0):
        self.token, self.max_requests, self.interval_s = token, max_requests, interval_s
        self.lock = threading.Lock()
        self.contacts: dict[str, dict] = {}
        """id property value -> {"id", "properties", "createdAt", "updatedAt"}."""
        self.properties: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.refused: dict[str, set[str]] = {}
        """property -> values the emulator refuses (a 207 per-record error), as a property with options
        would."""
        self.log: list[dict] = []
        """Every request: time (monotonic), method, path, status and the number of inputs."""
        self.state_changes = 0
        self._accepted: deque[float] = deque()
        self._fail: list[tuple[int, bool, str | None]] = []
        self._throttle = 0
        self._next_id = 1
        self.server: ThreadingHTTPServer | None = None

    # ----------------------------------------------------------------------------------------- control
    def start(self) -> HubSpotEmulator:
        """Serve on 127.0.0.1 (a free port) in a daemon thread."""
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                emulator._handle(self, "GET")

            def do_POST(self):
                emulator._handle(self, "POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(
        self, count: int, status: int = 503, *, after_apply: bool = False, path: str | None = None
    ) -> None:
        """The next ``count`` requests (to ``path``, or any) fail with ``status`` (a 5xx storm): before
        anything is applied, or (``after_apply``) once the request was applied, as when the answer is lost on
        its way back."""
        with self.lock:
            self._fail += [(status, after_apply, path)] * count

    def throttle_next(self, count: int) -> None:
        """The next ``count`` requests get 429 whatever the quota says (other apps of the account used it)."""
        with self.lock:
            self._throttle += count

    def requests(self, path: str | None = None, status: int | None = None) -> list[dict]:
        """The logged requests (to ``path``, with ``status``)."""
        with self.lock:
            return [
                r
                for r in self.log
                if (path is None or r["path"] == path) and (status is None or r["status"] == status)
            ]

    def max_in_window(self, window_s: float) -> int:
        """The most requests the quota accepted within any ``window_s`` seconds (429s excluded)."""
        times = sorted(r["at"] for r in self.requests() if r["status"] != 429)
        start, best = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    def record(self, id_value: str) -> dict[str, str] | None:
        """The properties of the contact whose id property is ``id_value``."""
        with self.lock:
            found = self.contacts.get(id_value)
            return None if found is None else dict(found["properties"])

    # ----------------------------------------------------------------------------------------- serving
    def _reply(self, handler, status: int, body: dict | None, headers: dict[str, str]) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json;charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        path = handler.path.split("?")[0]
        with self.lock:
            status, body, headers, inputs = self._respond(method, path, handler.headers, raw)
            self.log.append(
                {"at": time.monotonic(), "method": method, "path": path, "status": status, "inputs": inputs}
            )
        self._reply(handler, status, body, headers)

    def _respond(self, method: str, path: str, request_headers, raw: bytes) -> tuple:
        if request_headers.get("Authorization") != f"Bearer {self.token}":
            body = _error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            )
            return 401, body, {}, 0
        now = time.monotonic()
        while self._accepted and now - self._accepted[0] >= self.interval_s:
            self._accepted.popleft()
        interval_ms = str(int(self.interval_s * 1000))
        if len(self._accepted) >= self.max_requests or self._throttle:
            wait = self.interval_s - (now - self._accepted[0]) if self._accepted else self.interval_s
            self._throttle = max(0, self._throttle - 1)
            headers = {
                "Retry-After": str(max(1, round(wait + 0.5))),
                "X-HubSpot-RateLimit-Max": str(self.max_requests),
                "X-HubSpot-RateLimit-Remaining": "0",
                "X-HubSpot-RateLimit-Interval-Milliseconds": interval_ms,
            }
            body = {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": f"emulator-429-{time.monotonic_ns()}",
                "policyName": "TEN_SECONDLY_ROLLING",
            }
            return 429, body, headers, 0
        self._accepted.append(now)
        headers = {
            "X-HubSpot-RateLimit-Max": str(self.max_requests),
            "X-HubSpot-RateLimit-Remaining": str(self.max_requests - len(self._accepted)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": interval_ms,
        }
        matching = [i for i, (_, _, where) in enumerate(self._fail) if where in (None, path)]
        failure = self._fail.pop(matching[0]) if matching else None
        if failure is not None and not failure[1]:
            return failure[0], _error(failure[0], "INTERNAL_ERROR", "internal error"), headers, 0
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            return 400, _error(400, "VALIDATION_ERROR", "Invalid input JSON"), headers, 0
        routes = {
            ("POST", UPSERT): self._upsert,
            ("GET", PROPERTIES): lambda _: (200, {"results": list(self.properties.values())}),
            ("POST", f"{PROPERTIES}/batch/create"): self._create_properties,
            ("GET", GROUPS): lambda _: (200, {"results": list(self.groups.values())}),
            ("POST", GROUPS): self._create_group,
        }
        route = routes.get((method, path))
        if route is None:
            return 404, _error(404, "OBJECT_NOT_FOUND", f"no route {method} {path}"), headers, 0
        status, body = route(payload)
        inputs = len(payload.get("inputs") or []) if isinstance(payload, dict) else 0
        if failure is not None:  # applied, but the answer is an error
            return failure[0], _error(failure[0], "INTERNAL_ERROR", "internal error"), headers, inputs
        return status, body, headers, inputs

    def _create_group(self, payload: dict) -> tuple[int, dict]:
        name = payload.get("name")
        if not name or not payload.get("label"):
            return 400, _error(400, "VALIDATION_ERROR", "a property group needs a name and a label")
        if name in self.groups:
            return 409, _error(409, "CONFLICT", f"A property group named '{name}' already exists.")
        self.groups[name] = {"name": name, "label": payload["label"], "displayOrder": -1, "archived": False}
        return 201, self.groups[name]

    def _create_properties(self, payload: dict) -> tuple[int, dict]:
        inputs = payload.get("inputs") or []
        for spec in inputs:
            missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not spec.get(k)]
            if missing:
                return 400, _error(400, "VALIDATION_ERROR", f"property input lacks {missing}")
            if spec["groupName"] not in self.groups:
                return 400, _error(400, "VALIDATION_ERROR", f"no property group {spec['groupName']}")
            if spec["name"] in self.properties:
                return 409, _error(409, "CONFLICT", f"A property named '{spec['name']}' already exists.")
        started = _now()
        for spec in inputs:
            self.properties[spec["name"]] = spec | {"createdAt": started, "archived": False}
        results = [self.properties[s["name"]] for s in inputs]
        return 201, {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now()}

    def _refusal(self, properties: dict[str, str]) -> str | None:
        """Why a record's property values are refused (HubSpot's message), or None."""
        problems = []
        for name, value in properties.items():
            spec = self.properties[name]
            if spec["type"] == "number" and value != "":
                try:
                    float(value)
                except ValueError:
                    problems.append(
                        {
                            "isValid": False,
                            "message": f"{value} was not a valid number.",
                            "error": "INVALID_FLOAT",
                        }
                        | {"name": name}
                    )
            if value in self.refused.get(name, ()):
                problems.append(
                    {
                        "isValid": False,
                        "message": f"{value} was not one of the allowed options",
                        "error": "INVALID_OPTION",
                        "name": name,
                    }
                )
        return f"Property values were not valid: {json.dumps(problems)}" if problems else None

    def _upsert(self, payload: dict) -> tuple[int, dict]:
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return 400, _error(400, "VALIDATION_ERROR", "inputs must be a non-empty list")
        if len(inputs) > BATCH_LIMIT:
            return 400, _error(
                400,
                "VALIDATION_ERROR",
                f"Batch input size {len(inputs)} exceeds the limit of {BATCH_LIMIT} inputs",
            )
        ids = [str(i.get("id")) for i in inputs]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            return 400, _error(400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {duplicated}")
        for item in inputs:
            id_property = item.get("idProperty")
            spec = self.properties.get(id_property or "")
            if spec is None or not spec.get("hasUniqueValue"):
                return 400, _error(
                    400,
                    "VALIDATION_ERROR",
                    f"Unable to perform update/upsert by non-unique property {id_property}",
                )
            unknown = sorted(set(item.get("properties") or {}) - set(self.properties))
            if unknown:
                return 400, _error(
                    400,
                    "VALIDATION_ERROR",
                    f"Property {unknown} does not exist",
                    subCategory="PROPERTY_DOESNT_EXIST",
                )
        started, results, errors = _now(), [], []
        for item, id_value in zip(inputs, ids, strict=True):
            properties = {k: "" if v is None else str(v) for k, v in (item.get("properties") or {}).items()}
            properties[item["idProperty"]] = id_value
            reason = self._refusal(properties)
            if reason is not None:
                errors.append(
                    _error(207, "VALIDATION_ERROR", reason, context={"ids": [id_value]}) | {"status": "error"}
                )
                continue
            existing = self.contacts.get(id_value)
            new = existing is None
            if new:
                existing = {"id": str(self._next_id), "properties": {}, "createdAt": started}
                self._next_id += 1
                self.contacts[id_value] = existing
            merged = existing["properties"] | properties
            if new or merged != existing["properties"]:
                self.state_changes += 1
                existing["properties"], existing["updatedAt"] = merged, started
            results.append(
                {
                    "id": existing["id"],
                    "properties": dict(existing["properties"]),
                    "createdAt": existing["createdAt"],
                    "updatedAt": existing["updatedAt"],
                    "archived": False,
                    "new": new,
                }
            )
        body = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now()}
        if errors:
            return 207, body | {"numErrors": len(errors), "errors": errors}
        return 200, body
