"""The source databases of the simulated company: the CRM (PostgreSQL) and the shop (MySQL), table by
table."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    """One database column and the Debezium semantic type its values are encoded with.

    kinds: ``int32``, ``int64``, ``float64``, ``bool``, ``string``, ``decimal`` (held as an unscaled integer),
    ``date`` (days since epoch), ``timestamp_ms`` (``io.debezium.time.Timestamp``), ``timestamp_us``
    (``MicroTimestamp``), ``timestamptz`` (``ZonedTimestamp``), ``json`` (``io.debezium.data.Json``).
    Timestamps are held as microseconds since the epoch, UTC.
    """

    name: str
    kind: str
    nullable: bool = True
    precision: int = 0
    scale: int = 0
    added_on_day: int | None = None
    """Day of the observed window from which the column exists (``ALTER TABLE ... ADD COLUMN``)."""


@dataclass(frozen=True)
class Table:
    """A captured table; its topic is ``<server>.<schema>.<table>`` as Debezium names it."""

    name: str
    primary_key: str
    columns: tuple[Column, ...]
    partitions: int = 1

    def columns_on(self, day: int) -> tuple[Column, ...]:
        """The columns that exist on ``day`` of the observed window (negative days are the history)."""
        return tuple(c for c in self.columns if c.added_on_day is None or day >= c.added_on_day)


@dataclass(frozen=True)
class Server:
    """A source database and how its Debezium connector is configured."""

    name: str
    connector: str  # "postgresql" or "mysql"
    database: str
    schema: str
    tables: tuple[Table, ...]
    schemas_enabled: bool
    """JSON converter ``schemas.enable``: every message carries its schema envelope."""
    decimal_mode: str
    """``decimal.handling.mode``: ``precise`` (base64 two's complement) or ``string``."""
    gzip: bool
    options: dict = field(default_factory=dict)

    def topic(self, table: Table) -> str:
        """The Kafka topic (and landing folder) name of ``table``."""
        return f"{self.name}.{self.schema}.{table.name}"


def crm_server(days: int) -> Server:
    """The CRM: PostgreSQL, pgoutput, schemas disabled, decimals as strings, ``before`` null on updates.

    From day ``days`` on (the closed loop, after the generated window) the campaign tool records the decision
    behind an activity (``activities.decision_id``), and the recommendations our reverse-ETL sync writes into
    ``nba_recommendations`` are captured like any table of the database; the connector's
    ``column.exclude.list`` leaves out the sync's own bookkeeping columns (``_diff_id``, ``_synced_at``)."""
    return Server(
        name="crm",
        connector="postgresql",
        database="crm",
        schema="public",
        schemas_enabled=False,
        decimal_mode="string",
        gzip=False,
        tables=(
            Table(
                "contacts",
                "contact_id",
                (
                    Column("contact_id", "int64", nullable=False),
                    Column("email", "string"),
                    Column("phone", "string"),
                    Column("first_name", "string"),
                    Column("last_name", "string"),
                    Column("country", "string"),
                    Column("birth_date", "date"),
                    Column("attributes", "json"),
                    Column("created_at", "timestamptz", nullable=False),
                    Column("updated_at", "timestamp_us", nullable=False),
                    Column("preferred_language", "string", added_on_day=days // 2),
                ),
                partitions=2,
            ),
            Table(
                "consents",
                "consent_id",
                (
                    Column("consent_id", "int64", nullable=False),
                    Column("contact_id", "int64", nullable=False),
                    Column("channel", "string", nullable=False),
                    Column("status", "string", nullable=False),
                    Column("source", "string"),
                    Column("updated_at", "timestamptz", nullable=False),
                ),
            ),
            Table(
                "activities",
                "activity_id",
                (
                    Column("activity_id", "int64", nullable=False),
                    Column("contact_id", "int64", nullable=False),
                    Column("campaign_id", "string", nullable=False),
                    Column("activity_type", "string", nullable=False),
                    Column("action", "string", nullable=False),
                    Column("channel", "string"),
                    Column("propensity", "float64"),
                    Column("offer_value", "decimal", precision=10, scale=2),
                    Column("sent_at", "timestamptz", nullable=False),
                    Column("decision_id", "string", added_on_day=days),
                ),
                partitions=2,
            ),
            Table(
                "nba_recommendations",
                "contact_id",
                (
                    Column("contact_id", "int64", nullable=False),
                    Column("decision_id", "string", nullable=False),
                    Column("decision_date", "date"),
                    Column("action", "string", nullable=False),
                    Column("channel", "string"),
                    Column("expected_value", "float64"),
                    Column("model_version", "string"),
                    Column("policy_version", "string"),
                ),
            ),
        ),
    )


def shop_server(days: int) -> Server:
    """The shop: MySQL binlog, schemas enabled, precise decimals, full ``before`` images, gzipped files."""
    return Server(
        name="shop",
        connector="mysql",
        database="shop",
        schema="shop",
        schemas_enabled=True,
        decimal_mode="precise",
        gzip=True,
        options={"server_id": 223344},
        tables=(
            Table(
                "products",
                "product_id",
                (
                    Column("product_id", "int64", nullable=False),
                    Column("sku", "string", nullable=False),
                    Column("category", "string", nullable=False),
                    Column("name", "string", nullable=False),
                    Column("price", "decimal", nullable=False, precision=10, scale=2),
                    Column("updated_at", "timestamptz", nullable=False),
                ),
            ),
            Table(
                "customers",
                "customer_id",
                (
                    Column("customer_id", "int64", nullable=False),
                    Column("email", "string", nullable=False),
                    Column("phone", "string"),
                    Column("first_name", "string"),
                    Column("last_name", "string"),
                    Column("country", "string"),
                    Column("created_at", "timestamp_ms", nullable=False),
                    Column("updated_at", "timestamptz", nullable=False),
                ),
            ),
            Table(
                "orders",
                "order_id",
                (
                    Column("order_id", "int64", nullable=False),
                    Column("customer_id", "int64", nullable=False),
                    Column("status", "string", nullable=False),
                    Column("currency", "string", nullable=False),
                    Column("subtotal_amount", "decimal", nullable=False, precision=12, scale=2),
                    Column("discount_amount", "decimal", nullable=False, precision=12, scale=2),
                    Column("shipping_amount", "decimal", nullable=False, precision=12, scale=2),
                    Column("total_amount", "decimal", nullable=False, precision=12, scale=2),
                    Column("ordered_on", "date", nullable=False),
                    Column("created_at", "timestamp_ms", nullable=False),
                    Column("updated_at", "timestamptz", nullable=False),
                    Column("sales_channel", "string", added_on_day=days // 3),
                ),
                partitions=2,
            ),
            Table(
                "order_lines",
                "line_id",
                (
                    Column("line_id", "int64", nullable=False),
                    Column("order_id", "int64", nullable=False),
                    Column("product_id", "int64", nullable=False),
                    Column("quantity", "int32", nullable=False),
                    Column("unit_price", "decimal", nullable=False, precision=10, scale=2),
                    Column("created_at", "timestamp_ms", nullable=False),
                ),
                partitions=2,
            ),
        ),
    )
