"""The suppression list: keyed hashes of the identifiers of erased persons, so that they do not come back.

An erasure (:mod:`lake.erasure`) adds a row per identifier of the person (CRM contact, shop customer, app
user, device, e-mail and phone token, person id): ``HMAC-SHA256(PII_SECRET, "suppressed:<type>:<value>")``.
The hash is not the silver token of the value (another message is hashed), so the list holds neither the
person's values nor their tokens, yet anyone with the secret can tell whether a given identifier was erased.

Every apply to silver screens its new rows with :func:`screen`: a row that carries a suppressed identifier is
dropped, or, in a table whose records must be kept (:data:`KEPT_FOR_ACCOUNTING`), has its person columns
replaced by an erased marker. The decision policy reads the list the same way (:func:`identifier_hash`).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import duckdb
import polars as pl
import pyarrow as pa

from lake import delta
from lake.settings import Settings

ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "contact_id": ("crm_contact_id",),
    "customer_id": ("shop_customer_id",),
    "anonymous_id": ("anonymous_id",),
    "user_id": ("app_user_id",),
    "previous_id": ("anonymous_id", "app_user_id"),  # Segment's previousId may name either
}
"""Columns of the typed tables (silver, warehouse, gold) that hold an identifier of a person, by name."""
TOKEN_TYPES = {"email_token": "email_token", "phone_token": "phone_token"}
"""Token columns by suffix (``email_token``, ``traits_email_token``, ...) and the identifier type they
hold."""
PERSON_ID = "person_id"
KEPT_FOR_ACCOUNTING = frozenset({"shop.shop.orders"})
"""Feeds whose records must be kept (orders, for accounting): de-identified instead of deleted."""
SCHEMA = pa.schema(
    [
        ("identifier_type", pa.string()),
        ("identifier_hash", pa.string()),
        ("request_id", pa.string()),
        ("suppressed_at", pa.timestamp("us", tz="UTC")),
    ]
)
STATS_COLUMNS = ("identifier_type", "request_id", "suppressed_at")


def suppression_uri(settings: Settings) -> str:
    """The suppression list: ``privacy/suppression``."""
    return delta.table_uri(settings, "privacy", "suppression")


def identifier_hash(identifier_type: str, value: str, secret: str) -> str:
    """The keyed hash under which an identifier is suppressed."""
    message = f"suppressed:{identifier_type}:{value}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def hashes(identifier_type: str, values: pl.Series, secret: str) -> pl.Series:
    """The suppression hash of every non-null value (as text): the digests of :func:`identifier_hash`,
    computed as RFC 2104 defines HMAC (``sha256(key ^ opad || sha256(key ^ ipad || message))``) by DuckDB, in
    native code on every core."""
    text = pl.DataFrame({"value": values.cast(pl.String)})
    inner, outer = _hmac_pads(secret.encode())
    with duckdb.connect() as connection:
        connection.register("identifiers", text)
        digests = connection.sql(
            "select sha256($outer || unhex(sha256($inner || encode(value)))) as digest from identifiers",
            params={"inner": inner + f"suppressed:{identifier_type}:".encode(), "outer": outer},
        ).to_arrow_table()
    return pl.Series(values.name, digests["digest"], dtype=pl.String)


def _hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256's key XOR ipad and key XOR opad (the key hashed first when longer than a block), RFC
    2104."""
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def erased_marker(identifier_type: str, value: str, secret: str) -> int:
    """The value that replaces an erased id in a record that must be kept: a negative 63-bit number keyed on
    the id, so the kept records of one erased person still group together and never meet a real (positive)
    id."""
    digest = hmac.new(secret.encode(), f"erased:{identifier_type}:{value}".encode(), hashlib.sha256).digest()
    return -(int.from_bytes(digest[:8], "big") >> 1) - 1


def suppressed(settings: Settings) -> set[str]:
    """Every suppressed identifier hash (empty when nothing was ever erased)."""
    lazy = delta.scan(suppression_uri(settings), settings.storage_options)
    if lazy is None:
        return set()
    return set(lazy.select("identifier_hash").collect()["identifier_hash"].to_list())


