"""Data contracts of the source feeds: one Open Data Contract Standard (ODCS v3) YAML file per feed in
``contracts/``, and the glue the libraries lack: decoded Arrow schemas, record validation in DuckDB SQL,
Great Expectations suites for the decoded tables, and a breaking-change check (``python -m data_contracts
check``)."""

from data_contracts.compat import breaking_changes, check_versions, lint
from data_contracts.expectations import RuleResult, expectation_suite, validate_frame
from data_contracts.model import (
    CONTRACTS_DIR,
    Column,
    Contract,
    ContractError,
    ContractProblem,
    LoadedContracts,
    QualityRule,
    load_contract,
    load_contracts,
    scan_contracts,
)
from data_contracts.validation import key_violation_sql, violation_sql

__all__ = [
    "CONTRACTS_DIR",
    "Column",
    "Contract",
    "ContractError",
    "ContractProblem",
    "LoadedContracts",
    "QualityRule",
    "RuleResult",
    "breaking_changes",
    "check_versions",
    "expectation_suite",
    "key_violation_sql",
    "lint",
    "load_contract",
    "load_contracts",
    "scan_contracts",
    "validate_frame",
    "violation_sql",
]
