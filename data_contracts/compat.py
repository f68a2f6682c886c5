"""Contract evolution: lint a contract, list the breaking changes between two versions, and check that a
breaking change bumps the major version. Built on datacontract-cli's Python API, which works offline: it
validates against the ODCS JSON schemas it ships and never downloads one.

A change is breaking when datacontract-cli grades it an error from either side of the feed: for consumers
(a removed or retyped field, a dropped guarantee) or for the producer, whose records ingestion validates
(a new required field, a stricter rule of severity error). A new optional field is not breaking: ingestion
accepts fields a contract does not name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from open_data_contract_standard.model import OpenDataContractStandard

if TYPE_CHECKING:
    from datacontract.model.breaking import BreakingChangeEntry

SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def lint(path: Path | str) -> list[str]:
    """What ``datacontract lint`` finds wrong with a contract (JSON schema of its declared ODCS version,
    unknown fields, rules it could not run): one message per failed or warning check, empty when clean."""
    from datacontract.data_contract import DataContract
    from datacontract.model.run import ResultEnum

    run = DataContract(data_contract_file=str(path)).lint()
    return [
        f"{check.name}: {check.reason}" if check.reason else check.name
        for check in run.checks
        if check.result != ResultEnum.passed
    ]


def breaking_changes(old: Path | str, new: Path | str) -> list[str]:
    """The breaking changes from contract file ``old`` to ``new``, one message each (empty when none)."""
    from datacontract.data_contract import DataContract
    from datacontract.model.breaking import BreakingChangeLevel, Perspective

    # parsed once here (lint validates the files against the JSON schema, which costs ~0.4 s a time)
    target = OpenDataContractStandard.from_file(str(new))
    before = DataContract(data_contract=OpenDataContractStandard.from_file(str(old)))
    after = DataContract(data_contract=target)
    changes: list[str] = []
    for perspective in (Perspective.CONSUMER, Perspective.PRODUCER):
        for entry in before.breaking(after, perspective=perspective).entries:
            if entry.level != BreakingChangeLevel.ERROR or _adds_optional_property(entry, target):
                continue
            message = entry.message if entry.path in entry.message else f"{entry.message} at {entry.path}"
            if message not in changes:
                changes.append(message)
    return changes


def _adds_optional_property(entry: BreakingChangeEntry, contract: OpenDataContractStandard) -> bool:
    """Whether a changelog entry adds a property that is not required to ``contract`` (its new version)."""
    if entry.rule_id != "property-added-or-removed" or entry.change_type.value != "added":
        return False
    schema_path, *names = entry.path.split(".properties.")
    node = next(s for s in contract.schema_ or [] if s.name == schema_path.removeprefix("schema."))
    for name in names:
        node = next(p for p in node.properties or [] if p.name == name)
    return not node.required


def check_versions(old: Path | str, new: Path | str) -> list[str]:
    """Problems in the evolution from contract file ``old`` to ``new``: a version that is not semantic or
    went down, and each breaking change made without bumping the major version."""
    versions = [yaml.safe_load(Path(p).read_text(encoding="utf-8")).get("version") for p in (old, new)]
    parsed = [SEMVER.match(str(v)) for v in versions]
    name = Path(new).name
    for label, version, match in zip(("old", "new"), versions, parsed, strict=True):
        if not match:
            return [f"{name}: {label} version {version!r} is not a semantic version (major.minor.patch)"]
    (old_v, new_v), (old_p, new_p) = versions, [tuple(int(n) for n in m.groups()) for m in parsed]
    if new_p < old_p:
        return [f"{name}: version went down from {old_v} to {new_v}"]
    if new_p[0] > old_p[0]:
        return []
    return [
        f"{name}: breaking change without a major version bump ({old_v} -> {new_v}): {change}"
        for change in breaking_changes(old, new)
    ]
