"""What the erasure tests look for: a person's raw values, tokens and ids in every file of a lake and a
warehouse, read as stored and decoded (gunzipped, parquet values, DuckDB tables)."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq

from lake.privacy import normalise_email, normalise_name, token

ZONES = ("landing", "bronze", "quarantine", "silver", "gold", "privacy")


@dataclass
class PersonValues:
    """Everything that would betray one person: distinctive strings, and integer ids found by field name."""

    strings: set[str] = field(default_factory=set)
    contact_ids: set[int] = field(default_factory=set)
    customer_ids: set[int] = field(default_factory=set)
    name_tokens: set[tuple[str, str]] = field(default_factory=set)
    """(first name token, last name token): found when one row holds both."""

    @classmethod
    def of(cls, identifiers: pl.DataFrame, lines: list[str], secret: str) -> PersonValues:
        """From the person's identifiers (the simulator's truth, evidenced ones; plus the identity map's
        tokens and person id) and their raw landing lines (names and phones as the sources wrote them)."""
        found = cls()
        for kind, value in identifiers.select("identifier_type", "identifier").iter_rows():
            if kind == "crm_contact_id":
                found.contact_ids.add(int(value))
            elif kind == "shop_customer_id":
                found.customer_ids.add(int(value))
            else:
                found.strings.add(value)
            if kind == "email":
                found.strings.add(token(normalise_email(pl.Series([value])), secret)[0])
        names = set()
        for line in lines:
            for key in ("first_name", "last_name", "phone"):
                names |= {m for m in re.findall(rf'"{key}"\s*:\s*"([^"]+)"', line)}
            first = re.search(r'"first_name"\s*:\s*"([^"]+)"', line)
            last = re.search(r'"last_name"\s*:\s*"([^"]+)"', line)
            if first and last:  # a single name is shared with other people: the full name is the person's
                found.strings.add(f"{first[1]} {last[1]}")
                found.name_tokens.add(
                    tuple(token(normalise_name(pl.Series([n])), secret)[0] for n in (first[1], last[1]))
                )
        found.strings |= {v for v in names if "@" in v or v.startswith("+") or v[:1].isdigit()}
        return found

    def in_text(self, text: str) -> list[str]:
        """The values found in a text (JSON lines, Delta log entries, decoded strings)."""
        lowered = text.lower()
        hits = [s for s in self.strings if s.lower() in lowered]
        for key, ids in (("contact_id", self.contact_ids), ("customer_id", self.customer_ids)):
            hits += [f"{key}={i}" for i in ids if re.search(rf'"{key}"\s*:\s*"?{i}(?!\d)', text)]
        return hits

    def in_frame(self, frame: pl.DataFrame) -> list[str]:
        """The values found in a table: strings in any text column, ids in the columns that hold them."""
        hits = []
        for column in frame.columns:
            if column.endswith("first_name_token"):
                last = column.replace("first_name_token", "last_name_token")
                if last in frame.columns:
                    pairs = frame.select(pl.concat_list(column, last).alias("pair"))["pair"].to_list()
                    hits += [f"{column}, {last}" for p in pairs if p and tuple(p) in self.name_tokens]
        for column, dtype in frame.schema.items():
            if dtype == pl.String:
                text = "\n".join(v for v in frame[column].drop_nulls().unique().to_list())
                hits += [f"{column}: {h}" for h in self.in_text(text)]
            for key, ids, kind in (
                ("contact_id", self.contact_ids, "crm_contact_id"),
                ("customer_id", self.customer_ids, "shop_customer_id"),
            ):
                if column == key and dtype.is_integer() and frame[column].is_in(list(ids)).any():
                    hits.append(f"{column} in {ids}")
                prefix = column.removesuffix("identifier")
                type_column = prefix + "type" if prefix else "identifier_type"
                if (
                    column == "identifier" or column.endswith("_identifier")
                ) and type_column in frame.columns:
                    pairs = frame.filter(
                        (pl.col(type_column) == kind)
                        & pl.col(column).cast(pl.String).is_in([str(i) for i in ids])
                    )
                    if pairs.height:
                        hits.append(f"{column} ({kind}) in {ids}")
        return hits


def scan_lake(lake_root: Path, person: PersonValues) -> dict[str, list[str]]:
    """Every file of the lake's zones where the person appears: bytes as stored, gunzipped, parquet
    decoded."""
    found = {}
    for zone in ZONES:
        for path in sorted((lake_root / zone).rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            hits = person.in_text(data.decode("utf-8", "replace"))
            if path.suffix == ".gz":
                hits += person.in_text(gzip.decompress(data).decode("utf-8", "replace"))
            if path.suffix == ".parquet":
                hits += person.in_frame(pl.from_arrow(pq.read_table(path)))
            if hits:
                found[str(path.relative_to(lake_root))] = sorted(set(hits))
    return found


def scan_warehouse(path: Path, person: PersonValues) -> dict[str, list[str]]:
    """Where the person appears in the warehouse: its files' bytes, and every table and view decoded."""
    found = {}
    for file in path.parent.glob(path.name + "*"):
        hits = person.in_text(file.read_bytes().decode("utf-8", "replace"))
        if hits:
            found[file.name] = hits
    with duckdb.connect(str(path), read_only=True) as con:
        relations = con.sql(
            "select schema_name, table_name from duckdb_tables() where database_name = current_database() "
            "union all select schema_name, view_name from duckdb_views() "
            "where database_name = current_database() and not internal"
        ).fetchall()
        for schema, name in relations:
            frame = con.sql(f'select * from "{schema}"."{name}"').pl()
            hits = person.in_frame(frame)
            if hits:
                found[f"{schema}.{name}"] = sorted(set(hits))
    return found
