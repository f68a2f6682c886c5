"""The HubSpot destination: CRM v3 contacts, batch upserts by a unique id property, throttled in advance to
the account's documented quota.

What it follows (HubSpot's public reference and OpenAPI specification,
``PublicApiSpecs/CRM/Contacts/.../v3``):

- ``POST /crm/v3/objects/contacts/batch/upsert`` with ``{"inputs": [{"idProperty", "id", "properties"}]}``
  (``BatchInputSimplePublicObjectBatchInputUpsert``), at most 100 inputs and no id twice per request; the
  answer is ``BatchResponseSimplePublicUpsertObject`` (200), or 207 multi-status with ``numErrors`` and
  ``errors`` (``StandardError``: ``category``, ``message``, ``context``) for the records it refused. A
  property value is cleared by sending an empty string.
- ``GET``/``POST /crm/v3/properties/contacts/groups`` and ``GET /crm/v3/properties/contacts``, ``POST
  /crm/v3/properties/contacts/batch/create``: the custom properties (one per mapped field, the key's one with
  ``hasUniqueValue``) and their group, created when missing.
- The API usage guidelines for private apps: a burst limit per rolling 10 seconds (100 requests on Free and
  Starter, 190 on Professional and Enterprise, 250 with the API limit increase pack) and a daily limit
  (250,000; 650,000; 1,000,000; plus 1,000,000 per pack); 429 with ``Retry-After`` beyond it, and the
  ``X-HubSpot-RateLimit-*`` headers on answers.

The client is httpx (one keep-alive connection) with tenacity: exponential backoff with full jitter on 429,
5xx and connection errors, waiting at least ``Retry-After`` when the answer gives one. Requests are spaced in
advance by a rolling-window limiter for each limit, so a large sync takes the time the quota allows and says
so before it starts (:func:`plan_seconds`).

Exactly-once effect: the lake keeps the diff being sent (``activation/pending``) and this destination records,
after each answered request, how many batches of that diff are done (a small JSON file per sync, replaced
atomically). A run killed at any point sends again at most the batch that was in flight; the upsert carries
the decision id and the same values, so the repeat changes nothing at HubSpot.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from pathlib import Path

import httpx
import polars as pl
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from activation.destinations import Checkpoint
from lake import object_store
from lake.faults import crash_point

BATCH_LIMIT = 100
"""HubSpot's limit of inputs per batch request."""
DEFAULT_BASE_URL = "https://api.hubapi.com"
RETRY_STATUSES = {429, 500, 502, 503, 504}
DAILY_POLICY = "DAILY"
"""The ``policyName`` of a 429 beyond the daily limit: retrying within the run cannot help."""
SETUP_REQUESTS = 4
"""Requests to create what is missing: list the groups and the properties, create the group and the
properties."""


class HubSpotError(RuntimeError):
    """HubSpot refused a whole request (or kept failing after the retries): status and HubSpot's message, and
    for a 429 the limit it names (``policyName``: ``DAILY``, ``TEN_SECONDLY_ROLLING``, ...)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, policy: str = ""):
        if policy == DAILY_POLICY:
            message += (
                " (the account's daily limit: it resets at midnight in the account's time zone; the run "
                "stops and the next run sends what is left)"
            )
        super().__init__(f"HubSpot answered {status}: {message}")
        self.status, self.retry_after, self.policy = status, retry_after, policy


class RollingWindow:
    """At most ``limit`` requests in any ``window_s`` seconds (a rolling window, as HubSpot counts): the time
    of each answered request is kept, and :meth:`wait` sleeps until one more fits. A request is recorded when
    its answer arrived, so that the server, which saw it earlier, never counts more than ``limit`` either."""

    def __init__(self, limit: int, window_s: float, clock=time.monotonic, sleep=time.sleep):
        self.limit, self.window_s, self.clock, self.sleep = limit, window_s, clock, sleep
        self.times: deque[float] = deque()

    def wait(self) -> float:
        """Sleep until a request fits; the seconds slept."""
        slept = 0.0
        while True:
            now = self.clock()
            while self.times and now - self.times[0] >= self.window_s:
                self.times.popleft()
            if len(self.times) < self.limit:
                return slept
            pause = self.window_s - (now - self.times[0])
            self.sleep(pause)
            slept += pause

    def record(self) -> None:
        """Count one answered request now."""
        self.times.append(self.clock())


def plan_seconds(requests: int, per_window: int, window_s: float, daily: int) -> float:
    """The least time ``requests`` sequential requests take under the quota: full windows of ``per_window``
    requests, and whole days beyond the daily limit (request latency not included)."""
    if requests <= 0:
        return 0.0
    days, rest = divmod(requests - 1, daily)
    return days * 86_400.0 + (rest // per_window) * window_s


def batch_requests(records: int, batch_size: int = BATCH_LIMIT) -> int:
    """The upsert requests ``records`` records take."""
    return math.ceil(records / batch_size)


def _wait(base: float, cap: float):
    """Exponential backoff with full jitter, and at least the ``Retry-After`` of the last answer."""
    jitter = wait_random_exponential(multiplier=base, max=cap)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        after = getattr(error, "retry_after", None) or 0.0
        return max(after, jitter(state))

    return wait


def is_transient(error: BaseException) -> bool:
    """Whether an error of a request may pass when it is sent again (429 but the daily limit, 5xx, a lost
    connection)."""
    if isinstance(error, HubSpotError):
        return error.status in RETRY_STATUSES and error.policy != DAILY_POLICY
    return isinstance(error, httpx.TransportError)


def _text(value) -> str:
    """A property value as HubSpot holds it (text; empty clears)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _property_type(dtype: pl.DataType) -> tuple[str, str]:
    """HubSpot (type, fieldType) of a column."""
    if dtype.is_numeric():
        return "number", "number"
    if dtype == pl.Date:
        return "date", "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime", "date"
    if dtype == pl.Boolean:
        return "bool", "booleancheckbox"
    return "string", "text"


