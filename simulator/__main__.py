"""Command line of the simulated company:
``python -m simulator generate --out DIR --persons N --days D --seed S [--truth TRUTH]`` and
``python -m simulator advance --days N --out DIR --truth TRUTH`` (recommendations from
``CRM_DATABASE_URL``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from datetime import date
from pathlib import Path

from simulator.advance import advance
from simulator.config import FaultRates, SimulationConfig
from simulator.generate import generate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the landing files (and optionally the ground truth)")
    defaults = SimulationConfig()
    gen.add_argument(
        "--out", type=Path, required=True, help="landing folder to write cdc/ and clickstream/ into"
    )
    gen.add_argument(
        "--truth", type=Path, help="folder for the ground truth (identifiers, response model, manifest)"
    )
    gen.add_argument("--persons", type=int, default=defaults.persons)
    gen.add_argument("--days", type=int, default=defaults.days, help="days of the observed window")
    gen.add_argument("--seed", type=int, default=defaults.seed)
    gen.add_argument(
        "--start", type=date.fromisoformat, default=defaults.start, help="first day of the window (UTC)"
    )
    gen.add_argument(
        "--history-days",
        type=int,
        default=defaults.history_days,
        help="days simulated before the window, captured by the initial CDC snapshot",
    )
    gen.add_argument("--overwrite", action="store_true", help="replace feeds already in --out")
    gen.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    for f in fields(FaultRates):
        gen.add_argument(
            f"--{f.name.replace('_', '-')}-rate",
            dest=f.name,
            type=float,
            default=f.default,
            help=f"fault rate (default {f.default})",
        )
    adv = sub.add_parser(
        "advance",
        help="continue the company persisted in --truth by some days, executing the CRM's recommendations",
    )
    adv.add_argument("--days", type=int, required=True, help="days to simulate")
    adv.add_argument("--out", type=Path, required=True, help="landing folder the company writes into")
    adv.add_argument("--truth", type=Path, required=True, help="truth folder holding the persisted state")
    adv.add_argument(
        "--database-url",
        help="the CRM database holding public.nba_recommendations (default: CRM_DATABASE_URL; none: no "
        "recommendations)",
    )
    adv.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


def _advance(args: argparse.Namespace) -> int:
    """Advance the company and print what it did."""
    report = advance(
        args.out,
        args.truth,
        args.days,
        database_url=args.database_url,
        progress=False if args.no_progress else None,
    )
    last = report.first_day + report.days - 1
    print(
        f"advanced days {report.first_day}..{last}: {report.executed:,} recommendations executed, "
        f"{sum(report.skipped.values()):,} refused {report.skipped or ''}, {report.echo_changes:,} "
        f"recommendation changes captured; wrote {sum(report.lines_by_feed.values()):,} lines in "
        f"{report.files:,} files in {report.seconds:.1f} s "
        f"({report.person_days_per_second:,.0f} person-days/s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the simulation and print what was written."""
    args = _parser().parse_args(argv)
    if args.command == "advance":
        return _advance(args)
    faults = FaultRates(**{f.name: getattr(args, f.name) for f in fields(FaultRates)})
    config = SimulationConfig(
        persons=args.persons,
        days=args.days,
        seed=args.seed,
        start=args.start,
        history_days=args.history_days,
        faults=faults,
    )
    report = generate(
        config, args.out, args.truth, overwrite=args.overwrite, progress=False if args.no_progress else None
    )
    print(
        f"wrote {report.lines:,} lines in {report.files:,} files to {report.landing} "
        f"in {report.seconds:.1f} s ({report.events_per_second:,.0f} events/s)"
    )
    for feed, lines in report.lines_by_feed.items():
        print(f"  {feed:<12} {lines:>12,} lines")
    if report.truth:
        print(f"ground truth in {report.truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
