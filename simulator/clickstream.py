"""Segment-spec messages as Segment's object-store destination writes them: gzipped JSON lines per hour.

:class:`ClickstreamWriter` takes click events (true time, device, person, kind), adds what the real pipeline
adds (device clocks, batching, network latency, message ids, context), injects the faults of real feeds
(skewed clocks, duplicate deliveries, late arrivals, malformed lines, missing fields) and writes every
message into the file of the hour Segment received it:
``clickstream/<source>/<date>/<hour>/part-<day>.jsonl.gz``.

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

from data_contracts.segment import SEGMENT_NAMES
from simulator import catalog as cat
from simulator.config import SimulationConfig
from simulator.encoding import ascii_strings, iso_utc, random_hex_chars, random_uuid_chars
from simulator.files import FileWriter

HOUR_US = 3600 * 1_000_000
MAX_QUEUED_BATCHES = 1
"""Days of messages that may wait for the encoder while the simulation runs ahead."""
ENCODE_PART_ROWS = 8_000
"""Messages encoded together at most; the parts of a day are encoded in parallel."""
SITE = "https://shop.example.com"
SOURCE_NAME_RANK = np.argsort(np.argsort(cat.CLICK_SOURCES))
"""Per source (by its index in ``CLICK_SOURCES``), its rank in name order."""
WEB_ID_PREFIX = b"ajs-next-"
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
    """The click events as simulated; ``order`` lists them in message order."""
    order: np.ndarray
    source: np.ndarray
    """Per message, its index in ``CLICK_SOURCES``; this and the arrays below are in message order."""
    original: np.ndarray
    sent: np.ndarray
    received: np.ndarray
    message_id: pl.Series
    """The ids of the web messages, then those of the others."""
    referrer: np.ndarray
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
        # devices, persons and products are looked up by position: device d, person p, product_id - 1
        self.device_source = (
            devices["source"].replace_strict(cat.CLICK_SOURCES, range(len(cat.CLICK_SOURCES))).to_numpy()
        )
        self.device_skew = devices["skew_us"].to_numpy()
        self.device_context = devices.select("anonymous_id", "user_agent", "ip", "locale", "app_model")
        self.app_sdk = app_sdk_contexts().drop("app_model")
        self.persons = persons.select(
            pl.struct(
                "email",
                pl.col("first_name").str.to_titlecase(),
                pl.col("last_name").str.to_titlecase(),
            ).alias("traits"),
        )
        self.products = products.select("sku", pl.col("category_name").alias("category"), "price_cents")
        self.encoding: deque[Future] = deque()
        self.batches = 0
        self.stats: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        """Files and lines written, counted on the encoder thread."""

    def add(self, events: pl.DataFrame) -> None:
        """Draw the delivery of one batch of click events (clocks, delays, ids, faults) and queue its
        encoding."""
        if events.is_empty():
            return
        rng = self.rng
        faults = self.config.faults
        order = _message_order(events)
        n = len(order)
        device = events["device"].to_numpy()[order]
        source = self.device_source[device]
        if "source" in events.columns:
            given = events["source"].replace_strict(
                cat.CLICK_SOURCES, range(len(cat.CLICK_SOURCES)), default=-1, return_dtype=pl.Int64
            )
            given = given.fill_null(-1).to_numpy()[order]
            source = np.where(given >= 0, given, source)
        server = source == cat.CLICK_SOURCES.index(cat.SERVER_SOURCE)
        app = source == cat.CLICK_SOURCES.index(cat.APP_SOURCE)
        send_delay = np.where(
            app, rng.uniform(1, 60, n), np.where(server, rng.uniform(0.01, 0.3, n), rng.uniform(0.05, 1.5, n))
        )
        late = ~server & (rng.random(n) < faults.click_late)
        send_delay = send_delay + np.where(late, np.exp(rng.uniform(np.log(3600), np.log(3 * 86_400), n)), 0)
        latency = rng.uniform(0.03, 0.4, n)
        skew = np.where(server, 0, self.device_skew[device])
        ts = events["ts"].to_numpy()[order]
        sent_true = ts + (send_delay * 1e6).astype(np.int64)
        # analytics.js ids for the web, UUIDs for the SDKs and the server
        web = source == cat.CLICK_SOURCES.index(cat.WEB_SOURCE)
        web_ids = np.empty((int(web.sum()), len(WEB_ID_PREFIX) + 32), dtype=np.uint8)
        web_ids[:, : len(WEB_ID_PREFIX)] = np.frombuffer(WEB_ID_PREFIX, dtype=np.uint8)
        web_ids[:, len(WEB_ID_PREFIX) :] = random_hex_chars(rng, len(web_ids), 16)
        message_id = pl.concat(
            [ascii_strings(web_ids), ascii_strings(random_uuid_chars(rng, int((~web).sum())))]
        )
        referrer = rng.integers(0, len(cat.WEB_PAGES), n)
        duplicates = np.flatnonzero(rng.random(n) < faults.click_duplicate)
        total = n + len(duplicates)
        batch = _Batch(
            events=events,
            order=order,
            source=source,
            original=ts + skew,
            sent=sent_true + skew,
            received=sent_true + (latency * 1e6).astype(np.int64),
            message_id=message_id,
            referrer=referrer,
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
        # deliveries: every message, then the retried ones again (the same message received again later)
        rows = np.concatenate([np.arange(len(batch.order)), batch.duplicate_rows])
        received = np.concatenate(
            [batch.received, batch.received[batch.duplicate_rows] + batch.duplicate_delay_us]
        )
        events = batch.events.with_columns(
            pl.lit(None, t).alias(c) for c, t in OPTIONAL_COLUMNS.items() if c not in batch.events.columns
        ).rechunk()
        grouped, sizes = self._shapes(batch, events, rows)
        rows, received = rows[grouped], received[grouped]
        events = self._messages(batch, events, rows, received)
        # the shapes are encoded in parallel, large ones in parts
        parts = [
            _encode_shape(events.slice(offset, min(ENCODE_PART_ROWS, start + size - offset)))
            for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True)
            for offset in range(start, start + size, ENCODE_PART_ROWS)
        ]
        lines = pl.concat([part.to_series() for part in pl.collect_all(parts)])
        faults = self.config.faults
        malformed = np.flatnonzero(batch.fault_draw < faults.click_malformed)
        missing = np.flatnonzero(
            (batch.fault_draw >= faults.click_malformed)
            & (batch.fault_draw < faults.click_malformed + faults.click_missing_field)
        )
        if len(malformed):
            cut = (lines.gather(malformed).str.len_chars().to_numpy() * batch.cut_fraction[malformed]).astype(
                np.int64
            )
            truncated = pl.DataFrame({"l": lines.gather(malformed), "k": cut}).select(
                pl.col("l").str.slice(0, pl.col("k"))
            )
            lines = lines.scatter(malformed, truncated.to_series())
        for mode, (pattern, replacement) in enumerate(MISSING_FIELD_PATTERNS):
            at = missing[batch.missing_mode[missing] == mode]
            if len(at):
                lines = lines.scatter(at, lines.gather(at).str.replace(pattern, replacement))
        # one file per source (in name order) and received hour, its lines in received order
        source = SOURCE_NAME_RANK[batch.source[rows]]
        order = np.lexsort((received, source))
        source, hour, lines = source[order], received[order] // HOUR_US, (lines + "\n").gather(order)
        ends = np.flatnonzero(np.r_[(source[1:] != source[:-1]) | (hour[1:] != hour[:-1]), True]) + 1
        for start, end in zip(np.r_[0, ends[:-1]], ends, strict=True):
            stamp = np.datetime64(int(hour[start]) * 3600, "s").astype(object)
            folder = self.folder / sorted(cat.CLICK_SOURCES)[source[start]]
            path = folder / f"{stamp:%Y-%m-%d}/{stamp:%H}/part-{number:04d}.jsonl.gz"
            self.writer.write(path, lines.slice(start, end - start), True)
            self.written["files"] += 1
            self.written["lines"] += int(end - start)

    def _shapes(self, batch: _Batch, events: pl.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The deliveries (messages ``rows``) grouped by shape, and the size of each shape. A shape is a
        source, type and track event (page and screen names vary inside a shape); shapes come in the order
        they first appear, deliveries keep their order inside a shape."""
        kind = events["type"].gather(batch.order[rows])
        shapes = (
            pl.DataFrame({"source": batch.source[rows], "type": kind})
            .with_columns(
                pl.when(kind == "track").then(events["name"].gather(batch.order[rows])).alias("event")
            )
            .with_row_index()
            .group_by(["source", "type", "event"], maintain_order=True)
            .agg("index")
        )
        return shapes["index"].explode().to_numpy(), shapes["index"].list.len().to_list()

    def _messages(
        self, batch: _Batch, events: pl.DataFrame, rows: np.ndarray, received: np.ndarray
    ) -> pl.DataFrame:
        """The deliveries of messages ``rows`` (of ``events``) received at ``received``, with the device, app,
        product and trait columns their JSON needs."""
        events = events.gather(batch.order[rows])
        source = batch.source[rows]
        # message ids: those of the web messages, then those of the others, each in message order
        web = batch.source == cat.CLICK_SOURCES.index(cat.WEB_SOURCE)
        id_row = np.where(web, np.cumsum(web) - 1, web.sum() + np.cumsum(~web) - 1)
        # the server sends no anonymous id: its messages look up no device
        server = np.flatnonzero(source == cat.CLICK_SOURCES.index(cat.SERVER_SOURCE))
        context = self.device_context.gather(events["device"].scatter(server, None))
        return pl.concat(
            [
                events.drop("source").with_columns(iso_utc(events["ts"])),
                pl.DataFrame(
                    [
                        pl.Series("source", cat.CLICK_SOURCES).gather(source),
                        batch.message_id.gather(id_row[rows]).alias("message_id"),
                        iso_utc(batch.original[rows]).alias("original_timestamp"),
                        iso_utc(batch.sent[rows]).alias("sent_at"),
                        iso_utc(received).alias("received_at"),
                        pl.Series("referrer", cat.WEB_PAGES).gather(batch.referrer[rows]),
                    ]
                ),
                context.drop("app_model"),
                # gathered by position (a batch without any product or trait looks up only nulls)
                self.app_sdk.gather(context["app_model"]),
                self.products.gather(events["product_id"] - 1),
                self.persons.gather(events["trait_person"]),
            ],
            how="horizontal",
        )

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

    def export_state(self) -> dict:
        """What continuing this writer later needs: the number of batches written (it names the part
        files)."""
        return {"batches": self.batches}

    def restore_state(self, state: dict) -> None:
        """Continue from an :meth:`export_state`."""
        self.batches = state["batches"]


