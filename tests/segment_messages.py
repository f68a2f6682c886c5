"""Segment messages written by hand from the Segment spec (identify, track, page, alias; the common fields,
the reserved traits in camelCase and snake_case, context.traits), and a helper that lands them as Segment's
object-store destination writes them."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

CLEAR_VALUES = (
    "grace",
    "hopper",
    "ghopper",
    "navy way",
    "arlington",
    "1906-12-09",
    "202 555 0143",
    "+12025550143",
    "198.51.100.23",
)
"""Personal values of the messages below (lower-cased) that silver must never hold in any form."""

GRACE_TRAITS_CAMEL = {
    "email": "Grace.Hopper@Example.com",
    "phone": "+1 202 555 0143",
    "firstName": "Grace",
    "lastName": "Hopper",
    "name": "Grace Hopper",
    "username": "ghopper",
    "birthday": "1906-12-09T00:00:00.000Z",
    "address": {
        "street": "1 Navy Way",
        "city": "Arlington",
        "state": "VA",
        "postalCode": "VA-22201",
        "country": "US",
    },
    "plan": "premium",
    "logins": 5,
}
GRACE_TRAITS_SNAKE = {
    "email": " grace.hopper@example.com",
    "phone": "+12025550143",
    "first_name": "GRACE",
    "last_name": "Hopper ",
    "birthday": "1906-12-09",
}


def segment(message_id: str, kind: str, received: str, **fields) -> dict:
    """One Segment message of type ``kind`` with the common fields (sentAt equal to receivedAt: no skew)."""
    return {
        "messageId": message_id,
        "type": kind,
        "channel": "client",
        "context": {"ip": "198.51.100.23", "library": {"name": "analytics.js", "version": "5.2.0"}},
        "originalTimestamp": received,
        "sentAt": received,
        "receivedAt": received,
        "version": 2,
        **fields,
    }


def land_segment(landing: Path, source: str, hour: str, messages: list[dict], mtime: int) -> Path:
    """Write ``messages`` as one gzipped JSON-lines file of ``source`` for 2026-09-03 ``hour``."""
    folder = landing / "clickstream" / source / "2026-09-03" / hour
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{mtime}.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(m) + "\n" for m in messages))
    os.utime(path, (mtime, mtime))
    return path


def files_holding(root: Path, values: tuple[str, ...]) -> dict[str, list[str]]:
    """Which of ``values`` (lower-case) each file under ``root`` holds: in its bytes (the Delta log and its
    statistics, parquet footers) or, for parquet files (data and checkpoints), in any decoded value."""
    import polars as pl

    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("latin-1").lower()
        if path.suffix == ".parquet":
            text += json.dumps(pl.read_parquet(path).to_dicts(), default=str).lower()
        hits = [v for v in values if v in text]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found