def add(settings: Settings, identifiers: list[tuple[str, str]], request_id: str) -> int:
    """Suppress ``(identifier type, value)`` pairs (those not suppressed yet); the rows added."""
    known = suppressed(settings)
    now = datetime.now(UTC)
    rows, seen = [], set()
    for identifier_type, value in identifiers:
        digest = identifier_hash(identifier_type, value, settings.pii_secret)
        if digest in known or digest in seen:
            continue
        seen.add(digest)
        rows.append(
            {
                "identifier_type": identifier_type,
                "identifier_hash": digest,
                "request_id": request_id,
                "suppressed_at": now,
            }
        )
    if rows:
        delta.append(
            suppression_uri(settings),
            pa.Table.from_pylist(rows, schema=SCHEMA),
            storage_options=settings.storage_options,
            configuration=delta.stats_only(STATS_COLUMNS),
        )
    return len(rows)


def identifier_columns(columns: list[str]) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """The columns of a typed table that identify a person:
    ``(column, type column or None, identifier types)``. ``identifier`` takes its type from
    ``identifier_type``, ``<x>_identifier`` from ``<x>_type``."""
    found = []
    for column in columns:
        if column in ID_COLUMNS:
            found.append((column, None, ID_COLUMNS[column]))
        elif column == PERSON_ID or column.endswith("_" + PERSON_ID):
            found.append((column, None, (PERSON_ID,)))
        elif column.endswith(tuple(TOKEN_TYPES)):
            suffix = next(s for s in TOKEN_TYPES if column.endswith(s))
            found.append((column, None, (TOKEN_TYPES[suffix],)))
        elif column == "identifier" or column.endswith("_identifier"):
            prefix = column.removesuffix("identifier")
            type_column = prefix + "type" if prefix else "identifier_type"
            if type_column in columns:
                found.append((column, type_column, ()))
    return found


def matches(frame: pl.DataFrame, suppressed_hashes: set[str], secret: str) -> pl.DataFrame:
    """One boolean column per identifying column of ``frame`` (same name), true where its value is
    suppressed."""
    if not suppressed_hashes:
        return pl.DataFrame()
    wanted = pl.Series(list(suppressed_hashes), dtype=pl.String).implode()
    out = {}
    for column, type_column, types in identifier_columns(frame.columns):
        if type_column is not None:
            pairs = frame.select(pl.col(type_column).cast(pl.String), pl.col(column).cast(pl.String))
            distinct = pairs.drop_nulls().unique()
            digests = [identifier_hash(t, v, secret) for t, v in distinct.iter_rows()]
            hit = distinct.with_columns(pl.Series("_hit", digests).is_in(wanted))
            flag = pairs.join(
                hit, on=[type_column, column], how="left", nulls_equal=False, maintain_order="left"
            )["_hit"].fill_null(False)
        else:
            flag = pl.Series([False] * frame.height, dtype=pl.Boolean)
            for identifier_type in types:
                flag = flag | hashes(identifier_type, frame[column], secret).is_in(wanted).fill_null(False)
        out[column] = flag.alias(column)
    return pl.DataFrame(out, schema={c: pl.Boolean for c in out}) if out else pl.DataFrame()


def screen(
    frame: pl.DataFrame, settings: Settings, kept: bool, suppressed_hashes: set[str] | None = None
) -> tuple[pl.DataFrame, int]:
    """``frame`` without its rows that carry a suppressed identifier (or, when ``kept``, with those
    identifiers replaced by their erased marker); and how many rows were dropped or de-identified."""
    wanted = suppressed(settings) if suppressed_hashes is None else suppressed_hashes
    if not wanted or not frame.height:
        return frame, 0
    flags = matches(frame, wanted, settings.pii_secret)
    if not flags.width:
        return frame, 0
    hit = flags.select(pl.any_horizontal(pl.all())).to_series()
    count = int(hit.sum())
    if not count:
        return frame, 0
    if not kept:
        return frame.filter(~hit), count
    return deidentify(frame, flags, settings.pii_secret), count


def deidentify(frame: pl.DataFrame, flags: pl.DataFrame, secret: str) -> pl.DataFrame:
    """``frame`` with every flagged id value replaced by its erased marker (integer id columns) or null."""
    replaced = []
    for column in flags.columns:
        identifier_type = ID_COLUMNS.get(column, (None,))[0]
        values = frame[column]
        if identifier_type is not None and values.dtype.is_integer():
            distinct = values.filter(flags[column]).unique().drop_nulls().to_list()
            mapping = {v: erased_marker(identifier_type, str(v), secret) for v in distinct}
            new = values.replace(mapping)
        else:
            new = pl.when(flags[column]).then(None).otherwise(values)
            new = frame.select(new.alias(column)).to_series()
        replaced.append(new.alias(column))
    return frame.with_columns(replaced)
