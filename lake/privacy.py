"""Tokenisation of personal data on its way to silver: nothing readable leaves the restricted bronze zone.

E-mail addresses are trimmed and lower-cased, phone numbers normalised to E.164 (``phonenumbers``, with the
record's country as the default region), names trimmed and lower-cased; each is then replaced by a keyed
hash (HMAC-SHA256 with the project's ``PII_SECRET``), so equal values still join and match identities.
IP addresses keep their network prefix only (/24 for IPv4, /48 for IPv6); birth dates keep their year
(``birth_date`` becomes ``birth_year``); postal addresses are removed (nothing of them leaves bronze).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable

import phonenumbers
import polars as pl

from data_contracts import Contract

TOKEN_SUFFIX = "_token"
IP_SUFFIX = "_prefix"


def token(values: pl.Series, secret: str) -> pl.Series:
    """The keyed hash (hex HMAC-SHA256) of every non-null value; each distinct value is hashed once."""
    key = secret.encode()
    distinct = values.drop_nulls().unique()
    hashed = {v: hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in distinct.to_list()}
    return values.replace_strict(hashed, default=None, return_dtype=pl.String)


def normalise_email(values: pl.Series) -> pl.Series:
    """E-mail addresses trimmed and lower-cased (empty strings become null)."""
    out = values.cast(pl.String).str.strip_chars().str.to_lowercase()
    return out.replace("", None)


def normalise_name(values: pl.Series) -> pl.Series:
    """Names trimmed, inner spaces collapsed and lower-cased."""
    return (
        values.cast(pl.String)
        .str.strip_chars()
        .str.replace_all(r"\s+", " ")
        .str.to_lowercase()
        .replace("", None)
    )


def _e164(number: str, region: str | None) -> str | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_phone(values: pl.Series, regions: pl.Series | None = None) -> pl.Series:
    """Phone numbers in E.164 (``+4915112345678``); a number that cannot be a phone number becomes null.
    ``regions`` (ISO country codes, one per value) says how to read numbers written without a country code."""
    regions = regions if regions is not None else pl.Series([None] * len(values), dtype=pl.String)
    pairs = pl.DataFrame({"number": values.cast(pl.String), "region": regions.cast(pl.String)})
    distinct = pairs.drop_nulls("number").unique()
    mapping = pl.DataFrame(
        {
            "number": distinct["number"],
            "region": distinct["region"],
            "e164": [_e164(n, r) for n, r in distinct.iter_rows()],
        },
        schema={"number": pl.String, "region": pl.String, "e164": pl.String},
    )
    return pairs.join(mapping, on=["number", "region"], how="left", nulls_equal=True, maintain_order="left")[
        "e164"
    ]


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
DOTTED_IPV4 = rf"^((?:{_OCTET}\.){{3}}){_OCTET}$"
"""An IPv4 address exactly as :func:`ipaddress.ip_address` reads and writes it (four decimal octets, no
leading zeros), its first three octets with their dots in group 1."""


def _network(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False).network_address)


def truncate_ip(values: pl.Series) -> pl.Series:
    """The network prefix of each IP address: ``a.b.c.0`` (/24) for IPv4, the /48 network for IPv6; what is
    not an IP address becomes null. Plain dotted IPv4 addresses (nearly all) are cut in a vectorised rule;
    the rest go through :mod:`ipaddress` one distinct value at a time."""
    text = values.cast(pl.String)
    dotted = text.str.contains(DOTTED_IPV4).fill_null(False)
    others = text.filter(~dotted).drop_nulls().unique().to_list()
    parsed = text.replace_strict({v: _network(v) for v in others}, default=None, return_dtype=pl.String)
    return text.str.replace(DOTTED_IPV4, "${1}0").zip_with(dotted, parsed)


def birth_year(values: pl.Series) -> pl.Series:
    """The year of each date of birth: a date, or an ISO-8601 date or timestamp text (``1906-12-09``,
    ``1906-12-09T00:00:00.000Z``); what is not a date becomes null."""
    if values.dtype == pl.String:
        values = values.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    return values.cast(pl.Date, strict=False).dt.year().cast(pl.Int32)


def protected_name(column: str, kind: str) -> str | None:
    """The silver column that holds the protected form of a personal column of this kind (None: removed)."""
    if kind in ("email", "phone", "name"):
        return column + TOKEN_SUFFIX
    if kind == "ip":
        return column + IP_SUFFIX
    if kind == "birth_date":
        return column.removesuffix("_date") + "_year"
    if kind == "address":
        return None
    raise ValueError(f"unknown kind of personal data {kind!r} for column {column!r}")


def personal_columns(contract: Contract, columns: Iterable[str]) -> list[str]:
    """Those of ``columns`` (of a table of ``contract``'s feed) that hold personal data, raw or protected: the
    contract's restricted columns and objects with personal fields, under their own names; every protected
    form (tokens, network prefixes, birth years); and the columns taken out of such objects
    (``traits_...``)."""
    raw = {c.name for c in contract.columns if c.pii or c.pii_paths or c.classification == "restricted"}
    protected = {protected_name(c.name, c.pii) for c in contract.pii_columns} - {None}
    taken_out = tuple(f"{name}_" for name in contract.pii_paths)
    return [
        name
        for name in columns
        if name in raw
        or name in protected
        or name.endswith((TOKEN_SUFFIX, IP_SUFFIX))
        or name.startswith(taken_out)
    ]


def protect(
    frame: pl.DataFrame, pii: dict[str, str], secret: str, region_column: str | None = None
) -> pl.DataFrame:
    """Replace every personal column of ``frame`` (``pii`` maps column -> kind: email, phone, name, ip,
    birth_date, address) by its protected form (:func:`protected_name`): ``<column>_token``,
    ``<column>_prefix``, ``<column without _date>_year`` or nothing (an address is removed)."""
    regions = frame[region_column] if region_column and region_column in frame.columns else None
    for column, kind in pii.items():
        name = protected_name(column, kind)
        if column not in frame.columns:
            continue
        values = frame[column]
        if kind == "email":
            frame = frame.with_columns(token(normalise_email(values), secret).alias(name))
        elif kind == "phone":
            frame = frame.with_columns(token(normalise_phone(values, regions), secret).alias(name))
        elif kind == "name":
            frame = frame.with_columns(token(normalise_name(values), secret).alias(name))
        elif kind == "ip":
            frame = frame.with_columns(truncate_ip(values).alias(name))
        elif kind == "birth_date":
            frame = frame.with_columns(birth_year(values).alias(name))
        frame = frame.drop(column)
    return frame
