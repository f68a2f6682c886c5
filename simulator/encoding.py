"""Vectorised encoders shared by the feeds: identifiers, timestamps and Debezium decimals."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


def fixed_binary(rows: np.ndarray) -> pl.Series:
    """A polars Binary series from a 2-D uint8 array, one row of bytes per value (trailing zero bytes kept)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    n, width = rows.shape
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(rows.tobytes())])
    return pl.from_arrow(array).cast(pl.Binary)


def random_hex(rng: np.random.Generator, n: int, nbytes: int) -> pl.Series:
    """``n`` random lower-case hex strings of ``2 * nbytes`` characters."""
    return fixed_binary(rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)).bin.encode("hex")


def random_uuid(rng: np.random.Generator, n: int) -> pl.Series:
    """``n`` random version-4 UUID strings (``8-4-4-4-12`` hex digits)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    h = pl.DataFrame({"h": fixed_binary(raw).bin.encode("hex")})
    return h.select(
        pl.concat_str(
            [
                pl.col("h").str.slice(0, 8),
                pl.col("h").str.slice(8, 4),
                pl.col("h").str.slice(12, 4),
                pl.col("h").str.slice(16, 4),
                pl.col("h").str.slice(20, 12),
            ],
            separator="-",
        )
    ).to_series()


def iso_utc(us: pl.Expr, digits: int = 3) -> pl.Expr:
    """ISO-8601 UTC strings (``2026-09-01T10:00:00.123Z``) from microseconds since the epoch."""
    return pl.from_epoch(us, time_unit="us").dt.to_string(f"%Y-%m-%dT%H:%M:%S%.{digits}fZ")


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
    out = np.empty(len(v), dtype="<U12")
    for width in np.unique(nbytes):
        rows = np.flatnonzero(nbytes == width)
        out[rows] = fixed_binary(big_endian[rows, 8 - width :]).bin.encode("base64").to_numpy()
    encoded = pl.Series(unscaled.name, out, dtype=pl.String)
    missing = np.flatnonzero(~valid)
    return encoded.scatter(missing, None) if len(missing) else encoded
