"""Command line of the simulated company:
``python -m simulator generate --out DIR --persons N --days D --seed S``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from datetime import date
from pathlib import Path

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the simulation and print what was written."""
    args = _parser().parse_args(argv)
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