class HubSpotDestination:
    """Contacts of a HubSpot account, upserted by the sync's key as a unique custom property, with a custom
    property per mapped field (the names are the sync's destination columns)."""

    def __init__(
        self,
        name: str,
        sync: str,
        *,
        base_url: str,
        token: str,
        columns: dict[str, pl.DataType],
        key: str,
        group: str,
        progress_path: str | Path,
        per_window: int = 100,
        window_s: float = 10.0,
        daily: int = 250_000,
        batch_size: int = BATCH_LIMIT,
        attempts: int = 8,
        backoff_s: float = 0.2,
        max_backoff_s: float = 30.0,
    ):
        if not 1 <= batch_size <= BATCH_LIMIT:
            raise ValueError(f"batch_size {batch_size}: HubSpot takes 1 to {BATCH_LIMIT} inputs per request")
        self.name, self.sync, self.key, self.group = name, sync, key, group
        self.columns, self.batch_size, self.progress_path = columns, batch_size, progress_path
        self.per_window, self.window_s, self.daily = per_window, window_s, daily
        self.burst = RollingWindow(per_window, window_s)
        self.day = RollingWindow(daily, 86_400.0)
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=httpx.Timeout(30.0, connect=10.0),
        )
        self.retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=_wait(backoff_s, max_backoff_s),
            stop=stop_after_attempt(attempts),
            reraise=True,
        )

    # --------------------------------------------------------------------------------------------- HTTP
    def _send(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One request within the quota, retried on 429, 5xx and connection errors; (status, JSON body)."""

        def once() -> tuple[int, dict]:
            self.burst.wait()
            self.day.wait()
            try:
                response = self.client.request(method, path, json=body)
            finally:
                self.burst.record()
                self.day.record()
            self._adopt(response.headers)
            try:
                payload = response.json() if response.content else {}
            except ValueError:  # a proxy's HTML page, a truncated body
                payload = {"message": response.text[:200]}
            if response.status_code >= 400:
                after = response.headers.get("Retry-After", "")
                raise HubSpotError(
                    response.status_code,
                    str(payload.get("message", ""))[:500],
                    float(after) if after.replace(".", "", 1).isdigit() else None,
                    str(payload.get("policyName", "")),
                )
            return response.status_code, payload

        return self.retrying(once)

    def _adopt(self, headers: httpx.Headers) -> None:
        """Keep to the account's own limit when its answer states a stricter one than the sync file
        (``X-HubSpot-RateLimit-Max`` requests per ``-Interval-Milliseconds``): the quota is shared by every
        app of the account."""
        limit, interval = (
            headers.get("X-HubSpot-RateLimit-Max"),
            headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"),
        )
        if limit and limit.isdigit() and interval and interval.isdigit():
            self.burst.limit = min(self.burst.limit, int(limit))
            self.burst.window_s = max(self.burst.window_s, int(interval) / 1000)

    def ensure_properties(self) -> None:
        """Create the property group and the custom properties that are missing (the key's with unique
        values); existing ones are left as they are."""
        _, groups = self._send("GET", "/crm/v3/properties/contacts/groups")
        if self.group not in {g["name"] for g in groups.get("results", [])}:
            label = self.group.replace("_", " ").capitalize()
            self._send("POST", "/crm/v3/properties/contacts/groups", {"name": self.group, "label": label})
        _, existing = self._send("GET", "/crm/v3/properties/contacts")
        known = {p["name"] for p in existing.get("results", [])}
        missing = []
        for column, dtype in self.columns.items():
            if column in known:
                continue
            kind, field_type = _property_type(dtype)
            missing.append(
                {
                    "name": column,
                    "label": column.replace("_", " ").capitalize(),
                    "type": kind,
                    "fieldType": field_type,
                    "groupName": self.group,
                    "hasUniqueValue": column == self.key,
                    "description": f"Written by the {self.sync} sync (next-best action).",
                }
            )
        if missing:
            self._send("POST", "/crm/v3/properties/contacts/batch/create", {"inputs": missing})

    def upsert(self, rows: list[dict[str, str]]) -> dict[str, str]:
        """Upsert one batch (at most ``batch_size`` rows, distinct keys); the refused keys with HubSpot's
        reason."""
        keys = [row[self.key] for row in rows]
        if len(rows) > self.batch_size or len(set(keys)) != len(keys):
            raise ValueError("a batch holds at most batch_size rows with distinct keys")
        inputs = [{"idProperty": self.key, "id": row[self.key], "properties": row} for row in rows]
        status, body = self._send("POST", "/crm/v3/objects/contacts/batch/upsert", {"inputs": inputs})
        if status != 207:
            return {}
        done = {str(r.get("properties", {}).get(self.key)) for r in body.get("results", [])}
        reasons, messages = {}, []
        for error in body.get("errors", []):
            message = f"{error.get('category', 'ERROR')}: {error.get('message', '')}"[:500]
            messages.append(message)
            for refused in (error.get("context") or {}).get("ids", []):
                reasons[str(refused)] = message
        # an error that names no ids: each record missing from the results gets every error's message
        fallback = "; ".join(sorted(set(messages)))[:500] or "refused in a 207 multi-status answer"
        return {k: reasons.get(k, fallback) for k in keys if k not in done}

    # ------------------------------------------------------------------------------------ the checkpoint
    def _progress(self) -> dict | None:
        data = object_store.read_bytes(str(self.progress_path))
        return None if data is None else json.loads(data)

    def _save(self, progress: dict) -> None:
        object_store.write_bytes(str(self.progress_path), json.dumps(progress).encode())

    def checkpoint(self) -> Checkpoint | None:
        """The last diff sent completely and the records refused then, or None."""
        progress = self._progress()
        if progress is None:
            return None
        if progress["complete"]:
            return Checkpoint(progress["diff_id"], {k: tuple(v) for k, v in progress["failures"].items()})
        previous = progress.get("previous")
        return None if previous is None else Checkpoint(previous, {})

    # ----------------------------------------------------------------------------------------- applying
    def rows(self, upserts: pl.DataFrame, removals: pl.Series) -> list[dict[str, str]]:
        """Every record to send as HubSpot property values (text): the upserts, then the removals with
        every mapped property but the key cleared (empty text)."""
        sent = upserts.select(list(self.columns)).to_dicts()
        cleared = {c: "" for c in self.columns if c != self.key}
        rows = [{c: _text(v) for c, v in row.items()} for row in sent]
        return rows + [cleared | {self.key: _text(k)} for k in removals.to_list()]

    def plan(self, upserts: int, removals: int) -> tuple[int, float]:
        """(requests, least seconds under the quota) of sending that many records, setup included."""
        requests = batch_requests(upserts + removals, self.batch_size)
        if requests:
            requests += SETUP_REQUESTS
        return requests, plan_seconds(requests, self.per_window, self.window_s, self.daily)

    def apply(self, diff_id: int, upserts: pl.DataFrame, removals: pl.Series) -> dict[str, tuple[str, str]]:
        """Send the diff in batches, recording after each answer how many batches are done; a diff already
        sent completely is not sent again, one cut short resumes from the batch in flight."""
        rows = self.rows(upserts, removals)
        fingerprint = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
        progress = self._progress() or {"diff_id": 0, "complete": True, "failures": {}, "previous": None}
        if progress["diff_id"] >= diff_id and progress["complete"]:
            return {k: tuple(v) for k, v in progress["failures"].items()}
        resuming = progress["diff_id"] == diff_id and progress.get("fingerprint") == fingerprint
        if not resuming:
            previous = progress["diff_id"] if progress["complete"] else progress.get("previous")
            progress = {
                "diff_id": diff_id,
                "fingerprint": fingerprint,
                "batch_size": self.batch_size,
                "batches_done": 0,
                "failures": {},
                "complete": False,
                "previous": previous,
            }
        size = progress["batch_size"]
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        self.ensure_properties()
        removed = {r[self.key] for r in rows[upserts.height :]}
        for index in range(progress["batches_done"], len(batches)):
            refused = self.upsert(batches[index])
            crash_point(f"activation.hubspot.batch_sent.{index + 1}")
            for key, reason in refused.items():
                progress["failures"][key] = ("removal" if key in removed else "upsert", reason)
            progress["batches_done"] = index + 1
            self._save(progress)
        crash_point("activation.before_destination_commit")
        progress["complete"] = True
        self._save(progress)
        return {k: tuple(v) for k, v in progress["failures"].items()}
