"""Materialization metadata the UI shows for a Delta table: row count, column schema, a preview."""

from __future__ import annotations

import dagster as dg
import polars as pl

from data_contracts import Contract
from lake import delta
from lake.settings import Settings

PREVIEW_ROWS = 5
PREVIEW_WIDTH = 24


def contract_schema(contract: Contract) -> dg.TableSchema:
    """The contract's columns as a Dagster table schema (types as decoded, descriptions, key and nullability)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                str(c.arrow_type),
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=not c.required, unique=c.primary_key),
                tags={"pii": c.pii} if c.pii else None,
            )
            for c in contract.columns
        ]
    )


def contract_metadata(contract: Contract) -> dict[str, object]:
    """Definition-time metadata of an asset governed by a contract."""
    return {
        "contract": dg.MetadataValue.path(str(contract.path)),
        "contract_version": contract.version,
        "feed": contract.feed_id,
    }


def _cell(value: object) -> str:
    text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= PREVIEW_WIDTH else text[: PREVIEW_WIDTH - 1] + "…"


def preview(frame: pl.DataFrame) -> dg.MetadataValue:
    """The first rows of a frame as a markdown table (long values cut)."""
    head = frame.head(PREVIEW_ROWS)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    return dg.MetadataValue.md("\n".join(lines))


def table_metadata(settings: Settings, uri: str, with_preview: bool = True) -> dict[str, object]:
    """Row count, actual column schema, a preview (not for tables of raw personal data) and the location of
    the Delta table at ``uri``."""
    lazy = delta.scan(uri, settings.storage_options)
    if lazy is None:
        return {"table": dg.MetadataValue.path(uri), "dagster/row_count": 0}
    schema = lazy.collect_schema()
    return {
        "table": dg.MetadataValue.path(uri),
        "dagster/row_count": lazy.select(pl.len()).collect().item(),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(n, str(t)) for n, t in schema.items()]
        ),
        "preview": preview(lazy.head(PREVIEW_ROWS).collect()),
    }
