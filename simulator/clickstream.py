"""Segment-spec messages as Segment's object-store destination writes them: gzipped JSON lines per hour.

:class:`ClickstreamWriter` takes click events (true time, device, person, kind), adds what the real pipeline
adds (device clocks, batching, network latency, message ids, context), injects the faults of real feeds
(skewed clocks, duplicate deliveries, late arrivals, malformed lines, missing fields) and writes every
message into the file of the hour Segment received it: ``clickstream/<source>/<date>/<hour>/part-<day>.jsonl.gz``.

All random draws happen in the caller's thread, in a fixed order; the JSON encoding of a day runs on a
background thread while the next day is simulated, so the output does not depend on thread timing.
"""

from __future__ import annotations

from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.config import SimulationConfig
from simulator.encoding import iso_utc, random_hex, random_uuid
from simulator.files import FileWriter

HOUR_US = 3600 * 1_000_000
MAX_QUEUED_BATCHES = 1
"""Days of messages that may wait for the encoder while the simulation runs ahead."""
SITE = "https://shop.example.com"
MISSING_FIELD_PATTERNS = (
    (r'^\{"messageId":"[^"]*",', "{"),
    (r'"type":"[a-z]+",', ""),
    (r'"anonymousId":(?:"[^"]*"|null),"userId":(?:"[^"]*"|null),', ""),
)
"""How a message loses a required field: its messageId, its type, or both of its identities."""
OPTIONAL_COLUMNS = {
    "product_id": pl.Int64,
    "quantity": pl.Int64,
    "order_id": pl.Int64,
    "value_cents": pl.Int64,
    "campaign_id": pl.String,
    "activity_id": pl.Int64,
    "trait_person": pl.Int64,
    "source": pl.String,
}


@dataclass
class _Batch:
    """One day's messages with every random decision already drawn."""

    events: pl.DataFrame
    duplicate_rows: np.ndarray
    duplicate_delay_us: np.ndarray
    fault_draw: np.ndarray
    """One uniform draw per line (after duplication) deciding malformed and missing-field faults."""
    cut_fraction: np.ndarray
    missing_mode: np.ndarray


