"""Materialization metadata the UI shows for a Delta table: row count, column schema, a preview.

Dagster keeps materialization metadata in its event log, beyond the reach of the lake's retention and
erasure: a preview therefore never shows personal data, raw or protected. Tables of raw records (bronze) get
no preview at all; other tables show their first rows without the columns that hold personal data."""

from __future__ import annotations

import re
from collections.abc import Mapping

import dagster as dg
import polars as pl

from data_contracts import Contract
from lake import delta
from lake.privacy import IP_SUFFIX, TOKEN_SUFFIX, personal_columns
from lake.settings import Settings

PREVIEW_ROWS = 5
PREVIEW_WIDTH = 24


def contract_schema(contract: Contract) -> dg.TableSchema:
    """The contract's columns as a Dagster table schema (types as decoded, descriptions, key and
    nullability)."""
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


def preview(frame: pl.DataFrame, hidden: list[str] | None = None) -> dg.MetadataValue:
    """The first rows of a frame as a markdown table (long values cut), naming below it the ``hidden`` columns
    left out of ``frame``."""
    head = frame.head(PREVIEW_ROWS)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    if hidden:
        lines += ["", f"Not shown (personal data): {', '.join(hidden)}."]
    return dg.MetadataValue.md("\n".join(lines))


def _snake(name: str) -> str:
    """``messageId`` -> ``message_id``: the name a camelCase contract column has in silver."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def column_descriptions(contract: Contract) -> dict[str, str]:
    """The contract's column descriptions by the names the lake's tables give the columns: the contract's own
    name, its snake_case form, and the protected forms of personal columns (``<column>_token``,
    ``<column>_prefix``)."""
    described: dict[str, str] = {}
    for column in contract.columns:
        if not column.description:
            continue
        for name in (column.name, _snake(column.name)):
            described.setdefault(name, column.description)
            if column.pii:
                described.setdefault(
                    name + TOKEN_SUFFIX, f"Keyed hash of the normalised {name} ({column.description})"
                )
                described.setdefault(name + IP_SUFFIX, f"Network prefix of {name} ({column.description})")
    return described


def table_schema(schema: Mapping[str, pl.DataType], contract: Contract | None = None) -> dg.TableSchema:
    """A Delta table's actual columns as a Dagster table schema, with the contract's description of each
    column the contract describes (see :func:`column_descriptions`)."""
    described = column_descriptions(contract) if contract else {}
    return dg.TableSchema(
        columns=[dg.TableColumn(n, str(t), description=described.get(n)) for n, t in schema.items()]
    )


def table_metadata(
    settings: Settings, uri: str, contract: Contract | None = None, preview_of: Contract | None = None
) -> dict[str, object]:
    """Row count, actual column schema (described by ``contract``) and location of the Delta table at ``uri``;
    with ``preview_of`` (the contract of the feed the table holds) also a preview of its first rows, without
    the columns that hold personal data. Tables of raw records get no preview: leave ``preview_of`` out."""
    lazy = delta.scan(uri, settings.storage_options)
    if lazy is None:
        return {"table": dg.MetadataValue.path(uri), "dagster/row_count": 0}
    schema = lazy.collect_schema()
    metadata = {
        "table": dg.MetadataValue.path(uri),
        "dagster/row_count": lazy.select(pl.len()).collect().item(),
        "dagster/column_schema": table_schema(schema, contract),
    }
    if preview_of is not None:
        hidden = personal_columns(preview_of, schema.names())
        metadata["preview"] = preview(lazy.drop(hidden).head(PREVIEW_ROWS).collect(), hidden)
    return metadata
