"""Connected components of the identity graph on random edges: the dbt model's code path (components, device
attachment and link times) against the bare algorithms (scipy's connected_components and minimum_spanning_tree
on integer node ids) on the same edges.

    uv run --frozen python benchmarks/identity_components.py [--edges 10000000]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import duckdb
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from lake.settings import disable_telemetry

MODEL = Path(__file__).parents[1] / "dbt_project/models/intermediate/identity/int_identity__components.py"
TYPES = ("app_user_id", "anonymous_id", "crm_contact_id", "email_token")


def load_model():
    """The components model's module (a dbt Python model is a plain module with a ``model`` function)."""
    spec = importlib.util.spec_from_file_location("int_identity__components", MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    disable_telemetry()
    rng = np.random.default_rng(args.seed)
    nodes = args.edges  # about as many identifiers as edges, as in the real graph
    left = rng.integers(0, nodes, args.edges)
    right = rng.integers(0, nodes, args.edges)
    known = rng.integers(1, 30 * 86_400_000_000, args.edges)  # microseconds into a 30-day window
    module = load_model()
    with duckdb.connect() as con:
        con.execute("set preserve_insertion_order = false")
        con.register("ids", {"l": left, "r": right, "known": known})
        con.execute(f"""
            create table edges as
            select
                (list_value({", ".join(repr(t) for t in TYPES)}))[l % {len(TYPES)} + 1] as left_type,
                'id-' || l as left_identifier,
                (list_value({", ".join(repr(t) for t in TYPES)}))[r % {len(TYPES)} + 1] as right_type,
                'id-' || r as right_identifier,
                timestamptz '2026-09-01 00:00:00+00' + to_microseconds(known) as first_known_at
            from ids
        """)
        con.execute("""
            create table identifiers as
            select identifier_type, identifier, min(first_known_at) as first_seen
            from (
                select left_type, left_identifier, first_known_at from edges
                union all
                select right_type, right_identifier, first_known_at from edges
            ) as ends(identifier_type, identifier, first_known_at)
            group by all
        """)
        con.execute("create table cuts as select identifier_type, identifier from identifiers where false")
        start = time.perf_counter()
        result = module.components(con, "identifiers", "edges", "cuts")
        model_seconds = time.perf_counter() - start
    start = time.perf_counter()
    module.people_components(nodes, left, right)
    minimum_spanning_tree(coo_matrix((known, (left, right)), shape=(nodes, nodes)).tocsr())
    bare_seconds = time.perf_counter() - start
    print(f"edges:                  {args.edges:,}")
    print(f"identifiers:            {result.num_rows:,}")
    print(f"components model:       {model_seconds:.1f} s")
    print(f"bare components + spanning tree: {bare_seconds:.1f} s (integer ids, the same edges)")
    print(f"ratio model / bare:     {model_seconds / bare_seconds:.1f}")


if __name__ == "__main__":
    main()