class ClickstreamWriter:
    """Encodes each day's messages on a background thread and writes them into the files of the hours
    Segment received them in: one part file per hour and simulated day (``part-<day>.jsonl.gz``), so a late
    message lands in a later hour's folder beside that hour's own messages."""

    def __init__(
        self,
        landing: Path,
        config: SimulationConfig,
        rng: np.random.Generator,
        writer: FileWriter,
        devices: pl.DataFrame,
        persons: pl.DataFrame,
        products: pl.DataFrame,
    ) -> None:
        self.folder = landing / "clickstream"
        self.config = config
        self.rng = rng
        self.writer = writer
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-encoder")
        self.devices = devices.select(
            "device", pl.col("source").alias("device_source"), "anonymous_id", "skew_us"
        )
        self.device_context = devices.select("device", "user_agent", "ip", "locale", "app_model")
        self.app_sdk = app_sdk_contexts()
        self.persons = persons.select(
            pl.col("person").alias("trait_person"),
            pl.struct(
                "email",
                pl.col("first_name").str.to_titlecase(),
                pl.col("last_name").str.to_titlecase(),
            ).alias("traits"),
        )
        self.products = products.select(
            "product_id", "sku", pl.col("category_name").alias("category"), "price_cents"
        )
        self.encoding: deque[Future] = deque()
        self.batches = 0
        self.stats: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        """Files and lines written, counted on the encoder thread."""

    def add(self, events: pl.DataFrame) -> None:
        """Draw the delivery of one batch of click events (clocks, delays, ids, faults) and queue its encoding."""
        if events.is_empty():
            return
        rng = self.rng
        faults = self.config.faults
        events = events.with_columns(
            pl.lit(None, t).alias(c) for c, t in OPTIONAL_COLUMNS.items() if c not in events.columns
        )
        events = events.sort(["ts", "device", "type", "name"], maintain_order=True).join(
            self.devices, on="device", how="left"
        )
        n = events.height
        source = events["source"].fill_null(events["device_source"])
        server = (source == cat.SERVER_SOURCE).to_numpy()
        app = (source == cat.APP_SOURCE).to_numpy()
        send_delay = np.where(
            app, rng.uniform(1, 60, n), np.where(server, rng.uniform(0.01, 0.3, n), rng.uniform(0.05, 1.5, n))
        )
        late = ~server & (rng.random(n) < faults.click_late)
        send_delay = send_delay + np.where(late, np.exp(rng.uniform(np.log(3600), np.log(3 * 86_400), n)), 0)
        latency = rng.uniform(0.03, 0.4, n)
        skew = np.where(server, 0, events["skew_us"].to_numpy())
        ts = events["ts"].to_numpy()
        sent_true = ts + (send_delay * 1e6).astype(np.int64)
        # analytics.js ids for the web, UUIDs for the SDKs and the server
        web = (source == cat.WEB_SOURCE).to_numpy()
        order = np.argsort(~web, kind="stable")
        ids = pl.concat(
            ["ajs-next-" + random_hex(rng, int(web.sum()), 16), random_uuid(rng, int((~web).sum()))]
        )
        message_id = ids.gather(np.argsort(order))
        events = events.with_columns(
            source.alias("source"),
            message_id.alias("message_id"),
            pl.Series("original", ts + skew),
            pl.Series("sent", sent_true + skew),
            pl.Series("received", sent_true + (latency * 1e6).astype(np.int64)),
            pl.Series(
                "referrer", np.asarray(cat.WEB_PAGES)[rng.integers(0, len(cat.WEB_PAGES), n)], dtype=pl.String
            ),
            pl.when(pl.col("source") == cat.SERVER_SOURCE)
            .then(None)
            .otherwise(pl.col("anonymous_id"))
            .alias("anonymous_id"),
        )
        duplicates = np.flatnonzero(rng.random(n) < faults.click_duplicate)
        total = n + len(duplicates)
        batch = _Batch(
            events=events,
            duplicate_rows=duplicates,
            duplicate_delay_us=(rng.uniform(1, 5400, len(duplicates)) * 1e6).astype(np.int64),
            fault_draw=rng.random(total),
            cut_fraction=rng.uniform(0.2, 0.9, total),
            missing_mode=rng.integers(0, len(MISSING_FIELD_PATTERNS), total),
        )
        malformed = batch.fault_draw < faults.click_malformed
        self.stats["messages"] += n
        self.stats["late_messages"] += int(late.sum())
        self.stats["duplicate_deliveries"] += len(duplicates)
        self.stats["malformed_lines"] += int(malformed.sum())
        self.stats["missing_field_messages"] += int(
            (~malformed & (batch.fault_draw < faults.click_malformed + faults.click_missing_field)).sum()
        )
        # batches are encoded while the next days are simulated; waiting here bounds the memory
        self.wait(keep=MAX_QUEUED_BATCHES - 1)
        self.encoding.append(self.encoder.submit(self._encode_and_write, batch, self.batches))
        self.batches += 1

    def _encode_and_write(self, batch: _Batch, number: int) -> None:
        """Encode a batch to JSON lines, apply its faults and write them by source and received hour (runs on
        the encoder thread)."""
        # a retried delivery is the same message received again later
        copies = batch.events.gather(batch.duplicate_rows).with_columns(
            pl.col("received") + pl.Series(batch.duplicate_delay_us)
        )
        events = (
            pl.concat([batch.events, copies])
            .join(self.device_context, on="device", how="left", maintain_order="left")
            .join(self.app_sdk, on="app_model", how="left", maintain_order="left")
            .join(self.products, on="product_id", how="left", maintain_order="left")
            .join(self.persons, on="trait_person", how="left", maintain_order="left")
        )
        # one shape per source, type and track event; page and screen names vary inside a shape
        shape = pl.when(pl.col("type") == "track").then(pl.col("name")).alias("_shape")
        shapes = events.with_columns(shape).group_by(["source", "type", "_shape"], maintain_order=True)
        encoded = pl.concat([_encode_shape(group) for _, group in shapes])
        faults = self.config.faults
        malformed = np.flatnonzero(batch.fault_draw < faults.click_malformed)
        missing = np.flatnonzero(
            (batch.fault_draw >= faults.click_malformed)
            & (batch.fault_draw < faults.click_malformed + faults.click_missing_field)
        )
        lines = encoded["line"]
        if len(malformed):
            cut = (lines.gather(malformed).str.len_chars().to_numpy() * batch.cut_fraction[malformed]).astype(
                np.int64
            )
            truncated = pl.DataFrame({"l": lines.gather(malformed), "k": cut}).select(
                pl.col("l").str.slice(0, pl.col("k"))
            )
            lines = lines.scatter(malformed, truncated.to_series())
        for mode, (pattern, replacement) in enumerate(MISSING_FIELD_PATTERNS):
            rows = missing[batch.missing_mode[missing] == mode]
            if len(rows):
                lines = lines.scatter(rows, lines.gather(rows).str.replace(pattern, replacement))
        encoded = encoded.select(
            "source", (pl.col("received") // HOUR_US).alias("hour"), "received", lines.alias("line")
        ).sort(["source", "hour", "received"], maintain_order=True)
        for (source, hour), rows in encoded.group_by(["source", "hour"], maintain_order=True):
            stamp = np.datetime64(int(hour) * 3600, "s").astype(object)
            path = self.folder / source / f"{stamp:%Y-%m-%d}/{stamp:%H}/part-{number:04d}.jsonl.gz"
            self.writer.write(path, rows["line"], True)
            self.written["files"] += 1
            self.written["lines"] += rows.height

    def wait(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` batches are still being encoded, re-raising any error."""
        while len(self.encoding) > keep:
            self.encoding.popleft().result()

    def finish(self) -> None:
        """Wait for the last batch and fold the counts of written files and lines into :attr:`stats`."""
        self.wait()
        self.encoder.shutdown()
        self.stats.update(self.written)
        self.written.clear()


def _money(cents: pl.Expr) -> pl.Expr:
    return (cents / 100).round(2)


def _encode_shape(group: pl.DataFrame) -> pl.DataFrame:
    """JSON lines for messages that share a shape (source, type and event or page name)."""
    source, kind, name = group["source"][0], group["type"][0], group["name"][0]
    fields: list[pl.Expr] = [pl.col("message_id").alias("messageId"), pl.col("type")]
    if kind == "track":
        fields.append(pl.col("name").alias("event"))
    elif kind == "page":
        fields.append(
            pl.col("name").replace_strict(cat.WEB_PAGES, cat.WEB_PAGE_NAMES, return_dtype=pl.String)
        )
    elif kind == "screen":
        fields.append(pl.col("name"))
    fields += [pl.col("anonymous_id").alias("anonymousId"), pl.col("user_id").alias("userId")]
    if kind == "alias":
        fields.append(pl.col("anonymous_id").alias("previousId"))
    if kind == "identify":
        fields.append(pl.col("traits"))
    elif kind in ("page", "screen", "track"):
        fields.append(_properties(kind, name).alias("properties"))
    fields += [
        _context(source, kind, name).alias("context"),
        iso_utc(pl.col("original")).alias("originalTimestamp"),
        iso_utc(pl.col("sent")).alias("sentAt"),
        iso_utc(pl.col("received")).alias("receivedAt"),
    ]
    if source == cat.SERVER_SOURCE:
        fields.append(iso_utc(pl.col("ts")).alias("timestamp"))
    fields += [
        pl.lit("server" if source == cat.SERVER_SOURCE else "client").alias("channel"),
        pl.lit(2).alias("version"),
    ]
    return group.select("source", "received", pl.struct(fields).struct.json_encode().alias("line"))


def _properties(kind: str, name: str) -> pl.Expr:
    """The ``properties`` of a page, screen or track message, shaped by its event."""
    if kind == "page":
        return pl.struct(
            pl.col("name").alias("path"),
            pl.concat_str([pl.lit(SITE), pl.col("name")]).alias("url"),
            pl.concat_str([pl.lit(SITE), pl.col("referrer")]).alias("referrer"),
        )
    if kind == "screen":
        return pl.struct(pl.col("name"))
    product = [
        pl.col("sku").alias("product_id"),
        pl.col("category"),
        _money(pl.col("price_cents")).alias("price"),
        pl.lit("EUR").alias("currency"),
    ]
    order_id = pl.col("order_id").cast(pl.String)
    if name == "Product Viewed":
        return pl.struct(product)
    if name == "Product Added":
        return pl.struct([*product, pl.col("quantity")])
    if name == "Checkout Started":
        return pl.struct(
            order_id, _money(pl.col("value_cents")).alias("value"), pl.lit("EUR").alias("currency")
        )
    if name == "Order Completed":
        return pl.struct(
            order_id, _money(pl.col("value_cents")).alias("total"), pl.lit("EUR").alias("currency")
        )
    if name == "Email Link Clicked":
        return pl.struct(
            pl.col("campaign_id"),
            pl.col("activity_id").cast(pl.String).alias("email_id"),
            pl.concat_str([pl.lit(SITE + "/offers?utm_campaign="), pl.col("campaign_id")]).alias("link_url"),
        )
    raise ValueError(f"no properties for track event {name!r}")


def _context(source: str, kind: str, name: str) -> pl.Expr:
    """The ``context`` of a message: its library and device, the web page, the campaign of an e-mail click."""
    if source == cat.SERVER_SOURCE:
        return pl.struct(
            pl.struct(pl.lit("analytics-python").alias("name"), pl.lit("2.3.3").alias("version")).alias(
                "library"
            )
        )
    if source == cat.APP_SOURCE:
        fields = [
            *(pl.col("app_sdk").struct.field(f) for f in ("library", "app", "device", "os")),
            pl.col("ip"),
            pl.col("locale"),
        ]
    else:
        path = (
            pl.col("name")
            if kind == "page"
            else pl.lit(cat.WEB_EVENT_PATHS[name if kind == "track" else kind])
        )
        fields = [
            pl.struct(pl.lit("analytics.js").alias("name"), pl.lit("next-1.76.0").alias("version")).alias(
                "library"
            ),
            pl.struct(path.alias("path"), pl.concat_str([pl.lit(SITE), path]).alias("url")).alias("page"),
            pl.col("user_agent").alias("userAgent"),
            pl.col("ip"),
            pl.col("locale"),
        ]
    if name == "Email Link Clicked":
        fields.append(
            pl.struct(
                pl.lit("crm").alias("source"),
                pl.lit("email").alias("medium"),
                pl.col("campaign_id").alias("name"),
            ).alias("campaign")
        )
    return pl.struct(fields)


def app_sdk_contexts() -> pl.DataFrame:
    """Per app device model, the fixed part of its Segment ``context``: SDK library, app, device and OS."""
    rows = [
        {
            "app_model": i,
            "app_sdk": {
                "library": {"name": f"analytics-{kind}", "version": "4.6.1"},
                "app": {"name": "Shop", "version": "5.12.0", "build": "512"},
                "device": {"manufacturer": maker, "model": model, "type": kind},
                "os": {"name": os_name, "version": os_version},
            },
        }
        for i, (maker, model, kind, os_name, os_version) in enumerate(cat.APP_DEVICES)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("app_model").cast(pl.Int8))
