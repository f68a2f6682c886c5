"""Segment field names, and the ids that are not ids: the placeholders that SDK and integration bugs send for
a missing value.

A ``userId``, ``anonymousId`` or ``previousId`` that is empty, blank or the text of a missing value in some
language (``"null"``, ``"undefined"``, ``"None"``, ``"nil"``, ``"(null)"``, ``"NaN"``, in any case, with or
without surrounding spaces) is treated as absent: validation counts it as missing, and the silver clean-up
stores null instead. Bronze keeps the message as it came.
"""

from __future__ import annotations

from data_contracts.sql import sql_literal

PLACEHOLDER_IDS = ("", "null", "undefined", "none", "nil", "(null)", "nan")
"""Values (trimmed, lower-cased) that stand for a missing id."""
SEGMENT_NAMES = {
    "message_id": "messageId",
    "anonymous_id": "anonymousId",
    "user_id": "userId",
    "previous_id": "previousId",
    "group_id": "groupId",
    "original_timestamp": "originalTimestamp",
    "sent_at": "sentAt",
    "received_at": "receivedAt",
}
"""Segment spec field names (the names the contract uses) by the lake's column name for them."""
WHITESPACE = "' ' || chr(9) || chr(10) || chr(13)"
"""DuckDB text of the characters trimmed (space, tab, line feed, carriage return): ``trim`` is much cheaper
than a regular expression on millions of ids."""


def is_placeholder_sql(value: str) -> str:
    """A DuckDB condition, true when the text expression ``value`` is a placeholder id (false when null)."""
    listed = ", ".join(sql_literal(p) for p in PLACEHOLDER_IDS)
    return f"coalesce(lower(trim({value}, {WHITESPACE})) IN ({listed}), false)"


def id_sql(value: str) -> str:
    """A DuckDB expression: the text expression ``value`` as an id, null when it is a placeholder."""
    return f"CASE WHEN {is_placeholder_sql(value)} THEN NULL ELSE {value} END"
