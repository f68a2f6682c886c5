"""A contract's rules as Great Expectations 1.x expectations over its decoded table (a pandas DataFrame).

``great_expectations`` takes about 6.5 s to import, so it is imported inside the functions only. Contexts are
ephemeral, with analytics and progress bars off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from data_contracts.model import Contract, QualityRule

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite


class RuleResult(NamedTuple):
    """The outcome of one rule on a frame; ``passed`` is None when the rule was skipped."""

    name: str
    column: str | None
    severity: str
    passed: bool | None
    observed: Any
    """The observed value (a row count, ...), the number of unexpected values, or why it was skipped."""
    description: str

    @property
    def skipped(self) -> bool:
        """The rule reads a column the frame does not have."""
        return self.passed is None

    @property
    def failed(self) -> bool:
        """The rule ran and failed."""
        return self.passed is False


def _split(contract: Contract, columns: Iterable[str] | None) -> tuple[list[QualityRule], list[QualityRule]]:
    """The contract's rules that can run on ``columns`` (all when None), and those that cannot."""
    if columns is None:
        return list(contract.rules), []
    present = set(columns)
    runnable, skipped = [], []
    for rule in contract.rules:
        (runnable if present.issuperset(rule.columns) else skipped).append(rule)
    return runnable, skipped


def expectation_suite(contract: Contract, columns: Iterable[str] | None = None) -> ExpectationSuite:
    """The Great Expectations suite of the contract's rules (:attr:`Contract.rules`) that read only
    ``columns`` (every rule when None); each expectation's ``meta`` names its rule and severity."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    runnable, _ = _split(contract, columns)
    expectations = []
    for rule in runnable:
        try:
            config = ExpectationConfiguration(
                type=rule.expectation,
                kwargs=dict(rule.kwargs),
                meta={"rule": rule.name, "severity": rule.severity},
            )
            expectations.append(config.to_domain_obj())
        except Exception as e:
            raise ValueError(f"{contract.path}: quality rule {rule.name}: {e}") from e
    return gx.ExpectationSuite(name=f"{contract.id}@{contract.version}", expectations=expectations)


def validate_frame(contract: Contract, frame: pd.DataFrame) -> list[RuleResult]:
    """Validate a decoded table against the contract: one result per rule of :attr:`Contract.rules`, in
    their order. Rules reading a column the frame lacks (PII columns may be dropped or renamed in silver)
    are reported as skipped."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    _, skipped = _split(contract, frame.columns)
    skipped_names = {rule.name for rule in skipped}
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        ),
    )
    batch = (
        context.data_sources.add_pandas("contract")
        .add_dataframe_asset(contract.name)
        .add_batch_definition_whole_dataframe("frame")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    outcome = batch.validate(expectation_suite(contract, frame.columns))
    by_rule = {r.expectation_config.meta["rule"]: r for r in outcome.results}
    results = []
    for rule in contract.rules:
        if rule.name in skipped_names:
            missing = ", ".join(c for c in rule.columns if c not in frame.columns)
            results.append(_result(rule, None, f"skipped: no column {missing}"))
            continue
        r = by_rule[rule.name]
        error = _exception_message(r.exception_info or {})
        if error:
            results.append(_result(rule, False, f"error: {error}"))
            continue
        details = r.result or {}
        observed = details.get("observed_value", details.get("unexpected_count"))
        results.append(_result(rule, bool(r.success), observed))
    return results


def _result(rule: QualityRule, passed: bool | None, observed: Any) -> RuleResult:
    return RuleResult(rule.name, rule.column, rule.severity, passed, observed, rule.description)


def _exception_message(info: dict) -> str | None:
    """The message of an exception raised while validating, from a result's ``exception_info`` (flat, or
    keyed by metric when a metric failed to compute)."""
    entries = [info, *(v for v in info.values() if isinstance(v, dict))]
    messages = [str(e.get("exception_message")) for e in entries if e.get("raised_exception")]
    return "; ".join(messages) or None