def _message_order(events: pl.DataFrame) -> np.ndarray:
    """The rows of ``events`` in message order: by true time, device, type and name, ties in their order."""
    ts = events["ts"].to_numpy()
    device = events["device"].to_numpy()
    order = np.lexsort((device, ts))
    tied = np.flatnonzero((np.diff(ts[order]) == 0) & (np.diff(device[order]) == 0))
    if len(tied):
        kind, name = events["type"], events["name"]
        breaks = np.diff(tied) > 1
        for first, last in zip(tied[np.r_[True, breaks]], tied[np.r_[breaks, True]] + 1, strict=True):
            rows = order[first : last + 1]
            order[first : last + 1] = sorted(rows, key=lambda r: (kind[int(r)], name[int(r)]))
    return order


def _money(cents: pl.Expr) -> pl.Expr:
    return (cents / 100).round(2)


def _encode_shape(group: pl.DataFrame) -> pl.LazyFrame:
    """The JSON lines (``line``) of messages that share a shape (source, type and event or page name)."""
    source, kind, name = group["source"][0], group["type"][0], group["name"][0]
    fields: list[pl.Expr] = [pl.col("message_id").alias(SEGMENT_NAMES["message_id"]), pl.col("type")]
    if kind == "track":
        fields.append(pl.col("name").alias("event"))
    elif kind == "page":
        fields.append(
            pl.col("name").replace_strict(cat.WEB_PAGES, cat.WEB_PAGE_NAMES, return_dtype=pl.String)
        )
    elif kind == "screen":
        fields.append(pl.col("name"))
    fields += [pl.col(c).alias(SEGMENT_NAMES[c]) for c in ("anonymous_id", "user_id")]
    if kind == "alias":
        fields.append(pl.col("anonymous_id").alias(SEGMENT_NAMES["previous_id"]))
    if kind == "identify":
        fields.append(pl.col("traits"))
    elif kind in ("page", "screen", "track"):
        fields.append(_properties(kind, name).alias("properties"))
    fields += [
        _context(source, kind, name).alias("context"),
        *(pl.col(c).alias(SEGMENT_NAMES[c]) for c in ("original_timestamp", "sent_at", "received_at")),
    ]
    if source == cat.SERVER_SOURCE:
        fields.append(pl.col("ts").alias("timestamp"))
    fields += [
        pl.lit("server" if source == cat.SERVER_SOURCE else "client").alias("channel"),
        pl.lit(2).alias("version"),
    ]
    return group.lazy().select(pl.struct(fields).struct.json_encode().alias("line"))


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
