"""Vectorised encoders shared by the feeds: identifiers, timestamps and Debezium decimals."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from simulator.config import US_PER_DAY

_HEX_PAIRS = np.array([int.from_bytes(f"{b:02x}".encode(), "little") for b in range(256)], dtype="<u2")
"""The two hex digits of every byte value as one 16-bit word whose bytes are the digits in order."""
_DECIMAL_PAIRS = np.array([int.from_bytes(f"{i:02d}".encode(), "little") for i in range(100)], dtype="<u2")
"""The two decimal digits of 0 to 99 as one 16-bit word whose bytes are the digits in order."""
_BASE64_DIGITS = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8
)


def ascii_strings(chars: np.ndarray, widths: np.ndarray | None = None) -> pl.Series:
    """A polars String series from a 2-D uint8 array of ASCII characters, one row per value; with ``widths``
    each value is only the first ``widths[i]`` characters of its row."""
    n, width = chars.shape
    if widths is None:
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
        data = np.ascontiguousarray(chars, dtype=np.uint8).ravel()
    else:
        offsets = np.concatenate([[0], np.cumsum(widths, dtype=np.int64)])
        data = chars[np.arange(width) < widths[:, None]]
    return pl.from_arrow(pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data)))


def hex_chars(raw: np.ndarray) -> np.ndarray:
    """The lower-case hex digits of each row of a 2-D uint8 array, as ASCII characters (twice as wide)."""
    return _HEX_PAIRS.take(raw).view(np.uint8)


def base64_chars(rows: np.ndarray) -> np.ndarray:
    """Standard base64 (``=`` padded) of each row of a 2-D uint8 array, as ASCII characters."""
    n, width = rows.shape
    groups = -(-width // 3)
    padded = np.zeros((n, groups, 3), dtype=np.uint32)
    padded.reshape(n, groups * 3)[:, :width] = rows
    bits = padded[..., 0] << 16 | padded[..., 1] << 8 | padded[..., 2]
    out = _BASE64_DIGITS[bits[..., None] >> np.array([18, 12, 6, 0], dtype=np.uint32) & 0x3F].reshape(n, -1)
    out[:, out.shape[1] - (groups * 3 - width) :] = ord("=")
    return out


def random_hex_chars(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    """``n`` rows of ``2 * nbytes`` random lower-case hex digits (ASCII characters)."""
    return hex_chars(rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8))


def random_uuid_chars(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rows of 36 ASCII characters, each a random version-4 UUID (``8-4-4-4-12`` hex digits)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    digits = hex_chars(raw)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dashes, (start, end) in enumerate(((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))):
        out[:, start + dashes : end + dashes] = digits[:, start:end]
    return out


def random_hex(rng: np.random.Generator, n: int, nbytes: int) -> pl.Series:
    """``n`` random lower-case hex strings of ``2 * nbytes`` characters."""
    return ascii_strings(random_hex_chars(rng, n, nbytes))


def random_uuid(rng: np.random.Generator, n: int) -> pl.Series:
    """``n`` random version-4 UUID strings (``8-4-4-4-12`` hex digits)."""
    return ascii_strings(random_uuid_chars(rng, n))


def iso_utc(us: pl.Series | np.ndarray, digits: int = 3) -> pl.Series:
    """ISO-8601 UTC strings (``2026-09-01T10:00:00.123Z``, ``digits`` of sub-second precision from 0 to 6)
    from microseconds since the epoch (years 1970 to 9999); a null instant gives null."""
    us = pl.Series(us, dtype=pl.Int64)
    missing = np.flatnonzero(us.is_null().to_numpy())
    days, of_day = np.divmod(us.fill_null(0).to_numpy(), US_PER_DAY)
    # the civil date of a day number (H. Hinnant's civil_from_days)
    z = days + 719_468
    era = z // 146_097
    day_of_era = z - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    month = np.where(month_from_march < 10, month_from_march + 3, month_from_march - 9)
    year = year_of_era + era * 400 + (month <= 2)
    day = day_of_year - (153 * month_from_march + 2) // 5 + 1
    seconds, micros = np.divmod(of_day, 1_000_000)
    minutes, second = np.divmod(seconds, 60)
    hour, minute = np.divmod(minutes, 60)
    chars = np.empty((len(us), 20 + (digits + 1 if digits else 0)), dtype=np.uint8)
    pairs = (year // 100, year % 100, month, day, hour, minute, second)
    for at, value in zip((0, 2, 5, 8, 11, 14, 17), pairs, strict=True):
        chars[:, at : at + 2] = _DECIMAL_PAIRS.take(value).view(np.uint8).reshape(-1, 2)
    for at, separator in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (-1, "Z")):
        chars[:, at] = ord(separator)
    if digits:
        chars[:, 19] = ord(".")
        fraction = micros // 10 ** (6 - digits)
        for k in range(digits):
            chars[:, 20 + k] = fraction // 10 ** (digits - 1 - k) % 10 + ord("0")
    out = ascii_strings(chars).alias(us.name)
    return out.scatter(missing, None) if len(missing) else out


def decimal_strings(unscaled: pl.Series, scale: int) -> pl.Series:
    """Debezium ``decimal.handling.mode=string``: ``"12.30"`` from the unscaled integer ``1230``."""
    frame = pl.DataFrame({"v": unscaled.cast(pl.Int64)})
    unit = 10**scale
    magnitude = pl.col("v").abs()
    body = (magnitude // unit).cast(pl.String)
    if scale:
        body = pl.concat_str([body, pl.lit("."), (magnitude % unit).cast(pl.String).str.zfill(scale)])
    out = pl.when(pl.col("v") < 0).then(pl.lit("-") + body).otherwise(body)
    return frame.select(out.alias(unscaled.name)).to_series()


def decimal_base64(unscaled: pl.Series) -> pl.Series:
    """Debezium ``decimal.handling.mode=precise``: base64 of the minimal big-endian two's complement bytes."""
    values = unscaled.cast(pl.Int64)
    valid = values.is_not_null().to_numpy()
    v = values.fill_null(0).to_numpy()
    magnitude = np.where(v < 0, ~v, v).astype(np.uint64)
    # minimal two's complement width: one byte, plus one for every 8 bits the magnitude needs beyond 7
    nbytes = 1 + sum((magnitude >= np.uint64(1 << (8 * k - 1))).astype(np.int64) for k in range(1, 8))
    big_endian = v.astype(">i8").view(np.uint8).reshape(-1, 8)
    chars = np.zeros((len(v), 12), dtype=np.uint8)
    widths = np.zeros(len(v), dtype=np.int64)
    for width in np.unique(nbytes):
        rows = np.flatnonzero(nbytes == width)
        encoded = base64_chars(big_endian[rows, 8 - width :])
        chars[rows, : encoded.shape[1]] = encoded
        widths[rows] = encoded.shape[1]
    encoded = ascii_strings(chars, widths).alias(unscaled.name)
    missing = np.flatnonzero(~valid)
    return encoded.scatter(missing, None) if len(missing) else encoded
