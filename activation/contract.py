"""Outbound data contracts: what a sync may send to its destination, as an ODCS v3 contract
(``activation/contracts/<name>.odcs.yaml``, ``customProperties.feed: outbound``), read with
:mod:`data_contracts` like the inbound ones.

The contract's properties are the sync's destination columns (the payload's fields) with their types, which
are required, the accepted values (actions, channels) and the key. It may hold no personal data (no ``pii``
property). Before sending, every added or changed row is checked with the contract's per-record rules
(:func:`data_contracts.violation_sql`, in DuckDB over the row as JSON): a row that breaks one is not sent and
is recorded as a failure with the reason. A contract whose fields differ from the sync file's stops the sync.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl

from activation.config import SyncConfig
from data_contracts import Contract, ContractError, load_contract, violation_sql
from lake.settings import REPO_ROOT

CONTRACTS_DIR = REPO_ROOT / "activation" / "contracts"
"""The outbound contracts (``ACTIVATION_CONTRACTS_DIR`` overrides)."""


class ContractMismatch(ValueError):
    """A sync's outbound contract cannot be read, or it and the sync file disagree."""


def contracts_dir() -> Path:
    """The folder of outbound contracts: ``ACTIVATION_CONTRACTS_DIR`` or the shipped one."""
    return Path(os.environ.get("ACTIVATION_CONTRACTS_DIR") or CONTRACTS_DIR)


def load_outbound(config: SyncConfig) -> Contract | None:
    """The outbound contract the sync names (None when it names none), checked against the sync file: an
    outbound contract without personal data, whose properties are exactly the sync's destination columns and
    whose primary key is the sync's key column."""
    if config.contract is None:
        return None
    path = contracts_dir() / f"{config.contract}.odcs.yaml"
    try:
        contract = load_contract(path)
    except ContractError as error:
        raise ContractMismatch(f"{config.path}: contract: {error}") from error
    problems = []
    if contract.feed != "outbound":
        problems.append(f"customProperties.feed is {contract.feed!r}, not 'outbound'")
    if contract.pii_columns or contract.pii_paths:
        names = [c.name for c in contract.pii_columns] + list(contract.pii_paths)
        problems.append(f"personal data ({', '.join(names)}) is never sent to a destination")
    named, mapped = {c.name for c in contract.columns}, set(config.fields)
    if named != mapped:
        problems.append(
            f"the contract's properties differ from the sync's fields (only in the contract: "
            f"{sorted(named - mapped)}, only in the sync: {sorted(mapped - named)})"
        )
    if contract.primary_key != (config.key_column,):
        problems.append(f"the primary key {list(contract.primary_key)} is not the key {config.key_column!r}")
    if problems:
        raise ContractMismatch(f"{path} and {config.path} disagree: " + "; ".join(problems))
    return contract


def violations(contract: Contract, rows: pl.DataFrame, key: str) -> dict[str, str]:
    """The rows that break the contract, as key (text) -> the reason of the first broken rule."""
    if rows.is_empty():
        return {}
    reason = violation_sql(contract, "to_json(__row)")
    with duckdb.connect() as con:
        con.register("payload", rows.to_arrow())
        found = con.sql(
            f"select cast(__row.{key} as varchar) as key, {reason} as reason from payload as __row"
        ).filter("reason is not null")
        return dict(found.fetchall())
