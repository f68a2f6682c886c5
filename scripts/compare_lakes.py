"""Compare two builds of the lake table by table: every Delta table of the chosen zones (silver and gold by
default) and, when warehouses are given, every table and view of the two DuckDB warehouse files. Two tables
are identical when ``except all`` returns no row either way (duplicates counted); the report gives, per table,
the rows on each side and the rows found only before and only after. Exit status 1 when a table differs or
exists on one side only.

    python scripts/compare_lakes.py BEFORE_LAKE_ROOT AFTER_LAKE_ROOT \\
        [--warehouses BEFORE.duckdb AFTER.duckdb] [--zones silver gold] [--ignore-columns _ingested_at ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
from deltalake import DeltaTable


@dataclass(frozen=True)
class TableDiff:
    """How one table compares: rows on each side and rows (with multiplicity) found on one side only."""

    name: str
    rows_before: int | None
    rows_after: int | None
    only_before: int | None
    only_after: int | None

    @property
    def identical(self) -> bool:
        """Present on both sides with no row on one side only."""
        return self.only_before == 0 and self.only_after == 0


def delta_tables(lake_root: Path, zones: Sequence[str]) -> dict[str, Path]:
    """Every Delta table (a folder holding ``_delta_log``) under the zones of ``lake_root``, by
    ``zone/path``."""
    tables = {}
    for zone in zones:
        for log in sorted((lake_root / zone).rglob("_delta_log")):
            tables[str(log.parent.relative_to(lake_root))] = log.parent
    return tables


def warehouse_relations(con: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    """Every table and view (``schema.name``) of an attached warehouse, DuckDB's own catalog left out."""
    rows = con.execute(
        "select table_schema || '.' || table_name from information_schema.tables where table_catalog = ?",
        [catalog],
    ).fetchall()
    return {row[0] for row in rows}


def _columns(con: duckdb.DuckDBPyConnection, relation: str, ignore: set[str]) -> list[str]:
    """The column names of ``relation`` in order, the ignored ones left out, quoted."""
    names = [row[0] for row in con.execute(f"describe select * from {relation}").fetchall()]
    return ['"' + name.replace('"', '""') + '"' for name in names if name not in ignore]


def compare_relations(
    con: duckdb.DuckDBPyConnection, name: str, before: str, after: str, ignore: set[str]
) -> TableDiff:
    """``except all`` both ways between two relations of ``con`` over the columns of ``before``."""
    columns = ", ".join(_columns(con, before, ignore))
    after_columns = ", ".join(_columns(con, after, ignore))
    if columns != after_columns:
        print(f"{name}: columns differ\n  before: {columns}\n  after:  {after_columns}")
        return TableDiff(name, None, None, None, None)

    def count(query: str) -> int:
        return con.execute(f"select count(*) from ({query})").fetchall()[0][0]

    return TableDiff(
        name,
        count(f"select * from {before}"),
        count(f"select * from {after}"),
        count(f"select {columns} from {before} except all select {columns} from {after}"),
        count(f"select {columns} from {after} except all select {columns} from {before}"),
    )


def compare(
    before_root: Path,
    after_root: Path,
    zones: Sequence[str],
    warehouses: Sequence[Path] | None,
    ignore: set[str],
) -> list[TableDiff]:
    """Compare every Delta table of the zones, then every relation of the warehouses when given."""
    diffs = []
    con = duckdb.connect()
    before_tables = delta_tables(before_root, zones)
    after_tables = delta_tables(after_root, zones)
    for name in sorted(before_tables.keys() | after_tables.keys()):
        if name not in before_tables or name not in after_tables:
            diffs.append(TableDiff(name, None, None, None, None))
            continue
        con.register("before_t", DeltaTable(str(before_tables[name])).to_pyarrow_dataset())
        con.register("after_t", DeltaTable(str(after_tables[name])).to_pyarrow_dataset())
        diffs.append(compare_relations(con, name, "before_t", "after_t", ignore))
        con.unregister("before_t")
        con.unregister("after_t")
    if warehouses:
        con.execute(f"attach '{warehouses[0]}' as before_w (read_only)")
        con.execute(f"attach '{warehouses[1]}' as after_w (read_only)")
        before_relations = warehouse_relations(con, "before_w")
        after_relations = warehouse_relations(con, "after_w")
        for name in sorted(before_relations | after_relations):
            label = f"warehouse:{name}"
            if name not in before_relations or name not in after_relations:
                diffs.append(TableDiff(label, None, None, None, None))
                continue
            diffs.append(compare_relations(con, label, f"before_w.{name}", f"after_w.{name}", ignore))
    con.close()
    return diffs


def report(diffs: Sequence[TableDiff]) -> str:
    """One line per table: rows before and after, rows only before and only after, and the verdict."""

    def show(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    width = max((len(diff.name) for diff in diffs), default=5)
    lines = [f"{'table':<{width}}  {'before':>10}  {'after':>10}  {'only before':>11}  {'only after':>10}"]
    for diff in diffs:
        verdict = "identical" if diff.identical else "DIFFERENT"
        lines.append(
            f"{diff.name:<{width}}  {show(diff.rows_before):>10}  {show(diff.rows_after):>10}  "
            f"{show(diff.only_before):>11}  {show(diff.only_after):>10}  {verdict}"
        )
    different = sum(not diff.identical for diff in diffs)
    lines.append(f"{len(diffs)} tables, {different} different")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the two lake roots (and warehouses), print the per-table report; 1 when a table differs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the lake root (LAKE_ROOT) of the first build")
    parser.add_argument("after", type=Path, help="the lake root of the second build")
    parser.add_argument("--warehouses", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--zones", nargs="+", default=["silver", "gold"])
    parser.add_argument("--ignore-columns", nargs="*", default=[], help="columns left out of the comparison")
    args = parser.parse_args(argv)
    diffs = compare(args.before, args.after, args.zones, args.warehouses, set(args.ignore_columns))
    print(report(diffs))
    return 0 if all(diff.identical for diff in diffs) else 1


if __name__ == "__main__":
    sys.exit(main())
