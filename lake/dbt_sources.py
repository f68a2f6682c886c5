"""The dbt source definitions of the silver tables, generated from the data contracts, so that a new contract
reaches dbt's staging layer without YAML written by hand.

One file per source, ``dbt_project/models/staging/<source>/_<source>__sources.yml`` (``<source>`` is the
system of the silver tables: ``crm``, ``shop``, ``clickstream``), with a table per silver table (current state
and history for CDC, the events for the clickstream) named as :mod:`lake.warehouse` publishes its view, and
from the contract: the column descriptions (personal columns under their protected names), not-null and
unique tests of the primary key on the current state, freshness from the ``freshness`` SLA, and the asset key
of the silver asset. ``python -m lake.dbt_sources`` writes them (``make install`` runs it before
``dbt parse``); ``--check`` only says which files differ from what the contracts give.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from pathlib import Path

import yaml

from data_contracts import Contract, LoadedContracts, scan_contracts
from lake.feeds import SilverTable, feed_of
from lake.settings import REPO_ROOT, get_settings
from lake.warehouse import SCHEMA

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
STAGING = Path("models") / "staging"
HEADER = (
    "# Generated from the data contracts by `python -m lake.dbt_sources` (make install runs it): edit the\n"
    "# contracts, not this file.\n"
)
PERIODS = (("day", timedelta(days=1)), ("hour", timedelta(hours=1)), ("minute", timedelta(minutes=1)))
"""dbt's freshness periods, the longest first: a contract's freshness is given in the longest that divides
it."""


def silver_columns(contract: Contract) -> dict[str, tuple[str, str]]:
    """Contract column -> (its name in silver, description) for the columns silver keeps: personal data under
    its protected name (``email_token``, ``birth_year``, ...), Segment fields in snake case."""
    return feed_of(contract).silver_columns()


def _key_tests(contract: Contract, names: dict[str, str]) -> tuple[dict[str, list[str]], list[dict]]:
    """Column tests (by silver column) and table tests of a current-state table: the primary key not null and
    unique (one column: ``unique``; several: ``unique_combination``), other unique columns unique."""
    key = [names[k] for k in contract.primary_key]
    tests: dict[str, list[str]] = {name: ["not_null"] for name in key}
    table: list[dict] = []
    if len(key) == 1:
        tests[key[0]] = ["unique", "not_null"]
    elif key:
        table.append({"unique_combination": {"arguments": {"columns": key}}})
    for c in contract.columns:
        if c.unique and [names[c.name]] != key:
            tests.setdefault(names[c.name], []).insert(0, "unique")
    return tests, table


def _table(contract: Contract, silver: SilverTable) -> dict:
    """The source table of one silver table of ``contract``."""
    described = silver_columns(contract)
    subject = contract.table_description.rstrip(".") or contract.name
    first = subject.split()[0]
    if not (len(first) > 1 and first.isupper()):  # "An order ..." -> "an order ...", but not "CRM ..."
        subject = subject[0].lower() + subject[1:]
    tests: dict[str, list[str]] = {}
    table_tests: list[dict] = []
    if not silver.history:  # a history table holds many versions per key (and truncate markers without one)
        tests, table_tests = _key_tests(contract, {k: v[0] for k, v in described.items()})
    description, loaded_at, extra = feed_of(contract).source_doc(silver, subject)
    columns = []
    for column, text in [*described.values(), *extra.items()]:
        entry: dict = {"name": column, "description": text}
        if column in tests:
            entry["data_tests"] = tests[column]
        columns.append(entry)
    table: dict = {
        "name": silver.name,
        "identifier": silver.view,
        "description": description,
        "meta": {"dagster": {"asset_key": ["silver", silver.system, silver.name]}, "contract": contract.id},
    }
    freshness = contract.sla_duration("freshness")
    if freshness:
        period, length = next((p, d) for p, d in PERIODS if freshness % d == timedelta(0) or p == "minute")
        table["config"] = {
            "freshness": {"warn_after": {"count": int(freshness // length), "period": period}},
            "loaded_at_field": loaded_at,
        }
    if table_tests:
        table["data_tests"] = table_tests
    table["columns"] = columns
    return table


class _Dumper(yaml.SafeDumper):
    """YAML as dbt projects write it: lists of plain values on one line (``[unique, not_null]``), list items
    indented under their key."""

    def represent_list(self, data: list) -> yaml.Node:
        flow = all(isinstance(v, str | int) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)  # list items indented under their key

    def represent_dict(self, data: dict) -> yaml.Node:
        flow = set(data) == {"count", "period"}  # freshness periods: {count: 1, period: day}
        return self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(dict, _Dumper.represent_dict)


def source_files(contracts: dict[str, Contract]) -> dict[Path, str]:
    """The text of every generated sources file, by path relative to the dbt project."""
    systems: dict[str, list[tuple[Contract, SilverTable]]] = {}
    for contract in contracts.values():
        for silver in feed_of(contract).silver:
            systems.setdefault(silver.system, []).append((contract, silver))
    files = {}
    for system, tables in sorted(systems.items()):
        feeds = sorted({c.feed_id for c, *_ in tables})
        source = {
            "name": system,
            "description": f"Silver tables of {system} (feeds {', '.join(feeds)}), as warehouse views "
            "over their live Delta files (lake.warehouse); generated from the data contracts.",
            "schema": SCHEMA,
            "tables": [_table(*t) for t in tables],
        }
        text = yaml.dump(
            {"version": 2, "sources": [source]},
            Dumper=_Dumper,
            sort_keys=False,
            width=110,
            allow_unicode=True,
        )
        files[STAGING / system / f"_{system}__sources.yml"] = HEADER + text
    return files


def sync(
    contracts: dict[str, Contract], project_dir: Path = DBT_PROJECT_DIR, write: bool = True
) -> list[Path]:
    """The generated sources files of ``project_dir`` that differ from what ``contracts`` give (missing,
    changed, or generated earlier for a source no contract has any more); with ``write``, brought in line."""
    wanted = {project_dir / rel: text for rel, text in source_files(contracts).items()}
    existing = {
        p
        for p in (project_dir / STAGING).glob("*/_*__sources.yml")
        if p.read_text(encoding="utf-8").startswith(HEADER)
    }
    stale = sorted(p for p in existing if p not in wanted)
    changed = sorted(
        p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text
    )
    if write:
        for path in stale:
            path.unlink()
        for path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(wanted[path], encoding="utf-8")
    return sorted(stale + changed)


def sync_valid(scanned: LoadedContracts, project_dir: Path = DBT_PROJECT_DIR) -> list[Path]:
    """Write the generated sources files of ``project_dir`` from contracts that all loaded; when some did not,
    write nothing (the files stay as the last valid contracts made them, so dbt keeps every source its models
    use) and log why. The files written."""
    if scanned.problems:
        logging.getLogger(__name__).warning(
            "dbt sources not regenerated: %d problem(s) in the data contracts", len(scanned.problems)
        )
        return []
    return sync(scanned.contracts, project_dir)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write (or ``--check``) the generated sources files; 1 when a contract is
    invalid (nothing is written then) or, with ``--check``, when a file differs."""
    parser = argparse.ArgumentParser(prog="python -m lake.dbt_sources", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail when a file would change")
    parser.add_argument("--project-dir", type=Path, default=DBT_PROJECT_DIR, help="the dbt project")
    args = parser.parse_args(argv)
    scanned = scan_contracts(get_settings().contracts_dir)
    for problem in scanned.problems:
        print(f"INVALID CONTRACT {problem}", file=sys.stderr)
    if scanned.problems:
        print("dbt sources not generated: fix the contracts first", file=sys.stderr)
        return 1
    differing = sync(scanned.contracts, args.project_dir, write=not args.check)
    for path in differing:
        print(f"{'differs' if args.check else 'written'}: {path.relative_to(args.project_dir)}")
    return 1 if args.check and differing else 0


if __name__ == "__main__":
    sys.exit(main())
